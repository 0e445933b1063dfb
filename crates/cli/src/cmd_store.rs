//! `commonweight store status`: pieces held, bytes used, and the audit and repair counters.

use anyhow::Result;
use store::{collection, local};

use crate::cmd_data::open_store;
use crate::data_dir::DataDirArgs;

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand, Debug)]
enum StoreCommand {
    /// Show pieces held, bytes used, and audit and repair counters.
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
    let store = open_store(data_dir)?;
    let status = store.status()?;
    let mut pieces = 0;
    let collections = store.collections()?;
    for (root, _) in &collections {
        if let Ok(m) = collection::load_manifest(&store, *root) {
            pieces += m
                .erasure
                .pieces
                .iter()
                .filter(|p| store.contains(**p).unwrap_or(false))
                .count();
        }
    }
    println!("store:            {}", store.dir().display());
    println!("collections:      {}", collections.len());
    println!("pieces held:      {pieces}");
    println!(
        "blobs:            {} ({} pinned)",
        status.blobs, status.pinned
    );
    println!(
        "bytes used:       {} of {}",
        status.bytes_used, status.quota_bytes
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
            status.counters.get(name).copied().unwrap_or(0)
        );
    }
    Ok(())
}
