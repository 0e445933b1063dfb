//! The statistical score (Gauntlet class): does applying the update lower the loss, and more on the peer's own
//! assigned data than on random data?
//!
//! With relative gains g_a = (L_a,before − L_a,after) / L_a,before on a sample of the peer's assigned data and
//! g_r likewise on a random sample of the dataset, and the same two gains ρ_a, ρ_r of the round's reference update
//! (the mean of the updates scored this round) on the same two samples, the round score is
//!
//!   score = min(g_r, (g_a − g_r) − (ρ_a − ρ_r)).
//!
//! g_r > 0 says the update helps the model in general (noise, sign flips and poison make it negative). The second
//! term says the update carries information specific to the peer's own data, which a free rider, a copier, a trainer
//! on the wrong data or a crafted perturbation ("a little is enough") does not have. Its reference part is a paired
//! control: on the real model, some samples are simply easier to improve than others, and in early training that
//! difference is larger than what one pass over the peer's data leaves, so g_a − g_r alone is mostly noise (measured
//! with `commonweight experiment attacks`: a third of honest updates excluded). The reference update is evaluated on
//! the very same two samples, which cancels the difficulty of the samples and keeps what only this peer's training
//! explains. The minimum makes both terms necessary. Scores are normalized per round by the median |score| of the
//! round's scored updates (so the rating sees "units of a typical peer" whatever the training stage), then fed to
//! the rating (`rating`).
//!
//! "After" is the peer's local model θ − Δ (the pseudo-gradient is Δ = θ − θ_local); "reference" is θ − mean Δ.

use types::limits::verify as limits;
use types::{Hash32, PeerId};

/// Loss evaluation, done by the caller (the tch model in node; a closed-form loss in tests).
pub trait LossEvaluator {
    /// Mean loss of `params` on the data items `data_ids`.
    fn eval_loss(&mut self, params: &[f32], data_ids: &[u64]) -> Result<f32, EvalError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("loss evaluation failed: {0}")]
pub struct EvalError(pub String);

/// Losses measured for one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossProbe {
    pub assigned_before: f32,
    pub assigned_after: f32,
    pub random_before: f32,
    pub random_after: f32,
    /// Losses of the round's reference model θ − mean Δ on the same two samples.
    pub assigned_reference: f32,
    pub random_reference: f32,
}

fn relative_gain(before: f32, after: f32) -> f64 {
    let before = before as f64;
    let after = after as f64;
    if !(before.is_finite() && after.is_finite()) {
        return -limits::SCORE_OBSERVATION_ABS_MAX;
    }
    (before - after) / before.abs().max(1e-12)
}

/// `min(g_r, (g_a − g_r) − (ρ_a − ρ_r))`, see the module docs.
pub fn gauntlet_score(probe: &LossProbe) -> f64 {
    let g_a = relative_gain(probe.assigned_before, probe.assigned_after);
    let g_r = relative_gain(probe.random_before, probe.random_after);
    let rho_a = relative_gain(probe.assigned_before, probe.assigned_reference);
    let rho_r = relative_gain(probe.random_before, probe.random_reference);
    g_r.min((g_a - g_r) - (rho_a - rho_r))
}

/// Scores divided by the round's median |score| (floored at 1e-12), clamped to ±`SCORE_OBSERVATION_ABS_MAX`.
pub fn normalize(scores: &[f64]) -> Vec<f64> {
    if scores.is_empty() {
        return Vec::new();
    }
    let abs: Vec<f64> = scores.iter().map(|s| s.abs()).collect();
    let scale = crate::sanity::median(&abs).max(1e-12);
    let bound = limits::SCORE_OBSERVATION_ABS_MAX;
    scores
        .iter()
        .map(|s| (s / scale).clamp(-bound, bound))
        .collect()
}

/// Deterministic stream of u64s from a hash (BLAKE3 in XOF mode).
pub(crate) struct HashStream(blake3::OutputReader);

impl HashStream {
    pub(crate) fn new(parts: &[&[u8]]) -> HashStream {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        HashStream(h.finalize_xof())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// Uniform in 0..n (n > 0), by rejection so there is no modulo bias.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// The data ids a verifier evaluates for one peer: up to `SCORE_SAMPLE_IDS` of its assigned ids, and as many random
/// ids from the dataset outside its assignment. Seeded by (round seed, verifier, peer): peers cannot know in advance
/// which of their items are probed.
pub fn score_samples(
    round_seed: &Hash32,
    verifier: &PeerId,
    peer: &PeerId,
    assigned: &[u64],
    dataset_items: u64,
) -> (Vec<u64>, Vec<u64>) {
    let mut stream = HashStream::new(&[
        b"commonweight/verify/score-sample/v1",
        &round_seed.0,
        &verifier.0,
        &peer.0,
    ]);
    let mut pool = assigned.to_vec();
    let mut own = Vec::new();
    while own.len() < limits::SCORE_SAMPLE_IDS && !pool.is_empty() {
        let i = stream.below(pool.len() as u64) as usize;
        own.push(pool.swap_remove(i));
    }
    let mut random = Vec::new();
    let tries_max = 16 * limits::SCORE_SAMPLE_IDS;
    for _ in 0..tries_max {
        if random.len() == own.len() || dataset_items == 0 {
            break;
        }
        let id = stream.below(dataset_items);
        if !assigned.contains(&id) && !random.contains(&id) {
            random.push(id);
        }
    }
    (own, random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_needs_general_and_specific_gain() {
        let honest = LossProbe {
            assigned_before: 2.0,
            assigned_after: 1.6,
            random_before: 2.0,
            random_after: 1.8,
            assigned_reference: 1.8,
            random_reference: 1.8,
        };
        assert!(gauntlet_score(&honest) > 0.09);
        // The same gains on samples the reference also finds easier by as much: nothing specific is left.
        let easy_sample = LossProbe {
            assigned_reference: 1.6,
            ..honest
        };
        assert!(gauntlet_score(&easy_sample).abs() < 1e-6);
        let noise = LossProbe {
            assigned_before: 2.0,
            assigned_after: 2.3,
            random_before: 2.0,
            random_after: 2.3,
            assigned_reference: 1.8,
            random_reference: 1.8,
        };
        assert!(gauntlet_score(&noise) < 0.0);
        let generic = LossProbe {
            assigned_before: 2.0,
            assigned_after: 1.8,
            random_before: 2.0,
            random_after: 1.8,
            assigned_reference: 1.9,
            random_reference: 1.9,
        };
        assert!(gauntlet_score(&generic).abs() < 1e-6);
        assert_eq!(normalize(&[0.1, 0.2, -0.1]), vec![1.0, 2.0, -1.0]);
    }

    #[test]
    fn samples_are_deterministic_and_disjoint() {
        let seed = Hash32::of(b"s");
        let (v, p) = (PeerId([1; 32]), PeerId([2; 32]));
        let assigned: Vec<u64> = (10..20).collect();
        let (own, random) = score_samples(&seed, &v, &p, &assigned, 1000);
        assert_eq!(
            (own.clone(), random.clone()),
            score_samples(&seed, &v, &p, &assigned, 1000)
        );
        assert_eq!(own.len(), limits::SCORE_SAMPLE_IDS);
        assert_eq!(random.len(), own.len());
        assert!(own.iter().all(|id| assigned.contains(id)));
        assert!(random.iter().all(|id| !assigned.contains(id)));
    }
}
