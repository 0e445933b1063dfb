//! The node shell: owns the tokio runtime, starts the network and the local control API, judges
//! the shell's gossip, and shuts everything down cleanly on Ctrl-C or SIGTERM.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use net::{Identity, NetClient, NetConfig, NetEvent, Verdict};
use tokio::sync::mpsc;
use types::limits::net as limits;

use crate::control;
use crate::dir_blobs::DirBlobs;
use crate::maintain::{Maintainer, MaintenanceReport};
use crate::storage::StoreNode;

/// The gossip topic the shell itself speaks (liveness and tests); roles add their own topics.
pub const SHELL_TOPIC: &str = "commonweight/shell/1";
/// The file in the data dir that names the control API's address (`127.0.0.1:PORT`).
pub const CONTROL_ADDR_FILE: &str = "control.addr";

#[derive(Debug, Clone)]
pub struct ShellConfig {
    pub data_dir: PathBuf,
    pub net: NetConfig,
    /// Serve and announce the pieces in `DATA_DIR/store` (the node then holds the store's lock while it runs),
    /// and run maintenance passes (scrub, repair, audit) over the collections it keeps.
    pub serve_store: bool,
    /// Collections to keep (with `serve_store`): the node fetches their manifests and holds its placement share.
    pub keep: Vec<store::Cid>,
    /// How often a maintenance pass runs (with `serve_store`).
    pub maintenance_interval_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] net::IdentityError),
    #[error("network: {0}")]
    Net(#[from] net::NetError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("store over the network: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("control API: {0}")]
    Control(std::io::Error),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
}

/// A gossip message the shell accepted, kept for the control API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceivedGossip {
    pub source: String,
    pub data_hex: String,
}

/// What the control API handlers share.
pub(crate) struct Shared {
    pub net: NetClient,
    pub blobs: DirBlobs,
    pub gossip: Mutex<VecDeque<ReceivedGossip>>,
    pub storage: Option<ServedStore>,
}

/// The store a `--serve-store` node serves, and what its last maintenance pass did.
#[derive(Clone)]
pub(crate) struct ServedStore {
    pub node: StoreNode,
    pub last_pass: Arc<Mutex<Option<MaintenanceReport>>>,
}

/// Runs the node until Ctrl-C or SIGTERM, on a runtime the shell owns.
pub fn run_blocking(config: ShellConfig) -> Result<(), ShellError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ShellError::Runtime)?;
    runtime.block_on(run(config, shutdown_signal()))
}

pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs the node until `shutdown` completes.
pub async fn run(
    config: ShellConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ShellError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| ShellError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let identity = Identity::load_or_create(dir)?;
    let blobs = DirBlobs::open(&dir.join("blobs")).map_err(|source| ShellError::DataDir {
        path: dir.join("blobs"),
        source,
    })?;
    let (client, events, event_loop) = net::new(&identity, config.net.clone())?;
    let net_task = tokio::spawn(event_loop.run());
    let mut storage = None;
    let mut maintenance = None;
    if config.serve_store {
        let store = Arc::new(store::LocalStore::open(
            dir.join("store"),
            types::limits::store::QUOTA_BYTES_DEFAULT,
        )?);
        let fallback: Arc<dyn net::BlobSource> = Arc::new(blobs.clone());
        let node = StoreNode::start(client.clone(), store, Some(fallback)).await?;
        println!("serving store {}", node.store().dir().display());
        let served = ServedStore {
            node,
            last_pass: Arc::default(),
        };
        maintenance = Some(tokio::spawn(maintenance_loop(
            served.clone(),
            config.keep.clone(),
            Duration::from_millis(config.maintenance_interval_ms.max(1)),
            identity.peer_id(),
        )));
        storage = Some(served);
    } else {
        client.set_blob_source(Arc::new(blobs.clone())).await?;
    }
    client.subscribe(SHELL_TOPIC).await?;
    let shared = Arc::new(Shared {
        net: client.clone(),
        blobs,
        gossip: Mutex::new(VecDeque::new()),
        storage,
    });
    let events_task = tokio::spawn(handle_events(shared.clone(), events));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(ShellError::Control)?;
    let control_addr = listener.local_addr().map_err(ShellError::Control)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control::serve(listener, shared.clone(), async move {
        let _ = stop_rx.await;
    }));
    // The address file appears only once everything is up: it is the readiness signal.
    write_atomic(
        &dir.join(CONTROL_ADDR_FILE),
        control_addr.to_string().as_bytes(),
    )
    .map_err(ShellError::Control)?;
    println!("peer id {}", identity.peer_id());
    println!("control api http://{control_addr}");
    for addr in client.listen_addrs().await? {
        println!("listening on {addr}");
    }

    shutdown.await;
    if let Some(task) = maintenance {
        task.abort();
    }
    let _ = std::fs::remove_file(dir.join(CONTROL_ADDR_FILE));
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = client.shutdown().await;
    let _ = net_task.await;
    events_task.abort();
    println!("stopped");
    Ok(())
}

/// Keeps the `keep` collections (retrying until their manifests arrive) and runs a maintenance pass every
/// `interval`, until the shell aborts it.
pub(crate) async fn maintenance_loop(
    served: ServedStore,
    mut keep: Vec<store::Cid>,
    interval: Duration,
    me: types::PeerId,
) {
    let maintainer = Arc::new(Mutex::new(Maintainer::default()));
    let started = Instant::now();
    let mut pass = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        let mut waiting = Vec::new();
        for root in keep.drain(..) {
            match served.node.keep(root).await {
                Ok(manifest) => println!("keeping {root} ({})", manifest.name),
                Err(e) => {
                    tracing::info!(%root, error = %e, "cannot keep the collection yet; retrying");
                    waiting.push(root);
                }
            }
        }
        keep = waiting;
        // The audit machine's randomness: fresh per pass and per node, never a global RNG inside it.
        let seed = pass_seed(me, pass);
        let now_ms = started.elapsed().as_millis() as u64;
        match served.node.maintain(&maintainer, now_ms, seed).await {
            Ok(report) => {
                let quiet = MaintenanceReport {
                    scrubbed: report.scrubbed,
                    audit_challenges: report.audit_challenges,
                    ..MaintenanceReport::default()
                };
                if report != quiet {
                    tracing::info!(?report, "maintenance pass");
                }
                *served.last_pass.lock().expect("lock") = Some(report);
            }
            Err(e) => tracing::warn!(error = %e, "maintenance pass failed"),
        }
        pass += 1;
    }
}

fn pass_seed(me: types::PeerId, pass: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&me.0);
    hasher.update(&pass.to_le_bytes());
    hasher.update(&nanos.to_le_bytes());
    u64::from_le_bytes(
        hasher.finalize().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

async fn handle_events(shared: Arc<Shared>, mut events: mpsc::Receiver<NetEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            NetEvent::Gossip(message) => {
                // The shell topic carries opaque bytes; net already bounded their size. Other
                // topics belong to roles the shell does not run: ignore without penalty.
                let verdict = if message.topic == SHELL_TOPIC {
                    Verdict::Accept
                } else {
                    Verdict::Ignore
                };
                if verdict == Verdict::Accept {
                    let mut kept = shared.gossip.lock().expect("lock");
                    if kept.len() >= limits::CONTROL_GOSSIP_KEPT_MAX {
                        kept.pop_front();
                    }
                    kept.push_back(ReceivedGossip {
                        source: message.source.to_string(),
                        data_hex: hex(&message.data),
                    });
                }
                let _ = shared.net.report_validation(message.id, verdict).await;
            }
            NetEvent::PeerConnected {
                peer,
                addr,
                relayed,
            } => {
                tracing::info!(%peer, %addr, relayed, "peer connected");
            }
            NetEvent::PeerDisconnected { peer } => tracing::info!(%peer, "peer disconnected"),
            other => tracing::debug!(?other, "network event"),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The network config of a `commonweight node` without flags: QUIC and TCP on all interfaces.
pub fn default_net_config() -> NetConfig {
    NetConfig::default()
}
