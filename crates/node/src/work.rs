//! The model math behind the roles, run by the shell off the event loop (on tokio's blocking pool):
//! train H inner steps on the assigned shards and encode Δ, run the sanity gates on an update, aggregate the
//! agreed updates deterministically and apply the outer step, and evaluate the validation loss.
//!
//! A verifier node also scores each update that passed the gates (`Workload::score_update`, the maths of
//! `verify::score`).
//!
//! Same math as `commonweight experiment sync`: `Δ = θ − θ_local`, encoded with error feedback, decoded,
//! averaged in f64 by peer id (`sync::aggregate`), then `θ ← outer.step(θ, mean Δ)`.

use model::{LanguageModel, OptimizerState, Trainer};
use sync::aggregate::Aggregator;
use sync::codec::{decode, ErrorFeedback};
use sync::outer::{NesterovOuter, OuterOptimizer, SparseLocoOuter};
use types::limits::node as limits;
use types::{Hash32, PeerId, RoundNumber};

use crate::roles::UpdateScore;
use crate::runspec::{dataset_hash, Run};

#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("dataset: {0}")]
    Data(#[from] data::DataError),
    #[error("batch: {0}")]
    Batch(#[from] data::BatchError),
    #[error("model: {0}")]
    Model(#[from] model::ModelError),
    #[error("update: {0}")]
    Codec(#[from] sync::codec::CodecError),
    #[error("aggregation: {0}")]
    Aggregate(String),
    #[error("outer optimizer state: {0}")]
    OuterState(String),
    #[error("the dataset at {path} hashes to {got}, the genesis names {expected}")]
    DatasetMismatch {
        path: String,
        got: Hash32,
        expected: Hash32,
    },
    #[error("the initial model hashes to {got}, the genesis names {expected}")]
    GenesisMismatch { got: Hash32, expected: Hash32 },
    #[error("shard id {0} is outside the dataset")]
    ShardId(u32),
}

/// The prepared data and fixed settings a node trains and evaluates with.
pub struct Workload {
    pub run: Run,
    train_tokens: Vec<u32>,
    shard_len: usize,
    eval_tokens: Vec<u32>,
    genesis_params: Vec<f32>,
}

/// What one round of local training produced.
pub struct TrainedUpdate {
    pub blob: Vec<u8>,
    /// Mean training loss over the H inner steps.
    pub mean_loss: f32,
    /// Loss of the last inner step (the commitment's claimed loss).
    pub last_loss: f32,
}

impl Workload {
    /// Loads the dataset and checks it, and the initial model, against the genesis.
    pub fn open(run: &Run) -> Result<Workload, WorkError> {
        let dataset = data::PreparedDataset::open(&run.dataset_dir)?;
        let train_tokens = dataset.train_tokens()?;
        let got = dataset_hash(&train_tokens);
        if got != run.genesis.dataset_cid {
            return Err(WorkError::DatasetMismatch {
                path: run.dataset_dir.display().to_string(),
                got,
                expected: run.genesis.dataset_cid,
            });
        }
        let genesis_params = model::init_params(&run.model, run.spec.seed);
        let got = Hash32::of_f32s(&genesis_params);
        if got != run.genesis.genesis_model_hash {
            return Err(WorkError::GenesisMismatch {
                got,
                expected: run.genesis.genesis_model_hash,
            });
        }
        let val = dataset.val_tokens()?;
        let window = run.spec.seq_len + 1;
        let windows = (val.len() / window)
            .min(run.spec.eval_windows)
            .min(limits::EVAL_WINDOWS_MAX)
            .max(1);
        let eval_tokens = val[..(windows * window).min(val.len())].to_vec();
        let shard_len = train_tokens.len() / run.genesis.dataset_shards as usize;
        Ok(Workload {
            run: run.clone(),
            train_tokens,
            shard_len,
            eval_tokens,
            genesis_params,
        })
    }

    pub fn genesis_params(&self) -> &[f32] {
        &self.genesis_params
    }

    /// Inner steps per round (H).
    pub fn inner_steps(&self) -> u32 {
        self.run.genesis.inner_steps
    }

    /// Shards the dataset is cut into.
    pub fn shard_count(&self) -> u32 {
        self.run.genesis.dataset_shards
    }

    pub fn run_id(&self) -> types::RunId {
        self.run.run_id
    }

    /// The run's codec id (as its genesis names it).
    pub fn codec_id(&self) -> u8 {
        self.run.genesis.codec_id
    }

    pub fn param_count(&self) -> usize {
        self.genesis_params.len()
    }

    pub fn eval_tokens(&self) -> &[u32] {
        &self.eval_tokens
    }

    /// The tokens of the assigned shards, concatenated in shard order.
    pub fn assigned_tokens(&self, data_ids: &[u32]) -> Result<Vec<u32>, WorkError> {
        let mut tokens = Vec::with_capacity(data_ids.len() * self.shard_len);
        for &id in data_ids {
            if id >= self.run.genesis.dataset_shards {
                return Err(WorkError::ShardId(id));
            }
            let start = id as usize * self.shard_len;
            tokens.extend_from_slice(&self.train_tokens[start..start + self.shard_len]);
        }
        Ok(tokens)
    }

    /// The batch seed of a round: the first 8 bytes of the round seed.
    pub fn batch_seed(seed: Hash32) -> u64 {
        u64::from_le_bytes(seed.0[..8].try_into().expect("8 bytes"))
    }

    /// A trainer at `params` with fresh AdamW state (the schedule spans the whole run).
    pub fn new_trainer(&self, params: &[f32], threads: usize) -> Result<Trainer, WorkError> {
        Ok(Trainer::with_params(
            self.run.model.clone(),
            self.run.train.clone(),
            params,
            threads,
        )?)
    }

    pub fn new_feedback(&self) -> ErrorFeedback {
        self.run
            .spec
            .ef_decay
            .map_or_else(ErrorFeedback::off, ErrorFeedback::new)
    }

    /// H inner AdamW steps of `round` from `theta` on the assigned shards; Δ = θ − θ_local, encoded with feedback.
    pub fn train_round(
        &self,
        trainer: &mut Trainer,
        feedback: &mut ErrorFeedback,
        round: RoundNumber,
        theta: &[f32],
        seed: Hash32,
        data_ids: &[u32],
    ) -> Result<TrainedUpdate, WorkError> {
        self.train_round_observed(trainer, feedback, round, theta, seed, data_ids, |_| {})
    }

    /// Where `round`'s first inner step sits in the run's learning-rate schedule: every trainer of a round
    /// steps at the same learning rates, whether it trained every round since genesis, skipped some, or joined
    /// late (it would otherwise warm up again from zero, and its first updates fail the harm test).
    pub fn schedule_step(&self, round: RoundNumber) -> u64 {
        round
            .0
            .saturating_mul(u64::from(self.run.genesis.inner_steps))
    }

    /// `train_round`, calling `observe` with the trainer before the first step and after each step (a trainer
    /// that commits to its step states, and the replay test, read them there).
    #[allow(clippy::too_many_arguments)]
    pub fn train_round_observed(
        &self,
        trainer: &mut Trainer,
        feedback: &mut ErrorFeedback,
        round: RoundNumber,
        theta: &[f32],
        seed: Hash32,
        data_ids: &[u32],
        mut observe: impl FnMut(&Trainer),
    ) -> Result<TrainedUpdate, WorkError> {
        let tokens = self.assigned_tokens(data_ids)?;
        trainer.set_params(theta)?;
        trainer.set_schedule_step(self.schedule_step(round));
        observe(trainer);
        let mut total = 0.0f64;
        let mut last = 0.0f32;
        let steps = self.run.genesis.inner_steps;
        for step in 0..steps {
            let batch = self.step_batch(seed, &tokens, step)?;
            last = trainer.train_step(&batch)?;
            total += f64::from(last);
            observe(trainer);
        }
        let local = trainer.params();
        let delta: Vec<f32> = theta.iter().zip(&local).map(|(g, l)| g - l).collect();
        let blob = self.run.codec.codec().encode(&delta, feedback);
        Ok(TrainedUpdate {
            blob,
            mean_loss: (total / f64::from(steps.max(1))) as f32,
            last_loss: last,
        })
    }

    /// The batch of inner step `step` of a round with seed `seed`, on the assigned shards' `tokens`.
    pub fn step_batch(
        &self,
        seed: Hash32,
        tokens: &[u32],
        step: u32,
    ) -> Result<Vec<u32>, WorkError> {
        Ok(data::sample_batch(
            Self::batch_seed(seed),
            tokens,
            u64::from(step),
            self.run.spec.batch,
            self.run.spec.seq_len,
        )?)
    }

    /// The sanity gates (issue 7, step 5) on one update: it decodes for this model (typed error on any bad
    /// byte), every value is finite, it is not empty, and its norm is not an outlier against the median
    /// norm of the previous round's accepted updates. Returns the norm and the decoded update, or why it is
    /// rejected.
    pub fn check_update(
        &self,
        blob: &[u8],
        median_norm: Option<f64>,
    ) -> Result<(f64, Vec<f32>), String> {
        let values = decode(blob, self.param_count()).map_err(|e| e.to_string())?;
        if let Some((index, bits)) = verify::sanity::first_non_finite(&values) {
            return Err(format!("value {index} is not finite (bits {bits:#x})"));
        }
        let norm = verify::sanity::l2_norm(&values);
        if norm == 0.0 {
            return Err("the update is empty (zero norm)".into());
        }
        if let Some(median) = median_norm.filter(|m| *m > 0.0) {
            if norm > median * limits::UPDATE_NORM_RATIO_MAX {
                return Err(format!(
                    "norm {norm:.4e} is over {}x the previous median {median:.4e}",
                    limits::UPDATE_NORM_RATIO_MAX
                ));
            }
            if verify::sanity::is_zero_update(norm, median) {
                return Err(format!(
                    "norm {norm:.4e} is negligible against the median {median:.4e}"
                ));
            }
        }
        Ok((norm, values))
    }

    /// Scores `update` (the decoded Δ of `trainer`, built on `theta` this round). Evaluates θ, θ − Δ and the
    /// reference θ − Δ̄ on windows the trainer had to train on (drawn from its batches, which are a pure function
    /// of the round seed and its shards) and on random windows outside its shards. Δ̄ is the previous round's agreed
    /// mean update: the yardstick of what an honest update removes. Without one (round 0, or after a restart) the
    /// reference is θ itself, and the harm test becomes "does Δ raise the loss".
    #[allow(clippy::too_many_arguments)]
    pub fn score_update(
        &self,
        theta: &[f32],
        update: &[f32],
        reference: Option<&[f32]>,
        seed: Hash32,
        verifier: PeerId,
        trainer: PeerId,
        data_ids: &[u32],
    ) -> Result<UpdateScore, WorkError> {
        assert_eq!(
            theta.len(),
            update.len(),
            "the gates decoded Δ for this model"
        );
        let (own, random) = self.score_windows(seed, verifier, trainer, data_ids)?;
        let window = self.run.spec.seq_len + 1;
        let own_rows = own.len() / window;
        let mut tokens = own;
        tokens.extend_from_slice(&random);
        let shifted =
            |delta: &[f32]| -> Vec<f32> { theta.iter().zip(delta).map(|(t, d)| t - d).collect() };
        let before = self.row_losses(theta, &tokens)?;
        let after = self.row_losses(&shifted(update), &tokens)?;
        let reference = match reference.filter(|r| r.len() == theta.len()) {
            Some(mean) => self.row_losses(&shifted(mean), &tokens)?,
            None => before.clone(),
        };
        let side = |range: std::ops::Range<usize>| verify::score::ItemLosses {
            before: before[range.clone()].to_vec(),
            after: after[range.clone()].to_vec(),
            reference: reference[range].to_vec(),
        };
        let probe = verify::score::LossProbe {
            own: side(0..own_rows),
            random: side(own_rows..before.len()),
        };
        Ok(UpdateScore {
            harmful: verify::score::is_harmful(&probe),
            own_data_t: verify::score::own_data_t(&probe),
            gain_ratio: verify::score::gain_ratio(&probe).0,
        })
    }

    fn row_losses(&self, params: &[f32], tokens: &[u32]) -> Result<Vec<f32>, WorkError> {
        let model = LanguageModel::new(self.run.model.clone(), params)?;
        Ok(model.eval_row_losses(tokens, self.run.spec.seq_len)?)
    }

    /// The scored windows, `SCORE_WINDOWS_PER_SIDE` per side: rows of the trainer's own batches (a sampled inner
    /// step and row each), and random windows of shards it was not assigned. Seeded by (round seed, verifier,
    /// trainer): a trainer cannot know which of its windows are probed, and each verifier draws its own.
    fn score_windows(
        &self,
        seed: Hash32,
        verifier: PeerId,
        trainer: PeerId,
        data_ids: &[u32],
    ) -> Result<(Vec<u32>, Vec<u32>), WorkError> {
        let spec = &self.run.spec;
        let window = spec.seq_len + 1;
        let mut draw = WindowDraw::new(seed, verifier, trainer);
        let assigned = self.assigned_tokens(data_ids)?;
        let steps = u64::from(self.run.genesis.inner_steps.max(1));
        // `step` is drawn below the u32 inner step count, so the cast back is exact.
        let mut own = Vec::with_capacity(limits::SCORE_WINDOWS_PER_SIDE * window);
        for _ in 0..limits::SCORE_WINDOWS_PER_SIDE {
            let step = draw.below(steps);
            let row = draw.below(spec.batch as u64) as usize;
            let batch = self.step_batch(seed, &assigned, step as u32)?;
            own.extend_from_slice(&batch[row * window..(row + 1) * window]);
        }
        let mut random = Vec::with_capacity(own.len());
        let shards = u64::from(self.run.genesis.dataset_shards);
        if self.shard_len < window {
            return Ok((own, random));
        }
        let offsets = (self.shard_len - window + 1) as u64;
        for _ in 0..limits::SCORE_RANDOM_DRAWS_MAX {
            if random.len() == own.len() {
                break;
            }
            let shard = draw.below(shards);
            if data_ids.contains(&(shard as u32)) {
                continue;
            }
            let start = shard as usize * self.shard_len + draw.below(offsets) as usize;
            random.extend_from_slice(&self.train_tokens[start..start + window]);
        }
        Ok((own, random))
    }

    /// The outer optimizer's state at genesis.
    pub fn initial_outer_state(&self) -> Vec<u8> {
        self.build_outer().to_bytes()
    }

    fn build_outer(&self) -> Box<dyn OuterOptimizer> {
        let spec = &self.run.spec;
        match spec.outer.as_str() {
            "sparseloco" => Box::new(SparseLocoOuter::new(spec.outer_lr)),
            _ => Box::new(NesterovOuter::new(spec.outer_lr, spec.outer_momentum)),
        }
    }

    /// Restores the outer optimizer from its state bytes (typed error on bad bytes).
    pub fn outer_from_state(&self, bytes: &[u8]) -> Result<Box<dyn OuterOptimizer>, WorkError> {
        let outer: Box<dyn OuterOptimizer> = match self.run.spec.outer.as_str() {
            "sparseloco" => Box::new(
                SparseLocoOuter::from_bytes(bytes)
                    .map_err(|e| WorkError::OuterState(e.to_string()))?,
            ),
            _ => Box::new(
                NesterovOuter::from_bytes(bytes, self.param_count())
                    .map_err(|e| WorkError::OuterState(e.to_string()))?,
            ),
        };
        Ok(outer)
    }

    /// Decodes the agreed updates, averages them in peer-id order, applies the outer step to `theta`.
    /// Deterministic: same inputs, same bits.
    pub fn aggregate(
        &self,
        theta: &[f32],
        outer_state: &[u8],
        blobs: &[(PeerId, Vec<u8>)],
    ) -> Result<Aggregated, WorkError> {
        let mut outer = self.outer_from_state(outer_state)?;
        let mut params = theta.to_vec();
        if blobs.is_empty() {
            return Ok(Aggregated {
                params,
                outer: outer.to_bytes(),
                mean: None,
            });
        }
        let mut updates = Vec::with_capacity(blobs.len());
        for (peer, blob) in blobs {
            updates.push((*peer, decode(blob, theta.len())?));
        }
        let mean = Aggregator::Mean
            .aggregate(&updates)
            .map_err(|e| WorkError::Aggregate(e.to_string()))?;
        outer.step(&mut params, &mean);
        Ok(Aggregated {
            params,
            outer: outer.to_bytes(),
            mean: Some(mean),
        })
    }

    /// Mean validation loss (nats/token) of `params` over the fixed evaluation windows.
    pub fn eval_loss(&self, params: &[f32]) -> Result<f32, WorkError> {
        let model = LanguageModel::new(self.run.model.clone(), params)?;
        Ok(model.eval_loss(&self.eval_tokens, self.run.spec.seq_len)?)
    }
}

/// A trainer that lies on purpose, for attack tests of a running swarm. Never set by a normal node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Sends −Δ: the update pushes the model uphill.
    SignFlip,
    /// Trains its first round honestly, then re-sends that update doubled every round: a stale copy that only
    /// the copy gate's sketch can tell (its bytes, and so its CID, differ from the original's).
    ReplayScaled,
    /// Trains on the shards after its assigned ones and commits to the assigned ones: a useful-looking update
    /// that only a replay spot check can tell.
    WrongData,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown misbehaviour {0:?}; expected sign-flip, replay-scaled or wrong-data")]
pub struct MisbehaviourError(String);

impl std::str::FromStr for Misbehaviour {
    type Err = MisbehaviourError;
    fn from_str(s: &str) -> Result<Misbehaviour, MisbehaviourError> {
        match s {
            "sign-flip" => Ok(Misbehaviour::SignFlip),
            "replay-scaled" => Ok(Misbehaviour::ReplayScaled),
            "wrong-data" => Ok(Misbehaviour::WrongData),
            other => Err(MisbehaviourError(other.to_string())),
        }
    }
}

/// An attacking trainer's state: what it lies with, and the first update it trained (for `ReplayScaled`).
#[derive(Debug)]
pub struct Attacker {
    attack: Misbehaviour,
    first_update: Option<Vec<f32>>,
}

impl Attacker {
    pub fn new(attack: Misbehaviour) -> Attacker {
        Attacker {
            attack,
            first_update: None,
        }
    }

    /// The shards this attacker trains on when assigned `assigned` (of `shards`).
    pub fn trained_ids(&self, assigned: &[u32], shards: u32) -> Vec<u32> {
        match self.attack {
            Misbehaviour::WrongData => assigned.iter().map(|&d| (d + 1) % shards.max(1)).collect(),
            _ => assigned.to_vec(),
        }
    }

    /// The update blob this attacker sends instead of its honest `blob` (re-encoded with the run's codec).
    pub fn tamper(&mut self, work: &Workload, blob: &[u8]) -> Result<Vec<u8>, WorkError> {
        let values = decode(blob, work.param_count())?;
        let tampered: Vec<f32> = match self.attack {
            Misbehaviour::WrongData => return Ok(blob.to_vec()),
            Misbehaviour::SignFlip => values.iter().map(|v| -v).collect(),
            Misbehaviour::ReplayScaled => match &self.first_update {
                Some(first) => first.iter().map(|v| 2.0 * v).collect(),
                None => {
                    self.first_update = Some(values);
                    return Ok(blob.to_vec());
                }
            },
        };
        Ok(work
            .run
            .codec
            .codec()
            .encode(&tampered, &mut ErrorFeedback::off()))
    }
}

/// One round's aggregation.
pub struct Aggregated {
    /// The next parameters.
    pub params: Vec<f32>,
    /// The next outer optimizer state.
    pub outer: Vec<u8>,
    /// The mean update Δ̄ (`None` when no update was agreed): a verifier's reference next round.
    pub mean: Option<Vec<f32>>,
}

/// Uniform draws from BLAKE3(domain ‖ round seed ‖ verifier ‖ trainer) in XOF mode.
struct WindowDraw(blake3::OutputReader);

impl WindowDraw {
    fn new(seed: Hash32, verifier: PeerId, trainer: PeerId) -> WindowDraw {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"commonweight/node/score-windows/v1");
        hasher.update(&seed.0);
        hasher.update(&verifier.0);
        hasher.update(&trainer.0);
        WindowDraw(hasher.finalize_xof())
    }

    /// Uniform in 0..n (n > 0), by rejection so there is no modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let mut bytes = [0u8; 8];
            self.0.fill(&mut bytes);
            let x = u64::from_le_bytes(bytes);
            if x < zone {
                return x % n;
            }
        }
    }
}

/// The trainer's local state kept across rounds and persisted: inner AdamW moments and error feedback.
pub struct LocalTrainer {
    pub trainer: Trainer,
    pub feedback: ErrorFeedback,
    /// Attack tests only: the lie this trainer tells instead of its honest update.
    pub attacker: Option<Attacker>,
}

impl LocalTrainer {
    pub fn optimizer_state(&self) -> OptimizerState {
        self.trainer.optimizer_state()
    }
}
