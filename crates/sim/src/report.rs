//! What a simulation reports: the summary on success, and the failure that names its seed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Traffic counted at one node, duplicates included (they cost bandwidth too).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Meter {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Meter {
    pub fn sent(&mut self, bytes: u64) {
        self.messages_out += 1;
        self.bytes_out += bytes;
    }
    pub fn received(&mut self, bytes: u64) {
        self.messages_in += 1;
        self.bytes_in += bytes;
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckerResult {
    pub name: String,
    /// How many times the checker ran and held.
    pub checks: u64,
    pub passed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub nodes_start: usize,
    pub nodes_ever: usize,
    pub nodes_online_end: usize,
    pub byzantine_nodes: usize,
    pub rounds_completed: u64,
    pub virtual_ms: u64,
    pub virtual_ms_per_round: f64,
    /// Nodes online from start to end (never crashed or left): the ones traffic per node is averaged over.
    pub steady_nodes: usize,
    pub messages_per_node_per_round_mean: f64,
    pub messages_per_node_per_round_max: f64,
    pub bytes_per_node_per_round_mean: f64,
    pub bytes_per_node_per_round_max: f64,
    pub memory_per_node_bytes_mean: f64,
    pub memory_per_node_bytes_max: usize,
    pub checkers: Vec<CheckerResult>,
    pub counts: BTreeMap<String, u64>,
    pub broadcasts_by_kind: BTreeMap<String, u64>,
    pub global_loss_start: f32,
    pub global_loss_end: f32,
    /// Digest of the settled rounds and their times: equal digests mean identical runs.
    pub trace_digest: String,
}

/// A checker that did not hold. Its `Display` starts with `SIM_SEED=<n>`: rerun with that seed to replay it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SimFailure {
    pub seed: u64,
    pub checker: String,
    pub detail: String,
    pub virtual_ms: u64,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SIM_SEED={} checker {} failed at {} ms: {}",
            self.seed, self.checker, self.virtual_ms, self.detail
        )
    }
}
