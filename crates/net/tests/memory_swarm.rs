//! Ten nodes in one process over libp2p's memory transport: discovery through one bootstrap node,
//! gossip to all, and a 64 MiB blob fetched from 3 providers while one of them leaves mid-transfer.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    memory_base, pseudo_random_bytes, publish_when_ready, start_node, wait_for_peers, TestNode,
};
use net::{MemoryBlobs, NetConfig};
use types::Hash32;

const NODES: usize = 10;
const TOPIC: &str = "test/memory-swarm";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_discover_gossip_and_fetch_a_blob() {
    let base = memory_base();
    let (gossip_tx, mut gossip_rx) = tokio::sync::mpsc::unbounded_channel();
    let boot = start_node(0, NetConfig::memory(base), gossip_tx.clone()).await;
    let mut nodes: Vec<TestNode> = vec![boot];
    for i in 1..NODES {
        let config = NetConfig {
            bootstrap: vec![nodes[0].addr.clone()],
            ..NetConfig::memory(base + i as u64)
        };
        nodes.push(start_node(i, config, gossip_tx.clone()).await);
    }

    // Discovery: everyone was told only about node 0, and finds all the others through the DHT.
    wait_for_peers(&nodes, NODES - 1, Duration::from_secs(60)).await;
    let all: BTreeSet<_> = nodes.iter().map(|n| n.client.local_peer()).collect();
    for node in &nodes {
        let mut seen: BTreeSet<_> = node
            .client
            .peers()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.peer)
            .collect();
        seen.insert(node.client.local_peer());
        assert_eq!(seen, all, "node {} does not see everyone", node.index);
    }

    // Gossip: one publish reaches the nine others, each exactly once.
    for node in &nodes {
        node.client.subscribe(TOPIC).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let author = &nodes[4];
    publish_when_ready(
        &author.client,
        TOPIC,
        b"hello, swarm".to_vec(),
        Duration::from_secs(10),
    )
    .await;
    let mut got = BTreeSet::new();
    while got.len() < NODES - 1 {
        let (index, message) = tokio::time::timeout(Duration::from_secs(20), gossip_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("gossip reached only {got:?}"))
            .unwrap();
        assert_eq!(message.data, b"hello, swarm");
        assert_eq!(message.source, author.client.local_peer());
        assert!(got.insert(index), "node {index} got the message twice");
    }
    assert!(!got.contains(&4));

    // Blob: 64 MiB held by nodes 1, 2, 3, announced in the DHT, fetched by node 9.
    let blob = pseudo_random_bytes(64 << 20, 7);
    let blobs = MemoryBlobs::default();
    let hash = blobs.insert(blob.clone());
    for node in &nodes[1..4] {
        node.client
            .set_blob_source(std::sync::Arc::new(blobs.clone()))
            .await
            .unwrap();
        node.client.start_providing(hash).await.unwrap();
    }
    let fetcher = &nodes[9];
    let providers = wait_for_providers(fetcher, hash, 3).await;
    let leaving = nodes[3].client.local_peer();
    assert!(providers.contains(&leaving));

    let mut receiver = fetcher.client.fetch_blob(hash, providers);
    let mut fetched = Vec::with_capacity(blob.len());
    let mut chunks = 0;
    while let Some(chunk) = receiver.next().await {
        let chunk = chunk.expect("fetch failed");
        assert_eq!(chunk.offset, fetched.len() as u64);
        fetched.extend_from_slice(&chunk.bytes);
        chunks += 1;
        if chunks == 8 {
            // A provider leaves mid-transfer: its chunks must be re-requested from the others.
            nodes[3].client.shutdown().await.unwrap();
        }
    }
    assert_eq!(fetched.len(), blob.len());
    assert_eq!(Hash32::of(&fetched), hash);
}

async fn wait_for_providers(node: &TestNode, hash: Hash32, want: usize) -> Vec<types::PeerId> {
    for _ in 0..50 {
        let providers = node.client.get_providers(hash).await.unwrap();
        if providers.len() >= want {
            return providers;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fewer than {want} providers found for {hash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_fails_cleanly_when_nobody_has_the_blob() {
    let base = memory_base() + 100;
    let (gossip_tx, _gossip_rx) = tokio::sync::mpsc::unbounded_channel();
    let a = start_node(0, NetConfig::memory(base), gossip_tx.clone()).await;
    let config = NetConfig {
        bootstrap: vec![a.addr.clone()],
        ..NetConfig::memory(base + 1)
    };
    let b = start_node(1, config, gossip_tx).await;
    wait_for_peers(
        &[
            a,
            TestNode {
                client: b.client.clone(),
                addr: b.addr.clone(),
                index: 1,
            },
        ],
        1,
        Duration::from_secs(20),
    )
    .await;
    let peers: Vec<_> = b
        .client
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.peer)
        .collect();
    let result = b
        .client
        .fetch_blob(Hash32::of(b"nobody has this"), peers)
        .collect()
        .await;
    assert_eq!(result, Err(net::FetchError::ProvidersExhausted));
    let result = b
        .client
        .fetch_blob(Hash32::of(b"x"), Vec::new())
        .collect()
        .await;
    assert_eq!(result, Err(net::FetchError::NoProviders));
}
