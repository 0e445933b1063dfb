//! Blob throughput over 127.0.0.1 through the real `NetClient::fetch_blob` API, over libp2p QUIC
//! and TCP (noise + yamux), from 1 and from 3 provider nodes, against references measured in the
//! same run: a plain tokio TCP socket copy and a plain quinn stream copy of the same bytes.
//!
//! Run: `cargo run --release -p commonweight-net --example blob_bench -- [MIB] [REPS]`
//! (defaults: 512 MiB, 3 repetitions per case; the best and the median are printed).
//!
//! Every node runs in this process on one tokio runtime, as do both ends of each reference, so
//! sender and receiver share the machine's cores in every case. Each received chunk is compared
//! with the source bytes (a memcmp) in every case, references included. Timing starts on an
//! established connection and stops when the last byte has been received.

#[path = "../tests/common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pseudo_random_bytes, start_node, wait_for_peers};
use net::{MemoryBlobs, NetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use types::limits::net::BLOB_CHUNK_BYTES;
use types::Hash32;

const GIB: f64 = (1u64 << 30) as f64;
/// Write and read unit of the references: the blob chunk size, as the blob protocol uses.
const COPY_BYTES: usize = BLOB_CHUNK_BYTES as usize;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(512, |a| a.parse().expect("MIB"));
    let reps: usize = args.next().map_or(3, |a| a.parse().expect("REPS"));
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .expect("crypto provider");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "blob_bench: {mib} MiB, {reps} reps per case, tokio runtime with {threads} worker threads, \
         load average at start: {}",
        load_average()
    );
    let blob = Arc::new(pseudo_random_bytes(mib << 20, 3));
    let blobs = MemoryBlobs::default();
    let hash = blobs.insert(blob.to_vec());

    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let tcp_ref: Vec<f64> = (0..reps)
        .map(|_| runtime.block_on(tokio_tcp_copy(blob.clone())))
        .collect();
    rows.push(("reference: tokio TCP socket copy".into(), tcp_ref.clone()));
    let quinn_ref: Vec<f64> = (0..reps)
        .map(|_| runtime.block_on(quinn_copy(blob.clone())))
        .collect();
    rows.push(("reference: quinn stream copy".into(), quinn_ref.clone()));
    for (transport, listen) in [
        ("QUIC", "/ip4/127.0.0.1/udp/0/quic-v1"),
        ("TCP", "/ip4/127.0.0.1/tcp/0"),
    ] {
        for providers in [1, 3] {
            let runs = runtime.block_on(fetch_runs(
                listen,
                providers,
                &blobs,
                hash,
                blob.clone(),
                reps,
            ));
            rows.push((
                format!("net fetch_blob over libp2p {transport}, {providers} provider(s)"),
                runs,
            ));
        }
    }

    println!("load average at end: {}", load_average());
    println!(
        "{:<56} {:>9} {:>9} {:>11} {:>11}",
        "case", "best", "median", "best/TCP", "best/quinn"
    );
    let tcp_best = best(&tcp_ref);
    let quinn_best = best(&quinn_ref);
    for (name, runs) in &rows {
        println!(
            "{name:<56} {:>5.3} GiB/s {:>5.3} GiB/s {:>10.2}x {:>10.2}x   runs {}",
            best(runs),
            median(runs),
            best(runs) / tcp_best,
            best(runs) / quinn_best,
            runs.iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn best(runs: &[f64]) -> f64 {
    runs.iter().cloned().fold(0.0, f64::max)
}

fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted[sorted.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn gib_s(bytes: usize, since: Instant) -> f64 {
    bytes as f64 / GIB / since.elapsed().as_secs_f64()
}

/// Reads a stream to its end in `COPY_BYTES` reads, checking every byte against `blob`.
async fn read_and_check(mut stream: impl tokio::io::AsyncRead + Unpin, blob: &[u8]) -> usize {
    let mut buf = vec![0u8; COPY_BYTES];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        assert_eq!(&buf[..n], &blob[total..total + n], "corrupt copy");
        total += n;
    }
}

/// One plain TCP connection over loopback: write the blob, read and check it on the other end.
async fn tokio_tcp_copy(blob: Arc<Vec<u8>>) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut sender = tokio::net::TcpStream::connect(addr).await.unwrap();
    sender.set_nodelay(true).unwrap();
    let (receiver, _) = listener.accept().await.unwrap();
    let started = Instant::now();
    let check = blob.clone();
    let reader = tokio::spawn(async move { read_and_check(receiver, &check).await });
    for part in blob.chunks(COPY_BYTES) {
        sender.write_all(part).await.unwrap();
    }
    sender.shutdown().await.unwrap();
    let received = reader.await.unwrap();
    assert_eq!(received, blob.len());
    gib_s(received, started)
}

/// One plain quinn connection over loopback (default transport config, self-signed certificate):
/// one unidirectional stream carries the blob.
async fn quinn_copy(blob: Arc<Vec<u8>>) -> f64 {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.key_pair.serialize_der(),
    ));
    let server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);
    let server_addr = server.local_addr().unwrap();
    let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
    let connection = client
        .connect(server_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let server_side = accept.await.unwrap();
    let started = Instant::now();
    let check = blob.clone();
    let reader = tokio::spawn(async move {
        let stream = server_side.accept_uni().await.unwrap();
        read_and_check(stream, &check).await
    });
    let mut stream = connection.open_uni().await.unwrap();
    for part in blob.chunks(COPY_BYTES) {
        stream.write_all(part).await.unwrap();
    }
    stream.finish().unwrap();
    let received = reader.await.unwrap();
    assert_eq!(received, blob.len());
    let rate = gib_s(received, started);
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    rate
}

/// `reps` whole-blob fetches by one node from `provider_count` provider nodes, all listening on
/// `listen` only (so one transport is measured). Returns GiB/s per fetch.
async fn fetch_runs(
    listen: &str,
    provider_count: usize,
    blobs: &MemoryBlobs,
    hash: Hash32,
    blob: Arc<Vec<u8>>,
    reps: usize,
) -> Vec<f64> {
    let (gossip_tx, _gossip_rx) = tokio::sync::mpsc::unbounded_channel();
    let config = || NetConfig {
        listen: vec![listen.to_owned()],
        ..NetConfig::loopback()
    };
    let mut providers = Vec::new();
    for i in 0..provider_count {
        let node = start_node(i, config(), gossip_tx.clone()).await;
        node.client
            .set_blob_source(Arc::new(blobs.clone()))
            .await
            .unwrap();
        providers.push(node);
    }
    let fetcher = start_node(provider_count, config(), gossip_tx).await;
    for p in &providers {
        fetcher.client.dial(&p.addr).await.unwrap();
    }
    wait_for_peers(
        std::slice::from_ref(&fetcher),
        provider_count,
        Duration::from_secs(30),
    )
    .await;
    let ids: Vec<_> = providers.iter().map(|p| p.client.local_peer()).collect();
    let mut runs = Vec::new();
    for _ in 0..reps {
        let started = Instant::now();
        let mut receiver = fetcher.client.fetch_blob(hash, ids.clone());
        let mut total = 0usize;
        while let Some(chunk) = receiver.next().await {
            let chunk = chunk.expect("fetch failed");
            let offset = chunk.offset as usize;
            assert_eq!(offset, total, "chunks out of order");
            assert_eq!(
                &chunk.bytes[..],
                &blob[offset..offset + chunk.bytes.len()],
                "corrupt chunk"
            );
            total += chunk.bytes.len();
        }
        assert_eq!(total, blob.len());
        runs.push(gib_s(total, started));
    }
    for node in providers.iter().chain([&fetcher]) {
        node.client.shutdown().await.unwrap();
    }
    runs
}
