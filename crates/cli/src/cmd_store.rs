//! `commonweight store status`: pieces held, bytes used, and the audit and repair counters.

use anyhow::{Context, Result};
use node::maintain::StoreView;
use store::local;

use crate::cmd_data::open_store;
use crate::cmd_swarm::http_get;
use crate::data_dir::DataDirArgs;

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand, Debug)]
enum StoreCommand {
    /// Show pieces held, bytes used, and audit and repair counters (from a running `node --serve-store` if it
    /// holds the store).
    Status {
        #[command(flatten)]
        dir: DataDirArgs,
    },
}

pub fn run(args: StoreArgs) -> Result<()> {
    match args.command {
        StoreCommand::Status { dir } => status(&dir.resolve()?),
    }
}

fn status(data_dir: &std::path::Path) -> Result<()> {
    let view = match open_store(data_dir) {
        Ok(store) => node::maintain::store_view(&store)?,
        // A node serving the store holds its lock: ask the node instead.
        Err(open_error) => running_node_view(data_dir).map_err(|e| {
            open_error.context(format!("and no running node answered either: {e:#}"))
        })?,
    };
    print_view(&view);
    Ok(())
}

fn running_node_view(data_dir: &std::path::Path) -> Result<StoreView> {
    let addr_file = data_dir.join(node::shell::CONTROL_ADDR_FILE);
    let addr = std::fs::read_to_string(&addr_file)
        .with_context(|| format!("cannot read {}", addr_file.display()))?;
    let body = http_get(addr.trim(), "/store")?;
    serde_json::from_str(&body).context("the node sent a bad store view")
}

fn print_view(view: &StoreView) {
    println!("store:            {}", view.dir);
    println!("collections:      {}", view.collections.len());
    for c in &view.collections {
        println!(
            "  {}  {:<24} {} of {} pieces held",
            c.root,
            c.name,
            c.held.len(),
            c.total_pieces
        );
    }
    println!("pieces held:      {}", view.pieces_held());
    println!("blobs:            {} ({} pinned)", view.blobs, view.pinned);
    println!(
        "bytes used:       {} of {}",
        view.bytes_used, view.quota_bytes
    );
    for name in [
        local::COUNTER_AUDIT_CHALLENGES,
        local::COUNTER_AUDIT_PASSED,
        local::COUNTER_AUDIT_FAILED,
        local::COUNTER_AUDIT_BANNED,
        local::COUNTER_REPAIR_STARTED,
        local::COUNTER_REPAIR_SUCCEEDED,
        local::COUNTER_REPAIR_FAILED,
        local::COUNTER_CORRUPT_FOUND,
    ] {
        println!(
            "{:<18}{}",
            format!("{name}:"),
            view.counters.get(name).copied().unwrap_or(0)
        );
    }
    if let Some(pass) = &view.last_pass {
        println!(
            "last pass:        scrubbed {}, corrupt {}, refetched {}, rebuilt {}, failed {}, audit challenges {}",
            pass.scrubbed, pass.corrupt, pass.refetched, pass.rebuilt, pass.failed, pass.audit_challenges
        );
    }
}
