//! Peer ratings across rounds: a one-dimensional Gaussian (Kalman) filter per peer.
//!
//! Model: each peer has a latent quality q (how useful its updates are, in units of the round's median score).
//! Each scored round gives an observation o = q + ε with ε ~ N(0, τ²). Between observations q drifts as a random
//! walk, q ← q + η with η ~ N(0, δ²) per round, so a peer that turns bad is caught and one that reforms recovers.
//! With a Gaussian prior N(μ₀, σ₀²) the posterior stays Gaussian N(μ, σ²) and updates in closed form:
//!
//!   predict: σ² ← σ² + δ² · (rounds since the last observation)
//!   update:  k = σ² / (σ² + τ²);  μ ← μ + k (o − μ);  σ² ← (1 − k) σ²
//!
//! Why not OpenSkill: it ranks players in matches; here each peer is measured against a fixed yardstick (the round
//! median), so the conjugate normal model is exact, has three parameters, and is easy to audit.
//!
//! A peer is included in aggregation while μ ≥ `include_min`. Defaults: μ₀ = 0.5, σ₀ = 0.5, τ = 0.5, δ = 0.1,
//! include_min = 0.3. A newcomer starts included (μ₀ > include_min: honest peers are not made to wait); one round
//! at o ≤ −1 takes it to μ ≈ −0.25 and out, while an honest peer (o ≈ 1) rises to μ ≈ 0.75 after one round and
//! stays in through a single bad round. Sybils gain nothing from fresh identities beyond one round each, and every
//! round they are still subject to the hard gates.

use std::collections::BTreeMap;

use types::limits::verify as limits;
use types::{PeerId, RoundNumber};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatingParams {
    pub prior_mean: f64,
    pub prior_sd: f64,
    pub observation_sd: f64,
    pub drift_sd_per_round: f64,
    pub include_min: f64,
}

impl Default for RatingParams {
    fn default() -> Self {
        RatingParams {
            prior_mean: 0.5,
            prior_sd: 0.5,
            observation_sd: 0.5,
            drift_sd_per_round: 0.1,
            include_min: 0.3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    pub mean: f64,
    pub variance: f64,
    pub last_round: Option<RoundNumber>,
    pub observations: u32,
}

impl Rating {
    pub fn sd(&self) -> f64 {
        self.variance.sqrt()
    }
}

/// Ratings of all peers this verifier has scored, in peer order (deterministic iteration).
#[derive(Debug, Clone, Default)]
pub struct RatingTable {
    pub params: RatingParams,
    ratings: BTreeMap<PeerId, Rating>,
}

impl RatingTable {
    pub fn new(params: RatingParams) -> RatingTable {
        RatingTable {
            params,
            ratings: BTreeMap::new(),
        }
    }

    /// A peer's rating (the prior if never scored).
    pub fn get(&self, peer: &PeerId) -> Rating {
        self.ratings.get(peer).copied().unwrap_or(Rating {
            mean: self.params.prior_mean,
            variance: self.params.prior_sd * self.params.prior_sd,
            last_round: None,
            observations: 0,
        })
    }

    pub fn included(&self, peer: &PeerId) -> bool {
        self.get(peer).mean >= self.params.include_min
    }

    /// Folds one round's observation in. Observations are clamped to ±`SCORE_OBSERVATION_ABS_MAX` so one round
    /// cannot dominate. When the table is full, new peers are not stored (they keep the prior): bounded memory.
    pub fn observe(&mut self, peer: PeerId, round: RoundNumber, observation: f64) -> Rating {
        let bound = limits::SCORE_OBSERVATION_ABS_MAX;
        let o = if observation.is_nan() {
            -bound
        } else {
            observation.clamp(-bound, bound)
        };
        let mut r = self.get(&peer);
        let elapsed = r
            .last_round
            .map_or(0, |last| round.0.saturating_sub(last.0)) as f64;
        let drift = self.params.drift_sd_per_round;
        r.variance += drift * drift * elapsed;
        let tau2 = self.params.observation_sd * self.params.observation_sd;
        let gain = r.variance / (r.variance + tau2);
        r.mean += gain * (o - r.mean);
        r.variance *= 1.0 - gain;
        r.last_round = Some(round);
        r.observations += 1;
        if self.ratings.contains_key(&peer) || self.ratings.len() < limits::RATED_PEERS_MAX {
            self.ratings.insert(peer, r);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_round_excludes_newcomer_and_honest_peer_survives_noise() {
        let mut t = RatingTable::default();
        let bad = PeerId([1; 32]);
        let good = PeerId([2; 32]);
        assert!(t.included(&bad));
        let r = t.observe(bad, RoundNumber(0), -1.0);
        assert!((r.mean + 0.25).abs() < 1e-12, "{r:?}");
        assert!(!t.included(&bad));
        t.observe(good, RoundNumber(0), 1.0);
        t.observe(good, RoundNumber(1), 1.1);
        t.observe(good, RoundNumber(2), -0.5);
        assert!(t.included(&good), "{:?}", t.get(&good));
        // A free rider scoring 0 every round drifts out.
        let idle = PeerId([3; 32]);
        for round in 0..3 {
            t.observe(idle, RoundNumber(round), 0.0);
        }
        assert!(!t.included(&idle), "{:?}", t.get(&idle));
    }
}
