//! Outer optimizers (DiLoCo's Nesterov SGD, SparseLoCo's plain step) and their saved state.
//!
//! Sign convention: the aggregated pseudo-gradient is `Δ = mean(θ − θ_local)`, so an outer step
//! *subtracts* it: with lr 1 and no momentum, θ becomes the mean of the workers' local models.
//!
//! State format (versioned, little-endian), shared by both optimizers and by [`ErrorFeedback`]:
//!
//! | field | size |
//! |---|---|
//! | magic `CWOS` | 4 |
//! | version ([`STATE_VERSION`]) | 1 |
//! | kind (1 Nesterov, 2 SparseLoCo, 3 error feedback) | 1 |
//! | reserved, zero | 2 |
//!
//! then per kind: Nesterov `lr: f32, momentum: f32, steps: u64, len: u64, velocity: len × f32`;
//! SparseLoCo `lr: f32, steps: u64`; error feedback `enabled: u8, decay: f32, has_residual: u8,
//! len: u64, residual: len × f32`. Restoring gives back the same state bit for bit; decoding checks
//! every length against the caller's expected length before allocating.

use types::limits::sync as limits;

use crate::codec::ErrorFeedback;
use crate::wire::{self, Reader, Truncated};

pub const STATE_MAGIC: [u8; 4] = *b"CWOS";
pub const STATE_VERSION: u8 = 1;

/// Which state a saved blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StateKind {
    Nesterov = 1,
    SparseLoco = 2,
    ErrorFeedback = 3,
}

/// Why saved outer state could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state is truncated")]
    Truncated,
    #[error("bad magic: not saved outer state")]
    BadMagic,
    #[error("unsupported state version {0}")]
    UnsupportedVersion(u8),
    #[error("state holds kind {found}, expected {expected:?}")]
    WrongKind { expected: StateKind, found: u8 },
    #[error("reserved bytes are not zero")]
    ReservedNonZero,
    #[error("state vector holds {found} values, expected {expected}")]
    LengthMismatch { expected: u64, found: u64 },
    #[error("field {0} is not a valid value")]
    BadField(&'static str),
    #[error("{0} bytes follow the state")]
    TrailingBytes(usize),
}

impl From<Truncated> for StateError {
    fn from(_: Truncated) -> StateError {
        StateError::Truncated
    }
}

/// An outer optimizer: applies the aggregated pseudo-gradient to the global parameters.
pub trait OuterOptimizer {
    /// θ ← θ − update(Δ). `theta` and `delta` have the same length, fixed for the run.
    fn step(&mut self, theta: &mut [f32], delta: &[f32]);
    /// Outer steps taken so far.
    fn steps(&self) -> u64;
    /// The full state, restorable bit for bit.
    fn to_bytes(&self) -> Vec<u8>;
}

/// DiLoCo's outer optimizer: SGD with Nesterov momentum, in f32, as `torch.optim.SGD(nesterov=True)`:
/// `v ← μ·v + Δ`, `θ ← θ − lr·(Δ + μ·v)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NesterovOuter {
    pub lr: f32,
    pub momentum: f32,
    steps: u64,
    /// Sized at the first step.
    velocity: Vec<f32>,
}

impl Default for NesterovOuter {
    /// DiLoCo's defaults: lr 0.7, momentum 0.9.
    fn default() -> NesterovOuter {
        NesterovOuter::new(0.7, 0.9)
    }
}

impl NesterovOuter {
    pub fn new(lr: f32, momentum: f32) -> NesterovOuter {
        assert!(
            lr.is_finite() && momentum.is_finite(),
            "outer hyperparameters must be finite"
        );
        NesterovOuter {
            lr,
            momentum,
            steps: 0,
            velocity: Vec::new(),
        }
    }

    pub fn velocity(&self) -> &[f32] {
        &self.velocity
    }

    pub fn from_bytes(bytes: &[u8], expected_len: usize) -> Result<NesterovOuter, StateError> {
        let mut reader = read_state_header(bytes, StateKind::Nesterov)?;
        let lr = finite(reader.f32()?, "lr")?;
        let momentum = finite(reader.f32()?, "momentum")?;
        let steps = reader.u64()?;
        // Empty until the first step.
        let velocity = read_vector(&mut reader, expected_len, &[0, expected_len])?;
        expect_end(&reader)?;
        Ok(NesterovOuter {
            lr,
            momentum,
            steps,
            velocity,
        })
    }
}

impl OuterOptimizer for NesterovOuter {
    fn step(&mut self, theta: &mut [f32], delta: &[f32]) {
        assert_eq!(theta.len(), delta.len(), "θ and Δ differ in length");
        if self.velocity.is_empty() {
            self.velocity = vec![0.0; delta.len()];
        }
        assert_eq!(
            self.velocity.len(),
            delta.len(),
            "Δ changed length between rounds"
        );
        let (lr, mu) = (self.lr, self.momentum);
        for ((t, d), v) in theta.iter_mut().zip(delta).zip(self.velocity.iter_mut()) {
            *v = mu * *v + d;
            *t -= lr * (d + mu * *v);
        }
        self.steps += 1;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = state_header(StateKind::Nesterov, 24 + self.velocity.len() * 4);
        wire::put_f32(&mut out, self.lr);
        wire::put_f32(&mut out, self.momentum);
        wire::put_u64(&mut out, self.steps);
        wire::put_u64(&mut out, self.velocity.len() as u64);
        wire::put_f32s(&mut out, &self.velocity);
        out
    }
}

/// SparseLoCo's outer step: `θ ← θ − lr·Δ` with no global momentum. The momentum's role is played
/// by each worker's local [`ErrorFeedback`] with decay (e.g. 0.95), applied before compression:
/// build it with [`SparseLocoOuter::worker_feedback`].
#[derive(Debug, Clone, PartialEq)]
pub struct SparseLocoOuter {
    pub lr: f32,
    steps: u64,
}

impl Default for SparseLocoOuter {
    /// SparseLoCo's reference setting: outer lr 1.0.
    fn default() -> SparseLocoOuter {
        SparseLocoOuter::new(1.0)
    }
}

impl SparseLocoOuter {
    pub fn new(lr: f32) -> SparseLocoOuter {
        assert!(lr.is_finite(), "outer lr must be finite");
        SparseLocoOuter { lr, steps: 0 }
    }

    /// The per-worker error-feedback state SparseLoCo pairs with this step (decay 0.95 in the paper).
    pub fn worker_feedback(decay: f32) -> ErrorFeedback {
        ErrorFeedback::new(decay)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SparseLocoOuter, StateError> {
        let mut reader = read_state_header(bytes, StateKind::SparseLoco)?;
        let lr = finite(reader.f32()?, "lr")?;
        let steps = reader.u64()?;
        expect_end(&reader)?;
        Ok(SparseLocoOuter { lr, steps })
    }
}

impl OuterOptimizer for SparseLocoOuter {
    fn step(&mut self, theta: &mut [f32], delta: &[f32]) {
        assert_eq!(theta.len(), delta.len(), "θ and Δ differ in length");
        for (t, d) in theta.iter_mut().zip(delta) {
            *t -= self.lr * d;
        }
        self.steps += 1;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = state_header(StateKind::SparseLoco, 12);
        wire::put_f32(&mut out, self.lr);
        wire::put_u64(&mut out, self.steps);
        out
    }
}

/// Saves a worker's error feedback, bit for bit.
pub fn encode_feedback(feedback: &ErrorFeedback) -> Vec<u8> {
    let residual = feedback.residual.as_deref().unwrap_or(&[]);
    let mut out = state_header(StateKind::ErrorFeedback, 14 + residual.len() * 4);
    out.push(u8::from(feedback.enabled));
    wire::put_f32(&mut out, feedback.decay);
    out.push(u8::from(feedback.residual.is_some()));
    wire::put_u64(&mut out, residual.len() as u64);
    wire::put_f32s(&mut out, residual);
    out
}

/// Restores error feedback saved by [`encode_feedback`] for an update of `expected_len` values.
pub fn decode_feedback(bytes: &[u8], expected_len: usize) -> Result<ErrorFeedback, StateError> {
    let mut reader = read_state_header(bytes, StateKind::ErrorFeedback)?;
    let enabled = read_bool(&mut reader, "enabled")?;
    let decay = reader.f32()?;
    if !(decay.is_finite() && (0.0..=1.0).contains(&decay)) {
        return Err(StateError::BadField("decay"));
    }
    let has_residual = read_bool(&mut reader, "has_residual")?;
    let residual_len = if has_residual { expected_len } else { 0 };
    let residual = read_vector(&mut reader, expected_len, &[residual_len])?;
    expect_end(&reader)?;
    if !enabled && has_residual {
        return Err(StateError::BadField("has_residual"));
    }
    Ok(ErrorFeedback {
        enabled,
        decay,
        residual: has_residual.then_some(residual),
    })
}

fn state_header(kind: StateKind, body_capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body_capacity);
    out.extend_from_slice(&STATE_MAGIC);
    out.push(STATE_VERSION);
    out.push(kind as u8);
    wire::put_u16(&mut out, 0);
    out
}

fn read_state_header(bytes: &[u8], kind: StateKind) -> Result<Reader<'_>, StateError> {
    let mut reader = Reader::new(bytes);
    if reader.array::<4>()? != STATE_MAGIC {
        return Err(StateError::BadMagic);
    }
    let version = reader.u8()?;
    if version != STATE_VERSION {
        return Err(StateError::UnsupportedVersion(version));
    }
    let found = reader.u8()?;
    if found != kind as u8 {
        return Err(StateError::WrongKind {
            expected: kind,
            found,
        });
    }
    if reader.u16()? != 0 {
        return Err(StateError::ReservedNonZero);
    }
    Ok(reader)
}

/// Reads `len: u64` then the values; `len` must be one of the `allowed` lengths.
fn read_vector(
    reader: &mut Reader<'_>,
    expected_len: usize,
    allowed: &[usize],
) -> Result<Vec<f32>, StateError> {
    let len = reader.u64()?;
    let allowed = allowed.iter().any(|&a| a as u64 == len);
    if !allowed || expected_len > limits::UPDATE_VALUES_MAX {
        return Err(StateError::LengthMismatch {
            expected: expected_len as u64,
            found: len,
        });
    }
    let len = len as usize;
    if reader.remaining() / 4 < len {
        return Err(StateError::Truncated);
    }
    let bytes = reader.take(len * 4)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn read_bool(reader: &mut Reader<'_>, field: &'static str) -> Result<bool, StateError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StateError::BadField(field)),
    }
}

fn finite(value: f32, field: &'static str) -> Result<f32, StateError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StateError::BadField(field))
    }
}

fn expect_end(reader: &Reader<'_>) -> Result<(), StateError> {
    match reader.remaining() {
        0 => Ok(()),
        extra => Err(StateError::TrailingBytes(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, TopK};

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn nesterov_matches_the_closed_form() {
        let mut outer = NesterovOuter::new(0.5, 0.9);
        let mut theta = vec![1.0f32, -1.0];
        outer.step(&mut theta, &[0.2, 0.4]);
        // v = Δ; θ -= lr·(Δ + μ·Δ) = lr·1.9·Δ.
        assert_eq!(
            theta,
            vec![
                1.0 - 0.5 * (0.2 + 0.9 * 0.2),
                -1.0 - 0.5 * (0.4 + 0.9 * 0.4)
            ]
        );
        outer.step(&mut theta, &[0.0, 0.0]);
        // With Δ = 0 the momentum alone moves θ: v = 0.9·v, θ -= lr·μ·v.
        assert_eq!(outer.velocity(), &[0.9 * 0.2, 0.9 * 0.4]);
        assert_eq!(outer.steps(), 2);
    }

    #[test]
    fn lr_one_without_momentum_averages_workers() {
        let theta_global = [1.0f32, 2.0];
        let locals = [[0.0f32, 2.5], [1.0, 1.5]];
        let delta: Vec<f32> = (0..2)
            .map(|i| locals.iter().map(|l| theta_global[i] - l[i]).sum::<f32>() / 2.0)
            .collect();
        let mut theta = theta_global.to_vec();
        SparseLocoOuter::new(1.0).step(&mut theta, &delta);
        assert_eq!(theta, vec![0.5, 2.0]);
    }

    #[test]
    fn state_restores_bit_for_bit_and_continues_identically() {
        let mut outer = NesterovOuter::default();
        let mut theta = vec![0.3f32, -0.7, 1e-8];
        outer.step(&mut theta, &[0.01, -0.02, 1e-9]);
        let saved = outer.to_bytes();
        let mut restored = NesterovOuter::from_bytes(&saved, 3).unwrap();
        assert_eq!(restored, outer);
        let mut theta_b = theta.clone();
        outer.step(&mut theta, &[0.5, 0.5, 0.5]);
        restored.step(&mut theta_b, &[0.5, 0.5, 0.5]);
        assert_eq!(bits(&theta), bits(&theta_b));
        assert_eq!(restored.to_bytes(), outer.to_bytes());

        let fresh = NesterovOuter::default();
        assert_eq!(
            NesterovOuter::from_bytes(&fresh.to_bytes(), 3).unwrap(),
            fresh
        );

        let mut sparse = SparseLocoOuter::new(0.8);
        sparse.step(&mut theta, &[1.0, 1.0, 1.0]);
        assert_eq!(
            SparseLocoOuter::from_bytes(&sparse.to_bytes()).unwrap(),
            sparse
        );
    }

    #[test]
    fn feedback_restores_bit_for_bit() {
        let mut feedback = SparseLocoOuter::worker_feedback(0.95);
        assert_eq!(
            decode_feedback(&encode_feedback(&feedback), 5).unwrap(),
            feedback
        );
        let codec = TopK {
            chunk_len: 4,
            k: 1,
            ..TopK::default()
        };
        codec.encode(&[0.1, 0.2, 0.3, 0.4, 0.5], &mut feedback);
        let restored = decode_feedback(&encode_feedback(&feedback), 5).unwrap();
        assert_eq!(restored, feedback);
        assert_eq!(
            decode_feedback(&encode_feedback(&ErrorFeedback::off()), 5).unwrap(),
            ErrorFeedback::off()
        );
    }

    #[test]
    fn bad_state_gives_typed_errors() {
        let mut outer = NesterovOuter::default();
        outer.step(&mut [0.0, 0.0], &[1.0, 1.0]);
        let saved = outer.to_bytes();
        assert_eq!(
            NesterovOuter::from_bytes(&saved, 3),
            Err(StateError::LengthMismatch {
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            NesterovOuter::from_bytes(&saved[..saved.len() - 1], 2),
            Err(StateError::Truncated)
        );
        let mut longer = saved.clone();
        longer.push(0);
        assert_eq!(
            NesterovOuter::from_bytes(&longer, 2),
            Err(StateError::TrailingBytes(1))
        );
        assert_eq!(
            SparseLocoOuter::from_bytes(&saved),
            Err(StateError::WrongKind {
                expected: StateKind::SparseLoco,
                found: 1
            })
        );
        let mut bad = saved.clone();
        bad[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(
            NesterovOuter::from_bytes(&bad, 2),
            Err(StateError::BadField("lr"))
        );
        let mut bad = saved.clone();
        bad[4] = 2;
        assert_eq!(
            NesterovOuter::from_bytes(&bad, 2),
            Err(StateError::UnsupportedVersion(2))
        );
        assert_eq!(
            NesterovOuter::from_bytes(b"nope", 2),
            Err(StateError::BadMagic)
        );
    }
}
