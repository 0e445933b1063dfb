//! Model shapes (HF `LlamaConfig` field names), presets, and training hyper-parameters.

use serde::{Deserialize, Serialize};
use types::limits::model as limits;

use crate::ModelError;

/// Named model sizes. Vocabulary size comes from the tokenizer, so parameter counts below assume
/// the 256-symbol byte tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// ~0.9M parameters: tests and smoke runs.
    Tiny,
    /// ~2.8M parameters (d 192, 6 layers, context 256): the best quality for a 30-minute budget on
    /// a 2-core CPU, where about 9M tokens fit (see bench/RESULTS.md, "Quality per wall clock").
    Micro,
    /// ~6.4M parameters (d 256, 6 layers, context 256).
    Mini,
    /// ~19M parameters: the default for CPU training and the benchmark.
    Small,
    /// ~114M parameters (~125M with a 4096-symbol BPE).
    Base,
    /// ~1.1B parameters, for GPU users.
    OneB,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Tiny,
        Preset::Micro,
        Preset::Mini,
        Preset::Small,
        Preset::Base,
        Preset::OneB,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Micro => "micro",
            Preset::Mini => "mini",
            Preset::Small => "small",
            Preset::Base => "base",
            Preset::OneB => "1b",
        }
    }

    pub fn parse(s: &str) -> Result<Preset, ModelError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unknown preset {s:?}; expected tiny, micro, mini, small, base or 1b"
                ))
            })
    }

    /// The model shape of this preset for a tokenizer with `vocab_size` symbols.
    pub fn model_config(self, vocab_size: usize) -> ModelConfig {
        let (hidden, inter, layers, heads, kv_heads, ctx) = match self {
            Preset::Tiny => (128, 352, 4, 4, 2, 128),
            Preset::Micro => (192, 512, 6, 6, 6, 256),
            Preset::Mini => (256, 1024, 6, 8, 8, 256),
            Preset::Small => (512, 1376, 6, 8, 8, 256),
            Preset::Base => (768, 3072, 12, 12, 12, 512),
            Preset::OneB => (2048, 5632, 22, 32, 4, 2048),
        };
        ModelConfig {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            max_position_embeddings: ctx,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
        }
    }

    /// Default optimizer and batch settings of this preset.
    pub fn train_config(self, total_steps: u64) -> TrainConfig {
        let (lr, batch_size, seq_len) = match self {
            Preset::Tiny => (3e-3, 8, 64),
            Preset::Micro => (3e-3, 16, 256),
            Preset::Mini => (2e-3, 8, 256),
            Preset::Small => (1e-3, 16, 256),
            Preset::Base => (6e-4, 16, 512),
            Preset::OneB => (3e-4, 8, 2048),
        };
        TrainConfig {
            lr,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.1,
            warmup_steps: (total_steps / 20).clamp(1, 1000),
            total_steps,
            min_lr_ratio: 0.1,
            grad_clip: 1.0,
            grad_accum: 1,
            batch_size,
            seq_len,
        }
    }
}

/// The model shape. Field names and meaning follow HF `LlamaConfig`, so `config.json` is a
/// valid transformers config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shape is buildable and within `types::limits::model`.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: String| Err(ModelError::Config(what));
        if self.vocab_size == 0 || self.vocab_size > limits::VOCAB_SIZE_MAX {
            return bad(format!(
                "vocab_size {} not in 1..={}",
                self.vocab_size,
                limits::VOCAB_SIZE_MAX
            ));
        }
        if self.hidden_size == 0 || self.hidden_size > limits::HIDDEN_SIZE_MAX {
            return bad(format!(
                "hidden_size {} not in 1..={}",
                self.hidden_size,
                limits::HIDDEN_SIZE_MAX
            ));
        }
        if self.intermediate_size == 0 || self.intermediate_size > limits::INTERMEDIATE_SIZE_MAX {
            return bad(format!(
                "intermediate_size {} out of range",
                self.intermediate_size
            ));
        }
        if self.num_hidden_layers == 0 || self.num_hidden_layers > limits::LAYERS_MAX {
            return bad(format!(
                "num_hidden_layers {} not in 1..={}",
                self.num_hidden_layers,
                limits::LAYERS_MAX
            ));
        }
        let heads = self.num_attention_heads;
        let kv = self.num_key_value_heads;
        if heads == 0 || kv == 0 || self.hidden_size % heads != 0 || heads % kv != 0 {
            return bad(format!(
                "heads {heads} and kv heads {kv} must divide hidden_size {} and each other",
                self.hidden_size
            ));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        let ctx = self.max_position_embeddings;
        if ctx == 0 || ctx > limits::CONTEXT_TOKENS_MAX {
            return bad(format!(
                "max_position_embeddings {ctx} not in 1..={}",
                limits::CONTEXT_TOKENS_MAX
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// `config.json` in the layout of HF transformers' `LlamaForCausalLM`.
    pub fn to_hf_json(&self) -> String {
        let value = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        serde_json::to_string_pretty(&value).expect("json of plain values")
    }

    /// Parses an HF `config.json`; unknown fields are ignored, missing ones are an error.
    pub fn from_hf_json(text: &str) -> Result<ModelConfig, ModelError> {
        if text.len() > limits::CONFIG_JSON_BYTES_MAX {
            return Err(ModelError::Config(format!(
                "config.json is {} bytes, over the limit",
                text.len()
            )));
        }
        #[derive(Deserialize)]
        struct Hf {
            vocab_size: usize,
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            max_position_embeddings: usize,
            rms_norm_eps: f64,
            rope_theta: Option<f64>,
            tie_word_embeddings: Option<bool>,
            hidden_act: Option<String>,
        }
        let hf: Hf = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json: {e}")))?;
        if let Some(act) = &hf.hidden_act {
            if act != "silu" {
                return Err(ModelError::Config(format!(
                    "hidden_act {act:?} unsupported; only silu"
                )));
            }
        }
        let config = ModelConfig {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            max_position_embeddings: hf.max_position_embeddings,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta.unwrap_or(10000.0),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Optimizer, schedule and batch settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW (beta1, beta2).
    pub betas: (f64, f64),
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices (embeddings included), not to norm gains.
    pub weight_decay: f64,
    /// Linear warmup from 0 to `lr` over this many steps.
    pub warmup_steps: u64,
    /// Cosine decay ends here at `lr * min_lr_ratio`, and stays there after.
    pub total_steps: u64,
    pub min_lr_ratio: f64,
    /// Clip the global gradient L2 norm to this; 0 disables clipping.
    pub grad_clip: f64,
    /// Micro-batches per optimizer step; `train_step` takes all of them at once.
    pub grad_accum: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence (targets are the next tokens, so a sequence holds seq_len+1 tokens).
    pub seq_len: usize,
}

impl TrainConfig {
    /// Tokens `train_step` expects: grad_accum * batch_size * (seq_len + 1).
    pub fn tokens_per_step(&self) -> usize {
        self.grad_accum * self.batch_size * (self.seq_len + 1)
    }

    /// Learning rate for optimizer step `step` (1-based): linear warmup, then cosine decay.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step <= self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }

    pub fn validate(&self, model: &ModelConfig) -> Result<(), ModelError> {
        let bad = |what: String| Err(ModelError::Config(what));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr {} must be positive", self.lr));
        }
        if self.batch_size == 0 || self.seq_len == 0 || self.grad_accum == 0 {
            return bad("batch_size, seq_len and grad_accum must be positive".into());
        }
        if self.seq_len > model.max_position_embeddings {
            return bad(format!(
                "seq_len {} exceeds max_position_embeddings {}",
                self.seq_len, model.max_position_embeddings
            ));
        }
        if self.tokens_per_step() > limits::TOKENS_PER_STEP_MAX {
            return bad(format!(
                "{} tokens per step, over the limit",
                self.tokens_per_step()
            ));
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad(format!("betas ({b1}, {b2}) must be in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio {} must be in [0, 1]",
                self.min_lr_ratio
            ));
        }
        Ok(())
    }
}
