//! Gossip delivery latency across many in-process nodes, against the same measurement over two
//! nodes (one hop) in the same run.
//!
//! Run: `cargo run --release -p commonweight-net --example gossip_bench -- [NODES] [MESSAGES] [tcp|memory] [INTERVAL_MS]`
//! (defaults: 50 nodes, 200 messages, tcp, 50 ms between publishes).
//!
//! Nodes join as `commonweight node` does: every node but the first is given only the first
//! node's address as bootstrap and finds the others through Kademlia (identify feeds the DHT, and
//! nodes dial the peers it finds, up to `PEERS_DIAL_TARGET`). `tcp` is real libp2p TCP (noise +
//! yamux) over 127.0.0.1; `memory` is libp2p's in-process memory transport (same noise + yamux).
//! All nodes subscribe to one topic; messages are published one every `INTERVAL_MS` by authors
//! drawn from a seeded generator. Every node's app validates (Accept) each message through the
//! real `report_validation` path, so a hop includes the app's verdict, as in the node.
//! Latency is from just before `publish` to the moment the receiving node's app gets the
//! `NetEvent::Gossip`. Deliveries missing `DRAIN_S` after the last publish count as lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use net::{Identity, NetClient, NetConfig, NetEvent, Verdict};
use tokio::sync::mpsc;

const TOPIC: &str = "bench/latency";
/// Payload bytes per message (a message number, then padding).
const PAYLOAD_BYTES: usize = 1024;
/// How long deliveries are awaited after the last publish.
const DRAIN_S: u64 = 10;
/// How long the mesh gets to form after everyone subscribed.
const MESH_SETTLE_S: u64 = 5;

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(50, |a| a.parse().expect("NODES"));
    let messages: usize = args.next().map_or(200, |a| a.parse().expect("MESSAGES"));
    let transport = args.next().unwrap_or_else(|| "tcp".into());
    let interval_ms: u64 = args.next().map_or(50, |a| a.parse().expect("INTERVAL_MS"));
    assert!(
        transport == "tcp" || transport == "memory",
        "transport: tcp or memory"
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "gossip_bench: {nodes} nodes over {transport}, {messages} messages of {PAYLOAD_BYTES} B, \
         one every {interval_ms} ms, {threads} tokio worker threads, load average at start: {}",
        load_average()
    );
    let one_hop = runtime.block_on(run(2, messages, &transport, interval_ms, 1));
    one_hop.print("reference: 2 nodes (one hop)");
    let many = runtime.block_on(run(nodes, messages, &transport, interval_ms, 2));
    many.print(&format!("{nodes} nodes"));
    println!(
        "ratio {nodes} nodes / one hop: p50 {:.2}x, p99 {:.2}x",
        many.percentile(0.50) / one_hop.percentile(0.50),
        many.percentile(0.99) / one_hop.percentile(0.99)
    );
    println!("load average at end: {}", load_average());
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Outcome {
    /// Delivery latencies in ms, sorted.
    latencies_ms: Vec<f64>,
    /// CPU cores busy (CPU seconds per wall second) while idle after joining, and while publishing.
    idle_cores: f64,
    publish_cores: f64,
    expected: usize,
    join_s: f64,
    peers_min: usize,
    peers_max: usize,
}

impl Outcome {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        self.latencies_ms[((self.latencies_ms.len() - 1) as f64 * p).round() as usize]
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: joined in {:.1} s (peers per node {}..{}); delivered {} of {} ({:.4}); \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             CPU cores busy: {:.2} idle (mesh settling), {:.2} while publishing",
            self.join_s,
            self.peers_min,
            self.peers_max,
            self.latencies_ms.len(),
            self.expected,
            self.latencies_ms.len() as f64 / self.expected as f64,
            self.percentile(0.50),
            self.percentile(0.99),
            self.latencies_ms.last().copied().unwrap_or(f64::NAN),
            self.idle_cores,
            self.publish_cores
        );
    }
}

/// A delivery: (receiving node, message number, when the app got it).
type Delivery = (usize, u64, Instant);

/// Starts a node whose app accepts every gossip message and records when it arrived.
async fn start(
    index: usize,
    config: NetConfig,
    deliveries: mpsc::UnboundedSender<Delivery>,
) -> (NetClient, String) {
    let (client, mut events, event_loop) = net::new(&Identity::generate(), config).unwrap();
    tokio::spawn(event_loop.run());
    let addr = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(NetEvent::Listening { addr })) => break addr,
            Ok(Some(_)) => continue,
            other => panic!("node {index} did not start listening: {other:?}"),
        }
    };
    let pump = client.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let NetEvent::Gossip(message) = event else {
                continue;
            };
            let at = Instant::now();
            let _ = pump.report_validation(message.id, Verdict::Accept).await;
            if let Some(number) = message.data.get(..8) {
                let number = u64::from_le_bytes(number.try_into().unwrap());
                let _ = deliveries.send((index, number, at));
            }
        }
    });
    (client, addr)
}

fn config(transport: &str, memory_port: u64, bootstrap: Vec<String>) -> NetConfig {
    let base = match transport {
        "memory" => NetConfig::memory(memory_port),
        _ => NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            ..NetConfig::loopback()
        },
    };
    NetConfig { bootstrap, ..base }
}

/// Deterministic author choice (xorshift64).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn run(
    node_count: usize,
    messages: usize,
    transport: &str,
    interval_ms: u64,
    seed: u64,
) -> Outcome {
    let memory_base = 3_000_000 + u64::from(std::process::id() % 1000) * 1000 + seed * 100;
    let (deliveries_tx, mut deliveries_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut clients = Vec::new();
    let (first, first_addr) = start(
        0,
        config(transport, memory_base, vec![]),
        deliveries_tx.clone(),
    )
    .await;
    clients.push(first);
    for i in 1..node_count {
        let config = config(transport, memory_base + i as u64, vec![first_addr.clone()]);
        clients.push(start(i, config, deliveries_tx.clone()).await.0);
    }
    drop(deliveries_tx);
    let want_peers = (node_count - 1).min(8);
    let (peers_min, peers_max) = wait_for_peers(&clients, want_peers).await;
    let join_s = started.elapsed().as_secs_f64();
    for client in &clients {
        client.subscribe(TOPIC).await.unwrap();
    }
    let (idle_wall, idle_cpu) = (Instant::now(), cpu_s());
    tokio::time::sleep(Duration::from_secs(MESH_SETTLE_S)).await;
    let idle_cores = (cpu_s() - idle_cpu) / idle_wall.elapsed().as_secs_f64();
    let (publish_wall, publish_cpu) = (Instant::now(), cpu_s());

    let mut sent_at = Vec::with_capacity(messages);
    let mut authors = Vec::with_capacity(messages);
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    for number in 0..messages as u64 {
        ticker.tick().await;
        let author = (next_random(&mut rng) % node_count as u64) as usize;
        let mut payload = number.to_le_bytes().to_vec();
        payload.resize(PAYLOAD_BYTES, 0xab);
        sent_at.push(Instant::now());
        authors.push(author);
        clients[author].publish(TOPIC, payload).await.unwrap();
    }

    let expected = messages * (node_count - 1);
    let mut seen = HashSet::new();
    let mut latencies_ms = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(DRAIN_S);
    while seen.len() < expected {
        let Ok(Some((node, number, at))) =
            tokio::time::timeout_at(deadline, deliveries_rx.recv()).await
        else {
            break;
        };
        let Some(&sent) = sent_at.get(number as usize) else {
            continue;
        };
        // The author never receives its own message; a repeat would be a gossipsub bug.
        if authors[number as usize] == node || !seen.insert((node, number)) {
            continue;
        }
        latencies_ms.push(at.duration_since(sent).as_secs_f64() * 1e3);
    }
    let publish_cores = (cpu_s() - publish_cpu) / publish_wall.elapsed().as_secs_f64();
    for client in &clients {
        let _ = client.shutdown().await;
    }
    latencies_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Outcome {
        latencies_ms,
        idle_cores,
        publish_cores,
        expected,
        join_s,
        peers_min,
        peers_max,
    }
}

/// Waits until every node has at least `want` peers; returns (fewest, most) peers per node.
async fn wait_for_peers(clients: &[NetClient], want: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut counts = Vec::new();
        for client in clients {
            counts.push(client.peers().await.map(|p| p.len()).unwrap_or(0));
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        if min >= want {
            return (min, max);
        }
        assert!(
            Instant::now() < deadline,
            "peers per node after 120 s: {counts:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
