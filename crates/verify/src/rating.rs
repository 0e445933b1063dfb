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
//! Observations (`observation`) are the own-data t statistic of `score` (units of its standard error, 0 = no
//! own-data signal), floored at `SCORE_OBSERVATION_UNHARMFUL_MIN` = −2, or −`SCORE_OBSERVATION_ABS_MAX` for an
//! update that failed the harm test or a hard gate the peer provably caused (`Verifier` feeds both, so a peer
//! caught once does not come back at the newcomer prior). The floor is there because t at 4 + 4 items has only 3
//! degrees of freedom: an honest trainer's first update in a running swarm scored t = −3.2, which alone took the
//! prior to μ = −0.30 and excluded it. Below −2 an update that lowers the loss says "no own-data signal", which is
//! what the rating weighs; malice is what the harm test and the hard gates observe. Other verifiers' scored
//! verdicts are folded in too (`Verifier::absorb`), so a peer is rated on every committee's sample.
//!
//! Decision: included while μ ≥ `include_min`. Defaults μ₀ = 1, σ₀ = 1, τ = 1.5, δ = 0.1, include_min = −0.3, set
//! from the measured distribution of t on the tiny model at 4 + 4 items (honest: mean ≈ 1.0, 1st percentile ≈ −1.8;
//! no own-data signal: mean ≈ 0, sd ≈ 1.3; τ = 1.5 covers that spread and the t tails). The bound is chosen for
//! the false-positive goal first: a bootstrap of 4-round histories from those measurements gives about 0.4% of
//! honest updates below −0.3, and a peer whose updates carry no own-data signal below it in only ~3% of its rounds.
//! At this sample size t is evidence, not proof: one honest round at t = −1.8 must not exclude (μ ≈ 0.14 after it),
//! and a harm observation must (μ = (1 · 2.25 − 4 · 1) / 3.25 ≈ −0.54 from the prior). With the floor, one
//! unharmful round leaves μ ≥ 1 − 3/3.25 ≈ 0.08, and two at the floor in a row exclude (μ ≈ −0.42). A newcomer starts included
//! (μ₀ > include_min: honest peers are not made to wait). Sybils gain nothing from fresh identities beyond one round
//! each, and every round they are still subject to the hard gates and the harm test.

use std::collections::{BTreeMap, BTreeSet};

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
            prior_mean: 1.0,
            prior_sd: 1.0,
            observation_sd: 1.5,
            drift_sd_per_round: 0.1,
            include_min: -0.3,
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
    /// Peers proven to cheat (a checked fraud proof): excluded whatever their rating.
    banned: BTreeSet<PeerId>,
}

impl RatingTable {
    pub fn new(params: RatingParams) -> RatingTable {
        RatingTable {
            params,
            ratings: BTreeMap::new(),
            banned: BTreeSet::new(),
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
        !self.banned.contains(peer) && self.get(peer).mean >= self.params.include_min
    }

    /// Excludes `peer` for good: a fraud proof is proof, not evidence to weigh. Bounded like the ratings (a full
    /// table bans no new peer, and the caller still rejects the proven update itself).
    pub fn ban(&mut self, peer: PeerId) {
        if self.banned.len() < limits::RATED_PEERS_MAX {
            self.banned.insert(peer);
        }
    }

    pub fn banned(&self, peer: &PeerId) -> bool {
        self.banned.contains(peer)
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

/// The rating observation of one scored update: the worst when it failed the harm test (`harm`), else its
/// own-data t floored at `SCORE_OBSERVATION_UNHARMFUL_MIN` (module docs).
pub fn observation(harm: bool, own_data_t: f64) -> f64 {
    if harm {
        return -limits::SCORE_OBSERVATION_ABS_MAX;
    }
    if own_data_t.is_nan() {
        return limits::SCORE_OBSERVATION_UNHARMFUL_MIN;
    }
    own_data_t.max(limits::SCORE_OBSERVATION_UNHARMFUL_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harm_excludes_a_newcomer_and_an_honest_peer_survives_a_bad_round() {
        let mut t = RatingTable::default();
        let bad = PeerId([1; 32]);
        let good = PeerId([2; 32]);
        assert!(t.included(&bad));
        let r = t.observe(bad, RoundNumber(0), -limits::SCORE_OBSERVATION_ABS_MAX);
        assert!((r.mean - (2.25 - 4.0) / 3.25).abs() < 1e-12, "{r:?}");
        assert!(!t.included(&bad));
        // An honest peer's worst measured round (t ≈ −1.8) does not exclude it, before or after good rounds.
        assert!(t.observe(good, RoundNumber(0), -1.8).mean >= -0.3);
        t.observe(good, RoundNumber(1), 1.0);
        t.observe(good, RoundNumber(2), 1.2);
        assert!(t.observe(good, RoundNumber(3), -1.8).mean >= -0.3);
        assert!(t.included(&good), "{:?}", t.get(&good));
        // A peer with no own-data signal but steady negative luck drifts out; one at exactly 0 stays (t is evidence).
        let idle = PeerId([3; 32]);
        for round in 0..6 {
            t.observe(idle, RoundNumber(round), -1.0);
        }
        assert!(!t.included(&idle), "{:?}", t.get(&idle));
        let zero = PeerId([4; 32]);
        for round in 0..6 {
            t.observe(zero, RoundNumber(round), 0.0);
        }
        assert!(t.included(&zero), "{:?}", t.get(&zero));
        // An honest first round far in t's tail (measured: −3.2) does not exclude; two in a row do.
        let unlucky = PeerId([5; 32]);
        assert!(
            t.observe(unlucky, RoundNumber(0), observation(false, -3.2))
                .mean
                >= -0.3
        );
        assert!(t.included(&unlucky));
        assert!(
            t.observe(unlucky, RoundNumber(1), observation(false, -3.2))
                .mean
                < -0.3
        );
        assert_eq!(observation(true, 3.0), -limits::SCORE_OBSERVATION_ABS_MAX);
        assert_eq!(
            observation(false, f64::NAN),
            limits::SCORE_OBSERVATION_UNHARMFUL_MIN
        );
        assert_eq!(observation(false, 1.5), 1.5);
        // A banned peer stays out whatever it scores afterwards.
        t.ban(good);
        for round in 4..10 {
            t.observe(good, RoundNumber(round), 3.0);
        }
        assert!(!t.included(&good) && t.banned(&good));
    }
}
