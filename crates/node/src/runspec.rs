//! The run file (`run.json`): the genesis config every node agrees on, plus the training spec (codec
//! parameters, outer optimizer, batch shape, dataset location) that turns it into real model math.
//!
//! `commonweight run init` writes it; `commonweight node --run FILE` reads it. The run id is the hash of the
//! genesis config, and the genesis carries the digest of the rest of the run file (`spec_digest`), so the run id
//! names the whole run: a node that fetched the run file from a peer (`run_fetch`) knows it got this run. The
//! node checks that the spec agrees with the genesis (spec digest, codec id, H, preset, dataset hash, genesis
//! model hash) before it takes part.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::{ModelConfig, Preset, TrainConfig};
use round::GenesisConfig;
use serde::{Deserialize, Serialize};
use sync::codec::CodecKind;
use types::limits::node as limits;
use types::{Hash32, PeerId, RunId};

/// Version of the run file format.
pub const RUN_FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RunSpecError {
    #[error("run file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run file {path} is {len} bytes, above the limit of {max}", max = limits::RUN_FILE_BYTES_MAX)]
    TooLarge { path: PathBuf, len: u64 },
    #[error("run file {path} does not parse: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("run file field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("genesis config: {0}")]
    Genesis(#[from] round::ConfigError),
    #[error("dataset: {0}")]
    Data(#[from] data::DataError),
    #[error("model: {0}")]
    Model(#[from] model::ModelError),
    #[error("dataset collection: {0}")]
    Collection(#[from] store::collection::CollectionError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RunSpecError {
    RunSpecError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// What `run init` reads (from `run.toml`). Every field but `founders` and `data` has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_preset")]
    pub preset: String,
    /// A prepared dataset folder (with dataset.json).
    pub data: PathBuf,
    #[serde(default = "default_codec")]
    pub codec: String,
    /// `sparseloco` or `nesterov`; default: sparseloco for topk and dct, else nesterov.
    #[serde(default)]
    pub outer: Option<String>,
    #[serde(default)]
    pub outer_lr: Option<f32>,
    #[serde(default)]
    pub outer_momentum: Option<f32>,
    /// Error-feedback decay; default 0.95 with sparseloco, none with nesterov.
    #[serde(default)]
    pub ef_decay: Option<f32>,
    #[serde(default = "default_inner_steps")]
    pub inner_steps: u32,
    /// Peak inner learning rate; default: the preset's.
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub batch: Option<usize>,
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// Rounds the run lasts (the inner LR schedule spans rounds × H steps).
    #[serde(default = "default_rounds")]
    pub rounds: u64,
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Shards per trainer per round; default: shards / founders (at least 1).
    #[serde(default)]
    pub shards_per_trainer: Option<u32>,
    #[serde(default = "default_committee")]
    pub committee_size: u32,
    #[serde(default = "default_quorum")]
    pub quorum_permille: u16,
    #[serde(default = "default_phase_min")]
    pub phase_min_ms: u64,
    #[serde(default = "default_phase_max")]
    pub phase_max_ms: u64,
    #[serde(default = "default_mad_k")]
    pub deadline_mad_k_millis: u32,
    #[serde(default)]
    pub seed: u64,
    /// Validation windows each node evaluates after a settled round.
    #[serde(default = "default_eval_windows")]
    pub eval_windows: usize,
    /// Chance, in parts per million, that an included update is replay spot-checked after its round
    /// (`node::spot_check`); 0 turns spot checks off.
    #[serde(default = "default_spot_check_ppm")]
    pub spot_check_ppm: u32,
    /// Founding members: peer ids as hex (as `commonweight node` prints them).
    pub founders: Vec<String>,
    /// The run's ownership ledger; none: the run keeps no ledger.
    #[serde(default)]
    pub ledger: Option<LedgerConfig>,
}

/// The ledger of a run, fixed at genesis: who orders its blocks and whose verdicts count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Simplex validators: peer id (hex) and p2p address (`127.0.0.1:PORT`). Each must be a founder.
    pub validators: Vec<LedgerValidator>,
    /// Accepting verifiers needed before a mint; default: all but f = (n − 1) / 3 of the verifiers
    /// (the founders).
    #[serde(default)]
    pub verifier_quorum: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerValidator {
    pub peer: String,
    pub p2p: std::net::SocketAddr,
}

/// The ledger genesis of a run, derived only from the run id and the run file's ledger section,
/// so every node computes the same chain id. Verifiers are the founders.
pub fn ledger_genesis(
    run_id: RunId,
    founders: &[PeerId],
    ledger: &LedgerConfig,
) -> Result<ledger::Genesis, RunSpecError> {
    let mut validators = Vec::with_capacity(ledger.validators.len());
    for v in &ledger.validators {
        let peer = parse_peer(&v.peer).ok_or_else(|| {
            invalid(
                "ledger.validators",
                format!("{:?} is not a hex peer id", v.peer),
            )
        })?;
        if !founders.contains(&peer) {
            return Err(invalid(
                "ledger.validators",
                format!("{peer} is not a founder"),
            ));
        }
        validators.push(peer);
    }
    let n = founders.len() as u32;
    let genesis = ledger::Genesis {
        version: ledger::WIRE_VERSION,
        run: run_id,
        validators,
        verifiers: founders.to_vec(),
        verifier_quorum: ledger
            .verifier_quorum
            .unwrap_or(n - n.saturating_sub(1) / 3),
        namespace: format!("commonweight-ledger-{}", &run_id.0.to_hex()[..16]),
    };
    genesis
        .check()
        .map_err(|e| invalid("ledger", e.to_string()))?;
    Ok(genesis)
}

fn default_name() -> String {
    "run".into()
}
fn default_preset() -> String {
    "tiny".into()
}
fn default_codec() -> String {
    "topk".into()
}
fn default_inner_steps() -> u32 {
    10
}
fn default_rounds() -> u64 {
    20
}
fn default_shards() -> u32 {
    64
}
fn default_committee() -> u32 {
    16
}
fn default_quorum() -> u16 {
    750
}
fn default_phase_min() -> u64 {
    300
}
fn default_phase_max() -> u64 {
    60_000
}
fn default_mad_k() -> u32 {
    3_000
}
fn default_eval_windows() -> usize {
    32
}
fn default_spot_check_ppm() -> u32 {
    types::limits::verify::SPOT_CHECK_PROBABILITY_PPM
}

/// The run file: genesis plus the training spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub version: u32,
    /// `GenesisConfig::encode()`, hex.
    pub genesis_hex: String,
    /// The prepared dataset folder on the machine that wrote the run file (a joiner without it fetches
    /// `dataset_collection`). Local, so not part of the spec digest.
    pub dataset: PathBuf,
    /// Root CID of the dataset as a store collection (`run init` publishes it), which run members serve;
    /// none: every node needs the dataset folder itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_collection: Option<String>,
    pub codec: String,
    pub outer: String,
    pub outer_lr: f32,
    pub outer_momentum: f32,
    pub ef_decay: Option<f32>,
    pub lr: f64,
    pub batch: usize,
    pub seq_len: usize,
    pub rounds: u64,
    pub seed: u64,
    pub eval_windows: usize,
    /// Replay spot-check chance per included update, parts per million (0: off).
    #[serde(default = "default_spot_check_ppm")]
    pub spot_check_ppm: u32,
    /// The run's ownership ledger (validators and their p2p addresses); none: no ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerConfig>,
}

/// A loaded, checked run: what the node and `swarm` work with.
#[derive(Clone)]
pub struct Run {
    pub spec: RunSpec,
    pub genesis: Arc<GenesisConfig>,
    pub run_id: RunId,
    pub codec: CodecKind,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Where this node reads the dataset: the run file's `dataset`, or the copy fetched into the data dir.
    pub dataset_dir: PathBuf,
    /// The ledger genesis (`ledger_genesis`), when the run keeps a ledger.
    pub ledger: Option<ledger::Genesis>,
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a peer id printed as 64 hex digits.
pub fn parse_peer(text: &str) -> Option<PeerId> {
    Hash32::from_hex(text.trim()).ok().map(|h| PeerId(h.0))
}

/// The digest the genesis carries of the rest of the run file: every field but `genesis_hex` and the local
/// `dataset` path, as JSON with sorted keys. A field added to `RunSpec` is covered without a change here.
pub fn spec_digest(spec: &RunSpec) -> Hash32 {
    let rest = RunSpec {
        genesis_hex: String::new(),
        dataset: PathBuf::new(),
        ..spec.clone()
    };
    let value = serde_json::to_value(&rest).expect("a run spec without its path serializes");
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/run-spec");
    hasher.update(value.to_string().as_bytes());
    Hash32(*hasher.finalize().as_bytes())
}

/// Parses run file bytes (bounded by RUN_FILE_BYTES_MAX) without checking them against the genesis.
pub fn parse_spec(bytes: &[u8], origin: &Path) -> Result<RunSpec, RunSpecError> {
    if bytes.len() as u64 > limits::RUN_FILE_BYTES_MAX {
        return Err(RunSpecError::TooLarge {
            path: origin.to_owned(),
            len: bytes.len() as u64,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| RunSpecError::Parse {
        path: origin.to_owned(),
        reason: e.to_string(),
    })
}

/// The hash that names a prepared dataset in the genesis: BLAKE3 over its training tokens (u32 LE).
pub fn dataset_hash(tokens: &[u32]) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/dataset-tokens");
    for chunk in tokens.chunks(64 * 1024) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|t| t.to_le_bytes()).collect();
        hasher.update(&bytes);
    }
    Hash32(*hasher.finalize().as_bytes())
}

fn outer_default(codec: &CodecKind) -> &'static str {
    if matches!(codec, CodecKind::TopK(_) | CodecKind::DctSign(_)) {
        "sparseloco"
    } else {
        "nesterov"
    }
}

/// `run init`: checks the config, computes the genesis model and dataset hashes, returns the run file. With a
/// `store`, publishes the dataset into it as a collection and names its root CID in the run file, so nodes
/// without the dataset fetch it from the run's members.
pub fn init(
    config: &RunConfig,
    store: Option<&store::LocalStore>,
) -> Result<RunSpec, RunSpecError> {
    let preset = Preset::parse(&config.preset)?;
    let codec: CodecKind = config
        .codec
        .parse()
        .map_err(|e: sync::codec::CodecParseError| invalid("codec", e.to_string()))?;
    let outer = config
        .outer
        .clone()
        .unwrap_or_else(|| outer_default(&codec).into());
    if outer != "sparseloco" && outer != "nesterov" {
        return Err(invalid("outer", "expected sparseloco or nesterov"));
    }
    let sparse = outer == "sparseloco";
    let mut founders = Vec::with_capacity(config.founders.len());
    for text in &config.founders {
        founders.push(
            parse_peer(text)
                .ok_or_else(|| invalid("founders", format!("{text:?} is not a hex peer id")))?,
        );
    }
    founders.sort_unstable();
    founders.dedup();
    if founders.is_empty() {
        return Err(invalid("founders", "list at least one peer id"));
    }
    let dataset = data::PreparedDataset::open(&config.data)?;
    let tokens = dataset.train_tokens()?;
    let defaults = preset.train_config(1);
    let batch = config.batch.unwrap_or(defaults.batch_size);
    let seq_len = config.seq_len.unwrap_or(defaults.seq_len);
    let shard_len = tokens.len() / config.shards.max(1) as usize;
    if config.shards == 0 || shard_len <= seq_len + 1 {
        return Err(invalid(
            "shards",
            format!(
                "{} training tokens in {} shards leave fewer than seq_len + 2 tokens per shard",
                tokens.len(),
                config.shards
            ),
        ));
    }
    let shards_per_trainer = config
        .shards_per_trainer
        .unwrap_or((config.shards / founders.len() as u32).max(1));
    let mut model = preset.model_config(dataset.vocab_size());
    model.max_position_embeddings = model.max_position_embeddings.max(seq_len);
    let params = model::init_params(&model, config.seed);
    let dataset_cid = dataset_hash(&tokens);
    let dataset_collection = match store {
        Some(store) => {
            Some(crate::run_fetch::publish_dataset(store, &dataset, dataset_cid)?.to_string())
        }
        None => None,
    };
    let mut genesis = GenesisConfig {
        run_name: config.name.clone(),
        model_preset: preset.name().into(),
        genesis_model_hash: Hash32::of_f32s(&params),
        dataset_cid,
        dataset_shards: config.shards,
        shards_per_trainer,
        codec_id: codec.id() as u8,
        inner_steps: config.inner_steps,
        committee_size: config.committee_size,
        quorum_permille: config.quorum_permille,
        phase_min_ms: config.phase_min_ms,
        phase_max_ms: config.phase_max_ms,
        deadline_mad_k_millis: config.deadline_mad_k_millis,
        founders,
        spec_digest: Hash32::ZERO,
    };
    genesis.validate()?;
    let dataset_dir = std::fs::canonicalize(&config.data).map_err(|source| RunSpecError::Io {
        path: config.data.clone(),
        source,
    })?;
    let mut spec = RunSpec {
        version: RUN_FILE_VERSION,
        genesis_hex: String::new(),
        dataset: dataset_dir,
        dataset_collection,
        codec: codec.to_string(),
        outer,
        outer_lr: config.outer_lr.unwrap_or(if sparse { 1.0 } else { 0.7 }),
        outer_momentum: config.outer_momentum.unwrap_or(0.9),
        ef_decay: config.ef_decay.or(sparse.then_some(0.95)),
        lr: config.lr.unwrap_or(defaults.lr),
        batch,
        seq_len,
        rounds: config.rounds,
        seed: config.seed,
        eval_windows: config.eval_windows.min(limits::EVAL_WINDOWS_MAX),
        spot_check_ppm: config.spot_check_ppm.min(1_000_000),
        ledger: config.ledger.clone(),
    };
    genesis.spec_digest = spec_digest(&spec);
    spec.genesis_hex = hex(&genesis.encode());
    Run::from_spec(spec.clone())?;
    Ok(spec)
}

impl Run {
    /// Reads and checks a run file.
    pub fn load(path: &Path) -> Result<Run, RunSpecError> {
        let io = |source| RunSpecError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > limits::RUN_FILE_BYTES_MAX {
            return Err(RunSpecError::TooLarge {
                path: path.to_owned(),
                len,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Run::from_bytes(&bytes, path)
    }

    /// Parses and checks run file bytes; `origin` names where they came from (a path, or the peer).
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Run, RunSpecError> {
        Run::from_spec(parse_spec(bytes, origin)?)
    }

    /// Checks that the spec agrees with its genesis; reads the dataset (if present) only for its vocabulary.
    pub fn from_spec(spec: RunSpec) -> Result<Run, RunSpecError> {
        let dataset_dir = spec.dataset.clone();
        Run::from_spec_at(spec, dataset_dir)
    }

    /// `from_spec` with the dataset read from `dataset_dir` instead of the run file's folder.
    pub fn from_spec_at(spec: RunSpec, dataset_dir: PathBuf) -> Result<Run, RunSpecError> {
        if spec.version != RUN_FILE_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "{} is not supported (expected {RUN_FILE_VERSION})",
                    spec.version
                ),
            ));
        }
        let bytes =
            hex_decode(&spec.genesis_hex).ok_or_else(|| invalid("genesis_hex", "not hex"))?;
        let genesis = GenesisConfig::decode(&bytes)?;
        if spec_digest(&spec) != genesis.spec_digest {
            return Err(invalid(
                "genesis_hex",
                "the genesis does not carry this run file's spec digest (the file was altered)",
            ));
        }
        if let Some(cid) = &spec.dataset_collection {
            cid.parse::<store::Cid>()
                .map_err(|e| invalid("dataset_collection", e.to_string()))?;
        }
        let codec: CodecKind = spec
            .codec
            .parse()
            .map_err(|e: sync::codec::CodecParseError| invalid("codec", e.to_string()))?;
        if codec.id() as u8 != genesis.codec_id {
            return Err(invalid(
                "codec",
                "its codec id differs from the genesis codec id",
            ));
        }
        if spec.outer != "sparseloco" && spec.outer != "nesterov" {
            return Err(invalid("outer", "expected sparseloco or nesterov"));
        }
        if !(spec.outer_lr.is_finite() && spec.outer_momentum.is_finite()) {
            return Err(invalid("outer_lr", "must be finite"));
        }
        if let Some(decay) = spec.ef_decay {
            if !(0.0..=1.0).contains(&decay) {
                return Err(invalid("ef_decay", "must lie in 0..=1"));
            }
        }
        if spec.rounds == 0 {
            return Err(invalid("rounds", "must be at least 1"));
        }
        let preset = Preset::parse(&genesis.model_preset)?;
        // The vocabulary comes from the dataset's tokenizer; the byte tokenizer is the default and the
        // genesis model hash check in `Workload::open` catches any other mismatch.
        let vocab = data::PreparedDataset::open(&dataset_dir)
            .map(|d| d.vocab_size())
            .unwrap_or(256);
        let mut model = preset.model_config(vocab);
        model.max_position_embeddings = model.max_position_embeddings.max(spec.seq_len);
        let mut train = preset.train_config(spec.rounds * u64::from(genesis.inner_steps));
        train.lr = spec.lr;
        train.batch_size = spec.batch;
        train.seq_len = spec.seq_len;
        train.validate(&model)?;
        let ledger = spec
            .ledger
            .as_ref()
            .map(|l| ledger_genesis(genesis.run_id(), &genesis.founders, l))
            .transpose()?;
        let genesis = Arc::new(genesis);
        Ok(Run {
            ledger,
            run_id: genesis.run_id(),
            spec,
            genesis,
            codec,
            model,
            train,
            dataset_dir,
        })
    }

    /// The gossip topic of this run.
    pub fn topic(&self) -> String {
        format!("commonweight/run/{}", &self.run_id.0.to_hex()[..32])
    }

    /// Writes the run file (pretty JSON) through a temporary file.
    pub fn write_spec(spec: &RunSpec, path: &Path) -> Result<(), RunSpecError> {
        let io = |source| RunSpecError::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(spec).expect("run spec serializes");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
