//! `commonweight peers`: ask a running node (through its local control API) whom it is connected to.

use anyhow::{Context, Result};

use crate::cmd_swarm::http_get;

use crate::data_dir::DataDirArgs;

#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PeersArgs) -> Result<()> {
    let dir = args.data_dir.resolve()?;
    let addr_file = dir.join(node::shell::CONTROL_ADDR_FILE);
    let addr = std::fs::read_to_string(&addr_file)
        .with_context(|| format!("no running node: cannot read {}", addr_file.display()))?;
    let body = http_get(addr.trim(), "/peers")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let peers: Vec<serde_json::Value> =
        serde_json::from_str(&body).context("the node sent a bad peer list")?;
    println!("{:<64}  {:<8}  {:>9}  address", "peer", "path", "rtt_ms");
    for p in &peers {
        let path = if p["relayed"].as_bool().unwrap_or(false) {
            "relayed"
        } else {
            "direct"
        };
        let rtt = p["rtt_ms"]
            .as_f64()
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<64}  {:<8}  {:>9}  {}",
            p["peer"].as_str().unwrap_or("?"),
            path,
            rtt,
            p["addr"].as_str().unwrap_or("?")
        );
    }
    println!("{} peers", peers.len());
    Ok(())
}
