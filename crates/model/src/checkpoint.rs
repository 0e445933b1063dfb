//! Checkpoints in HF layout: `model.safetensors` + `config.json` (+ `tokenizer.json`), which
//! transformers' `LlamaForCausalLM.from_pretrained` loads, plus our resume state:
//! `optimizer.safetensors` (`exp_avg`, `exp_avg_sq`, flat) and `trainer.json` (step, config).
//! Every file is written to a temporary name and renamed, so a crash leaves the old file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use types::limits::model as limits;

use crate::config::{ModelConfig, TrainConfig};
use crate::layout::layout;
use crate::lm::LanguageModel;
use crate::safetensors;
use crate::trainer::{OptimizerState, Trainer};
use crate::ModelError;

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_FILE: &str = "trainer.json";
const TRAINER_FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct TrainerFile {
    format_version: u32,
    step: u64,
    train: TrainConfig,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(path))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_small(path: &Path) -> Result<String, ModelError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.len() > limits::CONFIG_JSON_BYTES_MAX as u64 {
        return Err(ModelError::BadFile {
            path: path.to_path_buf(),
            what: format!("{} bytes, too large", meta.len()),
        });
    }
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Writes `model.safetensors` and `config.json` (and `tokenizer.json` if given) into `dir`.
pub fn save_model(
    model: &LanguageModel,
    dir: &Path,
    tokenizer_json: Option<&str>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let params = model.params();
    let tensors: Vec<(&str, &[usize], &[f32])> = model
        .layout()
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.shape.as_slice(),
                &params[s.offset..s.offset + s.numel()],
            )
        })
        .collect();
    safetensors::write(&dir.join(MODEL_FILE), &tensors)?;
    write_atomic(
        &dir.join(CONFIG_FILE),
        model.config().to_hf_json().as_bytes(),
    )?;
    if let Some(json) = tokenizer_json {
        write_atomic(&dir.join(TOKENIZER_FILE), json.as_bytes())?;
    }
    Ok(())
}

/// Reads `config.json` and `model.safetensors` from `dir` into (config, flat params).
/// Every tensor of the layout must be present with its exact shape; extras are an error.
pub fn load_params(dir: &Path) -> Result<(ModelConfig, Vec<f32>), ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::BadFile {
            path: dir.to_path_buf(),
            what: "not a checkpoint directory".into(),
        });
    }
    let config_path = dir.join(CONFIG_FILE);
    let config = ModelConfig::from_hf_json(&read_small(&config_path)?).map_err(|e| match e {
        ModelError::Config(what) => ModelError::BadFile {
            path: config_path.clone(),
            what,
        },
        other => other,
    })?;
    let model_path = dir.join(MODEL_FILE);
    let mut tensors = safetensors::read(&model_path)?;
    let specs = layout(&config);
    let bad = |what: String| ModelError::BadFile {
        path: model_path.clone(),
        what,
    };
    // A tied checkpoint written by other tools may still carry lm_head; it must equal embed.
    if config.tie_word_embeddings {
        tensors.retain(|t| t.name != "lm_head.weight");
    }
    if tensors.len() != specs.len() {
        return Err(bad(format!(
            "{} tensors, the config needs {}",
            tensors.len(),
            specs.len()
        )));
    }
    let total = specs.last().map(|s| s.offset + s.numel()).unwrap_or(0);
    let mut params = vec![0f32; total];
    for spec in &specs {
        let t = tensors
            .iter()
            .find(|t| t.name == spec.name)
            .ok_or_else(|| bad(format!("missing tensor {}", spec.name)))?;
        if t.shape != spec.shape {
            return Err(bad(format!(
                "{} has shape {:?}, the config needs {:?}",
                spec.name, t.shape, spec.shape
            )));
        }
        params[spec.offset..spec.offset + spec.numel()].copy_from_slice(&t.data);
    }
    Ok((config, params))
}

/// Loads a model for inference from a checkpoint directory.
pub fn load_model(dir: &Path) -> Result<LanguageModel, ModelError> {
    let (config, params) = load_params(dir)?;
    LanguageModel::new(config, &params)
}

impl Trainer {
    /// Writes the HF checkpoint plus optimizer state and `trainer.json`, so `resume` continues
    /// bit-identically.
    pub fn save_checkpoint(
        &self,
        dir: &Path,
        tokenizer_json: Option<&str>,
    ) -> Result<(), ModelError> {
        save_model(self.model(), dir, tokenizer_json)?;
        let state = self.optimizer_state();
        let n = state.exp_avg.len();
        safetensors::write(
            &dir.join(OPTIMIZER_FILE),
            &[
                ("exp_avg", &[n], &state.exp_avg),
                ("exp_avg_sq", &[n], &state.exp_avg_sq),
            ],
        )?;
        let file = TrainerFile {
            format_version: TRAINER_FORMAT_VERSION,
            step: state.step,
            train: self.train_config().clone(),
        };
        let json = serde_json::to_string_pretty(&file).expect("json of plain values");
        write_atomic(&dir.join(TRAINER_FILE), json.as_bytes())
    }

    /// Continues from a checkpoint written by `save_checkpoint`. `train` overrides the saved
    /// training config when given (e.g. a longer schedule).
    pub fn resume(
        dir: &Path,
        train: Option<TrainConfig>,
        threads: usize,
    ) -> Result<Trainer, ModelError> {
        let (config, params) = load_params(dir)?;
        let trainer_path: PathBuf = dir.join(TRAINER_FILE);
        let file: TrainerFile =
            serde_json::from_str(&read_small(&trainer_path)?).map_err(|e| ModelError::BadFile {
                path: trainer_path.clone(),
                what: e.to_string(),
            })?;
        if file.format_version != TRAINER_FORMAT_VERSION {
            return Err(ModelError::BadFile {
                path: trainer_path,
                what: format!("format_version {} unsupported", file.format_version),
            });
        }
        let mut trainer =
            Trainer::with_params(config, train.unwrap_or(file.train), &params, threads)?;
        let opt_path = dir.join(OPTIMIZER_FILE);
        let tensors = safetensors::read(&opt_path)?;
        let find = |name: &str| {
            tensors
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.data.clone())
                .ok_or_else(|| ModelError::BadFile {
                    path: opt_path.clone(),
                    what: format!("missing {name}"),
                })
        };
        let state = OptimizerState {
            step: file.step,
            exp_avg: find("exp_avg")?,
            exp_avg_sq: find("exp_avg_sq")?,
        };
        trainer.set_optimizer_state(&state)?;
        Ok(trainer)
    }
}
