//! Local store on real files: hash checks on put and get, bad input, pins, GC, quota, crash leftovers.

use std::fs;

use store::bao;
use store::local::{StoreError, COUNTER_CORRUPT_FOUND};
use store::{Cid, LocalStore};

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3))
        .collect()
}

fn open(dir: &tempfile::TempDir) -> LocalStore {
    LocalStore::open(dir.path(), 1 << 30).unwrap()
}

#[test]
fn put_then_get_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(300_000, 7);
    let cid = open(&dir).put_bytes(&data).unwrap();
    assert_eq!(cid, Cid::of(&data));
    let store = open(&dir);
    assert_eq!(store.get(cid).unwrap(), data);
    assert_eq!(store.size(cid).unwrap(), Some(300_000));
    let out = dir.path().join("exported");
    assert_eq!(store.export(cid, &out).unwrap(), 300_000);
    assert_eq!(fs::read(&out).unwrap(), data);
    assert_eq!(store.put_bytes(&data).unwrap(), cid, "idempotent");
    assert_eq!(store.status().unwrap().blobs, 1);
}

#[test]
fn wrong_hash_truncated_and_oversized_puts_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = bytes(50_000, 3);
    let wrong = Cid::of(b"something else");
    assert!(matches!(
        store.put_bytes_expecting(wrong, &data),
        Err(StoreError::HashMismatch { .. })
    ));
    assert!(matches!(
        store.put_reader(&data[..], 60_000, None),
        Err(StoreError::Truncated { .. })
    ));
    assert!(matches!(
        store.put_reader(&data[..], 40_000, None),
        Err(StoreError::Oversized { .. })
    ));
    assert!(matches!(
        store.put_reader(&data[..], types::limits::store::BLOB_BYTES_MAX + 1, None),
        Err(StoreError::Oversized { .. })
    ));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.status().unwrap().bytes_used, 0);
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "temp files cleaned"
    );
}

#[test]
fn corrupt_file_on_disk_is_detected_on_get_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = bytes(100_000, 5);
    let cid = store.put_bytes(&data).unwrap();
    let path = store.data_path(cid.0);
    let mut on_disk = fs::read(&path).unwrap();
    on_disk[12_345] ^= 1;
    fs::write(&path, &on_disk).unwrap();
    assert!(matches!(store.get(cid), Err(StoreError::Corrupt(..))));
    assert!(
        !store.contains(cid).unwrap(),
        "a corrupt blob is never served again"
    );
    assert!(!path.exists());
    assert_eq!(store.counter(COUNTER_CORRUPT_FOUND).unwrap(), 1);
}

#[test]
fn scrub_verify_passes_a_good_blob_and_removes_a_rotten_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let good = store.put_bytes(&bytes(70_000, 11)).unwrap();
    let rotten = store.put_bytes(&bytes(90_000, 13)).unwrap();
    store.pin(rotten).unwrap();
    let path = store.data_path(rotten.0);
    let mut on_disk = fs::read(&path).unwrap();
    on_disk[89_999] ^= 0x04;
    fs::write(&path, &on_disk).unwrap();
    store.verify(good).unwrap();
    assert!(matches!(store.verify(rotten), Err(StoreError::Corrupt(..))));
    assert!(
        !store.contains(rotten).unwrap(),
        "pinned or not, a rotten blob goes"
    );
    assert!(store.contains(good).unwrap());
    assert_eq!(store.counter(COUNTER_CORRUPT_FOUND).unwrap(), 1);
    assert!(matches!(store.verify(rotten), Err(StoreError::NotFound(_))));
}

#[test]
fn corrupt_file_is_detected_when_serving_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = bytes(100_000, 9);
    let cid = store.put_bytes(&data).unwrap();
    let ranges = bao::byte_range_to_chunks(0, 20_000);
    let good = store.read_ranges_vec(cid, &ranges).unwrap();
    assert!(bao::verify_range_response(cid.0, 100_000, &ranges, &good).is_ok());
    let path = store.data_path(cid.0);
    let mut on_disk = fs::read(&path).unwrap();
    on_disk[1000] ^= 0x80;
    fs::write(&path, &on_disk).unwrap();
    assert!(matches!(
        store.read_ranges_vec(cid, &ranges),
        Err(StoreError::Corrupt(..))
    ));
    assert!(!store.contains(cid).unwrap());
}

#[test]
fn pins_gc_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), 250_000).unwrap();
    let a = store.put_bytes(&bytes(100_000, 1)).unwrap();
    let b = store.put_bytes(&bytes(100_000, 2)).unwrap();
    let used = store.status().unwrap().bytes_used;
    assert!(used >= 200_000, "{used}");
    let quota = store.put_bytes(&bytes(100_000, 3));
    assert!(
        matches!(quota, Err(StoreError::QuotaExceeded { .. })),
        "{quota:?}"
    );
    assert_eq!(store.pin(a).unwrap(), 1);
    assert_eq!(store.pin(a).unwrap(), 2);
    let report = store.gc().unwrap();
    assert_eq!(report.removed, 1);
    assert!(store.contains(a).unwrap() && !store.contains(b).unwrap());
    store.put_bytes(&bytes(100_000, 3)).unwrap();
    store.unpin(a).unwrap();
    assert_eq!(
        store.gc().unwrap().removed,
        1,
        "the unpinned third blob goes; a is still pinned once"
    );
    store.unpin(a).unwrap();
    assert_eq!(store.gc().unwrap().removed, 1);
    assert_eq!(store.status().unwrap().bytes_used, 0);
    assert!(matches!(store.pin(b), Err(StoreError::NotFound(_))));
}

#[test]
fn open_removes_crash_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, lost) = {
        let store = open(&dir);
        let kept = store.put_bytes(&bytes(40_000, 1)).unwrap();
        let lost = store.put_bytes(&bytes(40_000, 2)).unwrap();
        // An indexed blob whose file went missing (disk loss).
        fs::remove_file(store.data_path(lost.0)).unwrap();
        (kept, lost)
    };
    // Leftovers a crash could leave: a temp file, and a renamed blob whose index commit never happened.
    fs::write(dir.path().join("tmp").join("123-0.data"), b"partial").unwrap();
    let orphan = Cid::of(b"orphan");
    let hex = orphan.0.to_hex();
    fs::create_dir_all(dir.path().join("blobs").join(&hex[..2])).unwrap();
    fs::write(
        dir.path().join("blobs").join(&hex[..2]).join(&hex),
        b"orphan",
    )
    .unwrap();
    let store = open(&dir);
    let report = store.recovery_report().clone();
    assert_eq!(report.temp_files_removed, 1);
    assert_eq!(report.orphan_files_removed, 1);
    assert_eq!(report.broken_entries_removed, 1);
    assert!(!store.contains(lost).unwrap());
    assert_eq!(store.get(kept).unwrap(), bytes(40_000, 1));
}

#[test]
fn verified_stream_from_a_peer_store() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(&a_dir), open(&b_dir));
    let data = bytes(500_000, 11);
    let cid = a.put_bytes(&data).unwrap();
    let response = a.read_ranges_vec(cid, &bao::all_chunks()).unwrap();
    let mut bad = response.clone();
    bad[400_000] ^= 1;
    assert!(b.put_from_response(cid, None, &bad[..]).is_err());
    assert!(b
        .put_from_response(cid, None, &response[..response.len() - 100])
        .is_err());
    assert!(b
        .put_from_response(cid, Some(499_999), &response[..])
        .is_err());
    assert!(!b.contains(cid).unwrap(), "nothing half-written");
    assert_eq!(
        b.put_from_response(cid, Some(500_000), &response[..])
            .unwrap(),
        500_000
    );
    assert_eq!(b.get(cid).unwrap(), data);
}

#[test]
fn written_file_is_renamed_in_and_a_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = bytes(100_000, 5);
    let tmp = dir.path().join("tmp").join("written");
    let mut writer = bao::OutboardWriter::new(Vec::new(), data.len() as u64);
    std::io::Write::write_all(&mut writer, &data).unwrap();
    let (written, hash, outboard) = writer.finish();
    fs::write(&tmp, &written).unwrap();
    assert!(matches!(
        store.put_written_file(&tmp, 99_999, hash, &outboard),
        Err(StoreError::Oversized { .. })
    ));
    assert!(store.list().unwrap().is_empty());
    let cid = store
        .put_written_file(&tmp, data.len() as u64, hash, &outboard)
        .unwrap();
    assert_eq!(cid, Cid::of(&data));
    assert!(!tmp.exists(), "renamed into the store");
    drop(store);
    let reopened = open(&dir);
    assert_eq!(reopened.get(cid).unwrap(), data);
    assert_eq!(fs::read(reopened.outboard_path(cid.0)).unwrap(), outboard);
}
