//! Tokenizers, token shards, corpus ingest and batch sampling for commonweight.
//!
//! Entry points: [`tokenizer::TokenizerSpec`] and [`tokenizer::Tokenizer`]; [`shard`] (the binary
//! token shard format); [`prepare()`] (text files → tokenizer.json + train/val shards +
//! dataset.json); [`batch::sample_batch`] (pure batch sampling).

pub mod batch;
pub mod ingest;
pub mod prepare;
pub mod shard;
pub mod tokenizer;

pub use batch::{sample_batch, BatchError};
pub use ingest::IngestError;
pub use prepare::{prepare, DataError, DatasetManifest, PreparedDataset, SplitStats};
pub use shard::{decode_shard, encode_shard, read_shard, write_shard, ShardError, TokenShard};
pub use tokenizer::{Tokenizer, TokenizerError, TokenizerSpec};
