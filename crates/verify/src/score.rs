//! The statistical score (Gauntlet class): does applying the update lower the loss like an honest update does, and
//! more on the peer's own assigned data than on random data?
//!
//! Three models are evaluated item by item on a sample A of the peer's assigned items and a sample R of random items
//! outside its assignment: the base θ ("before"), the peer's local model θ − Δ ("after"; the pseudo-gradient is
//! Δ = θ − θ_local) and the round's reference θ − Δ̄, Δ̄ the mean update of the peers in good standing this round.
//! Two statistics come out of the per-item losses, each answering one question:
//!
//! 1. **Harm** (decisive, one round is enough). The gain ratio
//!
//!      h = Σ_{A∪R} (L_before − L_after) / Σ_{A∪R} (L_before − L_reference)
//!
//!    is the loss the update removes as a fraction of what the round's mean update removes on the same items. It is
//!    relative on purpose: how much any update lowers the loss depends on the training stage, and from a random
//!    initialization almost any move along an update lowers it. Measured on the tiny model (4 rounds, 16 + 16 items):
//!    a sign-flipped update of round 0 still has h = 0.38–0.55 against h = 0.96–1.25 for honest ones: the part of
//!    round 0's gain that does not depend on the update's sign (curvature along it) is ≈ (1.0 + 0.46) / 2 = 0.73,
//!    the part that does ≈ 0.27. From round 1 on, sign flips have h ≈ −3, noise at an honest norm h ≈ 0, an
//!    undeclared stale base h < 0. Bootstrapped at 4 + 4 items from the same runs, 0.1–0.4% of honest updates have
//!    h < 0.6, and 97% of round-0 sign flips do. An update with
//!    h < `SCORE_GAIN_RATIO_MIN_MILLI`/1000 = 0.6 is excluded this round whatever the rating says, and the rating
//!    gets the worst observation. When the reference does not lower the loss at all (no yardstick) the test is
//!    h's numerator < 0: the update raises the loss.
//!
//! 2. **Own-data signal** (evidence, accumulated by the rating). Per item, a = L_reference − L_after: how much better
//!    the peer's model does than the round's mean model. An honest peer trained on its items, the mean model has only
//!    1/W of that training, so a is larger on A than on R; a peer that trained on other data, a copier or a crafted
//!    perturbation ("a little is enough") has no reason for it. The observation is the pooled two-sample t statistic
//!
//!      t = (ā_A − ā_R) / (s_p · √(1/|A| + 1/|R|)),   s_p² the pooled variance of a over both samples,
//!
//!    which is free of units and of the training stage, and under "no own-data signal" follows Student's t with
//!    |A| + |R| − 2 degrees of freedom (mean 0). Item difficulty cancels because each item is compared with itself
//!    under the reference. Measured: honest t at 4 + 4 items has mean ≈ 1.0 and 1st percentile ≈ −1.8; updates with
//!    no own-data signal have mean ≈ 0. One round of t separates them by about 0.7 of a standard deviation, so this
//!    part cannot exclude on one observation without excluding honest peers; the rating (`rating`) accumulates it.
//!
//! The sample is seeded by (round seed, verifier, peer): a peer cannot know which of its items are probed, and each
//! verifier of a committee draws its own.

use types::limits::verify as limits;
use types::{Hash32, PeerId};

/// Loss evaluation, done by the caller (the tch model in node; a closed-form loss in tests).
pub trait LossEvaluator {
    /// Mean loss of `params` on the data items `data_ids`.
    fn eval_loss(&mut self, params: &[f32], data_ids: &[u64]) -> Result<f32, EvalError>;

    /// Loss of `params` on each data item of `data_ids`, in order. The default evaluates one item at a time;
    /// an evaluator that loads parameters at a cost should load them once.
    fn eval_item_losses(
        &mut self,
        params: &[f32],
        data_ids: &[u64],
    ) -> Result<Vec<f32>, EvalError> {
        data_ids
            .iter()
            .map(|id| self.eval_loss(params, std::slice::from_ref(id)))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("loss evaluation failed: {0}")]
pub struct EvalError(pub String);

/// Per-item losses of the three models on one sample: the base θ, the peer's local model θ − Δ ("after") and the
/// round's reference θ − mean Δ.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemLosses {
    pub before: Vec<f32>,
    pub after: Vec<f32>,
    pub reference: Vec<f32>,
}

/// Losses measured for one update: on a sample of the peer's assigned items and on a sample of random items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossProbe {
    pub own: ItemLosses,
    pub random: ItemLosses,
}

fn sum_of_differences(minuend: &[f32], subtrahend: &[f32]) -> f64 {
    minuend
        .iter()
        .zip(subtrahend)
        .map(|(&x, &y)| f64::from(x) - f64::from(y))
        .sum()
}

/// The gain ratio h of the module docs and its numerator. `None` for the ratio when the reference removes no loss.
pub fn gain_ratio(probe: &LossProbe) -> (Option<f64>, f64) {
    let gain = sum_of_differences(&probe.own.before, &probe.own.after)
        + sum_of_differences(&probe.random.before, &probe.random.after);
    let reference_gain = sum_of_differences(&probe.own.before, &probe.own.reference)
        + sum_of_differences(&probe.random.before, &probe.random.reference);
    let ratio = (reference_gain > 0.0).then(|| gain / reference_gain);
    (ratio, gain)
}

/// Whether the update fails the harm test (module docs, part 1). Non-finite losses are harm.
pub fn is_harmful(probe: &LossProbe) -> bool {
    let (ratio, gain) = gain_ratio(probe);
    if !gain.is_finite() {
        return true;
    }
    match ratio {
        Some(h) => h.is_nan() || h < limits::SCORE_GAIN_RATIO_MIN_MILLI as f64 / 1000.0,
        None => gain < 0.0,
    }
}

/// The pooled two-sample t statistic of the own-data advantage (module docs, part 2), clamped to
/// ±`SCORE_OBSERVATION_ABS_MAX`; 0 when a side is empty, when the advantage has no spread, or on non-finite losses.
pub fn own_data_t(probe: &LossProbe) -> f64 {
    let advantage = |side: &ItemLosses| -> Vec<f64> {
        side.reference
            .iter()
            .zip(&side.after)
            .map(|(&r, &a)| f64::from(r) - f64::from(a))
            .collect()
    };
    let (own, random) = (advantage(&probe.own), advantage(&probe.random));
    let (n_a, n_r) = (own.len() as f64, random.len() as f64);
    if n_a < 1.0 || n_r < 1.0 || n_a + n_r < 3.0 {
        return 0.0;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (m_a, m_r) = (mean(&own), mean(&random));
    let squares = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    let pooled_var = (squares(&own, m_a) + squares(&random, m_r)) / (n_a + n_r - 2.0);
    let se = (pooled_var * (1.0 / n_a + 1.0 / n_r)).sqrt();
    let t = (m_a - m_r) / se;
    if !t.is_finite() {
        return 0.0;
    }
    let bound = limits::SCORE_OBSERVATION_ABS_MAX;
    t.clamp(-bound, bound)
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

/// The data ids a verifier evaluates for one peer: up to `count` (at most `SCORE_SAMPLE_IDS_MAX`) of its assigned
/// ids, and as many random ids from the dataset outside its assignment. Seeded by (round seed, verifier, peer): peers
/// cannot know in advance which of their items are probed.
pub fn score_samples(
    round_seed: &Hash32,
    verifier: &PeerId,
    peer: &PeerId,
    assigned: &[u64],
    dataset_items: u64,
    count: usize,
) -> (Vec<u64>, Vec<u64>) {
    let count = count.min(limits::SCORE_SAMPLE_IDS_MAX);
    let mut stream = HashStream::new(&[
        b"commonweight/verify/score-sample/v1",
        &round_seed.0,
        &verifier.0,
        &peer.0,
    ]);
    let mut pool = assigned.to_vec();
    let mut own = Vec::new();
    while own.len() < count && !pool.is_empty() {
        let i = stream.below(pool.len() as u64) as usize;
        own.push(pool.swap_remove(i));
    }
    let mut random = Vec::new();
    let tries_max = 16 * count;
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

    fn side(before: &[f32], after: &[f32], reference: &[f32]) -> ItemLosses {
        ItemLosses {
            before: before.to_vec(),
            after: after.to_vec(),
            reference: reference.to_vec(),
        }
    }

    #[test]
    fn harm_is_relative_to_the_reference_gain() {
        // The reference removes 0.2 per item everywhere.
        let probe = |after_own: f32, after_random: f32| LossProbe {
            own: side(&[2.0, 2.0], &[after_own, after_own], &[1.8, 1.8]),
            random: side(&[2.0, 2.0], &[after_random, after_random], &[1.8, 1.8]),
        };
        let honest = probe(1.75, 1.85);
        assert!((gain_ratio(&honest).0.unwrap() - 1.0).abs() < 1e-5);
        assert!(!is_harmful(&honest));
        // Lowers the loss, but at 0.55 of the mean update's gain: a sign flip from a random initialization.
        let weak = probe(1.89, 1.89);
        assert!((gain_ratio(&weak).0.unwrap() - 0.55).abs() < 1e-6);
        assert!(is_harmful(&weak));
        assert!(is_harmful(&probe(2.3, 2.3)));
        assert!(is_harmful(&probe(f32::NAN, 1.8)));
        // No yardstick (the reference removes nothing): harm is raising the loss.
        let flat = |after: f32| LossProbe {
            own: side(&[2.0], &[after], &[2.0]),
            random: side(&[2.0], &[after], &[2.0]),
        };
        assert!(!is_harmful(&flat(1.99)));
        assert!(is_harmful(&flat(2.01)));
    }

    #[test]
    fn own_data_t_is_the_pooled_two_sample_t_of_the_advantage() {
        // Advantage L_reference − L_after: own items [0.3, 0.1], random items [0.0, −0.2]: means 0.2 and −0.1,
        // pooled variance (0.02 + 0.02) / 2 = 0.02, standard error √(0.02 · (1/2 + 1/2)) = √0.02.
        let probe = LossProbe {
            own: side(&[2.0, 2.0], &[1.5, 1.7], &[1.8, 1.8]),
            random: side(&[2.0, 2.0], &[1.8, 2.0], &[1.8, 1.8]),
        };
        let expected = 0.3 / 0.02f64.sqrt();
        assert!(
            (own_data_t(&probe) - expected).abs() < 1e-4,
            "{}",
            own_data_t(&probe)
        );
        // The same advantage on both sides: no own-data signal.
        let flat = LossProbe {
            own: side(&[2.0, 2.0], &[1.5, 1.7], &[1.8, 1.8]),
            random: side(&[2.0, 2.0], &[1.5, 1.7], &[1.8, 1.8]),
        };
        assert_eq!(own_data_t(&flat), 0.0);
        // A huge t is clamped; no spread at all is no evidence.
        let clamp = LossProbe {
            own: side(&[2.0, 2.0], &[1.0, 1.0001], &[1.8, 1.8]),
            random: side(&[2.0, 2.0], &[1.8, 1.8001], &[1.8, 1.8]),
        };
        assert_eq!(own_data_t(&clamp), limits::SCORE_OBSERVATION_ABS_MAX);
        let still = LossProbe {
            own: side(&[2.0], &[1.8], &[1.8]),
            random: side(&[2.0], &[1.8], &[1.8]),
        };
        assert_eq!(own_data_t(&still), 0.0);
    }

    #[test]
    fn samples_are_deterministic_and_disjoint() {
        let seed = Hash32::of(b"s");
        let (v, p) = (PeerId([1; 32]), PeerId([2; 32]));
        let assigned: Vec<u64> = (10..20).collect();
        let (own, random) = score_samples(&seed, &v, &p, &assigned, 1000, limits::SCORE_SAMPLE_IDS);
        assert_eq!(
            (own.clone(), random.clone()),
            score_samples(&seed, &v, &p, &assigned, 1000, limits::SCORE_SAMPLE_IDS)
        );
        assert_eq!(own.len(), limits::SCORE_SAMPLE_IDS);
        assert_eq!(random.len(), own.len());
        assert!(own.iter().all(|id| assigned.contains(id)));
        assert!(random.iter().all(|id| !assigned.contains(id)));
    }
}
