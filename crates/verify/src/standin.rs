//! THE STAND-IN step function: a deterministic, pure f32 training step on a quadratic loss, used by the tests and
//! the `verify-fraud-proof` bin until node plugs the tch trainer in as the real `StepExecutor`.
//!
//! State bytes: n params (f32 LE) ‖ n momentum values (f32 LE). Step k of (round seed, peer, data ids) pulls the
//! params toward a target vector t drawn from BLAKE3(round seed ‖ data ids ‖ k) (a "batch"), by SGD with momentum:
//! m ← 0.9 m + (θ − t); θ ← θ − 0.05 m. Only f32 adds and multiplies in a fixed order: bit-exact on every machine.

use types::Hash32;

use crate::commitment::ReproClass;
use crate::replay::{ExecError, StepContext, StepExecutor};
use crate::score::HashStream;

/// The stand-in executor; its reproducibility class is configurable so tests can exercise the cross-class path.
#[derive(Debug, Clone)]
pub struct QuadraticStep {
    pub repro: ReproClass,
}

impl QuadraticStep {
    pub fn new() -> QuadraticStep {
        QuadraticStep {
            repro: standin_class(),
        }
    }
}

impl Default for QuadraticStep {
    fn default() -> Self {
        QuadraticStep::new()
    }
}

/// The class the stand-in declares by default.
pub fn standin_class() -> ReproClass {
    ReproClass {
        backend: "standin-quadratic-v1".into(),
        isa: "any".into(),
        threads: 1,
    }
}

/// The initial state: params from `seed`, zero momentum.
pub fn initial_state(param_count: usize, seed: &Hash32) -> Vec<u8> {
    let mut stream = HashStream::new(&[b"commonweight/verify/standin-init/v1", &seed.0]);
    let params: Vec<f32> = (0..param_count).map(|_| unit(stream.next_u64())).collect();
    encode_state(&params, &vec![0.0; param_count])
}

fn unit(x: u64) -> f32 {
    // Top 24 bits → [-1, 1).
    ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

pub fn encode_state(params: &[f32], momentum: &[f32]) -> Vec<u8> {
    params
        .iter()
        .chain(momentum)
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

pub fn decode_state(state: &[u8]) -> Result<(Vec<f32>, Vec<f32>), ExecError> {
    if state.is_empty() || !state.len().is_multiple_of(8) {
        return Err(ExecError(format!(
            "stand-in state of {} bytes is not 2n f32s",
            state.len()
        )));
    }
    let values: Vec<f32> = state
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let n = values.len() / 2;
    Ok((values[..n].to_vec(), values[n..].to_vec()))
}

fn targets(ctx: &StepContext, n: usize) -> Vec<f32> {
    let ids: Vec<u8> = ctx
        .data_ids
        .iter()
        .flat_map(|id| id.to_le_bytes())
        .collect();
    let mut stream = HashStream::new(&[
        b"commonweight/verify/standin-batch/v1",
        &ctx.round_seed.0,
        &ctx.peer.0,
        &ids,
        &ctx.step.to_le_bytes(),
    ]);
    (0..n).map(|_| unit(stream.next_u64())).collect()
}

impl StepExecutor for QuadraticStep {
    fn execute(&mut self, ctx: &StepContext, state: &[u8]) -> Result<Vec<u8>, ExecError> {
        let (mut params, mut momentum) = decode_state(state)?;
        let t = targets(ctx, params.len());
        for i in 0..params.len() {
            momentum[i] = 0.9 * momentum[i] + (params[i] - t[i]);
            params[i] -= 0.05 * momentum[i];
        }
        Ok(encode_state(&params, &momentum))
    }

    fn distance(&self, a: &[u8], b: &[u8]) -> Result<f64, ExecError> {
        let (pa, ma) = decode_state(a)?;
        let (pb, mb) = decode_state(b)?;
        if pa.len() != pb.len() {
            return Err(ExecError("states of different sizes".into()));
        }
        let xa = pa.iter().chain(&ma);
        let xb = pb.iter().chain(&mb);
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for (x, y) in xa.zip(xb) {
            diff += (*x as f64 - *y as f64).powi(2);
            norm += (*y as f64).powi(2);
        }
        Ok(diff.sqrt() / norm.sqrt().max(1e-30))
    }

    fn repro_class(&self) -> ReproClass {
        self.repro.clone()
    }
}

/// A stand-in trainer's round: every state it went through and its step log. With `cheat_at = Some(k)`, step k's
/// result is perturbed (as if the trainer skipped work or injected a change) and the later steps run honestly from
/// there, so step k is the first wrong step.
pub struct StandinRun {
    pub states: Vec<Vec<u8>>,
    pub log: crate::merkle::StepLog,
}

pub fn train(
    ctx: &StepContext,
    start: Vec<u8>,
    steps: u32,
    cheat_at: Option<u32>,
) -> Result<StandinRun, ExecError> {
    let mut executor = QuadraticStep::new();
    let mut log = crate::merkle::StepLog::default();
    log.record(&start);
    let mut states = vec![start];
    for step in 0..steps {
        let step_ctx = StepContext {
            step,
            ..ctx.clone()
        };
        let mut next = executor.execute(&step_ctx, states.last().expect("start state"))?;
        if cheat_at == Some(step) {
            let (mut params, momentum) = decode_state(&next)?;
            params[0] += 0.01;
            next = encode_state(&params, &momentum);
        }
        log.record(&next);
        states.push(next);
    }
    Ok(StandinRun { states, log })
}
