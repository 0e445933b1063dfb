//! The verifier role's copy and replay gate (issue 7, step 4): an update that re-sends an earlier round's
//! agreed update, byte for byte or scaled, sign-flipped or lightly noised, is rejected.
//!
//! Within a round nobody can copy: a trainer commits to its update's CID before any update of the round is
//! published (`round::Action::PublishUpdate`). What a lazy or hostile trainer can re-send is an earlier round's
//! update, its own or another's. So every verifier keeps the sketches (`verify::similarity`) and CIDs of the
//! updates included in its last `HISTORY_ROUNDS_MAX` settled rounds, the same set at every node that settled them,
//! and compares each new update with them. Only the sketch cosine counts here, not the top-k overlap: with a sparse
//! codec and error feedback an honest trainer's largest coordinates persist from round to round, while a cosine of
//! 0.98 between different rounds' updates does not happen honestly (they are built on different models and
//! batches). Memory: at most `HISTORY_ROUNDS_MAX` rounds of `UPDATES_PER_ROUND_MAX` sketches (~17 KiB each) plus the
//! pending sketches of `PENDING_ROUNDS_MAX` unsettled rounds.

use std::collections::BTreeMap;

use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber};
use verify::similarity::{History, SeenUpdate, Sketch};

/// Unsettled rounds whose accepted updates' sketches are kept until their round settles.
const PENDING_ROUNDS_MAX: usize = 4;

/// Why an update is a copy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CopyRejection {
    #[error("replays update {cid} that {first_peer} sent in round {}", first_round.0)]
    Replayed {
        cid: Hash32,
        first_round: RoundNumber,
        first_peer: PeerId,
    },
    #[error("copies the update of {of_peer} in round {} (sketch cosine {cosine:.3})", of_round.0)]
    Copy {
        of_peer: PeerId,
        of_round: RoundNumber,
        cosine: f64,
    },
}

pub struct CopyGate {
    seed: u64,
    history: History,
    /// Sketches of accepted updates of rounds not yet settled: (round, trainer) → (CID, sketch).
    pending: BTreeMap<(u64, PeerId), (Hash32, Sketch)>,
}

impl CopyGate {
    /// `seed` is the run's sketch seed, the same at every verifier (derived from the run id).
    pub fn new(seed: u64) -> CopyGate {
        CopyGate {
            seed,
            history: History::default(),
            pending: BTreeMap::new(),
        }
    }

    /// The sketch seed of a run: the first 8 bytes of its id.
    pub fn seed_of(run_id: Hash32) -> u64 {
        u64::from_le_bytes(run_id.0[..8].try_into().expect("8 bytes"))
    }

    /// The run's sketch seed: sketch an update with `verify::similarity::sketch(update, seed)`, outside any lock
    /// held on the gate (it reads the whole update).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    #[cfg(test)]
    fn sketch(&self, update: &[f32]) -> Sketch {
        verify::similarity::sketch(update, self.seed)
    }

    /// Checks `trainer`'s update of `round` against the history of settled rounds. The same update seen again
    /// (it can arrive after its round settled with it) is not a copy of itself.
    pub fn check(
        &self,
        round: RoundNumber,
        trainer: PeerId,
        cid: &Hash32,
        sketch: &Sketch,
    ) -> Result<(), CopyRejection> {
        let itself = |r: RoundNumber, p: PeerId| r == round && p == trainer;
        if let Some((first_round, first_peer)) =
            self.history.seen_cid(cid).filter(|(r, p)| !itself(*r, *p))
        {
            return Err(CopyRejection::Replayed {
                cid: *cid,
                first_round,
                first_peer,
            });
        }
        let cosine_min = f64::from(limits::COPY_COSINE_MIN_MILLI) / 1000.0;
        match self.history.find_match(sketch, |m| {
            m.cosine.abs() >= cosine_min && !itself(m.of_round, m.of_peer)
        }) {
            Some(m) => Err(CopyRejection::Copy {
                of_peer: m.of_peer,
                of_round: m.of_round,
                cosine: m.cosine,
            }),
            None => Ok(()),
        }
    }

    /// Keeps an accepted update's sketch until its round settles. Rounds beyond the last `PENDING_ROUNDS_MAX`
    /// are dropped, and at most `UPDATES_PER_ROUND_MAX` per round are kept.
    pub fn record(&mut self, round: RoundNumber, trainer: PeerId, cid: Hash32, sketch: Sketch) {
        let in_round = self
            .pending
            .range((round.0, PeerId([0; 32]))..=(round.0, PeerId([0xff; 32])))
            .count();
        if in_round >= limits::UPDATES_PER_ROUND_MAX {
            return;
        }
        self.pending.insert((round.0, trainer), (cid, sketch));
        let mut rounds: Vec<u64> = self.pending.keys().map(|(r, _)| *r).collect();
        rounds.dedup();
        if rounds.len() > PENDING_ROUNDS_MAX {
            let keep_from = rounds[rounds.len() - PENDING_ROUNDS_MAX];
            self.pending.retain(|(r, _), _| *r >= keep_from);
        }
    }

    /// A round settled with `included`: their updates join the history; the round's others, and anything older,
    /// are dropped.
    pub fn settle(&mut self, round: RoundNumber, included: &[PeerId]) {
        let mut seen = Vec::new();
        let mut cids = Vec::new();
        for trainer in included {
            if let Some((cid, sketch)) = self.pending.remove(&(round.0, *trainer)) {
                cids.push((cid, *trainer));
                seen.push(SeenUpdate {
                    round,
                    peer: *trainer,
                    cid,
                    sketch,
                });
            }
        }
        seen.truncate(limits::UPDATES_PER_ROUND_MAX);
        self.history.push_round(round, seen, cids);
        self.pending.retain(|(r, _), _| *r > round.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-0.5, 0.5).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
            })
            .collect()
    }

    fn peer(i: u8) -> PeerId {
        PeerId([i; 32])
    }

    const N: usize = 50_000;

    #[test]
    fn replays_and_scaled_copies_of_agreed_updates_are_rejected_others_pass() {
        let mut gate = CopyGate::new(7);
        let agreed = noise(N, 1);
        let left_out = noise(N, 2);
        let agreed_cid = Hash32::of(b"agreed");
        let (s_agreed, s_left_out) = (gate.sketch(&agreed), gate.sketch(&left_out));
        gate.check(RoundNumber(4), peer(3), &agreed_cid, &s_agreed)
            .unwrap();
        gate.record(RoundNumber(3), peer(1), agreed_cid, s_agreed.clone());
        gate.record(RoundNumber(3), peer(2), Hash32::of(b"left out"), s_left_out);
        // Before its round settles nothing is history (in-round copies cannot happen: commit before reveal).
        gate.check(RoundNumber(4), peer(3), &agreed_cid, &s_agreed)
            .unwrap();
        gate.settle(RoundNumber(3), &[peer(1)]);

        assert_eq!(
            gate.check(RoundNumber(4), peer(3), &agreed_cid, &s_agreed),
            Err(CopyRejection::Replayed {
                cid: agreed_cid,
                first_round: RoundNumber(3),
                first_peer: peer(1),
            })
        );
        let scaled: Vec<f32> = agreed.iter().map(|v| -1.5 * v).collect();
        let noised: Vec<f32> = agreed
            .iter()
            .zip(noise(N, 9))
            .map(|(a, b)| a + 0.1 * b)
            .collect();
        for copy in [scaled, noised] {
            match gate.check(
                RoundNumber(4),
                peer(3),
                &Hash32::of(b"new"),
                &gate.sketch(&copy),
            ) {
                Err(CopyRejection::Copy {
                    of_peer, of_round, ..
                }) => assert_eq!((of_peer, of_round), (peer(1), RoundNumber(3))),
                other => panic!("a copy passed: {other:?}"),
            }
        }
        // The agreed update itself, arriving again after its round settled, is not a copy of itself.
        gate.check(RoundNumber(3), peer(1), &agreed_cid, &s_agreed)
            .unwrap();
        // The update that was left out of the round is not history; an unrelated update passes.
        gate.check(
            RoundNumber(4),
            peer(3),
            &Hash32::of(b"again"),
            &gate.sketch(&left_out),
        )
        .unwrap();
        gate.check(
            RoundNumber(4),
            peer(3),
            &Hash32::of(b"fresh"),
            &gate.sketch(&noise(N, 3)),
        )
        .unwrap();
    }

    #[test]
    fn history_and_pending_rounds_are_bounded() {
        let mut gate = CopyGate::new(7);
        let first = noise(N, 1);
        let cid = Hash32::of(b"first");
        gate.record(RoundNumber(0), peer(1), cid, gate.sketch(&first));
        gate.settle(RoundNumber(0), &[peer(1)]);
        for round in 1..=limits::HISTORY_ROUNDS_MAX as u64 {
            gate.settle(RoundNumber(round), &[]);
        }
        gate.check(RoundNumber(99), peer(3), &cid, &gate.sketch(&first))
            .unwrap();
        for round in 0..20 {
            gate.record(
                RoundNumber(100 + round),
                peer(1),
                Hash32::of(&round.to_le_bytes()),
                gate.sketch(&first),
            );
        }
        let rounds: std::collections::BTreeSet<u64> =
            gate.pending.keys().map(|(r, _)| *r).collect();
        assert_eq!(rounds.len(), PENDING_ROUNDS_MAX);
        assert_eq!(rounds.first(), Some(&116));
    }
}
