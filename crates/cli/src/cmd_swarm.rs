//! `commonweight swarm --nodes N`: starts N real `commonweight node` processes on 127.0.0.1 that train one
//! model together over libp2p, shows their live progress from each node's HTTP status API, and ends with a
//! report (report.md, report.json, loss.svg) that compares the final model against a single process trained
//! on exactly the same tokens, and the bytes sent against fp32 data-parallel training.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use types::limits::node as limits;
use types::{Hash32, PeerId};

#[derive(Args, Debug, Clone)]
pub struct SwarmArgs {
    /// Node processes to start.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Model preset: tiny, micro, mini, small, base, 1b.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Rounds to train.
    #[arg(long, default_value_t = 20)]
    pub rounds: u64,
    /// Raw text (a file or folder) or a prepared dataset folder. Default: data/shakespeare.
    #[arg(long, default_value = "data/shakespeare")]
    pub data: PathBuf,
    /// Run folder: the run file, each node's data dir and log, and the report.
    #[arg(long, default_value = "swarm-out")]
    pub out: PathBuf,
    /// Update codec (see `sync::codec::CodecKind`).
    #[arg(long, default_value = "topk")]
    pub codec: String,
    /// Inner steps per round (H).
    #[arg(long, default_value_t = 10)]
    pub inner_steps: u32,
    /// libtorch threads per node (each node is its own process).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Sequences per inner step (default: the preset's).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence (default: the preset's).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Peak inner learning rate (default: the preset's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Validation windows for every loss in the report.
    #[arg(long, default_value_t = 32)]
    pub eval_windows: usize,
    /// Model initialisation seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Upper bound on a phase of a round (ms); phases normally close far earlier, at quorum. A silent
    /// proposer is replaced after 3x this. Default: by preset (tiny 30 s, mini 120 s, larger 300 s).
    #[arg(long)]
    pub phase_max_ms: Option<u64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    /// Skip the single-process comparison run.
    #[arg(long)]
    pub skip_single: bool,
    /// Skip the network-free replay (the same rounds' math in one process, compared bit for bit).
    #[arg(long)]
    pub skip_replay: bool,
    /// Text samples printed from the final model.
    #[arg(long, default_value_t = 2)]
    pub samples: usize,
    /// Fault injection: SIGKILL node I while it trains round R (`I@R`), then restart it from its data dir.
    #[arg(long, value_name = "I@R")]
    pub kill: Option<String>,
}

fn parse_kill(text: &str) -> Result<(usize, u64)> {
    let (node, round) = text
        .split_once('@')
        .context("--kill expects NODE@ROUND, e.g. 3@2")?;
    Ok((
        node.parse().context("--kill node")?,
        round.parse().context("--kill round")?,
    ))
}

/// A node as `/status` reports it (the fields swarm reads).
#[derive(Deserialize, Clone, Debug, Default)]
struct NodeView {
    peer_id: String,
    #[serde(default)]
    listen_addrs: Vec<String>,
    round: u64,
    status: String,
    phase: String,
    model_hash: String,
    finished: bool,
    peers: usize,
    bytes_out: u64,
    bytes_in: u64,
    #[serde(default)]
    update_bytes: u64,
    train_loss: Option<f32>,
    val_loss: Option<f32>,
    contributions: u64,
    #[serde(default)]
    ledger: Option<LedgerStatusView>,
}

/// A node's ledger replica as its `/status` reports it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
struct LedgerStatusView {
    height: u64,
    state_root: String,
    total_minted: u64,
    balances: std::collections::BTreeMap<String, u64>,
}

/// The ownership table at the end of the run, read back with `commonweight ledger balances`.
#[derive(Serialize, Clone, Debug)]
struct LedgerReport {
    state_root: String,
    total_minted: u64,
    /// Peer id → shares.
    balances: std::collections::BTreeMap<String, u64>,
    /// Every node's `ledger balances` printed the same table.
    all_nodes_agree: bool,
    /// Every node included in some round holds shares.
    every_contributor_holds_shares: bool,
}

/// One settled round as the nodes report it (`GET /history`), and as `history.json` in the run folder keeps it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct HistoryView {
    pub round: u64,
    pub model_hash: String,
    pub seed: String,
    pub included: Vec<String>,
    pub val_loss: Option<f32>,
}

/// The file in the run folder that keeps the merged history (what `experiment sync --swarm DIR` reads).
pub(crate) const HISTORY_FILE: &str = "history.json";

#[derive(Serialize)]
struct NodeReport {
    index: usize,
    peer_id: String,
    model_hash: String,
    contributions: u64,
    bytes_out: u64,
    bytes_in: u64,
    restarts: u32,
}

#[derive(Serialize)]
struct Report {
    nodes: usize,
    rounds: u64,
    preset: String,
    codec: String,
    inner_steps: u32,
    run_id: String,
    final_val_loss: f32,
    single_node_val_loss: Option<f32>,
    gap_pct: Option<f64>,
    /// The network-free replay of the same rounds (see `replay_math`); absent with `--skip-replay`.
    replay: Option<ReplayReport>,
    /// fp32 data-parallel bytes per worker over the mean bytes a swarm node sent (all application traffic).
    bytes_ratio_vs_ddp: f64,
    /// The same against the update blob bytes a trainer produced (what it sends to one peer).
    update_bytes_ratio_vs_ddp: f64,
    ddp_bytes_per_worker: u64,
    mean_bytes_out_per_node: u64,
    model_hash: String,
    model_cid: String,
    all_nodes_agree: bool,
    wall_s: f64,
    per_node: Vec<NodeReport>,
    ledger: Option<LedgerReport>,
    curve: Vec<CurvePoint>,
    single_curve: Vec<CurvePoint>,
}

/// What the network-free replay of the swarm's rounds ended on.
#[derive(Serialize, Clone, Debug)]
struct ReplayReport {
    val_loss: f32,
    model_hash: String,
    /// The replay's final parameters hash to the swarm's final model hash.
    bit_identical: bool,
    /// (swarm − replay) / replay validation loss, in percent.
    gap_pct: f64,
    /// The first round whose replayed model hash differs from the swarm's, if any.
    first_divergent_round: Option<u64>,
}

#[derive(Serialize, Clone, Copy)]
struct CurvePoint {
    round: u64,
    val_loss: f32,
}

struct RunningNode {
    dir: PathBuf,
    child: Child,
    control: String,
    restarts: u32,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(args: SwarmArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > limits::SWARM_NODES_MAX {
        bail!("--nodes must be 1..={}", limits::SWARM_NODES_MAX);
    }
    let started = Instant::now();
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = fs::canonicalize(&args.out)?;
    let dataset = crate::cmd_run::prepared_dataset(&args.data, &out.join("dataset"))?;
    let dirs: Vec<PathBuf> = (0..args.nodes)
        .map(|i| out.join(format!("node-{i}")))
        .collect();
    let mut founders = Vec::new();
    for dir in &dirs {
        founders.push(node::run_shell::peer_id_of_data_dir(dir)?.to_string());
    }
    let run_file = out.join("run.json");
    let config = node::RunConfig {
        name: format!("swarm-{}x{}", args.nodes, args.preset),
        preset: args.preset.clone(),
        data: dataset,
        codec: args.codec.clone(),
        outer: None,
        outer_lr: None,
        outer_momentum: None,
        ef_decay: None,
        inner_steps: args.inner_steps,
        lr: args.lr,
        batch: args.batch,
        seq_len: args.seq_len,
        rounds: args.rounds,
        shards: 64,
        shards_per_trainer: None,
        committee_size: args.nodes as u32,
        // All of a small local swarm is expected in every phase: a node slowed by a busy CPU is waited for (up
        // to phase_max_ms), not dropped from the run as a no-show.
        quorum_permille: 1000,
        phase_min_ms: 300,
        phase_max_ms: args.phase_max_ms.unwrap_or(match args.preset.as_str() {
            "tiny" => 30_000,
            "mini" => 120_000,
            _ => 300_000,
        }),
        deadline_mad_k_millis: 3_000,
        seed: args.seed,
        eval_windows: args.eval_windows,
        spot_check_ppm: types::limits::verify::SPOT_CHECK_PROBABILITY_PPM,
        // Every founder validates the ledger (simplex on 127.0.0.1) and signs verdicts.
        ledger: Some(node::runspec::LedgerConfig {
            validators: founders
                .iter()
                .map(|peer| -> Result<_> {
                    Ok(node::runspec::LedgerValidator {
                        peer: peer.clone(),
                        p2p: free_local_addr()?,
                    })
                })
                .collect::<Result<_>>()?,
            verifier_quorum: None,
        }),
        founders,
    };
    // Node 0's store takes the dataset collection (the others publish the same one when they start), so a
    // node can join this swarm with only its run id. The store is closed again before node 0 opens it.
    let spec = {
        let store = crate::cmd_data::open_store(&dirs[0])?;
        node::runspec::init(&config, Some(&store)).context("creating the genesis")?
    };
    node::Run::write_spec(&spec, &run_file)?;
    let run = node::Run::from_spec(spec)?;
    println!(
        "run {} : {} nodes, preset {}, codec {}, H {}, {} rounds",
        &run.run_id.0.to_hex()[..16],
        args.nodes,
        args.preset,
        run.spec.codec,
        args.inner_steps,
        args.rounds
    );

    let mut nodes = Vec::with_capacity(args.nodes);
    nodes.push(start_node(&dirs[0], &run_file, &[], &args)?);
    let bootstrap = bootstrap_addr(&nodes[0])?;
    for dir in &dirs[1..] {
        nodes.push(start_node(
            dir,
            &run_file,
            std::slice::from_ref(&bootstrap),
            &args,
        )?);
    }
    println!("{} nodes up; bootstrap {bootstrap}", nodes.len());
    let mut addrs = vec![bootstrap];
    for node in &nodes[1..] {
        addrs.push(bootstrap_addr(node)?);
    }
    let kill = args.kill.as_deref().map(parse_kill).transpose()?;
    if let Some((index, _)) = kill {
        if index >= nodes.len() {
            bail!(
                "--kill names node {index}, but there are {} nodes",
                nodes.len()
            );
        }
    }

    let views = watch(&mut nodes, &args, kill, &run_file, &addrs)?;
    let (history, settled_by) = merged_history(&nodes)?;
    let ledger_views = wait_ledger(&nodes, &run, &history, &settled_by, kill.map(|k| k.0))?;
    for node in &nodes {
        terminate(node.child.id());
    }
    for node in &mut nodes {
        let _ = node.child.wait();
    }
    let ledger = ledger_report(&nodes, &history, ledger_views)?;
    report(&args, &run, &out, &nodes, &views, history, ledger, started)
}

fn free_local_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits until every node's ledger replica holds the same state and has minted what the settled
/// rounds must mint (H × batch × seq_len shares per included trainer, the ledger's formula at full
/// score), and checks it minted no more than they allow.
///
/// A (round, trainer) is minted once `verifier_quorum` verifiers signed it, and a node signs only the
/// rounds it settled itself (one that caught up by snapshot has no verdict to give), so a round is
/// owed only when a quorum of nodes wrote it to their history. The SIGKILLed node's history does not
/// count: verdicts it queued but had not sent died with it.
fn wait_ledger(
    nodes: &[RunningNode],
    run: &node::Run,
    history: &[HistoryView],
    settled_by: &BTreeMap<u64, Vec<usize>>,
    killed: Option<usize>,
) -> Result<Vec<LedgerStatusView>> {
    let tokens = u64::from(run.genesis.inner_steps) * (run.spec.batch * run.spec.seq_len) as u64;
    let quorum = run
        .ledger
        .as_ref()
        .map_or(0, |g| g.verifier_quorum as usize);
    let owed = |h: &HistoryView| {
        let settlers = settled_by.get(&h.round).map_or(0, |nodes| {
            nodes.iter().filter(|n| Some(**n) != killed).count()
        });
        settlers >= quorum
    };
    let expected: u64 = history
        .iter()
        .filter(|h| owed(h))
        .map(|h| h.included.len() as u64 * tokens)
        .sum();
    let allowed: u64 = history
        .iter()
        .map(|h| h.included.len() as u64 * tokens)
        .sum();
    let deadline = Instant::now() + Duration::from_millis(limits::SWARM_LEDGER_WAIT_MS);
    loop {
        let views: Vec<Option<LedgerStatusView>> = nodes
            .iter()
            .map(|n| {
                http_get(&n.control, "/status")
                    .ok()
                    .and_then(|b| serde_json::from_str::<NodeView>(&b).ok())
                    .and_then(|v| v.ledger)
            })
            .collect();
        let done = views.iter().all(|v| {
            v.as_ref().is_some_and(|l| {
                l.total_minted >= expected
                    && l.total_minted <= allowed
                    && l.total_minted % tokens.max(1) == 0
                    && views[0]
                        .as_ref()
                        .is_some_and(|f| f.state_root == l.state_root)
            })
        });
        if done {
            let minted = views[0].as_ref().map_or(0, |l| l.total_minted);
            println!(
                "ledger: every node minted {minted} shares (owed {expected}, at most {allowed}), state roots agree"
            );
            return Ok(views.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            bail!(
                "the ledger did not mint between {expected} and {allowed} shares on every node: {:?}",
                views
                    .iter()
                    .map(|v| v.as_ref().map(|l| (l.height, l.total_minted)))
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `commonweight ledger balances` on every (stopped) node and checks the tables agree.
fn ledger_report(
    nodes: &[RunningNode],
    history: &[HistoryView],
    views: Vec<LedgerStatusView>,
) -> Result<Option<LedgerReport>> {
    let Some(first) = views.first() else {
        return Ok(None);
    };
    let mut outputs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let output = Command::new(std::env::current_exe()?)
            .args(["ledger", "balances", "--data-dir"])
            .arg(&node.dir)
            .output()?;
        if !output.status.success() {
            bail!(
                "ledger balances failed on {}: {}",
                node.dir.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    println!("ledger balances (node 0):\n{}", outputs[0]);
    // Idle validators keep finalizing empty blocks, so replicas stop at different heights:
    // agreement is the same state and the same chain up to the lowest height any node holds.
    let tables: Vec<&str> = outputs.iter().map(|o| balances_table(o)).collect();
    let same_state = views
        .iter()
        .all(|v| v.state_root == first.state_root && v.balances == first.balances);
    let all_nodes_agree =
        tables.iter().all(|t| *t == tables[0]) && same_state && common_prefix_agrees(nodes)?;
    let contributors: std::collections::BTreeSet<&String> =
        history.iter().flat_map(|h| h.included.iter()).collect();
    let every_contributor_holds_shares = !contributors.is_empty()
        && contributors.iter().all(|p| {
            first.balances.get(*p).is_some_and(|b| *b > 0) && outputs[0].contains(p.as_str())
        });
    Ok(Some(LedgerReport {
        state_root: first.state_root.clone(),
        total_minted: first.total_minted,
        balances: first.balances.clone(),
        all_nodes_agree,
        every_contributor_holds_shares,
    }))
}

/// The `ledger balances` output without its first line (which names the height).
fn balances_table(output: &str) -> &str {
    output.split_once('\n').map_or("", |(_, rest)| rest)
}

/// Whether every (stopped) node's ledger holds the same block at the lowest height among them.
/// Blocks name their parent, so one equal block means equal chains below it.
fn common_prefix_agrees(nodes: &[RunningNode]) -> Result<bool> {
    let mut stores = Vec::with_capacity(nodes.len());
    for node in nodes {
        let dir = node.dir.join("ledger");
        stores.push(
            ledger::Store::open(&dir)
                .with_context(|| format!("opening the ledger in {}", dir.display()))?,
        );
    }
    let mut heights = Vec::with_capacity(stores.len());
    for store in &stores {
        heights.push(store.height()?);
    }
    let Some(&common) = heights.iter().min() else {
        return Ok(true);
    };
    if common == 0 {
        return Ok(heights.iter().all(|h| *h == 0));
    }
    let mut blocks = Vec::with_capacity(stores.len());
    for store in &stores {
        let bytes = store
            .record_bytes(common)?
            .with_context(|| format!("ledger record {common} is missing"))?;
        blocks.push(ledger::Record::from_bytes(&bytes)?.block);
    }
    Ok(blocks.iter().all(|b| *b == blocks[0]))
}

fn start_node(
    dir: &Path,
    run_file: &Path,
    bootstrap: &[String],
    args: &SwarmArgs,
) -> Result<RunningNode> {
    fs::create_dir_all(dir)?;
    let _ = fs::remove_file(dir.join(node::shell::CONTROL_ADDR_FILE));
    let log = fs::File::create(dir.join("node.log"))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("node")
        .arg("--data-dir")
        .arg(dir)
        .arg("--run")
        .arg(run_file)
        .arg("--listen")
        .arg("/ip4/127.0.0.1/tcp/0")
        .arg("--threads")
        .arg(args.threads.to_string())
        .arg("--wait-peers")
        .arg((args.nodes - 1).min(3).to_string());
    for addr in bootstrap {
        command.arg("--bootstrap").arg(addr);
    }
    let child = command
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting a node process")?;
    let deadline = Instant::now() + Duration::from_millis(limits::NODE_START_TIMEOUT_MS);
    let addr_file = dir.join(node::shell::CONTROL_ADDR_FILE);
    let mut node = RunningNode {
        dir: dir.to_owned(),
        child,
        control: String::new(),
        restarts: 0,
    };
    loop {
        if let Ok(addr) = fs::read_to_string(&addr_file) {
            node.control = addr.trim().to_owned();
            return Ok(node);
        }
        if let Some(status) = node.child.try_wait()? {
            bail!(
                "node in {} exited with {status}; see its node.log",
                dir.display()
            );
        }
        if Instant::now() > deadline {
            bail!("node in {} did not start; see its node.log", dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's TCP listen address; a loaded machine can take seconds to report it after the control API is up.
fn bootstrap_addr(node: &RunningNode) -> Result<String> {
    let deadline = Instant::now() + Duration::from_millis(limits::NODE_START_TIMEOUT_MS);
    loop {
        let view: NodeView = serde_json::from_str(&http_get(&node.control, "/status")?)?;
        if let Some(addr) = view.listen_addrs.iter().find(|a| a.contains("/tcp/")) {
            return Ok(addr.clone());
        }
        if Instant::now() > deadline {
            bail!("node in {} reports no listen address", node.dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls every node until all finished the run; prints a progress table.
fn watch(
    nodes: &mut [RunningNode],
    args: &SwarmArgs,
    mut kill: Option<(usize, u64)>,
    run_file: &Path,
    addrs: &[String],
) -> Result<Vec<NodeView>> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        if let Some((index, round)) = kill {
            let view = http_get(&nodes[index].control, "/status")
                .ok()
                .and_then(|body| serde_json::from_str::<NodeView>(&body).ok());
            // In round R mid-round (training up to aggregation); a round can pass between two polls, so any
            // later round the node has not finished counts too.
            let mid_round = |v: &NodeView| {
                let busy = matches!(
                    v.phase.as_str(),
                    "train" | "commit" | "reveal" | "aggregate"
                );
                !v.finished && ((v.round == round && busy) || v.round > round)
            };
            if view.as_ref().is_some_and(mid_round) {
                kill_and_restart(nodes, index, args, run_file, addrs)?;
                kill = None;
            }
        }
        let mut views = Vec::with_capacity(nodes.len());
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "node in {} exited with {status}; see its node.log",
                    node.dir.display()
                );
            }
            let view = http_get(&node.control, "/status")
                .ok()
                .and_then(|body| serde_json::from_str::<NodeView>(&body).ok())
                .unwrap_or_default();
            views.push(view);
        }
        let done = views.iter().all(|v| v.finished);
        if done || last_print.elapsed() >= Duration::from_secs(2) {
            print_progress(&views, args.rounds);
            last_print = Instant::now();
        }
        if done {
            return Ok(views);
        }
        if Instant::now() > deadline {
            bail!(
                "the swarm did not finish {} rounds within {} s",
                args.rounds,
                args.timeout_s
            );
        }
        // Poll faster while a fault waits for its moment: a tiny round can pass in under a second.
        let pause_ms = if kill.is_some() { 50 } else { 500 };
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
}

/// SIGKILLs node `index` in the middle of its training and starts it again on the same data dir.
fn kill_and_restart(
    nodes: &mut [RunningNode],
    index: usize,
    args: &SwarmArgs,
    run_file: &Path,
    addrs: &[String],
) -> Result<()> {
    let node = &mut nodes[index];
    println!(
        "fault: SIGKILL node {index} (pid {}) mid-round",
        node.child.id()
    );
    node.child.kill()?;
    node.child.wait()?;
    std::thread::sleep(Duration::from_millis(500));
    let others: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, a)| a.clone())
        .take(3)
        .collect();
    let dir = node.dir.clone();
    let restarts = node.restarts + 1;
    let mut fresh = start_node(&dir, run_file, &others, args)?;
    fresh.restarts = restarts;
    // Replacing the handle drops the dead one (already reaped).
    nodes[index] = fresh;
    println!("fault: node {index} restarted from {}", dir.display());
    Ok(())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn loss(value: Option<f32>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn print_progress(views: &[NodeView], rounds: u64) {
    let min_round = views.iter().map(|v| v.round).min().unwrap_or(0);
    let bytes_out: u64 = views.iter().map(|v| v.bytes_out).sum();
    let bytes_in: u64 = views.iter().map(|v| v.bytes_in).sum();
    let val = views.iter().filter_map(|v| v.val_loss).next();
    println!(
        "round {min_round}/{rounds}  val {}  out {}  in {}",
        loss(val),
        mb(bytes_out),
        mb(bytes_in)
    );
    for (i, v) in views.iter().enumerate() {
        println!(
            "  node {i} {:8} r{:<3} {:9} {:7} train {} val {} out {:>10} in {:>10} peers {} model {}",
            v.peer_id.get(..8).unwrap_or("-"),
            v.round,
            v.phase,
            v.status,
            loss(v.train_loss),
            loss(v.val_loss),
            mb(v.bytes_out),
            mb(v.bytes_in),
            v.peers,
            v.model_hash.get(..12).unwrap_or("-"),
        );
    }
}

/// Sends SIGTERM (a clean stop; `Child::kill` would be SIGKILL).
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// A minimal HTTP/1.0 GET against a node's loopback control API.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr)
        .with_context(|| format!("cannot reach the control API at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "control API answered: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// Every settled round once, from all nodes' histories: a node records only the rounds it settled itself
/// (a round it caught up on by resync is not in its history), so no single node's history is complete.
/// Nodes that recorded the same round must agree on its model hash.
/// Every node's history merged into one line per round (nodes must agree on each round's model),
/// and which nodes wrote each round themselves.
fn merged_history(nodes: &[RunningNode]) -> Result<(Vec<HistoryView>, BTreeMap<u64, Vec<usize>>)> {
    let mut rounds: BTreeMap<u64, HistoryView> = BTreeMap::new();
    let mut settled_by: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let lines: Vec<HistoryView> = serde_json::from_str(&http_get(&node.control, "/history")?)
            .with_context(|| format!("node {index}'s /history"))?;
        for line in lines {
            let writers = settled_by.entry(line.round).or_default();
            if !writers.contains(&index) {
                writers.push(index);
            }
            match rounds.get(&line.round) {
                Some(known) if known.model_hash != line.model_hash => bail!(
                    "node {index} settled round {} on model {} but another node on {}",
                    line.round,
                    line.model_hash,
                    known.model_hash
                ),
                Some(_) => {}
                None => {
                    rounds.insert(line.round, line);
                }
            }
        }
    }
    Ok((rounds.into_values().collect(), settled_by))
}

fn report(
    args: &SwarmArgs,
    run: &node::Run,
    out: &Path,
    nodes: &[RunningNode],
    views: &[NodeView],
    mut history: Vec<HistoryView>,
    ledger: Option<LedgerReport>,
    started: Instant,
) -> Result<()> {
    history.sort_by_key(|h| h.round);
    fs::write(out.join(HISTORY_FILE), serde_json::to_vec_pretty(&history)?)?;
    let final_hash = views[0].model_hash.clone();
    let all_agree = views.iter().all(|v| v.model_hash == final_hash);
    let hash = Hash32::from_hex(&final_hash).context("node 0 reports no model hash")?;
    let run_dir = node::persist::RunDir::open(&nodes[0].dir, run.run_id)?;
    let params = run_dir
        .read_params(&hash)
        .context("node 0 does not hold its final model")?;
    let work = node::work::Workload::open(run)?;
    let final_val_loss = work.eval_loss(&params)?;
    let curve: Vec<CurvePoint> = history
        .iter()
        .filter_map(|h| {
            h.val_loss.map(|v| CurvePoint {
                round: h.round + 1,
                val_loss: v,
            })
        })
        .collect();
    println!(
        "swarm final validation loss {final_val_loss:.4} (model {})",
        &final_hash[..16]
    );

    let single = if args.skip_single {
        None
    } else {
        Some(single_node(run, &work, &history, args.threads)?)
    };
    let single_loss = single.as_ref().map(|(l, _)| *l);
    let replay = if args.skip_replay {
        None
    } else {
        Some(replay_math(
            run,
            &work,
            &history,
            args.threads,
            final_val_loss,
        )?)
    };
    let gap_pct =
        single_loss.map(|s| (f64::from(final_val_loss) - f64::from(s)) / f64::from(s) * 100.0);

    let h = u64::from(run.genesis.inner_steps);
    let ddp_bytes = args.rounds * h * 4 * work.param_count() as u64;
    let mean_out = views.iter().map(|v| v.bytes_out).sum::<u64>() / views.len() as u64;
    let update_bytes = views.iter().map(|v| v.update_bytes).sum::<u64>() / views.len() as u64;
    let per_node: Vec<NodeReport> = views
        .iter()
        .enumerate()
        .map(|(index, v)| NodeReport {
            index,
            peer_id: v.peer_id.clone(),
            model_hash: v.model_hash.clone(),
            contributions: v.contributions,
            bytes_out: v.bytes_out,
            bytes_in: v.bytes_in,
            restarts: nodes[index].restarts,
        })
        .collect();
    let report = Report {
        nodes: args.nodes,
        rounds: args.rounds,
        preset: args.preset.clone(),
        codec: run.spec.codec.clone(),
        inner_steps: run.genesis.inner_steps,
        run_id: run.run_id.0.to_hex(),
        final_val_loss,
        single_node_val_loss: single_loss,
        gap_pct,
        replay: replay.clone(),
        bytes_ratio_vs_ddp: ddp_bytes as f64 / mean_out.max(1) as f64,
        update_bytes_ratio_vs_ddp: ddp_bytes as f64 / update_bytes.max(1) as f64,
        ddp_bytes_per_worker: ddp_bytes,
        mean_bytes_out_per_node: mean_out,
        model_hash: final_hash.clone(),
        model_cid: store::cid::Cid(hash).to_string(),
        all_nodes_agree: all_agree,
        wall_s: started.elapsed().as_secs_f64(),
        per_node,
        ledger,
        curve: curve.clone(),
        single_curve: single.as_ref().map(|(_, c)| c.clone()).unwrap_or_default(),
    };
    fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    fs::write(
        out.join("loss.svg"),
        svg(&report.curve, &report.single_curve),
    )?;
    fs::write(out.join("report.md"), markdown(&report))?;
    println!(
        "final val loss {:.4}; single node {}; gap {}; bytes vs fp32 data-parallel: {:.1}x fewer (all traffic), {:.1}x (updates only); all nodes agree: {all_agree}",
        final_val_loss,
        loss(single_loss),
        gap_pct.map_or_else(|| "-".into(), |g| format!("{g:+.2}%")),
        report.bytes_ratio_vs_ddp,
        report.update_bytes_ratio_vs_ddp
    );
    if let Some(r) = &replay {
        println!(
            "network-free replay of the same rounds: val loss {:.4} ({:+.3}%), bit-identical parameters: {}{}",
            r.val_loss,
            r.gap_pct,
            r.bit_identical,
            r.first_divergent_round
                .map_or_else(String::new, |d| format!(" (first differs at round {d})"))
        );
    }
    println!("model cid {}", report.model_cid);
    samples(run, &params, args.samples)?;
    println!(
        "wrote {}, {}, {}",
        out.join("report.md").display(),
        out.join("report.json").display(),
        out.join("loss.svg").display()
    );
    if !all_agree {
        bail!("nodes ended on different model hashes");
    }
    Ok(())
}

/// The swarm's rounds without the network: the math of `experiment sync` (every trainer trains H inner steps
/// from the agreed model, the updates are encoded, averaged in peer-id order and applied by the outer
/// optimizer), run in one process on the swarm's own data assignment (round seed, trainer, dataset) and
/// included sets. Each trainer keeps its own inner AdamW state and error feedback across rounds, as a node
/// does, and uses the nodes' thread count, so a fault-free swarm must end on the same bits.
fn replay_math(
    run: &node::Run,
    work: &node::work::Workload,
    history: &[HistoryView],
    threads: usize,
    swarm_val_loss: f32,
) -> Result<ReplayReport> {
    let started = Instant::now();
    let replayed = crate::cmd_experiment::sync_on_swarm_rounds(run, work, history, threads)?;
    let val_loss = work.eval_loss(&replayed.theta)?;
    let model_hash = Hash32::of_f32s(&replayed.theta).to_hex();
    let swarm_hash = history.last().map(|h| h.model_hash.as_str()).unwrap_or("");
    println!(
        "network-free replay ({} rounds, {:.0} s): val loss {val_loss:.4}",
        history.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ReplayReport {
        val_loss,
        bit_identical: model_hash == swarm_hash,
        model_hash,
        gap_pct: (f64::from(swarm_val_loss) - f64::from(val_loss)) / f64::from(val_loss) * 100.0,
        first_divergent_round: replayed.first_divergent_round,
    })
}

/// One process trained on exactly the swarm's tokens: for each settled round, each included trainer's
/// assigned shards, with the same batch seed and steps, in trainer order.
fn single_node(
    run: &node::Run,
    work: &node::work::Workload,
    history: &[HistoryView],
    threads: usize,
) -> Result<(f32, Vec<CurvePoint>)> {
    let started = Instant::now();
    let h = u64::from(run.genesis.inner_steps);
    let steps: u64 = history.iter().map(|r| r.included.len() as u64 * h).sum();
    let preset = model::Preset::parse(&run.genesis.model_preset)?;
    let mut train = preset.train_config(steps.max(1));
    train.lr = run.spec.lr;
    train.batch_size = run.spec.batch;
    train.seq_len = run.spec.seq_len;
    let mut trainer = model::Trainer::with_params(
        run.model.clone(),
        train,
        work.genesis_params(),
        threads.max(1),
    )?;
    let mut curve = Vec::new();
    for round in history {
        let seed = Hash32::from_hex(&round.seed).context("history seed")?;
        for trainer_hex in &round.included {
            let peer = node::runspec::parse_peer(trainer_hex).context("history trainer")?;
            let ids = assigned_shards(run, seed, peer);
            let tokens = work.assigned_tokens(&ids)?;
            let batch_seed = node::work::Workload::batch_seed(seed);
            for step in 0..h {
                let batch = data::sample_batch(
                    batch_seed,
                    &tokens,
                    step,
                    run.spec.batch,
                    run.spec.seq_len,
                )?;
                trainer.train_step(&batch)?;
            }
        }
        let val = work.eval_loss(&trainer.params())?;
        curve.push(CurvePoint {
            round: round.round + 1,
            val_loss: val,
        });
    }
    let final_loss = work.eval_loss(&trainer.params())?;
    println!(
        "single process on the same tokens ({steps} steps, {:.0} s): val loss {final_loss:.4}",
        started.elapsed().as_secs_f64()
    );
    let _ = PeerId([0; 32]);
    Ok((final_loss, curve))
}

fn samples(run: &node::Run, params: &[f32], count: usize) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let dataset = data::PreparedDataset::open(&run.dataset_dir)?;
    let tokenizer = dataset.tokenizer()?;
    let model = model::LanguageModel::new(run.model.clone(), params)?;
    let prompts = ["ROMEO:", "First Citizen:\n", "KING HENRY:"];
    for (i, prompt) in prompts.iter().cycle().take(count).enumerate() {
        let ids = tokenizer.encode(prompt)?;
        let out = model.generate(&ids, 200, 0.8, 40, i as u64)?;
        println!(
            "--- sample {} ---\n{}{}\n",
            i + 1,
            prompt,
            tokenizer.decode(&out)?
        );
    }
    Ok(())
}

fn svg(curve: &[CurvePoint], single: &[CurvePoint]) -> String {
    let (w, h, pad) = (640.0, 400.0, 50.0);
    let all: Vec<&CurvePoint> = curve.iter().chain(single).collect();
    let max_round = all.iter().map(|p| p.round).max().unwrap_or(1).max(1) as f64;
    let lo = all.iter().map(|p| p.val_loss).fold(f32::INFINITY, f32::min) as f64;
    let hi = all
        .iter()
        .map(|p| p.val_loss)
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let x = |r: u64| pad + (r as f64 / max_round) * (w - 2.0 * pad);
    let y = |l: f32| h - pad - ((l as f64 - lo) / (hi - lo)) * (h - 2.0 * pad);
    let line = |points: &[CurvePoint], color: &str| {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.round), y(p.val_loss)))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\
<text x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\">round</text>\
<text x=\"10\" y=\"{pad}\">val loss</text>\
<text x=\"{pad}\" y=\"{lb}\">{hi:.3}</text><text x=\"{pad}\" y=\"{b2}\">{lo:.3}</text>\
{swarm}{single}\
<text x=\"{lx}\" y=\"20\" fill=\"#1f77b4\">swarm</text><text x=\"{lx}\" y=\"36\" fill=\"#d62728\">single process, same tokens</text></svg>\n",
        b = h - pad,
        r = w - pad,
        cx = w / 2.0,
        ty = h - 10.0,
        lb = pad - 5.0,
        b2 = h - pad - 5.0,
        swarm = line(curve, "#1f77b4"),
        single = line(single, "#d62728"),
        lx = w - 250.0,
    )
}

fn markdown(r: &Report) -> String {
    let mut text = format!(
        "# Swarm run report\n\n\
{} `commonweight node` processes on 127.0.0.1 trained the `{}` preset for {} rounds (H = {}, codec `{}`), \
run `{}`.\n\n\
| figure | value |\n|---|---|\n\
| final validation loss (swarm) | {:.4} |\n\
| single process on the same tokens | {} |\n\
| gap | {} |\n\
| network-free replay of the same rounds (val loss, gap, bit-identical) | {} |\n\
| bytes sent per node (mean, all application traffic) | {} |\n\
| fp32 data-parallel bytes per worker (one fp32 gradient per inner step) | {} |\n\
| bytes vs fp32 data-parallel | {:.1}x fewer (updates only: {:.1}x) |\n\
| final model | `{}` (CID `{}`) |\n\
| all nodes hold the same model | {} |\n\
| wall time | {:.0} s |\n\n\
![loss curve](loss.svg)\n\n\
## Nodes\n\n| node | peer | contributions (rounds included) | bytes out | bytes in | model hash |\n|---|---|---|---|---|---|\n",
        r.nodes,
        r.preset,
        r.rounds,
        r.inner_steps,
        r.codec,
        &r.run_id[..16],
        r.final_val_loss,
        loss(r.single_node_val_loss),
        r.gap_pct.map_or_else(|| "-".into(), |g| format!("{g:+.2}%")),
        r.replay.as_ref().map_or_else(
            || "-".into(),
            |p| format!("{:.4}, {:+.3}%, {}", p.val_loss, p.gap_pct, p.bit_identical)
        ),
        mb(r.mean_bytes_out_per_node),
        mb(r.ddp_bytes_per_worker),
        r.bytes_ratio_vs_ddp,
        r.update_bytes_ratio_vs_ddp,
        &r.model_hash[..16],
        r.model_cid,
        r.all_nodes_agree,
        r.wall_s,
    );
    for n in &r.per_node {
        text.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | `{}` |\n",
            n.index,
            &n.peer_id[..n.peer_id.len().min(16)],
            n.contributions,
            mb(n.bytes_out),
            mb(n.bytes_in),
            &n.model_hash[..n.model_hash.len().min(16)],
        ));
    }
    if let Some(l) = &r.ledger {
        text.push_str(&format!(
            "\n## Ownership (ledger)\n\nEvery founder validates the run's ledger (commonware simplex over \
authenticated p2p on 127.0.0.1) and signs verdicts for each settled round's included trainers. \
State root `{}`, {} shares minted; `commonweight ledger balances` agrees on every node: {}; every \
contributing node holds shares: {}.\n\n| peer | shares | share of total |\n|---|---|---|\n",
            &l.state_root[..l.state_root.len().min(16)],
            l.total_minted,
            l.all_nodes_agree,
            l.every_contributor_holds_shares
        ));
        for (peer, shares) in &l.balances {
            let pct = 100.0 * *shares as f64 / l.total_minted.max(1) as f64;
            text.push_str(&format!(
                "| `{}` | {shares} | {pct:.2}% |\n",
                &peer[..peer.len().min(16)]
            ));
        }
    }
    text.push_str("\n## Loss per round\n\n| round | swarm val loss | single process val loss |\n|---|---|---|\n");
    for (i, p) in r.curve.iter().enumerate() {
        let single = r
            .single_curve
            .get(i)
            .map_or_else(|| "-".into(), |s| format!("{:.4}", s.val_loss));
        text.push_str(&format!(
            "| {} | {:.4} | {} |\n",
            p.round, p.val_loss, single
        ));
    }
    text
}

/// The data shards `peer` trains on in the round with `seed` (the round protocol's pure assignment).
pub(crate) fn assigned_shards(run: &node::Run, seed: Hash32, peer: PeerId) -> Vec<u32> {
    round::assign_data(
        seed,
        peer,
        run.genesis.dataset_cid,
        run.genesis.dataset_shards,
        run.genesis.shards_per_trainer,
    )
}
