//! Bounds for the `model` crate.

/// Largest tokenizer vocabulary a model may have.
pub const VOCAB_SIZE_MAX: usize = 1 << 20;
/// Largest model width.
pub const HIDDEN_SIZE_MAX: usize = 16 * 1024;
/// Largest MLP width.
pub const INTERMEDIATE_SIZE_MAX: usize = 64 * 1024;
/// Most transformer blocks.
pub const LAYERS_MAX: usize = 256;
/// Longest context (max_position_embeddings).
pub const CONTEXT_TOKENS_MAX: usize = 64 * 1024;
/// Most parameters a model may have (~8B, 32 GiB of f32).
pub const PARAMS_MAX: usize = 8 << 30;
/// Most tokens one optimizer step may take.
pub const TOKENS_PER_STEP_MAX: usize = 16 << 20;
/// Largest `config.json` / `trainer.json` accepted.
pub const CONFIG_JSON_BYTES_MAX: usize = 1 << 20;
/// Largest safetensors JSON header accepted.
pub const SAFETENSORS_HEADER_BYTES_MAX: usize = 16 << 20;
/// Most tensors in one safetensors file.
pub const SAFETENSORS_TENSORS_MAX: usize = 4096;
/// Most tokens `generate` produces in one call.
pub const GENERATE_TOKENS_MAX: usize = 1 << 16;
