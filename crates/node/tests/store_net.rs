//! The store over real libp2p on 127.0.0.1: a collection coded 10-of-16 and placed by rendezvous hashing on 8
//! storage nodes is fetched by fresh nodes that know only a bootstrap address, with a corrupt piece on one provider
//! and with 3 storage nodes (6 pieces) gone, and always decodes bit for bit; an audit over the network bans the
//! provider of the corrupt piece; the corrupt holder repairs its copy, and the nodes left rebuild the lost pieces.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use node::maintain::Maintainer;
use node::storage::audit_tick;
use store::audit::{AuditInput, AuditMachine};
use store::collection::{self, InputFile};
use store::erasure::ErasureParams;
use store::fetch::ProviderLookup;
use store::{Cid, CollectionKind, FileRole};
use types::PeerId;

mod common;

use common::store_peer::{start_peer, wait_for_peers, Peer};

/// How long the test waits for connections.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

fn random_bytes(len: usize, seed: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn read_file(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_survives_lost_and_corrupt_providers_over_libp2p() {
    let boot = start_peer(None).await;
    let mut storage = vec![boot];
    for _ in 1..8 {
        storage.push(start_peer(Some(&storage[0].addr)).await);
    }
    let publisher = start_peer(Some(&storage[0].addr)).await;
    let all: Vec<&Peer> = storage.iter().chain([&publisher]).collect();
    wait_for_peers(&all, 3, CONNECT_LIMIT).await;

    // Publish 10-of-16 on the publisher; storage nodes pull what rendezvous placement gives them.
    let payload = random_bytes(3 * 1024 * 1024 + 12_345, b"store_net payload");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("blob.bin"), &payload).unwrap();
    let files = [InputFile {
        path: work.path().join("blob.bin"),
        name: "blob.bin".into(),
        role: FileRole::Raw,
    }];
    let params = ErasureParams::for_payload(10, 16, payload.len() as u64).unwrap();
    let publish_store = publisher.node.store().clone();
    let manifest = tokio::task::spawn_blocking(move || {
        collection::publish(&publish_store, CollectionKind::Raw, "blob", &files, params)
    })
    .await
    .unwrap()
    .unwrap();
    let root = manifest.cid();
    // The manifest and 16 pieces at least.
    assert!(publisher.node.announce_all().await.unwrap() >= 17);

    let storage_ids: Vec<PeerId> = storage.iter().map(Peer::id).collect();
    let mut holder = vec![None; 16];
    for (i, peer) in storage.iter().enumerate() {
        let held = peer.node.pull_assigned(root, &storage_ids).await.unwrap();
        assert_eq!(held.len(), 2, "storage node {i} holds {held:?}");
        for index in held {
            assert!(
                holder[index].replace(i).is_none(),
                "piece {index} placed twice"
            );
        }
    }
    let holder: Vec<usize> = holder.into_iter().map(Option::unwrap).collect();
    publisher.client.shutdown().await.unwrap();

    // A fresh node that knows only the bootstrap address fetches from many providers in parallel.
    let fetcher = start_peer(Some(&storage[0].addr)).await;
    wait_for_peers(&[&fetcher], 1, CONNECT_LIMIT).await;
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (got, report) = fetcher.node.get_collection(root, out.path()).await.unwrap();
    eprintln!(
        "fetched {} pieces from {:?} in {:?}",
        report.fetched.len(),
        report
            .fetched
            .iter()
            .map(|(_, p)| p.to_string()[..8].to_string())
            .collect::<BTreeSet<_>>(),
        started.elapsed()
    );
    assert_eq!(got, manifest);
    assert_eq!(read_file(out.path(), "blob.bin"), payload);
    let providers: BTreeSet<PeerId> = report.fetched.iter().map(|(_, p)| *p).collect();
    assert!(providers.len() >= 4, "fetched from only {providers:?}");
    fetcher.client.shutdown().await.unwrap();

    // Flip one byte of piece `bad_index` on its (non-bootstrap) holder: the fetch detects it and decodes anyway.
    let bad_index = (0..10).find(|&i| holder[i] != 0).unwrap();
    let bad_holder = holder[bad_index];
    let bad_piece = manifest.erasure.pieces[bad_index];
    let path = storage[bad_holder].node.store().data_path(bad_piece.0);
    let mut bytes = std::fs::read(&path).unwrap();
    // One flipped byte per 8 KiB, so any challenged 16 KiB group of it fails too.
    for at in (1000..bytes.len()).step_by(8192) {
        bytes[at] ^= 0x40;
    }
    std::fs::write(&path, &bytes).unwrap();
    let fetcher = start_peer(Some(&storage[0].addr)).await;
    wait_for_peers(&[&fetcher], 1, CONNECT_LIMIT).await;
    let out = tempfile::tempdir().unwrap();
    let (_, report) = fetcher.node.get_collection(root, out.path()).await.unwrap();
    assert_eq!(read_file(out.path(), "blob.bin"), payload);
    assert!(
        report.failures.iter().any(|f| f.bad_bytes
            && f.peer == storage[bad_holder].id()
            && f.piece_index == Some(bad_index)),
        "corruption not detected: {:?}",
        report.failures
    );
    assert!(!report.fetched.iter().any(|(i, _)| *i == bad_index));
    fetcher.client.shutdown().await.unwrap();

    // Audit every placed copy (but its own) from storage node 0: the corrupt holder fails its bao proof, is banned,
    // and lookups stop naming it.
    let lookup = storage[0].node.lookup().clone();
    let audit_store = storage[0].node.store().clone();
    let tracked: Vec<(Cid, PeerId)> = (0..16)
        .filter(|i| holder[*i] != 0)
        .map(|i| (manifest.erasure.pieces[i], storage[holder[i]].id()))
        .collect();
    let piece_bytes = manifest.erasure.piece_bytes;
    let (machine, listed) = tokio::task::spawn_blocking(move || {
        let mut machine = AuditMachine::new();
        for (piece, provider) in tracked {
            machine.handle(AuditInput::Track {
                piece,
                size: piece_bytes,
                provider,
            });
        }
        audit_tick(&mut machine, &lookup, &audit_store, 0, 7).unwrap();
        let listed: Vec<PeerId> = lookup
            .providers(bad_piece)
            .iter()
            .map(|p| p.peer())
            .collect();
        (machine, listed)
    })
    .await
    .unwrap();
    let counters = machine.counters();
    assert!(machine.is_banned(&storage[bad_holder].id()));
    assert_eq!((counters.bad_proofs, counters.banned), (1, 1));
    assert!(counters.passed >= 12, "{counters:?}");
    assert!(!listed.contains(&storage[bad_holder].id()));
    let store0 = storage[0].node.store();
    assert_eq!(
        store0.counter(store::local::COUNTER_AUDIT_BANNED).unwrap(),
        1
    );

    // The corrupt holder's own maintenance pass finds the bad copy (scrub), drops it, and rebuilds it from k pieces
    // held by others: the bad copy is repaired.
    let maintainer = Arc::new(Mutex::new(Maintainer::default()));
    let report = storage[bad_holder]
        .node
        .maintain(&maintainer, 0, 1)
        .await
        .unwrap();
    assert_eq!(report.corrupt, 1, "{report:?}");
    assert_eq!(report.rebuilt, 1, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    let repaired = storage[bad_holder].node.store().clone();
    assert!(repaired.contains(bad_piece).unwrap());
    repaired.verify(bad_piece).unwrap();
    assert_eq!(
        repaired
            .counter(store::local::COUNTER_REPAIR_SUCCEEDED)
            .unwrap(),
        1
    );

    // Stop three storage nodes (the corrupt one among them): 6 of 16 pieces gone, 10 left, still decodes.
    let mut stopped = vec![bad_holder];
    stopped.extend((1..8).filter(|i| *i != bad_holder).take(2));
    for &i in &stopped {
        storage[i].client.shutdown().await.unwrap();
    }
    let stopped_ids: BTreeSet<PeerId> = stopped.iter().map(|&i| storage[i].id()).collect();
    let fetcher = start_peer(Some(&storage[0].addr)).await;
    wait_for_peers(&[&fetcher], 1, CONNECT_LIMIT).await;
    let out = tempfile::tempdir().unwrap();
    let (_, report) = fetcher.node.get_collection(root, out.path()).await.unwrap();
    assert_eq!(read_file(out.path(), "blob.bin"), payload);
    assert_eq!(report.fetched.len(), 10);
    assert!(report.fetched.iter().all(|(_, p)| !stopped_ids.contains(p)));
    let lost: BTreeSet<usize> = (0..16).filter(|i| stopped.contains(&holder[*i])).collect();
    assert_eq!(lost.len(), 6);
    assert!(report.fetched.iter().all(|(i, _)| !lost.contains(i)));

    // The five nodes left run maintenance passes: placement over the live storage peers moves the 6 lost pieces
    // onto them, and they rebuild them from the 10 left, so every piece has a live holder again.
    let live: Vec<usize> = (0..8).filter(|i| !stopped.contains(i)).collect();
    let mut rebuilt = 0;
    for pass in 0..2u64 {
        for &i in &live {
            let maintainer = Arc::new(Mutex::new(Maintainer::default()));
            let report = storage[i]
                .node
                .maintain(&maintainer, 0, pass)
                .await
                .unwrap();
            assert_eq!(report.failed, 0, "node {i} pass {pass}: {report:?}");
            rebuilt += report.rebuilt + report.refetched;
        }
    }
    let mut held = BTreeSet::new();
    for &i in &live {
        let view = node::maintain::store_view(storage[i].node.store()).unwrap();
        held.extend(view.collections.iter().flat_map(|c| c.held.iter().copied()));
    }
    assert_eq!(
        held,
        (0..16).collect::<BTreeSet<usize>>(),
        "after {rebuilt} repairs"
    );
    assert!(rebuilt >= 6, "only {rebuilt} pieces repaired");
}
