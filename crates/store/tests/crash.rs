//! Crash test: a child process writes blobs in a loop and is SIGKILLed at random moments (25 trials). After each
//! kill the store is reopened: every acknowledged put is there and verifies, every indexed blob verifies (no partial
//! blob is ever served), and the files on disk are exactly the indexed ones.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::LocalStore;
use types::Hash32;

const TRIALS: u64 = 25;

#[test]
fn sigkill_during_writes_never_leaves_a_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut acknowledged: BTreeSet<Hash32> = BTreeSet::new();
    for trial in 0..TRIALS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-writer"))
            .arg(dir.path())
            .arg(trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            let line = line.unwrap();
            let (verb, hex) = line.split_once(' ').unwrap();
            let hash = Hash32::from_hex(hex).unwrap();
            match verb {
                "put" => {
                    acknowledged.insert(hash);
                }
                // A removal that started may or may not have finished: stop expecting the blob either way.
                "removing" | "removed" => {
                    acknowledged.remove(&hash);
                }
                other => panic!("unexpected line {other}"),
            }
        }
        check_store(dir.path(), &acknowledged, trial);
    }
}

fn check_store(dir: &std::path::Path, acknowledged: &BTreeSet<Hash32>, trial: u64) {
    let store = LocalStore::open(dir, 1 << 40).unwrap();
    eprintln!(
        "trial {trial}: {} blobs acknowledged, recovery {:?}",
        acknowledged.len(),
        store.recovery_report()
    );
    let indexed: BTreeSet<Hash32> = store.list().unwrap().into_iter().map(|b| b.cid.0).collect();
    for hash in acknowledged {
        assert!(
            indexed.contains(hash),
            "trial {trial}: acknowledged put {hash:?} lost"
        );
    }
    let mut used = 0;
    for info in store.list().unwrap() {
        let bytes = store
            .get(info.cid)
            .unwrap_or_else(|e| panic!("trial {trial}: indexed blob fails: {e}"));
        assert_eq!(bytes.len() as u64, info.size);
        used += info.size + store::bao::tree(info.size).outboard_size();
    }
    assert_eq!(
        store.status().unwrap().bytes_used,
        used,
        "trial {trial}: byte count agrees with the index"
    );
    assert_eq!(
        std::fs::read_dir(dir.join("tmp")).unwrap().count(),
        0,
        "trial {trial}: temp files cleaned"
    );
    let mut on_disk = BTreeSet::new();
    for shard in std::fs::read_dir(dir.join("blobs")).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            on_disk.insert(Hash32::from_hex(name.trim_end_matches(".obao")).unwrap());
        }
    }
    assert_eq!(on_disk, indexed, "trial {trial}: files and index agree");
}
