//! The stand-in model: a quadratic objective over a flat f32 vector, cheap enough for thousands of nodes.
//!
//! Shard `d` has a target vector `t_d`; training on shards `D` minimises `½‖θ − mean(t_d, d ∈ D)‖²` with H
//! gradient steps. The update is `Δ = θ − θ_local`, as in DiLoCo. The verifier applies `Δ` and checks that the
//! loss on the trainer's assigned data at least halves (honest updates shrink it to `(1 − lr)^{2H}`).
//!
//! Only the objective is a stand-in: the sanity gate is `verify::sanity` and the aggregation is
//! `sync::Aggregator`, the production code the node runs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use types::{Hash32, PeerId, RoundNumber};

use crate::scenario::{Aggregation, Scenario};

/// Fixed targets of every shard, generated from the run seed.
pub struct StandIn {
    pub params: usize,
    targets: Vec<Vec<f32>>,
    inner_steps: u32,
    inner_lr: f32,
    outer_lr: f32,
    aggregation: Aggregation,
    trim_permille: u32,
}

const BLOB_MAGIC: &[u8; 4] = b"CWSU";
const BLOB_HEADER_BYTES: usize = 4 + 8 + 32 + 4;

impl StandIn {
    pub fn new(scenario: &Scenario, seed: u64) -> StandIn {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_7a12_6e75);
        let targets = (0..scenario.shards)
            .map(|_| {
                (0..scenario.params)
                    .map(|_| rng.gen_range(-1.0f32..1.0))
                    .collect()
            })
            .collect();
        StandIn {
            params: scenario.params,
            targets,
            inner_steps: scenario.inner_steps,
            inner_lr: scenario.inner_lr,
            outer_lr: scenario.outer_lr,
            aggregation: scenario.aggregation,
            trim_permille: scenario.trim_permille,
        }
    }

    /// Round-0 parameters: away from every target, so that progress shows in `global_loss`.
    pub fn genesis(&self) -> Vec<f32> {
        vec![2.0; self.params]
    }

    fn target_of(&self, data_ids: &[u32]) -> Vec<f32> {
        let mut mean = vec![0.0f32; self.params];
        for &d in data_ids {
            for (m, t) in mean.iter_mut().zip(&self.targets[d as usize]) {
                *m += *t;
            }
        }
        let n = data_ids.len().max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= n);
        mean
    }

    fn loss(x: &[f32], target: &[f32]) -> f32 {
        0.5 * x
            .iter()
            .zip(target)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
    }

    /// Honest training: H gradient steps on the assigned shards. Returns (Δ, final local loss).
    pub fn train(&self, theta: &[f32], data_ids: &[u32]) -> (Vec<f32>, f32) {
        let target = self.target_of(data_ids);
        let mut local = theta.to_vec();
        for _ in 0..self.inner_steps {
            for (x, t) in local.iter_mut().zip(&target) {
                *x -= self.inner_lr * (*x - *t);
            }
        }
        let delta = theta.iter().zip(&local).map(|(a, b)| a - b).collect();
        (delta, Self::loss(&local, &target))
    }

    /// Mean loss over all shards: what the run is making progress on.
    pub fn global_loss(&self, theta: &[f32]) -> f32 {
        let all: Vec<u32> = (0..self.targets.len() as u32).collect();
        Self::loss(theta, &self.target_of(&all))
    }

    pub fn encode_blob(round: RoundNumber, trainer: PeerId, delta: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOB_HEADER_BYTES + delta.len() * 4);
        out.extend_from_slice(BLOB_MAGIC);
        out.extend_from_slice(&round.0.to_le_bytes());
        out.extend_from_slice(&trainer.0);
        out.extend_from_slice(&(delta.len() as u32).to_le_bytes());
        for v in delta {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses a blob. `None` for anything malformed: wrong magic, round, trainer or length.
    pub fn decode_blob(
        &self,
        bytes: &[u8],
        round: RoundNumber,
        trainer: PeerId,
    ) -> Option<Vec<f32>> {
        if bytes.len() != BLOB_HEADER_BYTES + self.params * 4 || &bytes[..4] != BLOB_MAGIC {
            return None;
        }
        let blob_round = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
        let blob_trainer = PeerId(bytes[12..44].try_into().ok()?);
        let len = u32::from_le_bytes(bytes[44..48].try_into().ok()?) as usize;
        if blob_round != round.0 || blob_trainer != trainer || len != self.params {
            return None;
        }
        Some(
            bytes[48..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }

    /// The verifier: the production sanity gate (`verify::sanity`: finite values), then the stand-in's loss
    /// score (at least a halving of the loss on the assigned data).
    pub fn verify(&self, theta: &[f32], delta: &[f32], data_ids: &[u32]) -> bool {
        if delta.len() != theta.len() || verify::sanity::first_non_finite(delta).is_some() {
            return false;
        }
        let target = self.target_of(data_ids);
        let applied: Vec<f32> = theta.iter().zip(delta).map(|(a, d)| a - d).collect();
        let before = Self::loss(theta, &target);
        let after = Self::loss(&applied, &target);
        after.is_finite() && after <= 0.5 * before && before > 0.0
    }

    /// `θ − outer_lr · aggregate(Δs)` with the production aggregator (`sync::Aggregator`), which orders the
    /// updates by trainer itself: that is what makes every node's result bit-identical.
    #[cfg(not(feature = "inject-arrival-order-bug"))]
    pub fn apply(&self, theta: &[f32], updates: Vec<(PeerId, Vec<f32>)>) -> Vec<f32> {
        if updates.is_empty() {
            return theta.to_vec();
        }
        let aggregator = match self.aggregation {
            Aggregation::Mean => sync::aggregate::Aggregator::Mean,
            Aggregation::TrimmedMean => {
                let n = updates.len();
                let trim = (n * self.trim_permille as usize / 1000).min((n - 1) / 2);
                sync::aggregate::Aggregator::TrimmedMean { trim }
            }
            Aggregation::MedianNormClip => sync::aggregate::Aggregator::MedianNormClip,
        };
        let aggregate = aggregator
            .aggregate(&updates)
            .expect("the world hands over verified, same-length updates within the peer bound");
        Self::step(theta, &aggregate, self.outer_lr)
    }

    /// The injected bug: a home-made mean that folds the updates in the order given (arrival order), not by
    /// trainer, so honest nodes can end up with different bits.
    #[cfg(feature = "inject-arrival-order-bug")]
    pub fn apply(&self, theta: &[f32], updates: Vec<(PeerId, Vec<f32>)>) -> Vec<f32> {
        if updates.is_empty() {
            return theta.to_vec();
        }
        let refs: Vec<&[f32]> = updates.iter().map(|(_, d)| d.as_slice()).collect();
        let aggregate = mean(&refs, self.params);
        Self::step(theta, &aggregate, self.outer_lr)
    }

    fn step(theta: &[f32], aggregate: &[f32], outer_lr: f32) -> Vec<f32> {
        theta
            .iter()
            .zip(aggregate)
            .map(|(t, a)| t - outer_lr * a)
            .collect()
    }
}

/// Coordinate-wise mean, summed in the order given (the injected bug's aggregator, and the test below).
pub fn mean(deltas: &[&[f32]], params: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; params];
    for delta in deltas {
        for (s, v) in sum.iter_mut().zip(delta.iter()) {
            *s += *v;
        }
    }
    let n = deltas.len() as f32;
    sum.iter_mut().for_each(|s| *s /= n);
    sum
}

pub fn blob_cid(bytes: &[u8]) -> Hash32 {
    Hash32::of(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_updates_pass_and_attacks_fail_the_verifier() {
        let scenario = Scenario::default();
        let model = StandIn::new(&scenario, 1);
        let theta = model.genesis();
        let ids = [3, 9];
        let (delta, _) = model.train(&theta, &ids);
        assert!(model.verify(&theta, &delta, &ids));
        let flipped: Vec<f32> = delta.iter().map(|v| -v).collect();
        let scaled: Vec<f32> = delta.iter().map(|v| v * 100.0).collect();
        let zero = vec![0.0; delta.len()];
        let mut nan = delta.clone();
        nan[0] = f32::NAN;
        for bad in [&flipped, &scaled, &zero, &nan] {
            assert!(!model.verify(&theta, bad, &ids));
        }
    }

    #[test]
    fn blob_round_trip_checks_header() {
        let scenario = Scenario {
            params: 4,
            ..Scenario::default()
        };
        let model = StandIn::new(&scenario, 1);
        let blob = StandIn::encode_blob(RoundNumber(2), PeerId([1; 32]), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            model.decode_blob(&blob, RoundNumber(2), PeerId([1; 32])),
            Some(vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(
            model.decode_blob(&blob, RoundNumber(3), PeerId([1; 32])),
            None
        );
        assert_eq!(
            model.decode_blob(&blob[..10], RoundNumber(2), PeerId([1; 32])),
            None
        );
    }

    #[test]
    fn summation_order_changes_bits_which_is_why_order_is_fixed() {
        let a = [1.0e8f32, 1.0, -1.0e8];
        let b = [1.0f32, -1.0e8, 1.0e8];
        let c = [0.1f32, 0.2, 0.3];
        let forward = mean(&[&a, &b, &c], 3);
        let backward = mean(&[&c, &b, &a], 3);
        assert_ne!(forward, backward);
    }
}
