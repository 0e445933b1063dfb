//! `commonweight node`: run a node (network plus local control API) until Ctrl-C or SIGTERM.

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
}

pub fn run(args: NodeArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    let data_dir = args.data_dir.resolve()?;
    let mut net = node::shell::default_net_config();
    if !args.listen.is_empty() {
        net.listen = args.listen;
    }
    net.bootstrap = args.bootstrap;
    net.mdns = args.mdns;
    net.relay_server = args.relay_server;
    let config = node::ShellConfig {
        data_dir: data_dir.clone(),
        net,
    };
    node::shell::run_blocking(config)
        .with_context(|| format!("node with data dir {}", data_dir.display()))
}
