//! Scoring committees: which verifiers score which update, so that the loss evaluations of a round are split.
//!
//! The committee of peer p's update in a round is the `size` verifiers with the lowest
//! BLAKE3(domain ‖ round seed ‖ p ‖ verifier) among the run's verifiers. The round seed is fixed only when the round's
//! base model is, so no trainer can pick its verifiers in advance, and anyone can recompute the committee, which is
//! how a verifier checks that a scored verdict it absorbs (`Verifier::absorb`) came from a committee member.

use types::{Hash32, PeerId};

/// Committee members of `peer`'s update, in rank order. `size` is capped at the number of verifiers.
pub fn scoring_committee(
    round_seed: &Hash32,
    peer: &PeerId,
    verifiers: &[PeerId],
    size: usize,
) -> Vec<PeerId> {
    let mut ranked: Vec<(Hash32, PeerId)> = verifiers
        .iter()
        .map(|v| {
            let draw = Hash32::of(
                &[
                    &b"commonweight/verify/committee/v1"[..],
                    &round_seed.0,
                    &peer.0,
                    &v.0,
                ]
                .concat(),
            );
            (draw, *v)
        })
        .collect();
    ranked.sort();
    ranked.dedup_by_key(|(_, v)| *v);
    ranked.into_iter().take(size).map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committees_spread_updates_over_verifiers_and_are_deterministic() {
        let seed = Hash32::of(b"round");
        let verifiers: Vec<PeerId> = (0..8u8).map(|i| PeerId([i; 32])).collect();
        let mut load = [0usize; 8];
        for p in 0..64u8 {
            let peer = PeerId([100 + p; 32]);
            let committee = scoring_committee(&seed, &peer, &verifiers, 2);
            assert_eq!(committee, scoring_committee(&seed, &peer, &verifiers, 2));
            assert_eq!(committee.len(), 2);
            assert_ne!(committee[0], committee[1]);
            for v in committee {
                load[v.0[0] as usize] += 1;
            }
        }
        // 128 seats over 8 verifiers: every verifier gets some, none gets most.
        assert!(load.iter().all(|&l| (4..=40).contains(&l)), "{load:?}");
        let other = scoring_committee(
            &Hash32::of(b"other round"),
            &PeerId([100; 32]),
            &verifiers,
            8,
        );
        assert_eq!(other.len(), 8, "size is capped at the verifier count");
    }
}
