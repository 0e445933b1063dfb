//! The verifier's model side: verify's `LossEvaluator` over a tch `Trainer`, its `DataAssignment` over
//! `round::assign_data`, its `UpdateDecoder` over `sync`'s codecs, and its `StepExecutor` over the node's own
//! training path (`WorkloadStep`). `verify` stays free of tch; this is the
//! part a node's verifier role (and `commonweight experiment attacks`) plugs into `Verifier::verify_round`.

use model::{OptimizerState, Trainer};
use sync::codec::{read_header, CodecId};
use types::limits::node as limits;
use types::{Hash32, PeerId, RoundNumber};
use verify::{
    DataAssignment, EvalError, ExecError, LossEvaluator, ReproClass, StepContext, StepExecutor,
    UpdateDecoder,
};

use crate::work::Workload;

/// A training split cut into equal data items: item `d` is `tokens[d · item_len .. (d + 1) · item_len]`.
pub struct DataItems {
    tokens: Vec<u32>,
    item_len: usize,
}

impl DataItems {
    /// `item_len` must hold at least one window of `seq_len + 1` tokens; the tail that fills no item is dropped.
    pub fn new(tokens: Vec<u32>, item_len: usize, seq_len: usize) -> Result<DataItems, EvalError> {
        if item_len < seq_len + 1 {
            return Err(EvalError(format!(
                "item of {item_len} tokens holds no window of {}",
                seq_len + 1
            )));
        }
        if tokens.len() < item_len {
            return Err(EvalError(format!(
                "{} tokens make no item of {item_len}",
                tokens.len()
            )));
        }
        Ok(DataItems { tokens, item_len })
    }

    pub fn count(&self) -> u64 {
        (self.tokens.len() / self.item_len) as u64
    }

    pub fn item_len(&self) -> usize {
        self.item_len
    }

    /// The tokens of item `id`, or an error for an id outside the dataset (ids come from peers).
    pub fn item(&self, id: u64) -> Result<&[u32], EvalError> {
        if id >= self.count() {
            return Err(EvalError(format!(
                "data id {id} is outside the {} items",
                self.count()
            )));
        }
        let start = id as usize * self.item_len;
        Ok(&self.tokens[start..start + self.item_len])
    }
}

/// Mean next-token loss of a parameter vector on data items, with a tch `Trainer` as the forward pass.
///
/// Each item contributes its first `windows_per_item` windows of `seq_len + 1` tokens (fewer if the item is
/// shorter), so one call costs `ids · windows_per_item` forward windows and no backward pass.
pub struct ModelLossEvaluator<'a> {
    trainer: Trainer,
    items: &'a DataItems,
    windows_per_item: usize,
}

impl<'a> ModelLossEvaluator<'a> {
    pub fn new(
        trainer: Trainer,
        items: &'a DataItems,
        windows_per_item: usize,
    ) -> Result<ModelLossEvaluator<'a>, EvalError> {
        if windows_per_item == 0 || windows_per_item > limits::SCORE_WINDOWS_PER_ITEM_MAX {
            return Err(EvalError(format!(
                "windows per item {windows_per_item} is outside 1..={}",
                limits::SCORE_WINDOWS_PER_ITEM_MAX
            )));
        }
        Ok(ModelLossEvaluator {
            trainer,
            items,
            windows_per_item,
        })
    }

    fn tokens_of(&self, data_ids: &[u64]) -> Result<Vec<u32>, EvalError> {
        let window = self.trainer.train_config().seq_len + 1;
        let windows = (self.items.item_len() / window).min(self.windows_per_item);
        let mut tokens = Vec::with_capacity(data_ids.len() * windows * window);
        for &id in data_ids {
            tokens.extend_from_slice(&self.items.item(id)?[..windows * window]);
        }
        Ok(tokens)
    }
}

impl LossEvaluator for ModelLossEvaluator<'_> {
    fn eval_loss(&mut self, params: &[f32], data_ids: &[u64]) -> Result<f32, EvalError> {
        if data_ids.is_empty() {
            return Err(EvalError("no data ids to evaluate".into()));
        }
        let tokens = self.tokens_of(data_ids)?;
        self.trainer
            .set_params(params)
            .map_err(|e| EvalError(e.to_string()))?;
        self.trainer
            .eval_loss(&tokens)
            .map_err(|e| EvalError(e.to_string()))
    }

    /// Loads the parameters once and evaluates every window of every item in one forward pass.
    fn eval_item_losses(
        &mut self,
        params: &[f32],
        data_ids: &[u64],
    ) -> Result<Vec<f32>, EvalError> {
        if data_ids.is_empty() {
            return Err(EvalError("no data ids to evaluate".into()));
        }
        let tokens = self.tokens_of(data_ids)?;
        self.trainer
            .set_params(params)
            .map_err(|e| EvalError(e.to_string()))?;
        let rows = self
            .trainer
            .eval_row_losses(&tokens)
            .map_err(|e| EvalError(e.to_string()))?;
        // tokens_of takes the same number of windows from every item.
        let per_item = rows.len() / data_ids.len();
        if per_item == 0 || rows.len() % data_ids.len() != 0 {
            return Err(EvalError(format!(
                "{} rows for {} items",
                rows.len(),
                data_ids.len()
            )));
        }
        Ok(rows
            .chunks_exact(per_item)
            .map(|c| c.iter().sum::<f32>() / per_item as f32)
            .collect())
    }
}

/// The run's data assignment: `count` distinct item ids of `items` per (round seed, peer), by
/// `round::assign_data` (sorted). The round number is already in the round seed.
pub struct ItemAssignment {
    pub dataset_cid: Hash32,
    pub items: u32,
    pub count: u32,
}

impl ItemAssignment {
    pub fn new(dataset_cid: Hash32, items: u64, count: u32) -> Result<ItemAssignment, EvalError> {
        let items = u32::try_from(items)
            .map_err(|_| EvalError(format!("{items} items do not fit a u32 data id")))?;
        if count == 0 || count > items {
            return Err(EvalError(format!(
                "cannot assign {count} distinct items out of {items}"
            )));
        }
        Ok(ItemAssignment {
            dataset_cid,
            items,
            count,
        })
    }
}

impl DataAssignment for ItemAssignment {
    fn assigned_ids(&self, round_seed: &Hash32, _round: RoundNumber, peer: &PeerId) -> Vec<u64> {
        round::assign_data(*round_seed, *peer, self.dataset_cid, self.items, self.count)
            .into_iter()
            .map(u64::from)
            .collect()
    }
}

/// Decodes blobs with `sync`'s codecs; the header's codec must be the run's (`codec` is a `CodecId` byte).
pub struct SyncUpdateDecoder;

impl UpdateDecoder for SyncUpdateDecoder {
    fn decode(&self, codec: u8, blob: &[u8], param_count: usize) -> Result<Vec<f32>, String> {
        let expected =
            CodecId::from_byte(codec).ok_or_else(|| format!("unknown codec id {codec}"))?;
        let header = read_header(blob, param_count).map_err(|e| e.to_string())?;
        if header.codec != expected {
            return Err(format!(
                "blob is codec {:?}, the run uses {expected:?}",
                header.codec
            ));
        }
        sync::codec::decode(blob, param_count).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync::codec::{CodecKind, ErrorFeedback};

    #[test]
    fn items_are_equal_slices_and_ids_outside_are_errors() {
        let items = DataItems::new((0..100).collect(), 30, 8).unwrap();
        assert_eq!(items.count(), 3);
        assert_eq!(items.item(1).unwrap(), &(30..60).collect::<Vec<u32>>()[..]);
        assert!(items.item(3).is_err());
        assert!(items.item(u64::MAX).is_err());
        assert!(
            DataItems::new((0..100).collect(), 8, 8).is_err(),
            "no window fits"
        );
        assert!(
            DataItems::new((0..10).collect(), 30, 8).is_err(),
            "no item fits"
        );
    }

    #[test]
    fn item_steps_walk_the_assigned_items_in_order_and_stop_at_their_end() {
        let items = DataItems::new((0..90).collect(), 30, 8).unwrap();
        let ids = [2, 0];
        let step = |k| items_step_batch(&items, &ids, 20, k);
        assert_eq!(step(0).unwrap(), (60..80).collect::<Vec<u32>>());
        let across: Vec<u32> = (80..90).chain(0..10).collect();
        assert_eq!(step(1).unwrap(), across);
        assert_eq!(step(2).unwrap(), (10..30).collect::<Vec<u32>>());
        assert!(step(3).is_err());
        assert!(step(u32::MAX).is_err());
        assert!(items_step_batch(&items, &[5], 20, 0).is_err(), "id outside");
    }

    #[test]
    fn assignment_is_distinct_in_range_and_depends_on_the_peer() {
        let assignment = ItemAssignment::new(Hash32::of(b"d"), 50, 10).unwrap();
        let seed = Hash32::of(b"seed");
        let ids = assignment.assigned_ids(&seed, RoundNumber(0), &PeerId([1; 32]));
        assert_eq!(ids.len(), 10);
        assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids.iter().all(|&id| id < 50));
        assert_eq!(
            ids,
            assignment.assigned_ids(&seed, RoundNumber(0), &PeerId([1; 32]))
        );
        assert_ne!(
            ids,
            assignment.assigned_ids(&seed, RoundNumber(0), &PeerId([2; 32]))
        );
        assert!(ItemAssignment::new(Hash32::of(b"d"), 5, 6).is_err());
        assert!(ItemAssignment::new(Hash32::of(b"d"), u64::MAX, 1).is_err());
    }

    #[test]
    fn decoder_checks_the_run_codec_and_refuses_garbage() {
        let values = vec![0.5f32, -1.0, 2.0];
        let blob = CodecKind::Fp32
            .codec()
            .encode(&values, &mut ErrorFeedback::off());
        let fp32 = CodecId::Fp32 as u8;
        assert_eq!(SyncUpdateDecoder.decode(fp32, &blob, 3).unwrap(), values);
        assert!(SyncUpdateDecoder
            .decode(CodecId::Bf16 as u8, &blob, 3)
            .is_err());
        assert!(SyncUpdateDecoder.decode(99, &blob, 3).is_err());
        assert!(SyncUpdateDecoder.decode(fp32, &blob, 4).is_err());
        assert!(SyncUpdateDecoder
            .decode(fp32, &blob[..blob.len() - 1], 3)
            .is_err());
        assert!(SyncUpdateDecoder.decode(fp32, &[], 3).is_err());
    }
}

/// The replay spot check's executor on the production training path: one inner step of `Workload::train_round`,
/// re-executed from canonical state bytes. State: params ‖ AdamW exp_avg ‖ exp_avg_sq (f32 LE, layout order) ‖
/// optimizer step (u64 LE). Step k's batch is `Workload::step_batch(round seed, assigned shards, k)`, the batch the
/// trainer was fed, at the run's schedule position `Workload::schedule_step(round) + k` (not part of the state: a
/// trainer cannot choose its learning rate). A fresh `Trainer` per step, restored from the state bytes, so a replay needs nothing else.
pub struct WorkloadStep<'a> {
    work: &'a Workload,
    threads: usize,
}

impl<'a> WorkloadStep<'a> {
    pub fn new(work: &'a Workload, threads: usize) -> WorkloadStep<'a> {
        WorkloadStep { work, threads }
    }
}

/// The canonical state bytes of a trainer (what a step-hash tree leaf hashes).
pub fn train_state_bytes(trainer: &Trainer) -> Vec<u8> {
    let opt = trainer.optimizer_state();
    let params = trainer.params();
    let n = params.len();
    let mut out = vec![0u8; 12 * n + 8];
    // One plain loop per slice (a chained iterator does not vectorize): this runs on every inner step of a
    // trainer that keeps its states.
    for (i, values) in [&params, &opt.exp_avg, &opt.exp_avg_sq]
        .into_iter()
        .enumerate()
    {
        let section = &mut out[4 * n * i..4 * n * (i + 1)];
        for (dst, v) in section.chunks_exact_mut(4).zip(values.iter()) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    }
    out[12 * n..].copy_from_slice(&opt.step.to_le_bytes());
    out
}

/// Parses state bytes for a model of `n` parameters; a wrong length is an `ExecError` (states come from peers).
pub fn parse_train_state(state: &[u8], n: usize) -> Result<(Vec<f32>, OptimizerState), ExecError> {
    let want = n
        .checked_mul(12)
        .and_then(|b| b.checked_add(8))
        .ok_or_else(|| ExecError(format!("a state of {n} parameters overflows")))?;
    if state.len() != want {
        return Err(ExecError(format!(
            "state of {} bytes, want {want}",
            state.len()
        )));
    }
    let section = |i: usize| -> Vec<f32> {
        state[4 * n * i..4 * n * (i + 1)]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut step = [0u8; 8];
    step.copy_from_slice(&state[12 * n..]);
    let opt = OptimizerState {
        step: u64::from_le_bytes(step),
        exp_avg: section(1),
        exp_avg_sq: section(2),
    };
    Ok((section(0), opt))
}

impl StepExecutor for WorkloadStep<'_> {
    fn execute(&mut self, ctx: &StepContext, state: &[u8]) -> Result<Vec<u8>, ExecError> {
        let err = |e: crate::work::WorkError| ExecError(e.to_string());
        let (params, opt) = parse_train_state(state, self.work.param_count())?;
        let mut ids = Vec::with_capacity(ctx.data_ids.len());
        for &id in &ctx.data_ids {
            ids.push(
                u32::try_from(id).map_err(|_| ExecError(format!("data id {id} is not a shard")))?,
            );
        }
        let tokens = self.work.assigned_tokens(&ids).map_err(err)?;
        let batch = self
            .work
            .step_batch(ctx.round_seed, &tokens, ctx.step)
            .map_err(err)?;
        let mut trainer = self.work.new_trainer(&params, self.threads).map_err(err)?;
        trainer
            .set_optimizer_state(&opt)
            .map_err(|e| ExecError(e.to_string()))?;
        let schedule_step = self
            .work
            .schedule_step(ctx.round)
            .saturating_add(u64::from(ctx.step));
        trainer.set_schedule_step(schedule_step);
        trainer
            .train_step(&batch)
            .map_err(|e| ExecError(e.to_string()))?;
        Ok(train_state_bytes(&trainer))
    }

    fn distance(&self, a: &[u8], b: &[u8]) -> Result<f64, ExecError> {
        state_distance(a, b, self.work.param_count())
    }

    fn repro_class(&self) -> ReproClass {
        cpu_repro_class(self.threads)
    }
}

/// Relative L2 distance of the parameters of two states (the cross-class comparison).
fn state_distance(a: &[u8], b: &[u8], n: usize) -> Result<f64, ExecError> {
    let (pa, _) = parse_train_state(a, n)?;
    let (pb, _) = parse_train_state(b, n)?;
    let diff: f64 = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let norm: f64 = pb.iter().map(|y| f64::from(*y).powi(2)).sum();
    Ok(diff.sqrt() / norm.sqrt().max(1e-30))
}

/// The reproducibility class of a tch trainer on this CPU with `threads` intra-op threads.
pub fn cpu_repro_class(threads: usize) -> ReproClass {
    ReproClass {
        // The tensor backend pinned by the workspace (torch 2.11 through tch 0.24), on the CPU.
        backend: "libtorch-tch0.24-cpu".into(),
        isa: instruction_set(),
        threads: threads.min(usize::from(u16::MAX)) as u16,
    }
}

/// Step `step`'s batch when a trainer trains on whole data items (`experiment attacks`): the `step`-th run of
/// `step_tokens` tokens (`TrainConfig::tokens_per_step`) in the assigned items, concatenated in assignment order.
/// An error when the items hold no such run (ids and steps come from peers).
pub fn items_step_batch(
    items: &DataItems,
    ids: &[u64],
    step_tokens: usize,
    step: u32,
) -> Result<Vec<u32>, EvalError> {
    let start = step as usize * step_tokens;
    let end = start + step_tokens;
    if step_tokens == 0 || end > ids.len() * items.item_len() {
        return Err(EvalError(format!(
            "{} items of {} tokens hold no step {step} of {step_tokens} tokens",
            ids.len(),
            items.item_len()
        )));
    }
    let first = start / items.item_len();
    let last = (end - 1) / items.item_len();
    let mut tokens = Vec::with_capacity((last - first + 1) * items.item_len());
    for &id in &ids[first..=last] {
        tokens.extend_from_slice(items.item(id)?);
    }
    let skip = start - first * items.item_len();
    Ok(tokens[skip..skip + step_tokens].to_vec())
}

/// The replay executor of item-based training (`experiment attacks`): one inner step from canonical state bytes
/// (see `WorkloadStep`) on `items_step_batch`. It keeps one `Trainer` of the trainer's model and schedule and loads
/// each state into it: a trainer's whole state is its parameters, AdamW moments and step count (gradients are
/// cleared after every step), so loading a state equals building a fresh trainer from it, at a fraction of the cost.
pub struct ItemsStep<'a> {
    items: &'a DataItems,
    model: model::ModelConfig,
    train: model::TrainConfig,
    param_count: usize,
    threads: usize,
    trainer: Option<Trainer>,
}

impl<'a> ItemsStep<'a> {
    pub fn new(
        items: &'a DataItems,
        model: model::ModelConfig,
        train: model::TrainConfig,
        param_count: usize,
        threads: usize,
    ) -> ItemsStep<'a> {
        ItemsStep {
            items,
            model,
            train,
            param_count,
            threads,
            trainer: None,
        }
    }
}

impl StepExecutor for ItemsStep<'_> {
    fn execute(&mut self, ctx: &StepContext, state: &[u8]) -> Result<Vec<u8>, ExecError> {
        let exec = |e: model::ModelError| ExecError(e.to_string());
        let (params, opt) = parse_train_state(state, self.param_count)?;
        let batch = items_step_batch(
            self.items,
            &ctx.data_ids,
            self.train.tokens_per_step(),
            ctx.step,
        )
        .map_err(|e| ExecError(e.0))?;
        let trainer = match self.trainer.as_mut() {
            Some(trainer) => {
                trainer.set_params(&params).map_err(exec)?;
                trainer
            }
            None => self.trainer.insert(
                Trainer::with_params(
                    self.model.clone(),
                    self.train.clone(),
                    &params,
                    self.threads,
                )
                .map_err(exec)?,
            ),
        };
        trainer.set_optimizer_state(&opt).map_err(exec)?;
        trainer.train_step(&batch).map_err(exec)?;
        Ok(train_state_bytes(trainer))
    }

    fn distance(&self, a: &[u8], b: &[u8]) -> Result<f64, ExecError> {
        state_distance(a, b, self.param_count)
    }

    fn repro_class(&self) -> ReproClass {
        cpu_repro_class(self.threads)
    }
}

/// The widest x86-64 vector extension present, else the architecture: part of the reproducibility class,
/// because libtorch picks its kernels by it.
pub fn instruction_set() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "x86_64-avx512".into();
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "x86_64-avx2".into();
        }
    }
    std::env::consts::ARCH.into()
}
