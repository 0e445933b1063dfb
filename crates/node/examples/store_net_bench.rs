//! Time to fetch a collection over loopback libp2p (TCP) from 1 provider vs from 4 providers, in the same run.
//!
//! `cargo run --release -p commonweight-node --example store_net_bench -- [MIB]` (default 512: about a `base`
//! checkpoint of fp32 tensors; random bytes). The payload is coded 10-of-16. Phase 1: one node publishes and
//! holds all 16 pieces; a fresh node fetches by root CID. Phase 2: 4 storage nodes pull the pieces rendezvous
//! placement gives them (4 each), the publisher stops, and another fresh node fetches. Each fetch is timed from
//! the request to the decoded files on disk; the decode alone is then timed again on the fetched pieces.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use store::collection::{self, InputFile};
use store::erasure::ErasureParams;
use store::{Cid, CollectionKind, FileRole, Manifest};
use types::PeerId;

#[path = "../tests/common/store_peer.rs"]
mod store_peer;

use store_peer::{start_peer, wait_for_peers, Peer};

/// How long the benchmark waits for connections (it runs on loaded machines too).
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// Fetches `root` on a fresh node; returns (fetch + decode secs, decode-only secs, distinct providers).
async fn timed_fetch(bootstrap: &str, root: Cid, payload: &[u8]) -> (f64, f64, usize) {
    let fetcher = start_peer(Some(bootstrap)).await;
    wait_for_peers(&[&fetcher], 1, CONNECT_LIMIT).await;
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (manifest, report) = fetcher.node.get_collection(root, out.path()).await.unwrap();
    let total = started.elapsed().as_secs_f64();
    // Stopped nodes (the publisher, earlier fetchers) still have DHT records: their dials fail fast.
    assert!(report.failures.iter().all(|f| !f.bad_bytes));
    assert_eq!(
        std::fs::read(out.path().join("tensors.bin")).unwrap(),
        payload
    );
    let decode = decode_only(&fetcher, manifest).await;
    let providers: BTreeSet<PeerId> = report.fetched.iter().map(|(_, p)| *p).collect();
    fetcher.client.shutdown().await.unwrap();
    (total, decode, providers.len())
}

async fn decode_only(fetcher: &Peer, manifest: Manifest) -> f64 {
    let store = fetcher.node.store().clone();
    tokio::task::spawn_blocking(move || {
        let out = tempfile::tempdir().unwrap();
        let started = Instant::now();
        collection::decode_to_dir(&store, &manifest, out.path()).unwrap();
        started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("size in MiB"))
        .unwrap_or(512);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(mib));
}

async fn run(mib: usize) {
    let mut payload = vec![0u8; mib << 20];
    blake3::Hasher::new()
        .update(b"store_net_bench")
        .finalize_xof()
        .fill(&mut payload);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("tensors.bin"), &payload).unwrap();

    let publisher = start_peer(None).await;
    let mut storage = Vec::new();
    for _ in 0..4 {
        storage.push(start_peer(Some(&publisher.addr)).await);
    }
    let all: Vec<&Peer> = storage.iter().chain([&publisher]).collect();
    wait_for_peers(&all, 2, CONNECT_LIMIT).await;

    let files = [InputFile {
        path: work.path().join("tensors.bin"),
        name: "tensors.bin".into(),
        role: FileRole::TensorChunk,
    }];
    let params = ErasureParams::for_payload(10, 16, payload.len() as u64).unwrap();
    let store = publisher.node.store().clone();
    let started = Instant::now();
    let manifest = tokio::task::spawn_blocking(move || {
        collection::publish(&store, CollectionKind::Raw, "bench", &files, params).unwrap()
    })
    .await
    .unwrap();
    let root = manifest.cid();
    publisher.node.announce_all().await.unwrap();
    println!(
        "payload {mib} MiB, 10-of-16, pieces of {} bytes, published in {:.2} s",
        manifest.erasure.piece_bytes,
        started.elapsed().as_secs_f64()
    );

    let (one, one_decode, one_providers) = timed_fetch(&storage[0].addr, root, &payload).await;
    println!(
        "1 provider : fetch+verify+decode {one:.2} s ({:.1} MiB/s), decode alone {one_decode:.2} s, providers used {one_providers}",
        mib as f64 / one
    );

    let ids: Vec<PeerId> = storage.iter().map(|p| p.client.local_peer()).collect();
    for peer in &storage {
        peer.node.pull_assigned(root, &ids).await.unwrap();
    }
    publisher.client.shutdown().await.unwrap();
    let (four, four_decode, four_providers) = timed_fetch(&storage[0].addr, root, &payload).await;
    println!(
        "4 providers: fetch+verify+decode {four:.2} s ({:.1} MiB/s), decode alone {four_decode:.2} s, providers used {four_providers}",
        mib as f64 / four
    );
    println!("speed-up 4 vs 1 provider: {:.2}x", one / four);
}
