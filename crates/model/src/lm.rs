//! `LanguageModel`: the parameters in one flat libtorch buffer, plus loss, eval and sampling.
//!
//! All parameters live in one contiguous 1-D f32 tensor in `layout` order; each named parameter
//! is a detached view of it with `requires_grad`, so autograd sees ordinary leaf tensors while
//! reading or writing the flat vector is one copy, and the optimizer works on whole vectors.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};
use types::limits::model as limits;

use crate::config::ModelConfig;
use crate::layout::{layout, ParamSpec};
use crate::llama::{forward, rope_tables, Weights};
use crate::ModelError;

pub struct LanguageModel {
    config: ModelConfig,
    specs: Vec<ParamSpec>,
    /// All parameters, 1-D, in layout order. Never requires grad itself.
    pub(crate) flat: Tensor,
    /// Leaf views of `flat`, one per `specs` entry, with `requires_grad`.
    pub(crate) params: Vec<Tensor>,
    weights: Weights,
    rope: (Tensor, Tensor),
}

// SAFETY: libtorch tensors may be moved between threads; a LanguageModel owns its tensors and
// is used from one thread at a time (it is not Sync).
unsafe impl Send for LanguageModel {}

impl LanguageModel {
    /// A model of shape `config` holding `params` (flat, in `layout` order).
    pub fn new(config: ModelConfig, params: &[f32]) -> Result<LanguageModel, ModelError> {
        config.validate()?;
        let specs = layout(&config);
        let count: usize = specs.iter().map(ParamSpec::numel).sum();
        if count > limits::PARAMS_MAX {
            return Err(ModelError::Config(format!(
                "{count} parameters, over the limit"
            )));
        }
        if params.len() != count {
            return Err(ModelError::ParamCount {
                expected: count,
                got: params.len(),
            });
        }
        let flat = Tensor::from_slice(params);
        let param_views: Vec<Tensor> = specs
            .iter()
            .map(|spec| {
                let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
                flat.narrow(0, spec.offset as i64, spec.numel() as i64)
                    .view(shape.as_slice())
                    .detach()
                    .set_requires_grad(true)
            })
            .collect();
        let weights = Weights::from_ordered(&config, &param_views);
        let rope = rope_tables(&config, config.max_position_embeddings);
        Ok(LanguageModel {
            config,
            specs,
            flat,
            params: param_views,
            weights,
            rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn layout(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn param_count(&self) -> usize {
        self.flat.numel()
    }

    /// A copy of the flat parameter vector.
    pub fn params(&self) -> Vec<f32> {
        tensor_to_vec(&self.flat)
    }

    /// Overwrites every parameter from `params` (flat, in `layout` order).
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), ModelError> {
        if params.len() != self.param_count() {
            return Err(ModelError::ParamCount {
                expected: self.param_count(),
                got: params.len(),
            });
        }
        tch::no_grad(|| self.flat.copy_(&Tensor::from_slice(params)));
        Ok(())
    }

    /// Checks `tokens` are in vocabulary and form `sequences` rows of `seq_len + 1`; returns
    /// (inputs, targets), each [sequences, seq_len], Int64.
    pub(crate) fn batch_tensors(
        &self,
        tokens: &[u32],
        seq_len: usize,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let row = seq_len + 1;
        if tokens.is_empty() || tokens.len() % row != 0 {
            return Err(ModelError::Batch(format!(
                "{} tokens is not a whole number of {row}-token rows",
                tokens.len()
            )));
        }
        if seq_len > self.config.max_position_embeddings {
            return Err(ModelError::Batch(format!(
                "seq_len {seq_len} exceeds max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        let vocab = self.config.vocab_size;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Batch(format!(
                "token {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let rows = (tokens.len() / row) as i64;
        let all = Tensor::from_slice(&ids).view([rows, row as i64]);
        let inputs = all.narrow(1, 0, seq_len as i64).contiguous();
        let targets = all.narrow(1, 1, seq_len as i64).contiguous();
        Ok((inputs, targets))
    }

    /// Mean next-token cross-entropy (nats) of a batch, as a graph-connected scalar.
    pub(crate) fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Tensor {
        let logits = forward(&self.config, &self.weights, &self.rope, inputs);
        let vocab = self.config.vocab_size as i64;
        logits
            .view([-1, vocab])
            .cross_entropy_for_logits(&targets.view([-1]))
    }

    /// Mean next-token loss in nats over `tokens` (rows of seq_len + 1), without gradients.
    pub fn eval_loss(&self, tokens: &[u32], seq_len: usize) -> Result<f32, ModelError> {
        let (inputs, targets) = self.batch_tensors(tokens, seq_len)?;
        let loss = tch::no_grad(|| self.loss(&inputs, &targets));
        Ok(loss.double_value(&[]) as f32)
    }

    /// Mean next-token loss in nats of each row of `tokens` (rows of seq_len + 1), without gradients: one forward
    /// pass for the whole batch. A verifier scoring per data item uses it.
    pub fn eval_row_losses(&self, tokens: &[u32], seq_len: usize) -> Result<Vec<f32>, ModelError> {
        let (inputs, targets) = self.batch_tensors(tokens, seq_len)?;
        let rows = inputs.size()[0];
        let losses = tch::no_grad(|| {
            let logits = forward(&self.config, &self.weights, &self.rope, &inputs);
            let vocab = self.config.vocab_size as i64;
            let log_probs = logits.view([-1, vocab]).log_softmax(-1, Kind::Float);
            let picked = log_probs.gather(1, &targets.view([-1, 1]), false);
            -picked
                .view([rows, seq_len as i64])
                .mean_dim(1, false, Kind::Float)
        });
        Ok(tensor_to_vec(&losses))
    }

    /// Logits [len, vocab] of a single sequence, flattened row-major.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (inputs, _) = self.batch_tensors(&[tokens, &[0]].concat(), tokens.len())?;
        let logits = tch::no_grad(|| forward(&self.config, &self.weights, &self.rope, &inputs));
        Ok(tensor_to_vec(&logits.view([-1])))
    }

    /// Samples `count` tokens after `prompt`. `temperature` 0 means greedy; `top_k` 0 means the
    /// whole vocabulary. The context is the last `max_position_embeddings` tokens.
    pub fn generate(
        &self,
        prompt: &[u32],
        count: usize,
        temperature: f32,
        top_k: usize,
        seed: u64,
    ) -> Result<Vec<u32>, ModelError> {
        if count > limits::GENERATE_TOKENS_MAX {
            return Err(ModelError::Batch(format!(
                "{count} tokens requested, over the limit"
            )));
        }
        if prompt.is_empty() {
            return Err(ModelError::Batch("the prompt has no tokens".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tokens = prompt.to_vec();
        let vocab = self.config.vocab_size;
        let context = self.config.max_position_embeddings;
        for _ in 0..count {
            let window = &tokens[tokens.len().saturating_sub(context)..];
            let logits = self.logits(window)?;
            let last = &logits[(window.len() - 1) * vocab..];
            tokens.push(sample(last, temperature, top_k, &mut rng));
        }
        Ok(tokens[prompt.len()..].to_vec())
    }
}

/// Draws one token from `logits` with temperature and top-k.
fn sample(logits: &[f32], temperature: f32, top_k: usize, rng: &mut ChaCha8Rng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if temperature <= 0.0 {
        return order[0] as u32;
    }
    let keep = if top_k == 0 {
        order.len()
    } else {
        top_k.min(order.len())
    };
    let top = logits[order[0]];
    let weights: Vec<f64> = order[..keep]
        .iter()
        .map(|&i| (((logits[i] - top) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut pick = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        if pick < *w {
            return order[i] as u32;
        }
        pick -= w;
    }
    order[keep - 1] as u32
}

pub(crate) fn tensor_to_vec(t: &Tensor) -> Vec<f32> {
    let t = t.to_kind(Kind::Float).contiguous();
    let n = t.numel();
    let mut out = vec![0f32; n];
    t.copy_data(&mut out, n);
    out
}
