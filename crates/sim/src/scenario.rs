//! A scenario: the network, faults and model a simulation runs with. Parsed from TOML; every field has a default.

use serde::{Deserialize, Serialize};
use types::limits::{round as round_limits, sim as limits};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Mean,
    /// Coordinate-wise mean after dropping `trim_permille` of the values at each end.
    TrimmedMean,
    /// Updates above the median L2 norm scaled down to it, then the mean (Templar).
    MedianNormClip,
}

/// Link model between two nodes: `latency_min + Exp(latency_extra_mean) + cross-region penalty + size/bandwidth`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Link {
    pub latency_ms_min: u64,
    pub latency_extra_ms_mean: u64,
    pub regions: u32,
    pub cross_region_ms: u64,
    pub bandwidth_bytes_per_ms: u64,
    pub loss_permille: u32,
}

impl Default for Link {
    fn default() -> Link {
        Link {
            latency_ms_min: 10,
            latency_extra_ms_mean: 30,
            regions: 3,
            cross_region_ms: 60,
            bandwidth_bytes_per_ms: 12_500, // 100 Mbit/s
            loss_permille: 20,
        }
    }
}

/// Everything a simulation is run with. `commonweight sim` without `--scenario` uses `Scenario::default()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Founding nodes.
    pub nodes: usize,
    /// The run ends when an honest node settles this many rounds.
    pub rounds: u64,
    pub committee_size: u32,
    /// Stand-in model size (flat f32 parameters).
    pub params: usize,
    pub shards: u32,
    pub shards_per_trainer: u32,
    pub inner_steps: u32,
    pub inner_lr: f32,
    pub outer_lr: f32,
    pub aggregation: Aggregation,
    pub trim_permille: u32,
    pub phase_min_ms: u64,
    pub phase_max_ms: u64,
    pub deadline_mad_k_millis: u32,
    pub quorum_permille: u16,
    /// Training time per round is drawn uniformly in this range.
    pub train_ms_min: u64,
    pub train_ms_max: u64,
    pub link: Link,
    pub gossip_degree: usize,
    /// Each round, this share of live nodes leaves and as many new nodes join.
    pub churn_permille: u32,
    /// Each round, this share of live nodes crashes, to restart after `restart_after_ms`.
    pub crash_permille: u32,
    pub restart_after_ms: u64,
    /// Share of restarts that find their stored state corrupted (they rejoin from scratch).
    pub corrupt_store_permille: u32,
    /// Every this many rounds a partition cuts off `partition_minority_permille` of nodes (0 = never).
    pub partition_every_rounds: u64,
    pub partition_ms: u64,
    pub partition_minority_permille: u32,
    /// Each node's clock runs fast or slow by up to this much.
    pub clock_drift_ppm_max: u32,
    /// Share of nodes that attack (noise, sign flip, scale, free ride, copy, stale base, NaN).
    pub byzantine_permille: u32,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            nodes: 50,
            rounds: 20,
            committee_size: 16,
            params: 32,
            shards: 256,
            shards_per_trainer: 2,
            inner_steps: 10,
            inner_lr: 0.1,
            outer_lr: 1.0,
            aggregation: Aggregation::Mean,
            trim_permille: 100,
            phase_min_ms: 200,
            phase_max_ms: 4_000,
            deadline_mad_k_millis: 3_000,
            quorum_permille: 667,
            train_ms_min: 400,
            train_ms_max: 1_200,
            link: Link::default(),
            gossip_degree: 6,
            churn_permille: 50,
            crash_permille: 20,
            restart_after_ms: 5_000,
            corrupt_store_permille: 250,
            partition_every_rounds: 7,
            partition_ms: 8_000,
            partition_minority_permille: 200,
            clock_drift_ppm_max: 200,
            byzantine_permille: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario file is {0} bytes, above the limit of {max}", max = limits::SCENARIO_FILE_BYTES_MAX)]
    TooLarge(usize),
    #[error("scenario does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("scenario field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        if text.len() > limits::SCENARIO_FILE_BYTES_MAX {
            return Err(ScenarioError::TooLarge(text.len()));
        }
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.nodes == 0 || self.nodes > limits::NODES_MAX {
            return Err(invalid(
                "nodes",
                format!("must be 1..={}", limits::NODES_MAX),
            ));
        }
        if self.rounds == 0 || self.rounds > limits::ROUNDS_MAX {
            return Err(invalid(
                "rounds",
                format!("must be 1..={}", limits::ROUNDS_MAX),
            ));
        }
        if self.params == 0 || self.params > limits::STANDIN_PARAMS_MAX {
            return Err(invalid(
                "params",
                format!("must be 1..={}", limits::STANDIN_PARAMS_MAX),
            ));
        }
        if self.committee_size == 0
            || self.committee_size as usize > round_limits::COMMITTEE_PEERS_MAX
        {
            return Err(invalid(
                "committee_size",
                format!("must be 1..={}", round_limits::COMMITTEE_PEERS_MAX),
            ));
        }
        if self.gossip_degree == 0 || self.gossip_degree > limits::GOSSIP_DEGREE_PEERS_MAX {
            return Err(invalid(
                "gossip_degree",
                format!("must be 1..={}", limits::GOSSIP_DEGREE_PEERS_MAX),
            ));
        }
        if self.train_ms_min > self.train_ms_max || self.train_ms_max >= self.phase_max_ms {
            return Err(invalid(
                "train_ms_max",
                "must be at least train_ms_min and below phase_max_ms",
            ));
        }
        if self.link.regions == 0 || self.link.bandwidth_bytes_per_ms == 0 {
            return Err(invalid(
                "link",
                "regions and bandwidth_bytes_per_ms must be positive",
            ));
        }
        if !(self.inner_lr > 0.0
            && self.inner_lr < 1.0
            && self.outer_lr > 0.0
            && self.outer_lr <= 2.0)
        {
            return Err(invalid(
                "inner_lr/outer_lr",
                "need 0 < inner_lr < 1 and 0 < outer_lr <= 2",
            ));
        }
        let permilles = [
            ("churn_permille", self.churn_permille),
            ("crash_permille", self.crash_permille),
            ("corrupt_store_permille", self.corrupt_store_permille),
            (
                "partition_minority_permille",
                self.partition_minority_permille,
            ),
            ("byzantine_permille", self.byzantine_permille),
            (
                "trim_permille",
                self.trim_permille.min(499) + u32::from(self.trim_permille >= 500) * 1001,
            ),
            ("link.loss_permille", self.link.loss_permille),
        ];
        for (field, value) in permilles {
            if value > 1000 {
                return Err(invalid(
                    field,
                    "must be at most 1000 (trim_permille below 500)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_names_bad_fields() {
        let s = Scenario::from_toml("nodes = 7\n[link]\nloss_permille = 5\n").unwrap();
        assert_eq!(
            (s.nodes, s.link.loss_permille, s.rounds),
            (7, 5, Scenario::default().rounds)
        );
        assert!(matches!(
            Scenario::from_toml("nodes = 0"),
            Err(ScenarioError::Invalid { field: "nodes", .. })
        ));
        assert!(matches!(
            Scenario::from_toml("bogus = 1"),
            Err(ScenarioError::Parse(_))
        ));
    }
}
