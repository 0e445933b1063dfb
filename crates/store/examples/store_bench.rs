//! Store throughput benchmark: ingest (hash, erasure-code, bao-hash pieces) and decode (read k pieces, rebuild, verify)
//! against plain BLAKE3 and plain reed-solomon-simd measured in the same run.
//!
//! Run: `cargo run --release -p commonweight-store --example store_bench -- [MIB]` (default 256 MiB payload).

use std::time::Instant;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use store::collection::{self, InputFile};
use store::erasure::{self, ErasureParams};
use store::{bao, CollectionKind, FileRole, LocalStore};
use types::limits::store::ERASURE_SHARD_BYTES_DEFAULT;
use types::Hash32;

const K: usize = 10;
const N: usize = 16;

fn gib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1u64 << 30) as f64
}

/// Best of `reps` runs, in seconds.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed().as_secs_f64());
        out = Some(value);
    }
    (best, out.expect("reps > 0"))
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("MIB is a number"))
        .unwrap_or(256);
    let shard = ERASURE_SHARD_BYTES_DEFAULT as usize;
    let bytes = mib << 20;
    let mut payload = vec![0u8; bytes];
    ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut payload);
    let params = ErasureParams::new(K as u16, N as u16, shard as u32).unwrap();
    let reps = 3;
    println!(
        "payload {mib} MiB, {K}-of-{N}, shard {} KiB, single thread, best of {reps}",
        shard >> 10
    );

    // References.
    let (t_blake3, _) = time(reps, || Hash32::of(&payload));
    let (t_rs_enc, _) = time(reps, || plain_rs_encode(&payload, shard));
    let recoveries = recovery_shards(&payload, shard);
    let (t_rs_dec, _) = time(reps, || plain_rs_decode(&payload, &recoveries, shard));
    drop(recoveries);

    // Ours, in memory: the file hash, the stripe encoder, and the bao outboard (CID) of every piece.
    let (t_ingest, pieces) = time(reps, || {
        let file_hash = Hash32::of(&payload);
        let mut pieces: Vec<Vec<u8>> = (0..N)
            .map(|_| Vec::with_capacity(bytes / K + shard))
            .collect();
        erasure::encode(params, &payload[..], bytes as u64, &mut pieces).unwrap();
        let cids: Vec<Hash32> = pieces.iter().map(|p| bao::outboard_of(p).0).collect();
        (file_hash, cids, pieces)
    });
    let (_, cids, pieces) = pieces;
    // Decode the worst case: the six originals 0..6 lost, so 6 of 10 shards per stripe are rebuilt. Every piece
    // read is hashed again (the paired check) and the output file is hashed against the manifest.
    let (t_decode, out) = time(reps, || {
        let mut readers: Vec<(usize, &[u8])> = (6..16).map(|i| (i, &pieces[i][..])).collect();
        for (i, p) in &readers {
            assert_eq!(Hash32::of(p), cids[*i]);
        }
        let mut out = Vec::with_capacity(bytes);
        erasure::decode(params, &mut readers, bytes as u64, &mut out).unwrap();
        assert_eq!(Hash32::of(&out), Hash32::of(&payload));
        out
    });
    assert!(out == payload, "decode is bit exact");

    // Ours, end to end on disk: publish into a LocalStore (fsync, redb) and decode back to a directory.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("payload.bin");
    std::fs::write(&input, &payload).unwrap();
    let files = [InputFile {
        path: input,
        name: "payload.bin".into(),
        role: FileRole::Raw,
    }];
    let mut run = 0;
    let (t_publish, manifest) = time(reps, || {
        run += 1;
        let store = LocalStore::open(dir.path().join(format!("store-{run}")), 1 << 40).unwrap();
        let m = collection::publish(&store, CollectionKind::Raw, "bench", &files, params).unwrap();
        for i in 0..6 {
            store.remove(m.erasure.pieces[i]).unwrap();
        }
        (m, store)
    });
    let (manifest, store) = manifest;
    let mut out_run = 0;
    let (t_decode_disk, _) = time(reps, || {
        out_run += 1;
        collection::decode_to_dir(
            &store,
            &manifest,
            &dir.path().join(format!("out-{out_run}")),
        )
        .unwrap();
    });

    let reference_ingest = t_blake3 + t_rs_enc;
    let reference_decode = t_rs_dec + t_blake3;
    println!(
        "reference  blake3 hash            {:6.2} GiB/s",
        gib_s(bytes, t_blake3)
    );
    println!(
        "reference  rs-simd encode 10/16   {:6.2} GiB/s",
        gib_s(bytes, t_rs_enc)
    );
    println!(
        "reference  rs-simd decode 6 lost  {:6.2} GiB/s",
        gib_s(bytes, t_rs_dec)
    );
    println!(
        "reference  blake3 + rs encode     {:6.2} GiB/s",
        gib_s(bytes, reference_ingest)
    );
    println!(
        "store      ingest in memory       {:6.2} GiB/s  ({:.2}x the time of blake3 + rs encode)",
        gib_s(bytes, t_ingest),
        t_ingest / reference_ingest
    );
    println!(
        "store      decode in memory       {:6.2} GiB/s  ({:.2}x the time of rs decode + blake3)",
        gib_s(bytes, t_decode),
        t_decode / reference_decode
    );
    println!(
        "store      publish to disk        {:6.2} GiB/s  ({:.2}x)",
        gib_s(bytes, t_publish),
        t_publish / reference_ingest
    );
    println!(
        "store      decode from disk       {:6.2} GiB/s  ({:.2}x)",
        gib_s(bytes, t_decode_disk),
        t_decode_disk / reference_decode
    );
}

fn plain_rs_encode(payload: &[u8], shard: usize) -> usize {
    let mut encoder = ReedSolomonEncoder::new(K, N - K, shard).unwrap();
    let mut produced = 0;
    for stripe in payload.chunks(K * shard) {
        if stripe.len() < K * shard {
            break; // whole stripes only: 256 KiB shards x 10 divide whole MiB payloads up to a last partial stripe
        }
        for original in stripe.chunks_exact(shard) {
            encoder.add_original_shard(original).unwrap();
        }
        produced += encoder.encode().unwrap().recovery_iter().count();
    }
    produced
}

/// Recovery shards of every whole stripe, made outside the timed region so the decode reference times decode alone.
fn recovery_shards(payload: &[u8], shard: usize) -> Vec<Vec<Vec<u8>>> {
    let mut encoder = ReedSolomonEncoder::new(K, N - K, shard).unwrap();
    payload
        .chunks_exact(K * shard)
        .map(|stripe| {
            for original in stripe.chunks_exact(shard) {
                encoder.add_original_shard(original).unwrap();
            }
            encoder
                .encode()
                .unwrap()
                .recovery_iter()
                .map(|r| r.to_vec())
                .collect()
        })
        .collect()
}

/// The six originals 0..6 of every stripe lost: rebuild them from originals 6..10 and the six recovery shards.
fn plain_rs_decode(payload: &[u8], recoveries: &[Vec<Vec<u8>>], shard: usize) -> usize {
    let mut decoder = ReedSolomonDecoder::new(K, N - K, shard).unwrap();
    let mut restored = 0;
    for (stripe, recovery) in payload.chunks_exact(K * shard).zip(recoveries) {
        for (i, original) in stripe.chunks_exact(shard).enumerate().skip(6) {
            decoder.add_original_shard(i, original).unwrap();
        }
        for (j, r) in recovery.iter().enumerate() {
            decoder.add_recovery_shard(j, r).unwrap();
        }
        restored += decoder.decode().unwrap().restored_original_iter().count();
    }
    restored
}
