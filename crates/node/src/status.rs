//! The run node's control API (127.0.0.1 only): `GET /status` (JSON), `GET /metrics` (Prometheus text
//! format, prometheus-client), `GET /history` (settled rounds) and `GET /peers`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use types::PeerId;

use crate::persist::HistoryLine;
use crate::roles::{CoreStats, Roles};
use crate::runspec::Run;

/// What `GET /status` returns.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub peer_id: String,
    pub run_id: String,
    pub run_name: String,
    pub roles: Roles,
    /// The network addresses this node listens on (what other nodes bootstrap from).
    pub listen_addrs: Vec<String>,
    pub rounds_total: u64,
    /// The round being run (the number of settled rounds since genesis).
    pub round: u64,
    pub status: &'static str,
    /// train, commit, reveal, aggregate, finalize, wait, resync or sync.
    pub phase: &'static str,
    pub model_hash: String,
    pub members: usize,
    pub finished: bool,
    pub peers: usize,
    /// Application bytes sent: gossip published plus blob bytes served.
    pub bytes_out: u64,
    /// Application bytes received: gossip accepted plus blobs fetched.
    pub bytes_in: u64,
    /// Bytes of the update blobs this node produced (what it would send to one peer).
    pub update_bytes: u64,
    /// This node's mean inner loss in its last training round.
    pub train_loss: Option<f32>,
    /// Validation loss of the last settled model.
    pub val_loss: Option<f32>,
    /// Rounds whose aggregate included this node's update.
    pub contributions: u64,
    pub core: CoreStats,
    /// The round machine's own one-line summary (for debugging a stalled round).
    pub machine: String,
    #[serde(skip)]
    pub history: Vec<HistoryLine>,
    /// This node's ledger replica, when the run keeps a ledger and this node validates it.
    pub ledger: Option<LedgerView>,
}

/// What `/status` says about the node's ledger replica.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LedgerView {
    pub height: u64,
    pub state_root: String,
    pub total_minted: u64,
    /// Peer id (hex) → shares.
    pub balances: std::collections::BTreeMap<String, u64>,
}

impl NodeStatus {
    pub fn new(me: PeerId, run: &Run, roles: Roles) -> NodeStatus {
        NodeStatus {
            peer_id: me.to_string(),
            run_id: run.run_id.0.to_hex(),
            run_name: run.genesis.run_name.clone(),
            roles,
            listen_addrs: Vec::new(),
            rounds_total: run.spec.rounds,
            round: 0,
            status: "syncing",
            phase: "sync",
            model_hash: String::new(),
            members: 0,
            finished: false,
            peers: 0,
            bytes_out: 0,
            bytes_in: 0,
            update_bytes: 0,
            train_loss: None,
            val_loss: None,
            contributions: 0,
            core: CoreStats::default(),
            machine: String::new(),
            history: Vec::new(),
            ledger: None,
        }
    }
}

/// What the handlers share with the event loop.
pub struct RunShared {
    pub net: net::NetClient,
    pub status: Mutex<NodeStatus>,
    pub served: Arc<AtomicU64>,
    pub received: AtomicU64,
    pub published: AtomicU64,
}

pub(crate) async fn serve_run_control(
    listener: tokio::net::TcpListener,
    shared: Arc<RunShared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/history", get(history))
        .route("/metrics", get(metrics))
        .route("/peers", get(peers))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

async fn status(State(shared): State<Arc<RunShared>>) -> Json<NodeStatus> {
    Json(shared.status.lock().expect("lock").clone())
}

async fn history(State(shared): State<Arc<RunShared>>) -> Json<Vec<HistoryLine>> {
    Json(shared.status.lock().expect("lock").history.clone())
}

async fn peers(
    State(shared): State<Arc<RunShared>>,
) -> Result<Json<Vec<String>>, (StatusCode, String)> {
    let peers = shared
        .net
        .peers()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(
        peers.into_iter().map(|p| p.peer.to_string()).collect(),
    ))
}

/// Renders the status as Prometheus metrics (a fresh registry per scrape: the values live in the status).
pub fn render_metrics(status: &NodeStatus) -> String {
    let mut registry = Registry::with_prefix("commonweight");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let fgauge = |registry: &mut Registry, name: &str, help: &str, value: Option<f32>| {
        if let Some(value) = value {
            let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            g.set(f64::from(value));
            registry.register(name, help, g);
        }
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        registry.register(name, help, c);
    };
    gauge(
        &mut registry,
        "round",
        "The round being run",
        status.round as i64,
    );
    gauge(
        &mut registry,
        "peers",
        "Connected peers",
        status.peers as i64,
    );
    gauge(
        &mut registry,
        "members",
        "Members of the run",
        status.members as i64,
    );
    gauge(
        &mut registry,
        "synced",
        "1 when the node holds an agreed state",
        i64::from(status.status == "synced"),
    );
    fgauge(
        &mut registry,
        "train_loss",
        "Mean inner training loss of the last round trained",
        status.train_loss,
    );
    fgauge(
        &mut registry,
        "val_loss",
        "Validation loss of the last settled model",
        status.val_loss,
    );
    counter(
        &mut registry,
        "bytes_out",
        "Application bytes sent (gossip and blobs served)",
        status.bytes_out,
    );
    counter(
        &mut registry,
        "bytes_in",
        "Application bytes received (gossip and blobs fetched)",
        status.bytes_in,
    );
    counter(
        &mut registry,
        "rounds_settled",
        "Rounds settled by this node",
        status.core.rounds_settled,
    );
    counter(
        &mut registry,
        "contributions",
        "Rounds that included this node's update",
        status.contributions,
    );
    counter(
        &mut registry,
        "updates_accepted",
        "Updates that passed this node's gates",
        status.core.updates_accepted,
    );
    counter(
        &mut registry,
        "updates_rejected",
        "Updates that failed this node's gates",
        status.core.updates_rejected,
    );
    counter(
        &mut registry,
        "updates_scored",
        "Updates this verifier scored by their loss before and after",
        status.core.updates_scored,
    );
    counter(
        &mut registry,
        "updates_harmful",
        "Scored updates rejected by the harm test",
        status.core.updates_harmful,
    );
    counter(
        &mut registry,
        "updates_rating_excluded",
        "Updates left out because their trainer's rating is below the threshold",
        status.core.updates_rating_excluded,
    );
    counter(
        &mut registry,
        "snapshots_adopted",
        "Snapshots adopted to catch up",
        status.core.snapshots_adopted,
    );
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

async fn metrics(State(shared): State<Arc<RunShared>>) -> impl IntoResponse {
    let status = shared.status.lock().expect("lock").clone();
    let _ = Ordering::Relaxed;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render_metrics(&status),
    )
}
