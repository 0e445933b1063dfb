//! Node roles and the shell that owns tokio.
//!
//! `shell` runs the network and the local control API (`commonweight node` without a run). `roles` is the
//! sans-IO core of a node in a training run; `run_shell` drives it with real I/O (`commonweight node --run`);
//! `work` is the model math it runs off the event loop; `verifier_model` the tch loss evaluator, data assignment
//! and update decoder a verifier plugs into `verify`; `persist` what it keeps on disk; `runspec` the run
//! file; `status` the run node's control API (`/status`, `/metrics`); `storage` the store over the network
//! (serving, announcing and fetching erasure-coded pieces); `maintain` a storage node's periodic pass (scrub,
//! repair its share of each kept collection, audit the other holders); `run_fetch` a run's run file and dataset
//! from its members, for a node that joins knowing only the run id.

mod control;
pub mod copy_gate;
mod dir_blobs;
pub mod ledger_feed;
pub mod maintain;
pub mod persist;
pub mod roles;
pub mod run_fetch;
pub mod run_shell;
pub mod runspec;
pub mod shell;
pub mod spot_check;
pub mod spot_run;
pub mod status;
pub mod storage;
pub mod verifier_model;
pub mod work;

pub use roles::{Core, Effect, Input, Roles};
pub use run_shell::{RunNodeConfig, RunNodeError, RunSource};
pub use runspec::{Run, RunConfig, RunSpec};
pub use shell::{ShellConfig, ShellError};
