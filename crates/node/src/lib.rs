//! Node roles and the shell that owns tokio.
//!
//! `shell` runs the network and the local control API until shutdown. Roles (trainer, verifier,
//! storage) plug into the shell as sans-IO state machines in later modules.

mod control;
mod dir_blobs;
pub mod shell;

pub use shell::{ShellConfig, ShellError};
