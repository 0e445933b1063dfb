//! The `--data-dir` flag shared by every command that keeps state.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct DataDirArgs {
    /// Where this node keeps its state. Defaults to $COMMONWEIGHT_HOME, else the platform data directory.
    /// Global, so `ledger balances --data-dir DIR` works as well as `ledger --data-dir DIR balances`.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        if let Some(home) = std::env::var_os("COMMONWEIGHT_HOME") {
            return Ok(PathBuf::from(home));
        }
        platform_data_dir()
            .context("no --data-dir given, COMMONWEIGHT_HOME unset, and no platform data directory")
    }
}

fn platform_data_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return Some(PathBuf::from(xdg).join("commonweight"));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".local/share/commonweight"))
}
