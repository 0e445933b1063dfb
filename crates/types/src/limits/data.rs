//! Bounds for the `data` crate: tokenizers, token shards, ingest and batch sampling.

/// Largest vocabulary any tokenizer or shard may declare (Llama 3 has 128,256).
pub const VOCAB_SIZE_MAX: u32 = 1 << 18;

/// Smallest vocabulary for a trained BPE (`bpe:N`): the 256 byte symbols plus `<|endoftext|>`.
pub const BPE_VOCAB_SIZE_MIN: u32 = 257;

/// Largest vocabulary for a trained BPE (`bpe:N`); training cost grows with it.
pub const BPE_VOCAB_SIZE_MAX: u32 = 1 << 17;

/// Most tokens in one shard (1 GiB as u32). `prepare` splits the train split into shards this size.
pub const SHARD_TOKENS_MAX: u64 = 1 << 28;

/// Largest shard file: the 56-byte header plus `SHARD_TOKENS_MAX` u32 tokens.
pub const SHARD_BYTES_MAX: u64 = 56 + SHARD_TOKENS_MAX * 4;

/// Most train shards in one prepared dataset.
pub const DATASET_SHARDS_MAX: usize = 4096;

/// Largest `tokenizer.json` we read back (GPT-2's is about 2 MiB).
pub const TOKENIZER_JSON_BYTES_MAX: u64 = 64 << 20;

/// Largest `dataset.json` we read back.
pub const DATASET_JSON_BYTES_MAX: u64 = 16 << 20;

/// Largest single document (one .txt file, one .jsonl line, one parquet cell).
pub const DOCUMENT_BYTES_MAX: u64 = 256 << 20;

/// Most input files `prepare` ingests (after walking folders).
pub const INPUT_FILES_MAX: usize = 1 << 20;

/// Most text `prepare` ingests in one call; it holds the text and its tokens in memory.
pub const INPUT_BYTES_MAX: u64 = 4 << 30;

/// Largest `.parquet` input file.
pub const PARQUET_FILE_BYTES_MAX: u64 = 4 << 30;

/// Deepest folder nesting `prepare` walks (guards against symlink loops).
pub const INPUT_FOLDER_DEPTH_MAX: usize = 64;

/// Largest validation fraction `prepare` accepts (it must also be > 0).
pub const VAL_FRACTION_MAX: f64 = 0.5;

/// Most tokens one `sample_batch` call returns: batch * (seq_len + 1).
pub const BATCH_TOKENS_MAX: usize = 1 << 26;
