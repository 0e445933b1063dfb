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
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The libtorch version tch 0.24 requires (torch-sys checks it at build time); part of the
/// reproducibility class that bit-exact verification relies on.
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Whether a CUDA device is usable (proves libtorch_cuda is linked).
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Measured peak f32 matmul throughput (FLOP/s) with `threads` libtorch threads: the best of
/// `reps` products of two `n`×`n` matrices. The denominator of model FLOPs utilisation.
pub fn measure_peak_matmul_flops(threads: usize, n: usize, reps: usize) -> f64 {
    tch::set_num_threads(threads as i32);
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let a = tch::Tensor::ones([n as i64, n as i64], opts) * 0.5;
    let b = tch::Tensor::ones([n as i64, n as i64], opts) * 0.25;
    let _ = a.matmul(&b);
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let started = std::time::Instant::now();
        let c = a.matmul(&b);
        let _ = c.double_value(&[0, 0]);
        best = best.min(started.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best
}
