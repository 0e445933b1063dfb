//! `prepare`: text inputs → `tokenizer.json`, train shards, one val shard and `dataset.json`.
//!
//! Validation split: the last `val_fraction` of every document's bytes, moved forward to just
//! after the next newline (or to the next character boundary if the rest has no newline). Every
//! document thus contributes to both splits in the same proportion, and the split does not
//! depend on the seed or on document count. A `bpe:N` tokenizer is trained on the train split only.
//!
//! Each document part is encoded separately and followed by `<|endoftext|>` when the tokenizer
//! has one (`gpt2`, `bpe:N`; `bytes` has none), then parts are concatenated in input order.
//!
//! Idempotent: the fingerprint (BLAKE3 over the format, tokenizer spec, val_fraction, seed, and
//! each input file's kind and content hash, in order) is stored in `dataset.json`. If it matches
//! and every listed file still has its recorded hash, the folder is reused untouched. Otherwise
//! the folder's dataset files are rewritten, each atomically, with `dataset.json` written last.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use types::limits::data as limits;
use types::Hash32;

use crate::ingest::{self, IngestError, InputFile};
use crate::shard::{self, ShardError};
use crate::tokenizer::{Tokenizer, TokenizerError, TokenizerSpec};

pub const DATASET_FORMAT: &str = "commonweight.dataset.v1";
pub const DATASET_JSON: &str = "dataset.json";
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const VAL_SHARD: &str = "val.shard";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("val_fraction {0} must be > 0 and <= {max}", max = limits::VAL_FRACTION_MAX)]
    BadValFraction(f64),
    #[error("the inputs hold no text")]
    NoText,
    #[error("the validation split is empty (documents too short for val_fraction {0})")]
    NoValidationText(f64),
    #[error(
        "{split} split has {tokens} tokens; more than {max} shards of {per_shard} would be needed"
    )]
    TooManyShards {
        split: &'static str,
        tokens: u64,
        per_shard: u64,
        max: usize,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
}

/// One shard file as recorded in `dataset.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the dataset folder.
    pub file: String,
    pub tokens: u64,
    /// BLAKE3 of the whole file, hex.
    pub blake3: String,
}

/// Statistics and files of one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitStats {
    /// UTF-8 bytes of text in this split (the denominator of bits per byte).
    pub bytes: u64,
    /// Tokens in this split, `<|endoftext|>` separators included.
    pub tokens: u64,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputEntry {
    pub path: String,
    pub kind: String,
    pub bytes: u64,
    pub blake3: String,
}

/// The contents of `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    pub format: String,
    pub fingerprint: String,
    pub tokenizer_spec: String,
    pub vocab_size: u32,
    pub end_of_text_id: Option<u32>,
    pub tokenizer_blake3: String,
    pub val_fraction: f64,
    pub seed: u64,
    pub split_rule: String,
    pub documents: u64,
    pub inputs: Vec<InputEntry>,
    pub train: SplitStats,
    pub val: SplitStats,
}

/// A prepared dataset folder.
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    pub dir: PathBuf,
    pub manifest: DatasetManifest,
    /// True when the folder already held this dataset and nothing was rewritten.
    pub reused: bool,
}

impl PreparedDataset {
    /// Opens a prepared folder, checking `dataset.json` and every file hash it lists.
    pub fn open(dir: &Path) -> Result<PreparedDataset, DataError> {
        let manifest = read_manifest(&dir.join(DATASET_JSON))?;
        verify_files(dir, &manifest)?;
        Ok(PreparedDataset {
            dir: dir.to_path_buf(),
            manifest,
            reused: true,
        })
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_JSON)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, DataError> {
        Ok(Tokenizer::load(&self.tokenizer_path())?)
    }

    pub fn vocab_size(&self) -> usize {
        self.manifest.vocab_size as usize
    }

    pub fn train_shard_paths(&self) -> Vec<PathBuf> {
        self.manifest
            .train
            .shards
            .iter()
            .map(|s| self.dir.join(&s.file))
            .collect()
    }

    pub fn val_shard_path(&self) -> PathBuf {
        self.dir.join(VAL_SHARD)
    }

    /// All train tokens, shards concatenated in order.
    pub fn train_tokens(&self) -> Result<Vec<u32>, DataError> {
        let mut tokens = Vec::with_capacity(self.manifest.train.tokens as usize);
        for path in self.train_shard_paths() {
            tokens.extend_from_slice(&shard::read_shard(&path)?.tokens);
        }
        Ok(tokens)
    }

    pub fn val_tokens(&self) -> Result<Vec<u32>, DataError> {
        Ok(shard::read_shard(&self.val_shard_path())?.tokens)
    }

    /// Converts a mean validation loss in nats per token to bits per UTF-8 byte:
    /// `nats · tokens / bytes / ln 2`, with the val split's token and byte counts.
    pub fn val_bits_per_byte(&self, nats_per_token: f64) -> f64 {
        let val = &self.manifest.val;
        nats_per_token * val.tokens as f64 / val.bytes as f64 / std::f64::consts::LN_2
    }
}

/// Ingests `inputs` into `out_dir` (created if missing). See the module docs for the split rule
/// and idempotence.
pub fn prepare(
    inputs: &[PathBuf],
    spec: TokenizerSpec,
    out_dir: &Path,
    val_fraction: f64,
    seed: u64,
) -> Result<PreparedDataset, DataError> {
    if !(val_fraction > 0.0 && val_fraction <= limits::VAL_FRACTION_MAX) {
        return Err(DataError::BadValFraction(val_fraction));
    }
    let files = ingest::collect_input_files(inputs)?;
    let mut input_entries = Vec::with_capacity(files.len());
    for file in &files {
        let (hash, bytes) = ingest::hash_file(&file.path)?;
        input_entries.push(InputEntry {
            path: file.path.display().to_string(),
            kind: file.kind.name().to_string(),
            bytes,
            blake3: hash.to_hex(),
        });
    }
    let fingerprint = fingerprint(spec, val_fraction, seed, &input_entries);
    if let Some(prepared) = try_reuse(out_dir, &fingerprint) {
        return Ok(prepared);
    }
    build(
        &files,
        input_entries,
        fingerprint,
        spec,
        out_dir,
        val_fraction,
        seed,
    )
}

fn fingerprint(spec: TokenizerSpec, val_fraction: f64, seed: u64, inputs: &[InputEntry]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DATASET_FORMAT.as_bytes());
    hasher.update(&[0]);
    hasher.update(spec.to_string().as_bytes());
    hasher.update(&[0]);
    hasher.update(&val_fraction.to_bits().to_le_bytes());
    hasher.update(&seed.to_le_bytes());
    hasher.update(&(inputs.len() as u64).to_le_bytes());
    // Paths are left out on purpose: moving the corpus does not change the dataset.
    for input in inputs {
        hasher.update(input.kind.as_bytes());
        hasher.update(&[0]);
        hasher.update(input.blake3.as_bytes());
    }
    Hash32(*hasher.finalize().as_bytes()).to_hex()
}

/// Returns the existing dataset when its fingerprint matches and its files are intact.
fn try_reuse(out_dir: &Path, fingerprint: &str) -> Option<PreparedDataset> {
    let manifest = read_manifest(&out_dir.join(DATASET_JSON)).ok()?;
    if manifest.fingerprint != fingerprint {
        return None;
    }
    verify_files(out_dir, &manifest).ok()?;
    Some(PreparedDataset {
        dir: out_dir.to_path_buf(),
        manifest,
        reused: true,
    })
}

fn read_manifest(path: &Path) -> Result<DatasetManifest, DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if bytes > limits::DATASET_JSON_BYTES_MAX {
        let message = format!(
            "{bytes} bytes, more than the limit {}",
            limits::DATASET_JSON_BYTES_MAX
        );
        return Err(DataError::Manifest {
            path: path.to_path_buf(),
            message,
        });
    }
    let text = std::fs::read(path).map_err(io_error)?;
    let manifest: DatasetManifest =
        serde_json::from_slice(&text).map_err(|e| DataError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let manifest_error = |message: String| DataError::Manifest {
        path: path.to_path_buf(),
        message,
    };
    if manifest.format != DATASET_FORMAT {
        return Err(manifest_error(format!(
            "format {:?}, expected {DATASET_FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.train.shards.len() > limits::DATASET_SHARDS_MAX || manifest.val.shards.len() != 1 {
        return Err(manifest_error("wrong number of shards".to_string()));
    }
    let all_shards = manifest.train.shards.iter().chain(&manifest.val.shards);
    if all_shards.clone().any(|s| !is_plain_file_name(&s.file)) {
        return Err(manifest_error(
            "shard file names must be plain names inside the folder".to_string(),
        ));
    }
    Ok(manifest)
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

/// Checks the tokenizer and every shard against the hashes and counts in the manifest.
fn verify_files(dir: &Path, manifest: &DatasetManifest) -> Result<(), DataError> {
    let mismatch = |path: &Path, what: &str| DataError::Manifest {
        path: path.to_path_buf(),
        message: what.to_string(),
    };
    let tokenizer_path = dir.join(TOKENIZER_JSON);
    let (tokenizer_hash, _) = ingest::hash_file(&tokenizer_path)?;
    if tokenizer_hash.to_hex() != manifest.tokenizer_blake3 {
        return Err(mismatch(
            &tokenizer_path,
            "tokenizer.json does not match the hash in dataset.json",
        ));
    }
    for entry in manifest.train.shards.iter().chain(&manifest.val.shards) {
        let path = dir.join(&entry.file);
        let (shard, hash) = shard::read_shard_with_hash(&path)?;
        if hash.to_hex() != entry.blake3 || shard.tokens.len() as u64 != entry.tokens {
            return Err(mismatch(
                &path,
                "shard does not match the hash and count in dataset.json",
            ));
        }
        if shard.vocab_size != manifest.vocab_size {
            return Err(mismatch(
                &path,
                "shard vocab_size differs from dataset.json",
            ));
        }
    }
    Ok(())
}

/// Where a document's validation tail starts (a byte index on a char boundary).
pub fn val_split_point(document: &str, val_fraction: f64) -> usize {
    let length = document.len();
    let cut = ((length as f64) * (1.0 - val_fraction)).floor() as usize;
    let cut = cut.min(length);
    match document.as_bytes()[cut..].iter().position(|&b| b == b'\n') {
        Some(newline) => cut + newline + 1,
        None => (cut..=length)
            .find(|&i| document.is_char_boundary(i))
            .unwrap_or(length),
    }
}

fn build(
    files: &[InputFile],
    inputs: Vec<InputEntry>,
    fingerprint: String,
    spec: TokenizerSpec,
    out_dir: &Path,
    val_fraction: f64,
    seed: u64,
) -> Result<PreparedDataset, DataError> {
    let mut budget = limits::INPUT_BYTES_MAX;
    let mut documents = Vec::new();
    for file in files {
        documents.extend(ingest::read_documents(file, &mut budget)?);
    }
    if documents.is_empty() {
        return Err(DataError::NoText);
    }
    let mut train_parts = Vec::with_capacity(documents.len());
    let mut val_parts = Vec::with_capacity(documents.len());
    for document in &documents {
        let (train, val) = document.split_at(val_split_point(document, val_fraction));
        if !train.is_empty() {
            train_parts.push(train);
        }
        if !val.is_empty() {
            val_parts.push(val);
        }
    }
    if val_parts.is_empty() {
        return Err(DataError::NoValidationText(val_fraction));
    }
    if train_parts.is_empty() {
        return Err(DataError::NoText);
    }

    let tokenizer = Tokenizer::from_spec(spec, &train_parts)?;
    let train_tokens = encode_parts(&tokenizer, &train_parts)?;
    let val_tokens = encode_parts(&tokenizer, &val_parts)?;
    let vocab_size = tokenizer.vocab_size() as u32;

    std::fs::create_dir_all(out_dir).map_err(|source| DataError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    // Remove the old manifest first: a crash mid-rewrite then leaves no manifest, never a stale one.
    remove_if_present(&out_dir.join(DATASET_JSON))?;
    let tokenizer_json = tokenizer.to_json()?;
    let tokenizer_path = out_dir.join(TOKENIZER_JSON);
    shard::write_atomic(&tokenizer_path, tokenizer_json.as_bytes()).map_err(|source| {
        DataError::Io {
            path: tokenizer_path.clone(),
            source,
        }
    })?;

    let train_shards = write_train_shards(out_dir, &train_tokens, vocab_size)?;
    if val_tokens.len() as u64 > limits::SHARD_TOKENS_MAX {
        return Err(DataError::TooManyShards {
            split: "val",
            tokens: val_tokens.len() as u64,
            per_shard: limits::SHARD_TOKENS_MAX,
            max: 1,
        });
    }
    let val_hash = shard::write_shard(&out_dir.join(VAL_SHARD), &val_tokens, vocab_size)?;
    let val_shard = ShardEntry {
        file: VAL_SHARD.to_string(),
        tokens: val_tokens.len() as u64,
        blake3: val_hash.to_hex(),
    };
    remove_stale_train_shards(out_dir, &train_shards)?;

    let manifest = DatasetManifest {
        format: DATASET_FORMAT.to_string(),
        fingerprint,
        tokenizer_spec: spec.to_string(),
        vocab_size,
        end_of_text_id: tokenizer.end_of_text_id(),
        tokenizer_blake3: Hash32::of(tokenizer_json.as_bytes()).to_hex(),
        val_fraction,
        seed,
        split_rule: "tail of each document, moved forward to a line boundary".to_string(),
        documents: documents.len() as u64,
        inputs,
        train: SplitStats {
            bytes: train_parts.iter().map(|p| p.len() as u64).sum(),
            tokens: train_tokens.len() as u64,
            shards: train_shards,
        },
        val: SplitStats {
            bytes: val_parts.iter().map(|p| p.len() as u64).sum(),
            tokens: val_tokens.len() as u64,
            shards: vec![val_shard],
        },
    };
    let manifest_json = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    let manifest_path = out_dir.join(DATASET_JSON);
    shard::write_atomic(&manifest_path, manifest_json.as_bytes()).map_err(|source| {
        DataError::Io {
            path: manifest_path,
            source,
        }
    })?;
    Ok(PreparedDataset {
        dir: out_dir.to_path_buf(),
        manifest,
        reused: false,
    })
}

/// Encodes each part (in parallel on the tokenizers pool) and concatenates them, with
/// `<|endoftext|>` after each part when the tokenizer has it.
fn encode_parts(tokenizer: &Tokenizer, parts: &[&str]) -> Result<Vec<u32>, DataError> {
    let encoded = tokenizer.encode_batch(parts)?;
    let separator = tokenizer.end_of_text_id();
    let total: usize = encoded
        .iter()
        .map(|e| e.len() + usize::from(separator.is_some()))
        .sum();
    let mut tokens = Vec::with_capacity(total);
    for part in encoded {
        tokens.extend_from_slice(&part);
        tokens.extend(separator);
    }
    Ok(tokens)
}

fn train_shard_name(index: usize) -> String {
    format!("train-{index:05}.shard")
}

fn write_train_shards(
    out_dir: &Path,
    tokens: &[u32],
    vocab_size: u32,
) -> Result<Vec<ShardEntry>, DataError> {
    let per_shard = limits::SHARD_TOKENS_MAX as usize;
    let count = tokens.len().div_ceil(per_shard).max(1);
    if count > limits::DATASET_SHARDS_MAX {
        return Err(DataError::TooManyShards {
            split: "train",
            tokens: tokens.len() as u64,
            per_shard: per_shard as u64,
            max: limits::DATASET_SHARDS_MAX,
        });
    }
    let mut entries = Vec::with_capacity(count);
    for index in 0..count {
        let chunk = &tokens
            [(index * per_shard).min(tokens.len())..((index + 1) * per_shard).min(tokens.len())];
        let file = train_shard_name(index);
        let hash = shard::write_shard(&out_dir.join(&file), chunk, vocab_size)?;
        entries.push(ShardEntry {
            file,
            tokens: chunk.len() as u64,
            blake3: hash.to_hex(),
        });
    }
    Ok(entries)
}

/// Deletes `train-NNNNN.shard` files left by an earlier, larger dataset in the same folder.
fn remove_stale_train_shards(out_dir: &Path, keep: &[ShardEntry]) -> Result<(), DataError> {
    let io_error = |source| DataError::Io {
        path: out_dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(out_dir).map_err(io_error)? {
        let name = entry.map_err(io_error)?.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_train_shard = name.starts_with("train-") && name.ends_with(".shard");
        if is_train_shard && !keep.iter().any(|k| k.file == name) {
            remove_if_present(&out_dir.join(name))?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), DataError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
