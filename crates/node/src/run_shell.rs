//! `commonweight node --run`: the shell that runs the roles' core against real I/O. It owns tokio, the
//! network, the disk and the model; one event loop feeds the core a closed `roles::Input` and carries out its
//! `roles::Effect`s. Training, verification, aggregation and evaluation run on the blocking pool and come back
//! through a bounded queue, so the loop never waits on the model.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use net::{BlobSource, Identity, NetClient, NetConfig, NetEvent};
use round::{Boot, RoundMachine, Snapshot, Status};
use tokio::sync::mpsc;
use types::limits::node as limits;
use types::{Hash32, PeerId, RoundNumber};

use crate::copy_gate::CopyGate;
use crate::persist::{bytes_to_f32s, f32s_to_bytes, HistoryLine, RunDir, SnapshotRecord};
use crate::roles::{judge_gossip, Core, Effect, Input, Roles, UpdateScore};
use crate::runspec::Run;
use crate::spot_check::{KeptStart, SpotTarget};
use crate::status::{serve_run_control, NodeStatus, RunShared};
use crate::work::{LocalTrainer, Misbehaviour, Workload};

/// Which run a node takes part in.
#[derive(Debug, Clone)]
pub enum RunSource {
    /// A run file on disk.
    File(PathBuf),
    /// A run known only by its id: the node fetches the run file (and, if needed, the dataset) from the run's
    /// members (`run_fetch`) and keeps it at `run_fetch::run_file_path`.
    Fetch(types::RunId),
}

#[derive(Debug, Clone)]
pub struct RunNodeConfig {
    pub data_dir: PathBuf,
    pub run: RunSource,
    pub roles: Roles,
    pub net: NetConfig,
    /// libtorch intra-op threads for this node's training and evaluation.
    pub threads: usize,
    /// Wait (up to a limit) for this many connected peers before the first round.
    pub wait_peers: usize,
    /// Attack testing only: the trainer tampers with its updates.
    pub misbehave: Option<Misbehaviour>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunNodeError {
    #[error(transparent)]
    Spec(#[from] crate::runspec::RunSpecError),
    #[error(transparent)]
    Work(#[from] crate::work::WorkError),
    #[error(transparent)]
    Persist(#[from] crate::persist::PersistError),
    #[error(transparent)]
    Identity(#[from] net::IdentityError),
    #[error("identity key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("network: {0}")]
    Net(#[from] net::NetError),
    #[error("round machine: {0}")]
    Genesis(#[from] round::ConfigError),
    #[error("control API: {0}")]
    Control(std::io::Error),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("background task: {0}")]
    Join(String),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::embedded::EmbeddedError),
    #[error(transparent)]
    Fetch(#[from] crate::run_fetch::RunFetchError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Wall-clock milliseconds since the Unix epoch: the `now` the core gets.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the node until Ctrl-C or SIGTERM.
pub fn run_blocking(config: RunNodeConfig) -> Result<(), RunNodeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(RunNodeError::Runtime)?;
    runtime.block_on(run(config, crate::shell::shutdown_signal()))
}

/// Reads the node's signing key (the same Ed25519 key as its network identity).
fn signing_key(
    data_dir: &std::path::Path,
    identity: &Identity,
) -> Result<SigningKey, RunNodeError> {
    let path = data_dir.join("identity.key");
    let bytes = std::fs::read(&path).map_err(|e| RunNodeError::Key {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let secret: [u8; 32] = bytes
        .get(1..33)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| RunNodeError::Key {
            path: path.clone(),
            reason: "not 33 bytes".into(),
        })?;
    let key = SigningKey::from_bytes(&secret);
    if PeerId(key.verifying_key().to_bytes()) != identity.peer_id() {
        return Err(RunNodeError::Key {
            path,
            reason: "does not match the network identity".into(),
        });
    }
    Ok(key)
}

/// The peer id of the identity in `data_dir` (created if missing): what `run init` lists as a founder.
pub fn peer_id_of_data_dir(data_dir: &std::path::Path) -> Result<PeerId, RunNodeError> {
    std::fs::create_dir_all(data_dir).map_err(RunNodeError::Control)?;
    Ok(Identity::load_or_create(data_dir)?.peer_id())
}

/// What a node needs before it takes part: the run, its checked workload, its run dir, the served-bytes counter.
type Prepared = (Arc<Run>, Arc<Workload>, RunDir, Arc<AtomicU64>);

/// Loads (or fetches from peers) the run file, serves it and the node's store (blobs of the run as fallback),
/// finds (or fetches) the dataset, and opens the workload.
async fn prepare(config: &RunNodeConfig, net: &NetClient) -> Result<Prepared, RunNodeError> {
    let (run, run_bytes) = match &config.run {
        RunSource::File(path) => {
            let run = Run::load(path)?;
            let bytes = std::fs::read(path).map_err(|source| crate::runspec::RunSpecError::Io {
                path: path.clone(),
                source,
            })?;
            (run, bytes)
        }
        RunSource::Fetch(run_id) => {
            println!("fetching the run file of run {} from peers", run_id.0);
            let path = crate::run_fetch::run_file_path(&config.data_dir, run_id.0);
            let dataset_dir = path.with_file_name("dataset");
            let run = crate::run_fetch::fetch_run_file(net, *run_id, &dataset_dir).await?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(RunNodeError::Control)?;
            }
            // Kept with this node's dataset path, so a restart names the run by its id and finds the dataset.
            Run::write_spec(&run.spec, &path)?;
            let bytes = std::fs::read(&path).map_err(RunNodeError::Control)?;
            println!("run file verified: {}", path.display());
            (run, bytes)
        }
    };
    let dir = RunDir::open(&config.data_dir, run.run_id)?;
    let served = Arc::new(AtomicU64::new(0));
    let blobs = Arc::new(CountingBlobs {
        dir: dir.clone(),
        served: Arc::clone(&served),
    });
    let fallback = crate::run_fetch::RunFileBlobs::new(run.run_id, run_bytes, blobs);
    let store = store::LocalStore::open(
        config.data_dir.join("store"),
        types::limits::store::QUOTA_BYTES_DEFAULT,
    )?;
    let store_node =
        crate::storage::StoreNode::start(net.clone(), Arc::new(store), Some(Arc::new(fallback)))
            .await?;
    net.start_providing(crate::run_fetch::run_file_key(run.run_id))
        .await?;
    let dataset_dir = crate::run_fetch::resolve_dataset(&store_node, &run, &dir.root).await?;
    if config.roles.storage {
        // A storage node keeps the run's dataset collection (it published or fetched it, so its store registers
        // it): scrub, repair its placement share, audit the other keepers. The task ends with the runtime.
        tokio::spawn(crate::shell::maintenance_loop(
            crate::shell::ServedStore {
                node: store_node.clone(),
                last_pass: Arc::default(),
            },
            Vec::new(),
            std::time::Duration::from_millis(types::limits::store::STORE_MAINTENANCE_INTERVAL_MS),
            net.local_peer(),
        ));
    }
    let run = Arc::new(Run::from_spec_at(run.spec, dataset_dir)?);
    let work = {
        let run = Arc::clone(&run);
        tokio::task::spawn_blocking(move || Workload::open(&run))
            .await
            .map_err(|e| RunNodeError::Join(e.to_string()))??
    };
    Ok((run, Arc::new(work), dir, served))
}

/// Runs a future while answering the network's events (peers are counted, gossip is ignored), so the bounded
/// event channel never stalls the network before the node's event loop starts.
struct Draining<'a> {
    net: &'a NetClient,
    events: &'a mut mpsc::Receiver<NetEvent>,
    peers: &'a mut BTreeSet<PeerId>,
}

impl Draining<'_> {
    /// `None` if `shutdown` came first.
    async fn run<T>(
        &mut self,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        let mut open = true;
        loop {
            tokio::select! {
                _ = &mut *shutdown => return None,
                out = &mut work => return Some(out),
                event = self.events.recv(), if open => match event {
                    Some(NetEvent::PeerConnected { peer, .. }) => { self.peers.insert(peer); }
                    Some(NetEvent::PeerDisconnected { peer }) => { self.peers.remove(&peer); }
                    Some(NetEvent::Gossip(m)) => {
                        let _ = self.net.report_validation(m.id, net::Verdict::Ignore).await;
                    }
                    Some(_) => {}
                    None => open = false,
                },
            }
        }
    }
}

/// Serves the run's blobs from disk and counts the bytes it serves.
struct CountingBlobs {
    dir: RunDir,
    served: Arc<AtomicU64>,
}

impl BlobSource for CountingBlobs {
    fn blob_len(&self, hash: &Hash32) -> Option<u64> {
        std::fs::metadata(self.dir.blob_path(hash))
            .ok()
            .map(|m| m.len())
    }
    fn read(&self, hash: &Hash32, offset: u64, len: u32) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(self.dir.blob_path(hash)).ok()?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).ok()?;
        self.served.fetch_add(u64::from(len), Ordering::Relaxed);
        Some(buf)
    }
}

/// Results of background work, back on the event loop.
enum Done {
    Core(Input),
    Trained {
        input: Input,
        mean_loss: f32,
        /// The start state kept for spot checks (spot checks on).
        kept: Option<Arc<KeptStart>>,
    },
    Verified {
        input: Input,
        norm: Option<f64>,
    },
    Aggregated {
        round: RoundNumber,
        proposal_digest: Hash32,
        params: Arc<Vec<f32>>,
        outer: Arc<Vec<u8>>,
        mean: Option<Arc<Vec<f32>>>,
    },
    Snapshot {
        record: SnapshotRecord,
        params: Arc<Vec<f32>>,
    },
    SnapshotFailed,
    Evaluated {
        line: HistoryLine,
    },
}

struct Staged {
    proposal_digest: Hash32,
    params: Arc<Vec<f32>>,
    outer: Arc<Vec<u8>>,
    mean: Option<Arc<Vec<f32>>>,
}

/// What a verifier needs to score an update off the loop.
struct ScoreContext {
    theta: Arc<Vec<f32>>,
    reference: Option<Arc<Vec<f32>>>,
    seed: Hash32,
    base: Hash32,
    me: PeerId,
    data_ids: Vec<u32>,
}

/// One update a verifier checks: whose, which, and the gates' state it is checked against.
struct GateContext {
    round: RoundNumber,
    trainer: PeerId,
    cid: Hash32,
    median: Option<f64>,
    copy_gate: Arc<Mutex<CopyGate>>,
}

/// The verifier's gates: sanity (`Workload::check_update`), then copies and replays of earlier rounds' agreed
/// updates (`CopyGate`); an update that passes is kept for the copy gate until its round settles. Returns the
/// norm and the decoded update, or why it is rejected.
fn verifier_gates(
    work: &Workload,
    blob: &[u8],
    gate: &GateContext,
) -> Result<(f64, Vec<f32>), String> {
    let (norm, update) = work.check_update(blob, gate.median)?;
    // Sketch outside the lock: it reads the whole update.
    let seed = gate.copy_gate.lock().expect("lock").seed();
    let sketch = verify::similarity::sketch(&update, seed);
    let mut copy_gate = gate.copy_gate.lock().expect("lock");
    copy_gate
        .check(gate.round, gate.trainer, &gate.cid, &sketch)
        .map_err(|e| e.to_string())?;
    copy_gate.record(gate.round, gate.trainer, gate.cid, sketch);
    Ok((norm, update))
}

/// The verifier's gates, then its score when it holds the update's base model. Returns the norm and the score,
/// or why the update is rejected.
fn gate_and_score(
    work: &Workload,
    blob: &[u8],
    gate: &GateContext,
    scoring: ScoreContext,
) -> Result<(f64, Option<UpdateScore>), String> {
    let trainer = gate.trainer;
    let (norm, update) = verifier_gates(work, blob, gate)?;
    if Hash32::of_f32s(&scoring.theta) != scoring.base {
        return Ok((norm, None));
    }
    let score = work.score_update(
        &scoring.theta,
        &update,
        scoring.reference.as_deref().map(Vec::as_slice),
        scoring.seed,
        scoring.me,
        trainer,
        &scoring.data_ids,
    );
    match score {
        Ok(score) => Ok((norm, Some(score))),
        Err(e) => {
            // A scoring failure is this verifier's problem, not the trainer's: the gates' verdict stands.
            tracing::warn!(%e, %trainer, "scoring failed");
            Ok((norm, None))
        }
    }
}

struct NodeLoop {
    run: Arc<Run>,
    work: Arc<Workload>,
    dir: RunDir,
    net: NetClient,
    topic: String,
    core: Core,
    theta: Arc<Vec<f32>>,
    outer: Arc<Vec<u8>>,
    staged: Option<Staged>,
    staged_snapshot: Option<(SnapshotRecord, Arc<Vec<f32>>)>,
    fetching_snapshot: bool,
    trainer: Arc<Mutex<LocalTrainer>>,
    train_loss: BTreeMap<u64, f32>,
    norms: BTreeMap<(u64, PeerId), f64>,
    median_norm: Option<f64>,
    copy_gate: Arc<Mutex<CopyGate>>,
    /// The last settled round and its agreed mean update: the verifier's score reference for the next round.
    reference: Option<(u64, Arc<Vec<f32>>)>,
    wake_at: Option<u64>,
    retry: VecDeque<(Vec<u8>, u64)>,
    done_tx: mpsc::Sender<Done>,
    shared: Arc<RunShared>,
    blobs_by_round: BTreeMap<u64, Vec<Hash32>>,
    /// Model blobs on disk, oldest first (kept for peers that catch up).
    model_blobs: VecDeque<Hash32>,
    /// The base model hash of each recently aggregated round (to name its seed in the history).
    last_base: BTreeMap<u64, Hash32>,
    contributions: u64,
    /// Evaluations of settled rounds still running (their history lines are not written yet).
    evals_pending: u32,
    /// This node's ledger validator and verdict feed, when the run keeps a ledger.
    ledger: Option<(
        ledger::embedded::EmbeddedValidator,
        crate::ledger_feed::VerdictFeed,
    )>,
    ledger_dir: PathBuf,
    spot: SpotState,
}

/// The node's replay spot-check state (`spot_check`).
struct SpotState {
    /// This node's key as `verify` signs with it (records and fraud proofs).
    key: Arc<verify::NodeKey>,
    threads: usize,
    /// This node's start state of each recent round it trained, by round.
    kept: BTreeMap<u64, Arc<KeptStart>>,
    /// Updates this node verified that announced a replay record: (round, trainer) → what a check needs.
    targets: BTreeMap<(u64, PeerId), SpotTarget>,
    /// Checks this verifier is running.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl SpotState {
    fn keep(&mut self, round: u64, kept: Arc<KeptStart>) {
        self.kept.insert(round, kept);
        while self.kept.len() > limits::SPOT_CHECK_ROUNDS_KEPT {
            self.kept.pop_first();
        }
    }
}

pub async fn run(
    config: RunNodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunNodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(RunNodeError::Control)?;
    let identity = Identity::load_or_create(&config.data_dir)?;
    let key = signing_key(&config.data_dir, &identity)?;
    let verify_key = Arc::new(verify::NodeKey::from_secret(key.to_bytes()));
    let me = identity.peer_id();
    let (net, mut events, event_loop) = net::new(&identity, config.net.clone())?;
    let net_task = tokio::spawn(event_loop.run());
    tokio::pin!(shutdown);
    let mut peers: BTreeSet<PeerId> = BTreeSet::new();
    let mut draining = Draining {
        net: &net,
        events: &mut events,
        peers: &mut peers,
    };
    let started = draining.run(&mut shutdown, prepare(&config, &net)).await;
    let (run, work, dir, served) = match started {
        Some(Ok(started)) => started,
        stopped_or_failed => {
            let _ = net.shutdown().await;
            let _ = net_task.await;
            return match stopped_or_failed {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            };
        }
    };
    let topic = run.topic();
    net.subscribe(&topic).await?;

    let shared = Arc::new(RunShared {
        net: net.clone(),
        status: Mutex::new(NodeStatus::new(me, &run, config.roles)),
        served,
        received: AtomicU64::new(0),
        published: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(RunNodeError::Control)?;
    let control_addr = listener.local_addr().map_err(RunNodeError::Control)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_run_control(
        listener,
        Arc::clone(&shared),
        async move {
            let _ = stop_rx.await;
        },
    ));
    println!("peer id {me}");
    println!("run {} ({})", run.run_id.0.to_hex(), run.genesis.run_name);
    println!("control api http://{control_addr}");
    let listen_addrs = wait_listen_addrs(&net, !config.net.listen.is_empty()).await?;
    for addr in &listen_addrs {
        println!("listening on {addr}");
    }
    shared.status.lock().expect("lock").listen_addrs = listen_addrs;
    crate::shell::write_atomic(
        &config.data_dir.join(crate::shell::CONTROL_ADDR_FILE),
        control_addr.to_string().as_bytes(),
    )
    .map_err(RunNodeError::Control)?;

    // Give the mesh a moment to form, so the first round's messages reach everyone.
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(limits::NODE_START_TIMEOUT_MS / 2);
    while peers.len() < config.wait_peers && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(NetEvent::PeerConnected { peer, .. })) => {
                peers.insert(peer);
            }
            Ok(Some(NetEvent::Gossip(m))) => {
                let _ = net.report_validation(m.id, net::Verdict::Ignore).await;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // One gossip heartbeat or two for the mesh to graft.
    tokio::time::sleep(Duration::from_millis(
        2 * types::limits::net::GOSSIP_HEARTBEAT_MS,
    ))
    .await;

    let (boot, theta, outer) = match dir.load_state()? {
        Some((snapshot, params, outer)) => {
            println!(
                "restoring round {} model {}",
                snapshot.next_round.0, snapshot.model_hash
            );
            (Boot::Restore(snapshot), params, outer)
        }
        None if run.genesis.founders.contains(&me) => {
            let params = work.genesis_params().to_vec();
            let outer = work.initial_outer_state();
            let snapshot = Snapshot {
                next_round: RoundNumber(0),
                model_hash: run.genesis.genesis_model_hash,
                members: Arc::new(run.genesis.founders.clone()),
            };
            dir.save_state(run.run_id, &snapshot, &params, &outer)?;
            (Boot::Genesis, params, outer)
        }
        None => (
            Boot::Join,
            work.genesis_params().to_vec(),
            work.initial_outer_state(),
        ),
    };
    let restore_round = match &boot {
        Boot::Restore(s) => Some(s.next_round),
        _ => None,
    };
    let trainer = {
        let work = Arc::clone(&work);
        let theta = theta.clone();
        let threads = config.threads.max(1);
        let misbehave = config.misbehave;
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || -> Result<LocalTrainer, RunNodeError> {
            let mut trainer = work.new_trainer(&theta, threads)?;
            let mut feedback = work.new_feedback();
            if let Some(round) = restore_round {
                if let Some((state, fb)) = dir.load_inner(round, work.param_count()) {
                    trainer
                        .set_optimizer_state(&state)
                        .map_err(crate::work::WorkError::from)?;
                    feedback = fb;
                }
            }
            Ok(LocalTrainer {
                trainer,
                feedback,
                attacker: misbehave.map(crate::work::Attacker::new),
            })
        })
        .await
        .map_err(|e| RunNodeError::Join(e.to_string()))??
    };

    let ledger_dir = config.data_dir.join("ledger");
    let ledger = start_ledger(&run, &key, &ledger_dir)?;
    let (machine, actions) = RoundMachine::new(Arc::clone(&run.genesis), key, now_ms(), boot)?;
    let (core, effects) = Core::new(
        machine,
        Arc::clone(&run.genesis),
        config.roles,
        run.spec.rounds,
        actions,
    );
    let (done_tx, mut done_rx) = mpsc::channel(limits::WORK_QUEUE_LEN_MAX);
    let mut node = NodeLoop {
        contributions: dir
            .read_history()
            .iter()
            .filter(|h| h.included.contains(&me.to_string()))
            .count() as u64,
        run: Arc::clone(&run),
        work,
        dir,
        net: net.clone(),
        topic,
        core,
        theta: Arc::new(theta),
        outer: Arc::new(outer),
        staged: None,
        staged_snapshot: None,
        fetching_snapshot: false,
        trainer: Arc::new(Mutex::new(trainer)),
        train_loss: BTreeMap::new(),
        norms: BTreeMap::new(),
        median_norm: None,
        copy_gate: Arc::new(Mutex::new(CopyGate::new(CopyGate::seed_of(run.run_id.0)))),
        reference: None,
        wake_at: None,
        retry: VecDeque::new(),
        done_tx,
        shared: Arc::clone(&shared),
        blobs_by_round: BTreeMap::new(),
        model_blobs: VecDeque::new(),
        last_base: BTreeMap::new(),
        evals_pending: 0,
        ledger,
        ledger_dir,
        spot: SpotState {
            key: verify_key,
            threads: config.threads.max(1),
            kept: BTreeMap::new(),
            targets: BTreeMap::new(),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        },
    };
    {
        let mut status = shared.status.lock().expect("lock");
        status.peers = peers.len();
        status.history = node.dir.read_history();
        status.val_loss = status.history.last().and_then(|h| h.val_loss);
    }
    node.apply(effects).await;
    node.refresh_status();

    let mut housekeeping =
        tokio::time::interval(Duration::from_millis(limits::HOUSEKEEPING_INTERVAL_MS));
    loop {
        let wake = node.wake_at.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis(at.saturating_sub(now_ms()))
        });
        tokio::select! {
            _ = &mut shutdown => break,
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    NetEvent::Gossip(message) => {
                        let verdict = if message.topic == node.topic {
                            judge_gossip(&message.data)
                        } else {
                            net::Verdict::Ignore
                        };
                        let _ = net.report_validation(message.id, verdict).await;
                        if verdict == net::Verdict::Accept {
                            shared.received.fetch_add(message.data.len() as u64, Ordering::Relaxed);
                            let effects = node.core.handle(now_ms(), Input::Gossip { source: message.source, data: message.data });
                            node.apply(effects).await;
                        }
                    }
                    NetEvent::PeerConnected { peer, .. } => { peers.insert(peer); }
                    NetEvent::PeerDisconnected { peer } => { peers.remove(&peer); }
                    _ => {}
                }
                shared.status.lock().expect("lock").peers = peers.len();
            }
            done = done_rx.recv() => {
                let Some(done) = done else { break };
                node.on_done(done).await;
            }
            _ = tokio::time::sleep(wake) => {
                node.wake_at = None;
                let effects = node.core.handle(now_ms(), Input::Tick);
                node.apply(effects).await;
            }
            _ = housekeeping.tick() => {
                node.retry_publish().await;
                node.ledger_tick();
                let effects = node.core.handle(now_ms(), Input::Tick);
                node.apply(effects).await;
            }
        }
        node.refresh_status();
    }

    let _ = std::fs::remove_file(config.data_dir.join(crate::shell::CONTROL_ADDR_FILE));
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = net.shutdown().await;
    let _ = net_task.await;
    if let Some((validator, _)) = node.ledger.take() {
        validator.stop();
    }
    println!("stopped");
    Ok(())
}

/// Starts this node's ledger validator if the run keeps a ledger and names this node a validator
/// (and its verdict feed if it is also a verifier: every founder is).
fn start_ledger(
    run: &Run,
    key: &SigningKey,
    ledger_dir: &std::path::Path,
) -> Result<
    Option<(
        ledger::embedded::EmbeddedValidator,
        crate::ledger_feed::VerdictFeed,
    )>,
    RunNodeError,
> {
    let (Some(genesis), Some(spec)) = (&run.ledger, &run.spec.ledger) else {
        return Ok(None);
    };
    let me = ledger::peer_of(key);
    let peers: Vec<(PeerId, std::net::SocketAddr)> = genesis
        .validators
        .iter()
        .zip(&spec.validators)
        .map(|(p, v)| (*p, v.p2p))
        .collect();
    let Some(listen) = peers.iter().find(|(p, _)| *p == me).map(|(_, a)| *a) else {
        return Ok(None);
    };
    let validator = ledger::embedded::start(ledger::embedded::EmbeddedConfig {
        genesis: genesis.clone(),
        secret: key.to_bytes(),
        ledger_dir: ledger_dir.to_owned(),
        consensus_dir: ledger_dir.join("consensus"),
        listen,
        peers,
        checker: Box::new(ledger::NoFraudProofs),
    })?;
    println!("ledger {} validator on {listen}", genesis.chain_id());
    let feed = crate::ledger_feed::VerdictFeed::new(key.clone(), run.run_id, genesis.chain_id());
    Ok(Some((validator, feed)))
}

impl NodeLoop {
    /// Submits due verdict transactions and transactions the CLI left in the outbox.
    fn ledger_tick(&mut self) {
        let Some((validator, feed)) = &mut self.ledger else {
            return;
        };
        let Some(genesis) = &self.run.ledger else {
            return;
        };
        let snapshot = validator.observer.get();
        let Some(state) = &snapshot.state else {
            return;
        };
        if let Some(tx) = feed.next_tx(now_ms(), state) {
            if let Err(e) = validator.mempool.submit(genesis, tx) {
                tracing::warn!(%e, "ledger refused this node's verdicts");
            }
        }
        let _ = ledger::consensus::drain_outbox(&self.ledger_dir, genesis, &validator.mempool);
        let view = crate::status::LedgerView {
            height: snapshot.height,
            state_root: snapshot.state_root.to_hex(),
            total_minted: state.total_minted,
            balances: state
                .accounts
                .iter()
                .filter(|(_, a)| a.balance > 0)
                .map(|(p, a)| (p.to_string(), a.balance))
                .collect(),
        };
        self.shared.status.lock().expect("lock").ledger = Some(view);
    }

    fn spawn_done(&self, fut: impl std::future::Future<Output = Done> + Send + 'static) {
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let done = fut.await;
            let _ = tx.send(done).await;
        });
    }

    async fn publish(&mut self, data: Vec<u8>) {
        let len = data.len() as u64;
        match self.net.publish(&self.topic, data.clone()).await {
            Ok(()) => {
                self.shared.published.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(%e, "publish failed; retrying");
                if self.retry.len() < limits::PUBLISH_RETRY_QUEUE_LEN_MAX {
                    self.retry
                        .push_back((data, now_ms() + limits::PUBLISH_RETRY_FOR_MS));
                }
            }
        }
    }

    async fn retry_publish(&mut self) {
        let now = now_ms();
        let pending: Vec<(Vec<u8>, u64)> = self.retry.drain(..).collect();
        for (data, until) in pending {
            if until < now {
                continue;
            }
            let len = data.len() as u64;
            match self.net.publish(&self.topic, data.clone()).await {
                Ok(()) => {
                    self.shared.published.fetch_add(len, Ordering::Relaxed);
                }
                Err(_) => self.retry.push_back((data, until)),
            }
        }
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let more = self.apply_one(effect).await;
            queue.extend(more);
        }
    }

    async fn apply_one(&mut self, effect: Effect) -> Vec<Effect> {
        match effect {
            Effect::Publish(data) => self.publish(data).await,
            Effect::WakeAt(at) => {
                self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
            }
            Effect::Train {
                round,
                base_model_hash,
                seed,
                data_ids,
            } => self.start_training(round, base_model_hash, seed, data_ids),
            Effect::Fetch {
                round,
                trainer,
                cid,
                providers,
                ..
            } => self.start_fetch(round, trainer, cid, providers),
            Effect::Verify {
                round,
                trainer,
                cid,
                bytes,
                base_model_hash,
                data_ids,
                replay,
            } => {
                if replay != Hash32::ZERO && self.spot.targets.len() < limits::UPDATE_BLOBS_MAX {
                    let target = SpotTarget {
                        update_cid: cid,
                        replay,
                        base_model_hash,
                        data_ids: data_ids.clone(),
                    };
                    self.spot.targets.insert((round.0, trainer), target);
                }
                self.start_verify(round, trainer, cid, bytes, base_model_hash, data_ids)
            }
            Effect::Aggregate {
                round,
                proposal_digest,
                base_model_hash,
                updates,
            } => return self.start_aggregate(round, proposal_digest, base_model_hash, updates),
            Effect::Settled { settled, snapshot } => self.on_settled(settled, snapshot),
            Effect::CheckFraud {
                trainer,
                proof,
                bytes,
                provider,
            } => self.start_fraud_check(trainer, proof, bytes, provider),
            Effect::FetchSnapshot {
                state_digest,
                peers,
                ..
            } => self.start_snapshot_fetch(state_digest, peers),
            Effect::Adopted(snapshot) => self.on_adopted(snapshot),
        }
        Vec::new()
    }

    fn start_training(
        &mut self,
        round: RoundNumber,
        base: Hash32,
        seed: Hash32,
        data_ids: Vec<u32>,
    ) {
        let theta = Arc::clone(&self.theta);
        if Hash32::of_f32s(&theta) != base {
            tracing::warn!(
                round = round.0,
                "asked to train from a model this node does not hold"
            );
            return;
        }
        let work = Arc::clone(&self.work);
        let trainer = Arc::clone(&self.trainer);
        let dir = self.dir.clone();
        let key = Arc::clone(&self.spot.key);
        let threads = self.spot.threads;
        let record = self.run.spec.spot_check_ppm > 0;
        self.blobs_by_round.entry(round.0).or_default();
        self.spawn_done(async move {
            let result = tokio::task::spawn_blocking(move || {
                let mut local = trainer.lock().expect("lock");
                let job = crate::spot_run::TrainJob {
                    work: &work,
                    dir: &dir,
                    key: &key,
                    threads,
                    round,
                    base,
                    theta: &theta,
                    seed,
                    data_ids: &data_ids,
                    record,
                };
                crate::spot_run::train_round_recorded(&job, &mut local)
            })
            .await;
            match result {
                Ok(Ok(trained)) => Done::Trained {
                    input: Input::Trained {
                        round,
                        base_model_hash: base,
                        update_cid: trained.cid,
                        update_bytes: trained.bytes,
                        claimed_loss: trained.last_loss,
                        replay: trained.replay,
                    },
                    mean_loss: trained.mean_loss,
                    kept: trained.kept.map(Arc::new),
                },
                Ok(Err(e)) => {
                    tracing::error!(%e, round = round.0, "training failed");
                    Done::Core(Input::TrainFailed { round })
                }
                Err(e) => {
                    tracing::error!(%e, round = round.0, "training task failed");
                    Done::Core(Input::TrainFailed { round })
                }
            }
        });
    }

    fn start_fetch(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        providers: Vec<PeerId>,
    ) {
        self.blobs_by_round.entry(round.0).or_default().push(cid);
        let dir = self.dir.clone();
        let net = self.net.clone();
        let me = self.net.local_peer();
        let shared = Arc::clone(&self.shared);
        self.spawn_done(async move {
            if let Some(len) = std::fs::metadata(dir.blob_path(&cid)).ok().map(|m| m.len()) {
                return Done::Core(Input::BlobFetched {
                    round,
                    trainer,
                    cid,
                    bytes: len,
                });
            }
            let providers: Vec<PeerId> = providers.into_iter().filter(|p| *p != me).collect();
            match fetch_checked(&net, cid, providers, limits::UPDATE_BLOB_BYTES_MAX).await {
                Some(bytes) => {
                    shared
                        .received
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let len = bytes.len() as u64;
                    if dir.put_blob(&cid, &bytes).is_err() {
                        return Done::Core(Input::BlobFetchFailed {
                            round,
                            trainer,
                            cid,
                        });
                    }
                    Done::Core(Input::BlobFetched {
                        round,
                        trainer,
                        cid,
                        bytes: len,
                    })
                }
                None => Done::Core(Input::BlobFetchFailed {
                    round,
                    trainer,
                    cid,
                }),
            }
        });
    }

    fn start_verify(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        base: Hash32,
        data_ids: Vec<u32>,
    ) {
        let work = Arc::clone(&self.work);
        let dir = self.dir.clone();
        let median = self.median_norm;
        let verifier = self.core.roles().verifier;
        // The scoring context: the model the update is built on (when this node holds it) and the reference.
        // A node does not score its own update (it trained it); the gates still run.
        let me = self.net.local_peer();
        let scoring = (verifier && trainer != me).then(|| ScoreContext {
            theta: Arc::clone(&self.theta),
            reference: self
                .reference
                .as_ref()
                .filter(|(r, _)| r + 1 == round.0)
                .map(|(_, mean)| Arc::clone(mean)),
            seed: round::round_seed(self.run.run_id, round, base),
            base,
            me,
            data_ids,
        });
        let gate = GateContext {
            round,
            trainer,
            cid,
            median,
            copy_gate: Arc::clone(&self.copy_gate),
        };
        self.spawn_done(async move {
            // Err(local): this node could not check the update (its copy of the blob is gone or damaged, or the
            // task died). That is no evidence against the trainer: it is reported as a failed fetch, unrated.
            let outcome = tokio::task::spawn_blocking(move || {
                let blob = dir
                    .read_blob(&cid)
                    .ok_or_else(|| "blob is gone".to_string())?;
                if Hash32::of(&blob) != cid {
                    return Err("this node's copy does not match its CID".to_string());
                }
                Ok(match scoring {
                    Some(scoring) => gate_and_score(&work, &blob, &gate, scoring),
                    None if verifier => {
                        verifier_gates(&work, &blob, &gate).map(|(norm, _)| (norm, None))
                    }
                    // Without the verifier role a node still refuses what it cannot decode.
                    None => sync::codec::decode(&blob, work.param_count())
                        .map(|_| (0.0, None))
                        .map_err(|e| e.to_string()),
                })
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(local) => {
                    tracing::warn!(round = round.0, %trainer, %local, "could not verify an update");
                    return Done::Core(Input::BlobFetchFailed {
                        round,
                        trainer,
                        cid,
                    });
                }
            };
            let (accepted, norm, score) = match outcome {
                Ok((norm, score)) => (true, Some(norm), score),
                Err(reason) => {
                    tracing::warn!(round = round.0, %trainer, %reason, "update rejected");
                    (false, None, None)
                }
            };
            if let Some(score) = score {
                tracing::info!(
                    round = round.0,
                    %trainer,
                    harmful = score.harmful,
                    own_data_t = score.own_data_t,
                    gain_ratio = ?score.gain_ratio,
                    "update scored"
                );
            }
            Done::Verified {
                input: Input::Verified {
                    round,
                    trainer,
                    cid,
                    bytes,
                    accepted,
                    score,
                },
                norm,
            }
        });
    }

    fn start_aggregate(
        &mut self,
        round: RoundNumber,
        proposal_digest: Hash32,
        base: Hash32,
        updates: Vec<(PeerId, Hash32)>,
    ) -> Vec<Effect> {
        if Hash32::of_f32s(&self.theta) != base {
            tracing::warn!(
                round = round.0,
                "asked to aggregate onto a model this node does not hold"
            );
            return Vec::new();
        }
        let work = Arc::clone(&self.work);
        let dir = self.dir.clone();
        let theta = Arc::clone(&self.theta);
        let outer = Arc::clone(&self.outer);
        self.spawn_done(async move {
            let result = tokio::task::spawn_blocking(move || {
                let mut blobs = Vec::with_capacity(updates.len());
                for (peer, cid) in &updates {
                    let blob = dir.read_blob(cid).ok_or_else(|| {
                        crate::work::WorkError::Aggregate(format!("update {cid} is missing"))
                    })?;
                    blobs.push((*peer, blob));
                }
                work.aggregate(&theta, &outer, &blobs)
            })
            .await;
            match result {
                Ok(Ok(aggregated)) => Done::Aggregated {
                    round,
                    proposal_digest,
                    params: Arc::new(aggregated.params),
                    outer: Arc::new(aggregated.outer),
                    mean: aggregated.mean.map(Arc::new),
                },
                Ok(Err(e)) => {
                    tracing::error!(%e, round = round.0, "aggregation failed");
                    Done::SnapshotFailed
                }
                Err(e) => {
                    tracing::error!(%e, "aggregation task failed");
                    Done::SnapshotFailed
                }
            }
        });
        Vec::new()
    }

    /// Draws the settled round's spot checks (`spot_check::draw`, the same at every node): as a drawn trainer,
    /// re-creates and serves the drawn states; as a drawn verifier, runs the check off the loop.
    fn start_spot_checks(&mut self, settled: &round::Settled, members: &[PeerId]) {
        let round = settled.round;
        // This round's targets are used now, older ones never will be; later rounds' stay.
        let later = self.spot.targets.split_off(&(round.0 + 1, PeerId([0; 32])));
        let targets = std::mem::replace(&mut self.spot.targets, later);
        let ppm = self.run.spec.spot_check_ppm;
        if ppm == 0 {
            return;
        }
        let me = self.net.local_peer();
        let h = self.work.inner_steps();
        let base = self.base_of(settled);
        // Excluded updates are drawn too: leaving a cheat out of one round does not excuse it.
        let drawn = settled
            .included
            .iter()
            .chain(settled.excluded.iter().map(|(peer, _)| peer));
        for trainer in drawn {
            let Some(check) =
                crate::spot_check::draw(settled.model_hash, round, trainer, h, members, ppm)
            else {
                continue;
            };
            if *trainer == me {
                self.serve_spot_states(check);
            } else if check.verifier == me && self.core.roles().verifier {
                match targets.get(&(round.0, *trainer)) {
                    Some(target) => self.start_spot_check(check, target.clone(), base),
                    // It announced no record, or this node never verified its update: nothing to hold it to.
                    None => {
                        tracing::info!(round = round.0, %trainer, "drawn to check an update without a record")
                    }
                }
            }
        }
    }

    /// A node that caught up by snapshot did not settle the round before it, but its own update there may be drawn:
    /// the snapshot's model hash is that round's settled hash, and its members the draw's verifiers.
    fn serve_after_adopt(&mut self, snapshot: &Snapshot) {
        let ppm = self.run.spec.spot_check_ppm;
        let Some(round) = snapshot.next_round.0.checked_sub(1) else {
            return;
        };
        if ppm == 0 || !self.spot.kept.contains_key(&round) {
            return;
        }
        let me = self.net.local_peer();
        let h = self.work.inner_steps();
        let drawn = crate::spot_check::draw(
            snapshot.model_hash,
            RoundNumber(round),
            &me,
            h,
            &snapshot.members,
            ppm,
        );
        if let Some(check) = drawn {
            self.serve_spot_states(check);
        }
    }

    fn serve_spot_states(&mut self, check: verify::replay::SpotCheck) {
        // Served once: a node that settled a round and then adopted the snapshot after it draws it twice.
        let Some(kept) = self.spot.kept.remove(&check.round.0) else {
            tracing::warn!(
                round = check.round.0,
                "drawn for a spot check without a kept start state"
            );
            return;
        };
        let cids = &kept.leaves[check.first_step as usize..=check.end_step as usize];
        self.blobs_by_round
            .entry(check.round.0)
            .or_default()
            .extend_from_slice(cids);
        let work = Arc::clone(&self.work);
        let dir = self.dir.clone();
        let threads = self.spot.threads;
        let ids = (self.run.run_id, check.round, self.net.local_peer());
        tokio::task::spawn_blocking(move || {
            match crate::spot_run::serve_states(&work, &dir, threads, ids, &kept, &check) {
                Ok(()) => tracing::info!(
                    round = check.round.0,
                    first = check.first_step,
                    end = check.end_step,
                    "serving states for a spot check"
                ),
                Err(e) => {
                    tracing::error!(%e, round = check.round.0, "re-creating spot-check states failed")
                }
            }
        });
    }

    fn start_fraud_check(&mut self, trainer: PeerId, proof: Hash32, bytes: u64, provider: PeerId) {
        use std::sync::atomic::Ordering as AtomicOrdering;
        // Shares the spot checks' bound: each check fetches up to `FRAUD_PROOF_BYTES_MAX` from its sender.
        let in_flight = Arc::clone(&self.spot.in_flight);
        if in_flight.fetch_add(1, AtomicOrdering::SeqCst) >= limits::SPOT_CHECKS_IN_FLIGHT_MAX {
            in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
            tracing::warn!(%trainer, %proof, "too many checks running; a fraud notice is dropped");
            return;
        }
        let net = self.net.clone();
        let dir = self.dir.clone();
        let work = Arc::clone(&self.work);
        let threads = self.spot.threads;
        self.spawn_done(async move {
            let notice = (trainer, proof, bytes, provider);
            let valid = crate::spot_run::check_peer_proof(&net, &dir, work, threads, notice).await;
            in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
            tracing::info!(%trainer, %proof, valid, "checked a peer's fraud proof");
            Done::Core(Input::FraudChecked {
                trainer,
                proof,
                valid,
            })
        });
    }

    fn start_spot_check(
        &mut self,
        check: verify::replay::SpotCheck,
        target: SpotTarget,
        base: Hash32,
    ) {
        use std::sync::atomic::Ordering as AtomicOrdering;
        let (round, trainer) = (check.round, check.peer);
        let in_flight = Arc::clone(&self.spot.in_flight);
        if in_flight.fetch_add(1, AtomicOrdering::SeqCst) >= limits::SPOT_CHECKS_IN_FLIGHT_MAX {
            in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
            tracing::warn!(round = round.0, %trainer, "too many spot checks running; skipped");
            return;
        }
        let job = crate::spot_run::CheckJob {
            net: self.net.clone(),
            dir: self.dir.clone(),
            work: Arc::clone(&self.work),
            key: Arc::clone(&self.spot.key),
            threads: self.spot.threads,
            train_seed: round::round_seed(self.run.run_id, round, base),
            check,
            target,
            run: self.run.run_id,
        };
        self.spawn_done(async move {
            let outcome = crate::spot_run::run_check(job).await;
            in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
            tracing::info!(round = round.0, %trainer, ?outcome, "spot check finished");
            Done::Core(Input::SpotChecked {
                round,
                trainer,
                outcome,
            })
        });
    }

    fn on_settled(&mut self, settled: round::Settled, snapshot: Snapshot) {
        let staged = self.staged.take();
        let Some(staged) = staged.filter(|s| {
            s.proposal_digest == settled.proposal_digest
                && Hash32::of_f32s(&s.params) == settled.model_hash
        }) else {
            tracing::error!(
                round = settled.round.0,
                "settled a round whose aggregate is not staged here"
            );
            return;
        };
        self.theta = staged.params;
        self.outer = staged.outer;
        self.reference = staged.mean.map(|mean| (settled.round.0, mean));
        if settled.included.contains(&self.net.local_peer()) {
            self.contributions += 1;
        }
        // The median norm of this round's accepted updates bounds the next round's.
        let mut norms: Vec<f64> = settled
            .included
            .iter()
            .filter_map(|p| self.norms.get(&(settled.round.0, *p)).copied())
            .collect();
        norms.sort_by(f64::total_cmp);
        if !norms.is_empty() {
            self.median_norm = Some(norms[norms.len() / 2]);
        }
        self.norms.retain(|(r, _), _| *r > settled.round.0);
        self.copy_gate
            .lock()
            .expect("lock")
            .settle(settled.round, &settled.included);
        self.start_spot_checks(&settled, &snapshot.members);
        if let Err(e) = self
            .dir
            .save_state(self.run.run_id, &snapshot, &self.theta, &self.outer)
        {
            tracing::error!(%e, "persisting the settled state failed");
        }
        self.save_inner(snapshot.next_round);
        self.prune(snapshot.next_round);
        let seed = round::round_seed(self.run.run_id, settled.round, self.base_of(&settled));
        let line = HistoryLine {
            round: settled.round.0,
            model_hash: settled.model_hash.to_hex(),
            seed: seed.to_hex(),
            included: settled.included.iter().map(|p| p.to_string()).collect(),
            excluded: settled.excluded.len(),
            proposer: settled.proposer.to_string(),
            train_loss: self.train_loss.remove(&settled.round.0),
            val_loss: None,
            unix_ms: now_ms(),
        };
        self.train_loss.retain(|r, _| *r > settled.round.0);
        if let Some((_, feed)) = &mut self.ledger {
            let g = &self.run.genesis;
            let tokens =
                u64::from(g.inner_steps) * (self.run.spec.batch * self.run.spec.seq_len) as u64;
            feed.on_settled(settled.round, &settled.included, tokens);
        }
        self.evaluate(line);
    }

    /// The base model hash of a settled round: the previous state's model (what the node held before).
    fn base_of(&self, settled: &round::Settled) -> Hash32 {
        self.last_base
            .get(&settled.round.0)
            .copied()
            .unwrap_or(Hash32::ZERO)
    }

    fn evaluate(&mut self, mut line: HistoryLine) {
        self.evals_pending += 1;
        let work = Arc::clone(&self.work);
        let theta = Arc::clone(&self.theta);
        self.spawn_done(async move {
            let loss = tokio::task::spawn_blocking(move || work.eval_loss(&theta)).await;
            line.val_loss = match loss {
                Ok(Ok(loss)) => Some(loss),
                _ => None,
            };
            Done::Evaluated { line }
        });
    }

    fn save_inner(&self, next_round: RoundNumber) {
        let trainer = Arc::clone(&self.trainer);
        let dir = self.dir.clone();
        if !self.core.roles().trainer {
            return;
        }
        tokio::task::spawn_blocking(move || {
            let local = trainer.lock().expect("lock");
            if let Err(e) = dir.save_inner(next_round, &local.optimizer_state(), &local.feedback) {
                tracing::warn!(%e, "persisting the inner optimizer failed");
            }
        });
    }

    /// Keeps the blobs of the last `ROUNDS_KEPT` rounds (more with the storage role) plus the current model.
    fn prune(&mut self, next_round: RoundNumber) {
        let keep_rounds = if self.core.roles().storage {
            limits::ROUNDS_KEPT
        } else {
            1
        };
        let cutoff = next_round.0.saturating_sub(keep_rounds);
        let old: Vec<u64> = self
            .blobs_by_round
            .range(..cutoff)
            .map(|(r, _)| *r)
            .collect();
        for round in old {
            for cid in self.blobs_by_round.remove(&round).unwrap_or_default() {
                let _ = std::fs::remove_file(self.dir.blob_path(&cid));
            }
        }
        let model_hash = Hash32::of_f32s(&self.theta);
        self.model_blobs.push_back(model_hash);
        while self.model_blobs.len() as u64 > keep_rounds + 1 {
            if let Some(old) = self.model_blobs.pop_front() {
                if old != model_hash && old != self.run.genesis.genesis_model_hash {
                    let _ = std::fs::remove_file(self.dir.blob_path(&old));
                }
            }
        }
    }

    fn start_snapshot_fetch(&mut self, digest: Hash32, peers: Vec<PeerId>) {
        if self.fetching_snapshot {
            return;
        }
        self.fetching_snapshot = true;
        let net = self.net.clone();
        let dir = self.dir.clone();
        let run_id = self.run.run_id;
        let me = net.local_peer();
        let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != me).collect();
        // A node that fell behind by a vote often holds the agreed model already, as its own staged aggregate.
        let staged = self.staged.as_ref().map(|s| Arc::clone(&s.params));
        self.spawn_done(async move {
            for attempt in 0..limits::SNAPSHOT_FETCH_ATTEMPTS_MAX as usize {
                let Some(&peer) = peers.get(attempt % peers.len().max(1)) else {
                    break;
                };
                let Some(bytes) = fetch_checked_raw(
                    &net,
                    digest,
                    vec![peer],
                    limits::SNAPSHOT_RECORD_BYTES_MAX + limits::OUTER_STATE_BYTES_MAX,
                )
                .await
                else {
                    continue;
                };
                let Ok(record) = SnapshotRecord::decode_checked(&bytes, run_id, digest) else {
                    tracing::warn!(%peer, "peer served a bad snapshot record");
                    continue;
                };
                let hash = record.snapshot.model_hash;
                if let Some(params) = staged.as_ref().filter(|p| Hash32::of_f32s(p) == hash) {
                    return Done::Snapshot {
                        record,
                        params: Arc::clone(params),
                    };
                }
                let params = match dir.read_params(&hash) {
                    Some(params) => params,
                    None => {
                        let Some(bytes) = fetch_checked(
                            &net,
                            hash,
                            peers.clone(),
                            types::limits::net::BLOB_BYTES_MAX,
                        )
                        .await
                        else {
                            continue;
                        };
                        match bytes_to_f32s(&bytes) {
                            Some(params) if Hash32::of_f32s(&params) == hash => params,
                            _ => continue,
                        }
                    }
                };
                return Done::Snapshot {
                    record,
                    params: Arc::new(params),
                };
            }
            Done::SnapshotFailed
        });
    }

    fn on_adopted(&mut self, snapshot: Snapshot) {
        let Some((record, params)) = self.staged_snapshot.take() else {
            return;
        };
        if record.snapshot != snapshot {
            return;
        }
        println!(
            "caught up to round {} model {}",
            snapshot.next_round.0, snapshot.model_hash
        );
        self.serve_after_adopt(&snapshot);
        self.theta = params;
        self.outer = Arc::new(record.outer_state);
        self.staged = None;
        if let Err(e) = self
            .dir
            .save_state(self.run.run_id, &snapshot, &self.theta, &self.outer)
        {
            tracing::error!(%e, "persisting the adopted state failed");
        }
    }

    async fn on_done(&mut self, done: Done) {
        let effects = match done {
            Done::Core(input) => self.core.handle(now_ms(), input),
            Done::Trained {
                input,
                mean_loss,
                kept,
            } => {
                if let Input::Trained {
                    round,
                    update_bytes,
                    replay,
                    ..
                } = &input
                {
                    if let Some(kept) = kept {
                        self.spot.keep(round.0, kept);
                        self.blobs_by_round
                            .entry(round.0)
                            .or_default()
                            .push(*replay);
                    }
                    self.train_loss.insert(round.0, mean_loss);
                    let mut status = self.shared.status.lock().expect("lock");
                    status.train_loss = Some(mean_loss);
                    status.update_bytes += update_bytes;
                }
                self.core.handle(now_ms(), input)
            }
            Done::Verified { input, norm } => {
                if let (Input::Verified { round, trainer, .. }, Some(norm)) = (&input, norm) {
                    self.norms.insert((round.0, *trainer), norm);
                }
                self.core.handle(now_ms(), input)
            }
            Done::Aggregated {
                round,
                proposal_digest,
                params,
                outer,
                mean,
            } => {
                let model_hash = Hash32::of_f32s(&params);
                self.last_base.insert(round.0, Hash32::of_f32s(&self.theta));
                self.last_base
                    .retain(|r, _| *r + limits::ROUNDS_KEPT >= round.0);
                self.staged = Some(Staged {
                    proposal_digest,
                    params,
                    outer,
                    mean,
                });
                self.core.handle(
                    now_ms(),
                    Input::Aggregated {
                        round,
                        proposal_digest,
                        model_hash,
                    },
                )
            }
            Done::Snapshot { record, params } => {
                self.fetching_snapshot = false;
                let snapshot = record.snapshot.clone();
                self.staged_snapshot = Some((record, params));
                self.core.handle(now_ms(), Input::SnapshotFetched(snapshot))
            }
            Done::SnapshotFailed => {
                self.fetching_snapshot = false;
                Vec::new()
            }
            Done::Evaluated { line } => {
                self.evals_pending -= 1;
                if let Err(e) = self.dir.append_history(&line) {
                    tracing::warn!(%e, "writing history failed");
                }
                let mut status = self.shared.status.lock().expect("lock");
                status.val_loss = line.val_loss;
                status.history.push(line);
                if status.history.len() > limits::HISTORY_ROUNDS_KEPT_MAX {
                    status.history.remove(0);
                }
                Vec::new()
            }
        };
        self.apply(effects).await;
    }

    fn refresh_status(&self) {
        let machine = self.core.machine();
        let mut status = self.shared.status.lock().expect("lock");
        status.round = machine.round().0;
        status.status = match machine.status() {
            Status::Synced => "synced",
            Status::Syncing => "syncing",
            Status::Left => "left",
        };
        status.phase = self.core.phase();
        status.model_hash = machine.model_hash().to_hex();
        // Finished once the last round is settled and its evaluation is in the history.
        status.finished = self.core.finished() && self.evals_pending == 0;
        status.core = self.core.stats().clone();
        status.machine = machine.describe();
        status.contributions = self.contributions;
        status.members = machine.members().len();
        status.bytes_out = self.shared.published.load(Ordering::Relaxed)
            + self.shared.served.load(Ordering::Relaxed);
        status.bytes_in = self.shared.received.load(Ordering::Relaxed);
    }
}

/// Fetches blob `hash` from `providers` and checks its BLAKE3 hash; `None` on any failure.
pub(crate) async fn fetch_checked(
    net: &NetClient,
    hash: Hash32,
    providers: Vec<PeerId>,
    max: u64,
) -> Option<Vec<u8>> {
    let bytes = fetch_checked_raw(net, hash, providers, max).await?;
    (Hash32::of(&bytes) == hash).then_some(bytes)
}

/// Fetches blob `hash` without checking its hash (snapshot records are named by the digest they decode to).
async fn fetch_checked_raw(
    net: &NetClient,
    hash: Hash32,
    providers: Vec<PeerId>,
    max: u64,
) -> Option<Vec<u8>> {
    if providers.is_empty() {
        return None;
    }
    let mut receiver = net.fetch_blob(hash, providers);
    let mut out = Vec::new();
    while let Some(chunk) = receiver.next().await {
        let chunk = chunk.ok()?;
        if chunk.blob_len > max {
            return None;
        }
        out.extend_from_slice(&chunk.bytes);
    }
    Some(out)
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Done>();
    let _ = f32s_to_bytes;
}

/// The node's listen addresses. Binding reports them asynchronously, so right after start the list
/// can still be empty (seen on a loaded machine); status and peers need them, so wait (bounded).
async fn wait_listen_addrs(
    net: &NetClient,
    expect_some: bool,
) -> Result<Vec<String>, net::NetError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(limits::NODE_START_TIMEOUT_MS / 2);
    loop {
        let addrs = net.listen_addrs().await?;
        if !addrs.is_empty() || !expect_some || tokio::time::Instant::now() >= deadline {
            return Ok(addrs);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
