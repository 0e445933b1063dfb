//! The Llama-style model, optimizer and checkpoints; the only crate that names tch.
//!
//! The rest of commonweight sees flat `Vec<f32>` parameters in the order documented in
//! [`layout`], and `&[u32]` tokens. Entry points: [`Trainer`] (training, optimizer state,
//! checkpoints) and [`LanguageModel`] (loss, logits, sampling).

pub mod checkpoint;
pub mod config;
pub mod layout;
mod llama;
pub mod lm;
pub mod safetensors;
pub mod trainer;

use std::path::PathBuf;

pub use checkpoint::{load_model, load_params, save_model};
pub use config::{ModelConfig, Preset, TrainConfig};
pub use layout::{init_params, layout, param_count, ParamSpec};
pub use lm::LanguageModel;
pub use trainer::{OptimizerState, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("bad model or training config: {0}")]
    Config(String),
    #[error("expected {expected} parameters, got {got}")]
    ParamCount { expected: usize, got: usize },
    #[error("bad batch: {0}")]
    Batch(String),
    #[error("training diverged: {0}")]
    NonFinite(String),
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The libtorch version tch 0.24 requires (torch-sys checks it at build time); part of the
/// reproducibility class that bit-exact verification relies on.
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Whether a CUDA device is usable (proves libtorch_cuda is linked).
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}
