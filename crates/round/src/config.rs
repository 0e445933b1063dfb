//! The genesis config of a run: what every node agrees on before round 0, and the run id derived from it.

use serde::{Deserialize, Serialize};
use types::limits::round as limits;
use types::{Hash32, PeerId, RunId};

/// Version byte in front of an encoded genesis config.
pub const GENESIS_VERSION: u8 = 2;

/// Everything fixed for the lifetime of a run. The run id is the hash of its encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisConfig {
    pub run_name: String,
    /// Model preset name (`tiny`, `small`, ... or `standin` in the simulator).
    pub model_preset: String,
    /// Hash of the round-0 parameters.
    pub genesis_model_hash: Hash32,
    /// Content id of the dataset manifest.
    pub dataset_cid: Hash32,
    /// Shards in the dataset manifest; data ids are shard indices `0..dataset_shards`.
    pub dataset_shards: u32,
    /// Shards assigned to each trainer per round.
    pub shards_per_trainer: u32,
    /// Update codec id (see `sync::codec`).
    pub codec_id: u8,
    /// Inner steps H per round.
    pub inner_steps: u32,
    /// Trainers drawn per round; they are also that round's voters.
    pub committee_size: u32,
    /// Share of the expected arrivals (in thousandths) after which a phase may close at its adaptive deadline.
    pub quorum_permille: u16,
    /// Bounds on each phase's adaptive deadline.
    pub phase_min_ms: u64,
    pub phase_max_ms: u64,
    /// k of the adaptive deadline `median + k * MAD`, in thousandths.
    pub deadline_mad_k_millis: u32,
    /// Members at round 0, sorted and unique.
    pub founders: Vec<PeerId>,
    /// Digest of the rest of the run file (the training spec the node runs this genesis with: optimizer, batch
    /// shape, dataset collection, ...), so the run id names the whole run; `Hash32::ZERO` where there is none
    /// (the simulator).
    pub spec_digest: Hash32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("genesis config is {0} bytes, above the limit of {max}", max = limits::GENESIS_BYTES_MAX)]
    TooLarge(usize),
    #[error("genesis config version {0} is not supported (expected {GENESIS_VERSION})")]
    Version(u8),
    #[error("genesis config is empty")]
    Empty,
    #[error("genesis config does not decode: {0}")]
    Malformed(String),
    #[error("genesis config has trailing bytes")]
    Trailing,
    #[error("genesis config field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl GenesisConfig {
    /// Checks every field against `limits::round`. Called by `decode` and by `RoundMachine` constructors.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.run_name.is_empty() || self.run_name.len() > limits::NAME_BYTES_MAX {
            return Err(invalid(
                "run_name",
                format!("must be 1..={} bytes", limits::NAME_BYTES_MAX),
            ));
        }
        if self.model_preset.is_empty() || self.model_preset.len() > limits::NAME_BYTES_MAX {
            return Err(invalid(
                "model_preset",
                format!("must be 1..={} bytes", limits::NAME_BYTES_MAX),
            ));
        }
        if self.dataset_shards == 0 || self.dataset_shards > limits::DATASET_SHARDS_MAX {
            return Err(invalid(
                "dataset_shards",
                format!("must be 1..={}", limits::DATASET_SHARDS_MAX),
            ));
        }
        let per_trainer_max = (limits::DATA_IDS_PER_TRAINER_MAX as u32).min(self.dataset_shards);
        if self.shards_per_trainer == 0 || self.shards_per_trainer > per_trainer_max {
            return Err(invalid(
                "shards_per_trainer",
                format!("must be 1..={per_trainer_max}"),
            ));
        }
        if self.inner_steps == 0 {
            return Err(invalid("inner_steps", "must be at least 1"));
        }
        if self.committee_size == 0 || self.committee_size as usize > limits::COMMITTEE_PEERS_MAX {
            return Err(invalid(
                "committee_size",
                format!("must be 1..={}", limits::COMMITTEE_PEERS_MAX),
            ));
        }
        if self.quorum_permille == 0 || self.quorum_permille > 1000 {
            return Err(invalid("quorum_permille", "must be 1..=1000"));
        }
        if self.phase_min_ms < limits::PHASE_MS_MIN || self.phase_max_ms > limits::PHASE_MS_MAX {
            return Err(invalid(
                "phase_min_ms/phase_max_ms",
                format!(
                    "must lie in {}..={} ms",
                    limits::PHASE_MS_MIN,
                    limits::PHASE_MS_MAX
                ),
            ));
        }
        if self.phase_min_ms > self.phase_max_ms {
            return Err(invalid("phase_min_ms", "must not exceed phase_max_ms"));
        }
        if self.deadline_mad_k_millis > limits::DEADLINE_MAD_K_MILLIS_MAX {
            return Err(invalid(
                "deadline_mad_k_millis",
                format!("must be at most {}", limits::DEADLINE_MAD_K_MILLIS_MAX),
            ));
        }
        if self.founders.is_empty() || self.founders.len() > limits::MEMBERS_MAX {
            return Err(invalid(
                "founders",
                format!("must list 1..={} peers", limits::MEMBERS_MAX),
            ));
        }
        if !self.founders.windows(2).all(|w| w[0] < w[1]) {
            return Err(invalid("founders", "must be sorted and unique"));
        }
        Ok(())
    }

    /// Versioned canonical encoding; the run id hashes exactly these bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![GENESIS_VERSION];
        out.extend(postcard::to_allocvec(self).expect("genesis config serializes"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<GenesisConfig, ConfigError> {
        if bytes.len() > limits::GENESIS_BYTES_MAX {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(ConfigError::Empty)?;
        if version != GENESIS_VERSION {
            return Err(ConfigError::Version(version));
        }
        let (config, rest): (GenesisConfig, _) =
            postcard::take_from_bytes(body).map_err(|e| ConfigError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ConfigError::Trailing);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn run_id(&self) -> RunId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"commonweight/genesis");
        hasher.update(&self.encode());
        RunId(Hash32(*hasher.finalize().as_bytes()))
    }
}

#[cfg(test)]
pub(crate) fn test_config(founders: Vec<PeerId>) -> GenesisConfig {
    GenesisConfig {
        run_name: "test".into(),
        model_preset: "standin".into(),
        genesis_model_hash: Hash32::of(b"genesis"),
        dataset_cid: Hash32::of(b"dataset"),
        dataset_shards: 64,
        shards_per_trainer: 2,
        codec_id: 0,
        inner_steps: 10,
        committee_size: 16,
        quorum_permille: 667,
        phase_min_ms: 50,
        phase_max_ms: 2_000,
        deadline_mad_k_millis: 3_000,
        founders,
        spec_digest: Hash32::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_run_id_changes_with_config() {
        let config = test_config(vec![PeerId([1; 32]), PeerId([2; 32])]);
        let bytes = config.encode();
        assert_eq!(GenesisConfig::decode(&bytes).unwrap(), config);
        let mut other = config.clone();
        other.inner_steps = 11;
        assert_ne!(config.run_id(), other.run_id());
    }

    #[test]
    fn decode_rejects_bad_bytes_with_named_errors() {
        let config = test_config(vec![PeerId([1; 32])]);
        let mut bytes = config.encode();
        assert_eq!(GenesisConfig::decode(&[]), Err(ConfigError::Empty));
        assert_eq!(GenesisConfig::decode(&[9]), Err(ConfigError::Version(9)));
        bytes.push(0);
        assert_eq!(GenesisConfig::decode(&bytes), Err(ConfigError::Trailing));
        let mut unsorted = config.clone();
        unsorted.founders = vec![PeerId([2; 32]), PeerId([1; 32])];
        assert!(matches!(
            GenesisConfig::decode(&unsorted.encode()),
            Err(ConfigError::Invalid {
                field: "founders",
                ..
            })
        ));
    }
}
