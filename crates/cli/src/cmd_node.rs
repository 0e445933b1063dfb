//! `commonweight node`: run a node until Ctrl-C or SIGTERM. Without `--run`, the network shell and control
//! API only; with `--run FILE|RUN_ID`, a member of a training run with the given roles. A run id whose file this
//! data dir lacks is fetched from the run's members through `--bootstrap` (with the dataset, if needed).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::data_dir::DataDirArgs;

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Address to listen on (repeatable). Default: QUIC and TCP on all interfaces, free ports.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Peer to join through (repeatable), e.g. /ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3Koo...
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Find peers on the local network with mDNS.
    #[arg(long)]
    pub mdns: bool,
    /// Relay traffic for peers behind NAT (for publicly reachable nodes).
    #[arg(long)]
    pub relay_server: bool,
    /// Join a training run: a run file from `commonweight run init`, or a run id. The data dir keeps a copy
    /// of the run file at DATA_DIR/runs/<id prefix>/run.json; without one, the node fetches the run file
    /// (checked against the id) and, if missing, the dataset from the run's members through --bootstrap.
    #[arg(long, value_name = "FILE|RUN_ID")]
    pub run: Option<String>,
    /// Roles in the run (comma-separated): trainer, verifier, storage.
    #[arg(long, default_value = "trainer,verifier,storage")]
    pub roles: String,
    /// libtorch threads for training and evaluation.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Without --run: serve and announce the erasure-coded pieces in DATA_DIR/store to peers
    /// (`commonweight data get --bootstrap` fetches from such nodes). Holds the store's lock while running.
    #[arg(long)]
    pub serve_store: bool,
    /// With --serve-store: keep this collection (root CID; repeatable). The node fetches its manifest, holds the
    /// pieces rendezvous placement puts on it, and repairs them when holders leave or pieces rot.
    #[arg(long, value_name = "CID", requires = "serve_store")]
    pub keep: Vec<String>,
    /// With --serve-store: milliseconds between maintenance passes (scrub, repair, audit).
    #[arg(long, value_name = "MS", default_value_t = types::limits::store::STORE_MAINTENANCE_INTERVAL_MS)]
    pub maintenance_ms: u64,
    /// Wait (up to 30 s) for this many peers before the first round.
    #[arg(long, default_value_t = 0)]
    pub wait_peers: usize,
    /// Attack testing only: this trainer lies on purpose (`sign-flip`: it sends −Δ; `replay-scaled`: from its
    /// second round it re-sends its first update doubled), so a test can watch the verifiers of a running swarm
    /// catch it.
    #[arg(long, value_name = "ATTACK", hide = true)]
    pub misbehave: Option<String>,
}

pub fn run(args: NodeArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    let data_dir = args.data_dir.resolve()?;
    let mut net = node::shell::default_net_config();
    if !args.listen.is_empty() {
        net.listen = args.listen.clone();
    }
    net.bootstrap = args.bootstrap.clone();
    net.mdns = args.mdns;
    net.relay_server = args.relay_server;
    if let Some(run) = &args.run {
        let source = resolve_run(&data_dir, run)?;
        let roles: node::Roles = args.roles.parse()?;
        let config = node::RunNodeConfig {
            data_dir: data_dir.clone(),
            run: source,
            roles,
            net,
            threads: args.threads,
            wait_peers: args.wait_peers,
            misbehave: args.misbehave.as_deref().map(str::parse).transpose()?,
        };
        return node::run_shell::run_blocking(config)
            .with_context(|| format!("run node with data dir {}", data_dir.display()));
    }
    let mut keep = Vec::with_capacity(args.keep.len());
    for root in &args.keep {
        keep.push(
            root.parse::<store::Cid>()
                .with_context(|| format!("--keep {root:?} is not a CID"))?,
        );
    }
    let config = node::ShellConfig {
        data_dir: data_dir.clone(),
        net,
        serve_store: args.serve_store,
        keep,
        maintenance_interval_ms: args.maintenance_ms,
    };
    node::shell::run_blocking(config)
        .with_context(|| format!("node with data dir {}", data_dir.display()))
}

/// A run file path, or a run id: the data dir's copy of its run file, or else the id to fetch it by. A path is
/// copied into the data dir, so a restart can name the run by its id.
fn resolve_run(data_dir: &std::path::Path, run: &str) -> Result<node::RunSource> {
    let path = PathBuf::from(run);
    if path.is_file() {
        let loaded = node::Run::load(&path)?;
        let copy = node::run_fetch::run_file_path(data_dir, loaded.run_id.0);
        let dir = copy.parent().context("run file path has a parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        node::Run::write_spec(&loaded.spec, &copy)?;
        return Ok(node::RunSource::File(copy));
    }
    let id = types::Hash32::from_hex(run)
        .ok()
        .with_context(|| format!("--run {run:?} is neither a file nor a run id"))?;
    let copy = node::run_fetch::run_file_path(data_dir, id);
    if copy.is_file() {
        return Ok(node::RunSource::File(copy));
    }
    Ok(node::RunSource::Fetch(types::RunId(id)))
}
