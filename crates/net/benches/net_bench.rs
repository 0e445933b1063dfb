//! Network benchmarks, each against a reference measured in the same run:
//! - blob fetch throughput over loopback QUIC and TCP (1 and 3 providers) against a raw TCP socket copy;
//! - gossip delivery latency p50/p99 across 50 in-process nodes against the same over 2 nodes (one hop).
//!
//! Run: `cargo bench -p commonweight-net --profile dev --bench net_bench` (deps at opt-level 2).
//! `NET_BENCH_BLOB_MIB` (default 256) sets the blob size.

#[path = "../tests/common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    memory_base, pseudo_random_bytes, publish_when_ready, start_node, wait_for_peers, TestNode,
};
use net::{MemoryBlobs, NetConfig};
use types::Hash32;

const GIB: f64 = (1u64 << 30) as f64;

fn main() {
    let blob_mib: usize = std::env::var("NET_BENCH_BLOB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw = raw_tcp_gib_s(blob_mib << 20);
    println!("reference raw TCP loopback copy: {raw:.3} GiB/s ({blob_mib} MiB)");
    let blob = pseudo_random_bytes(blob_mib << 20, 3);
    let mut transports = vec![("TCP", "/ip4/127.0.0.1/tcp/0")];
    if cfg!(feature = "quic") {
        transports.insert(0, ("QUIC", "/ip4/127.0.0.1/udp/0/quic-v1"));
    } else {
        println!("built without the quic feature: QUIC not measured");
    }
    for (name, listen) in transports {
        for providers in [1, 3] {
            let gib_s = runtime.block_on(blob_fetch_gib_s(listen, providers, &blob));
            println!(
                "blob fetch over {name}, {providers} provider(s): {gib_s:.3} GiB/s = {:.2} x raw TCP",
                gib_s / raw
            );
        }
    }
    let (one_p50, one_p99) = runtime.block_on(gossip_latency_ms(2, 40));
    println!(
        "reference gossip latency, 2 nodes (one hop): p50 {one_p50:.2} ms, p99 {one_p99:.2} ms"
    );
    let (p50, p99) = runtime.block_on(gossip_latency_ms(50, 40));
    println!(
        "gossip latency, 50 nodes: p50 {p50:.2} ms ({:.1} x one hop), p99 {p99:.2} ms ({:.1} x one hop)",
        p50 / one_p50,
        p99 / one_p99
    );
}

fn raw_tcp_gib_s(len: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    let buf = vec![7u8; 1 << 20];
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    while sent < len {
        stream.write_all(&buf).unwrap();
        sent += buf.len();
    }
    drop(stream);
    let received = reader.join().unwrap();
    assert_eq!(received, sent);
    sent as f64 / GIB / started.elapsed().as_secs_f64()
}

async fn blob_fetch_gib_s(listen: &str, provider_count: usize, blob: &[u8]) -> f64 {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let blobs = MemoryBlobs::default();
    let hash = blobs.insert(blob.to_vec());
    let mut providers = Vec::new();
    for i in 0..provider_count {
        let config = NetConfig {
            listen: vec![listen.to_owned()],
            ..NetConfig::loopback()
        };
        let node = start_node(i, config, tx.clone()).await;
        node.client
            .set_blob_source(Arc::new(blobs.clone()))
            .await
            .unwrap();
        providers.push(node);
    }
    let config = NetConfig {
        listen: vec![listen.to_owned()],
        ..NetConfig::loopback()
    };
    let fetcher = start_node(99, config, tx).await;
    for p in &providers {
        fetcher.client.dial(&p.addr).await.unwrap();
    }
    wait_for_peers(
        std::slice::from_ref(&fetcher),
        provider_count,
        Duration::from_secs(20),
    )
    .await;
    let ids: Vec<_> = providers.iter().map(|p| p.client.local_peer()).collect();
    let started = Instant::now();
    let fetched = fetcher
        .client
        .fetch_blob(hash, ids)
        .collect()
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(Hash32::of(&fetched), hash);
    for node in providers.iter().chain([&fetcher]) {
        node.client.shutdown().await.unwrap();
    }
    blob.len() as f64 / GIB / secs
}

/// Publishes `messages` from rotating authors; returns (p50, p99) delivery latency over all receivers.
async fn gossip_latency_ms(node_count: usize, messages: usize) -> (f64, f64) {
    let base = memory_base() + node_count as u64 * 1000;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut nodes: Vec<TestNode> = vec![start_node(0, NetConfig::memory(base), tx.clone()).await];
    for i in 1..node_count {
        let config = NetConfig {
            bootstrap: vec![nodes[0].addr.clone()],
            ..NetConfig::memory(base + i as u64)
        };
        nodes.push(start_node(i, config, tx.clone()).await);
    }
    let want_peers = (node_count - 1).min(8);
    wait_for_peers(&nodes, want_peers, Duration::from_secs(120)).await;
    for node in &nodes {
        node.client.subscribe("bench/latency").await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let epoch = Instant::now();
    let mut latencies = Vec::new();
    for m in 0..messages {
        let author = &nodes[m % node_count];
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        let mut payload = sent_ns.to_le_bytes().to_vec();
        payload.extend_from_slice(&(m as u64).to_le_bytes());
        publish_when_ready(
            &author.client,
            "bench/latency",
            payload,
            Duration::from_secs(10),
        )
        .await;
        // Collect this message's deliveries before the next, so latencies do not queue behind each other.
        let mut got = 0;
        while got < node_count - 1 {
            let Ok(Some((_, message))) =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
            else {
                panic!("message {m} reached only {got} of {} nodes", node_count - 1);
            };
            let sent = u64::from_le_bytes(message.data[..8].try_into().unwrap());
            let id = u64::from_le_bytes(message.data[8..16].try_into().unwrap());
            if id != m as u64 {
                continue;
            }
            latencies.push((epoch.elapsed().as_nanos() as u64 - sent) as f64 / 1e6);
            got += 1;
        }
    }
    for node in &nodes {
        node.client.shutdown().await.unwrap();
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    (pct(0.50), pct(0.99))
}
