//! `Trainer`: a `LanguageModel` plus AdamW state; one call is one optimizer step.
//!
//! AdamW (decoupled weight decay, Loshchilov & Hutter) is written out on whole flat vectors
//! under `no_grad`, so its state is two flat vectors plus a step counter, exposable and
//! restorable bit for bit. Per step t (1-based), with g the clipped gradient:
//!   lr_t = schedule(t); p ← p·(1 − lr_t·wd) for matrices only;
//!   m ← lerp(m, g, 1 − β1); v ← β2·v + (1 − β2)·g²;
//!   p ← p − (lr_t / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + ε).
//! Clipping: c = clip / (‖g‖₂ + 1e-6); g ← g·c when c < 1 (as torch's clip_grad_norm_).

use tch::Tensor;

use crate::config::{ModelConfig, TrainConfig};
use crate::layout::{init_params, ParamSpec};
use crate::lm::{tensor_to_vec, LanguageModel};
use crate::ModelError;

/// AdamW state as flat vectors in parameter layout order.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// First moment (m), one per parameter.
    pub exp_avg: Vec<f32>,
    /// Second moment (v), one per parameter.
    pub exp_avg_sq: Vec<f32>,
}

pub struct Trainer {
    model: LanguageModel,
    train: TrainConfig,
    threads: usize,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
    /// Position in the learning-rate schedule of the last step taken. It equals `step` for a trainer that ran
    /// the whole schedule itself; a trainer that joins a run later takes the run's position
    /// (`set_schedule_step`), not step 0, or it would warm up again from a zero learning rate.
    schedule_step: u64,
    /// Layout entries of matrices: the ones weight decay applies to.
    decayed: Vec<ParamSpec>,
}

// SAFETY: see `LanguageModel`; a Trainer owns its tensors and is not Sync.
unsafe impl Send for Trainer {}

impl Trainer {
    /// A fresh model initialised from `seed` (see `layout::init_params`). `threads` is the
    /// libtorch intra-op thread count, a process-wide setting re-applied on every step.
    pub fn new(
        model: ModelConfig,
        train: TrainConfig,
        seed: u64,
        threads: usize,
    ) -> Result<Trainer, ModelError> {
        model.validate()?;
        let params = init_params(&model, seed);
        Trainer::with_params(model, train, &params, threads)
    }

    /// A trainer starting from `params` with zero optimizer state.
    pub fn with_params(
        model: ModelConfig,
        train: TrainConfig,
        params: &[f32],
        threads: usize,
    ) -> Result<Trainer, ModelError> {
        train.validate(&model)?;
        if threads == 0 {
            return Err(ModelError::Config("threads must be at least 1".into()));
        }
        set_threads(threads);
        let model = LanguageModel::new(model, params)?;
        let n = model.param_count() as i64;
        let decayed = model
            .layout()
            .iter()
            .filter(|s| !s.is_norm())
            .cloned()
            .collect();
        Ok(Trainer {
            exp_avg: Tensor::zeros([n], (tch::Kind::Float, tch::Device::Cpu)),
            exp_avg_sq: Tensor::zeros([n], (tch::Kind::Float, tch::Device::Cpu)),
            model,
            train,
            threads,
            step: 0,
            schedule_step: 0,
            decayed,
        })
    }

    pub fn model(&self) -> &LanguageModel {
        &self.model
    }

    pub fn model_config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Optimizer steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Position in the learning-rate schedule of the last step taken (see the field).
    pub fn schedule_step(&self) -> u64 {
        self.schedule_step
    }

    /// Puts the trainer at `step` of the learning-rate schedule: its next step uses `lr_at(step + 1)`. AdamW's
    /// bias correction keeps counting this trainer's own steps, as its moments are its own.
    pub fn set_schedule_step(&mut self, step: u64) {
        self.schedule_step = step;
    }

    pub fn param_count(&self) -> usize {
        self.model.param_count()
    }

    pub fn layout(&self) -> Vec<ParamSpec> {
        self.model.layout().to_vec()
    }

    pub fn params(&self) -> Vec<f32> {
        self.model.params()
    }

    pub fn set_params(&mut self, params: &[f32]) -> Result<(), ModelError> {
        self.model.set_params(params)
    }

    pub fn optimizer_state(&self) -> OptimizerState {
        OptimizerState {
            step: self.step,
            exp_avg: tensor_to_vec(&self.exp_avg),
            exp_avg_sq: tensor_to_vec(&self.exp_avg_sq),
        }
    }

    pub fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), ModelError> {
        let n = self.param_count();
        for got in [state.exp_avg.len(), state.exp_avg_sq.len()] {
            if got != n {
                return Err(ModelError::ParamCount { expected: n, got });
            }
        }
        tch::no_grad(|| {
            self.exp_avg.copy_(&Tensor::from_slice(&state.exp_avg));
            self.exp_avg_sq
                .copy_(&Tensor::from_slice(&state.exp_avg_sq));
        });
        self.step = state.step;
        self.schedule_step = state.step;
        Ok(())
    }

    /// Mean loss (nats/token) of `tokens` (rows of seq_len + 1) under the current parameters.
    pub fn eval_loss(&self, tokens: &[u32]) -> Result<f32, ModelError> {
        set_threads(self.threads);
        self.model.eval_loss(tokens, self.train.seq_len)
    }

    /// Mean loss of each row (seq_len + 1 tokens) of `tokens`, in one forward pass.
    pub fn eval_row_losses(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        set_threads(self.threads);
        self.model.eval_row_losses(tokens, self.train.seq_len)
    }

    /// One optimizer step on `tokens`: grad_accum · batch_size rows of seq_len + 1 tokens.
    /// Returns the mean training loss (nats/token) before the update. A non-finite loss or
    /// gradient leaves the parameters and optimizer state untouched and returns an error.
    pub fn train_step(&mut self, tokens: &[u32]) -> Result<f32, ModelError> {
        let expected = self.train.tokens_per_step();
        if tokens.len() != expected {
            return Err(ModelError::Batch(format!(
                "train_step wants {expected} tokens, got {}",
                tokens.len()
            )));
        }
        set_threads(self.threads);
        let micro = tokens.len() / self.train.grad_accum;
        let mut loss_sum = 0.0f64;
        for chunk in tokens.chunks(micro) {
            let (inputs, targets) = self.model.batch_tensors(chunk, self.train.seq_len)?;
            let loss = self.model.loss(&inputs, &targets);
            loss_sum += loss.double_value(&[]);
            (loss / self.train.grad_accum as f64).backward();
        }
        let loss = loss_sum / self.train.grad_accum as f64;
        let grad = self.take_flat_grad();
        if !loss.is_finite() {
            return Err(ModelError::NonFinite(format!(
                "loss {loss} at step {}",
                self.step.saturating_add(1)
            )));
        }
        self.adamw_update(grad)?;
        Ok(loss as f32)
    }

    /// Concatenates all gradients into one flat vector and zeroes them for the next step.
    fn take_flat_grad(&mut self) -> Tensor {
        let flat = tch::no_grad(|| {
            let pieces: Vec<Tensor> = self
                .model
                .params
                .iter()
                .map(|p| p.grad().view([-1]))
                .collect();
            Tensor::cat(&pieces, 0)
        });
        for p in self.model.params.iter_mut() {
            p.zero_grad();
        }
        flat
    }

    fn adamw_update(&mut self, mut grad: Tensor) -> Result<(), ModelError> {
        let _guard = tch::no_grad_guard();
        let norm = grad.norm().double_value(&[]);
        if !norm.is_finite() {
            return Err(ModelError::NonFinite(format!(
                "gradient norm {norm} at step {}",
                self.step.saturating_add(1)
            )));
        }
        if self.train.grad_clip > 0.0 {
            let coef = self.train.grad_clip / (norm + 1e-6);
            if coef < 1.0 {
                let _ = grad.g_mul_scalar_(coef);
            }
        }
        // Both counters can come from a peer (replayed state bytes, a round number): saturate, never overflow.
        let step = self.step.saturating_add(1);
        let lr = self.train.lr_at(self.schedule_step.saturating_add(1));
        let (beta1, beta2) = self.train.betas;
        if self.train.weight_decay > 0.0 {
            let keep = 1.0 - lr * self.train.weight_decay;
            for spec in &self.decayed {
                let _ = self
                    .model
                    .flat
                    .narrow(0, spec.offset as i64, spec.numel() as i64)
                    .g_mul_scalar_(keep);
            }
        }
        let _ = self.exp_avg.lerp_(&grad, 1.0 - beta1);
        let _ = self.exp_avg_sq.g_mul_scalar_(beta2);
        let _ = self.exp_avg_sq.g_add_(&(grad.square() * (1.0 - beta2)));
        let bias1 = 1.0 - beta1.powf(step as f64);
        let bias2 = 1.0 - beta2.powf(step as f64);
        let denom = self.exp_avg_sq.sqrt() / bias2.sqrt() + self.train.eps;
        let update = &self.exp_avg / denom * (lr / bias1);
        let _ = self.model.flat.g_sub_(&update);
        self.step = step;
        self.schedule_step = self.schedule_step.saturating_add(1);
        Ok(())
    }
}

/// libtorch's intra-op thread count is process-wide; every entry point re-applies its own.
fn set_threads(threads: usize) {
    if tch::get_num_threads() != threads as i32 {
        tch::set_num_threads(threads as i32);
    }
}
