//! Helpers shared by the in-process network tests and benchmarks: start nodes, pump their events.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use net::{GossipMessage, Identity, NetClient, NetConfig, NetEvent, Verdict};
use tokio::sync::mpsc;

pub struct TestNode {
    pub client: NetClient,
    pub addr: String,
    pub index: usize,
}

/// A memory-transport port range unlikely to collide with another test binary in this process.
pub fn memory_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    1_000_000 + (u64::from(std::process::id()) % 10_000) * 10_000 + nanos % 5_000
}

/// Starts a node, waits for its first listen address, and pumps its events: gossip on any topic
/// is accepted and forwarded to `gossip` as (node index, message).
pub async fn start_node(
    index: usize,
    config: NetConfig,
    gossip: mpsc::UnboundedSender<(usize, GossipMessage)>,
) -> TestNode {
    let identity = Identity::generate();
    let (client, mut events, event_loop) = net::new(&identity, config).expect("start node");
    tokio::spawn(event_loop.run());
    let addr = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(NetEvent::Listening { addr })) => break addr,
            Ok(Some(_)) => continue,
            other => panic!("node {index} did not start listening: {other:?}"),
        }
    };
    let pump_client = client.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let NetEvent::Gossip(message) = event {
                let _ = pump_client
                    .report_validation(message.id.clone(), Verdict::Accept)
                    .await;
                let _ = gossip.send((index, message));
            }
        }
    });
    TestNode {
        client,
        addr,
        index,
    }
}

/// Waits until every node is connected to at least `want` peers.
pub async fn wait_for_peers(nodes: &[TestNode], want: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut counts = Vec::new();
        for node in nodes {
            counts.push(node.client.peers().await.map(|p| p.len()).unwrap_or(0));
        }
        if counts.iter().all(|&c| c >= want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peers per node after {timeout:?}: {counts:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes, retrying while gossipsub has no subscribed peers yet.
pub async fn publish_when_ready(client: &NetClient, topic: &str, data: Vec<u8>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match client.publish(topic, data.clone()).await {
            Ok(()) => return,
            Err(net::NetError::NoPeers) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
