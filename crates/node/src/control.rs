//! The local HTTP control API (127.0.0.1 only): status, peers, shell gossip, and blob put/fetch.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use types::limits::net as limits;
use types::Hash32;

use crate::shell::{ReceivedGossip, Shared, SHELL_TOPIC};

type Reply<T> = Result<Json<T>, (StatusCode, String)>;

#[derive(Serialize)]
pub struct Status {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
}

/// One row of `GET /peers` (the `commonweight peers` table).
#[derive(Serialize)]
pub struct PeerRow {
    pub peer: String,
    pub addr: String,
    pub relayed: bool,
    pub rtt_ms: Option<f64>,
}

#[derive(Serialize)]
pub struct Fetched {
    pub hash: String,
    pub bytes: u64,
    pub providers: usize,
    pub secs: f64,
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/gossip", get(gossip_received).post(gossip_publish))
        .route("/blobs", post(blob_put))
        .route("/fetch/{hash}", post(blob_fetch))
        .route("/store", get(store_view))
        .layer(DefaultBodyLimit::max(limits::CONTROL_BODY_BYTES_MAX))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

fn unavailable(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn status(State(shared): State<Arc<Shared>>) -> Reply<Status> {
    let listen_addrs = shared.net.listen_addrs().await.map_err(unavailable)?;
    Ok(Json(Status {
        peer_id: shared.net.local_peer().to_string(),
        listen_addrs,
    }))
}

/// `GET /store`: what the served store holds, its counters, and the last maintenance pass (404 without
/// `--serve-store`).
async fn store_view(State(shared): State<Arc<Shared>>) -> Reply<crate::maintain::StoreView> {
    let Some(storage) = shared.storage.clone() else {
        return Err((
            StatusCode::NOT_FOUND,
            "this node serves no store (start it with --serve-store)".into(),
        ));
    };
    let store = storage.node.store().clone();
    let view = tokio::task::spawn_blocking(move || crate::maintain::store_view(&store))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    let last_pass = storage.last_pass.lock().expect("lock").clone();
    Ok(Json(crate::maintain::StoreView { last_pass, ..view }))
}

async fn peers(State(shared): State<Arc<Shared>>) -> Reply<Vec<PeerRow>> {
    let peers = shared.net.peers().await.map_err(unavailable)?;
    let rows = peers
        .into_iter()
        .map(|p| PeerRow {
            peer: p.peer.to_string(),
            addr: p.addr,
            relayed: p.relayed,
            rtt_ms: p.rtt_ms,
        })
        .collect();
    Ok(Json(rows))
}

async fn gossip_received(State(shared): State<Arc<Shared>>) -> Json<Vec<ReceivedGossip>> {
    Json(
        shared
            .gossip
            .lock()
            .expect("lock")
            .iter()
            .cloned()
            .collect(),
    )
}

async fn gossip_publish(State(shared): State<Arc<Shared>>, body: Bytes) -> Reply<()> {
    shared
        .net
        .publish(SHELL_TOPIC, body.to_vec())
        .await
        .map_err(unavailable)?;
    Ok(Json(()))
}

async fn blob_put(State(shared): State<Arc<Shared>>, body: Bytes) -> Reply<String> {
    let blobs = shared.blobs.clone();
    let hash = tokio::task::spawn_blocking(move || blobs.put(&body))
        .await
        .map_err(unavailable)?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    shared
        .net
        .start_providing(hash)
        .await
        .map_err(unavailable)?;
    Ok(Json(hash.to_hex()))
}

/// Fetches a blob from its DHT providers into this node's blobs, checking its hash.
async fn blob_fetch(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> Reply<Fetched> {
    let hash = Hash32::from_hex(&hash).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let started = Instant::now();
    let local = shared.net.local_peer();
    let mut providers = shared.net.get_providers(hash).await.map_err(unavailable)?;
    providers.retain(|p| *p != local);
    if providers.is_empty() {
        return Err((StatusCode::NOT_FOUND, format!("no providers for {hash}")));
    }
    let provider_count = providers.len();
    let internal = |e: std::io::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let (tmp, mut file) = shared.blobs.partial(&hash).map_err(internal)?;
    let mut hasher = blake3::Hasher::new();
    let mut receiver = shared.net.fetch_blob(hash, providers);
    let mut bytes = 0u64;
    while let Some(chunk) = receiver.next().await {
        let chunk = chunk.map_err(unavailable)?;
        hasher.update(&chunk.bytes);
        file.write_all(&chunk.bytes).map_err(internal)?;
        bytes += chunk.bytes.len() as u64;
    }
    if Hash32(*hasher.finalize().as_bytes()) != hash {
        let _ = std::fs::remove_file(&tmp);
        return Err((
            StatusCode::BAD_GATEWAY,
            format!("providers sent bytes that do not hash to {hash}"),
        ));
    }
    file.sync_all().map_err(internal)?;
    shared.blobs.commit(&tmp, &hash).map_err(internal)?;
    shared
        .net
        .start_providing(hash)
        .await
        .map_err(unavailable)?;
    Ok(Json(Fetched {
        hash: hash.to_hex(),
        bytes,
        providers: provider_count,
        secs: started.elapsed().as_secs_f64(),
    }))
}
