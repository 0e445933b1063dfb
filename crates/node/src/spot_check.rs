//! Replay spot checks in a running node (issue 7, step 3): the trainer's replay record, who checks whom, and the
//! record's binding to the agreed round.
//!
//! A trainer hashes its state (parameters, AdamW moments, step: `verifier_model::train_state_bytes`) before its
//! first inner step and after each, signs a `verify::Commitment` whose step root is the Merkle root of those H + 1
//! hashes, and stores the record (signed commitment plus the leaves, so a verifier can build every path itself)
//! as a blob whose CID its update announcement carries. After the round settles, every node draws the checks with
//! `verify::replay::draw_spot_check`, seeded by the settled model hash: a value nobody knew when the trainers
//! committed, so a trainer cannot train honestly only on the steps that will be checked. The drawn trainer
//! re-creates the states of the drawn range from its kept start state (the same step function the verifier runs)
//! and serves them as blobs by their leaf hash; the drawn verifier fetches the record and those states and runs
//! `verify::ReplaySession`, which bisects a mismatch to one step and signs a fraud proof.

use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};
use verify::replay::{draw_spot_check, SpotCheck};
use verify::SignedCommitment;

/// Version byte of the record's encoding.
pub const RECORD_VERSION: u8 = 1;

/// A trainer's replay record for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRecord {
    pub commitment: SignedCommitment,
    /// `Hash32::of` of each state, before the first inner step and after each (H + 1).
    pub leaves: Vec<Hash32>,
}

/// Why a peer's record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("replay record is truncated at byte {0}")]
    Truncated(usize),
    #[error("replay record version {0} is not supported")]
    Version(u8),
    #[error("replay record has {0} trailing bytes")]
    Trailing(usize),
    #[error("replay record's commitment of {0} bytes is over the limit")]
    CommitmentTooLarge(usize),
    #[error("replay record's commitment does not decode: {0}")]
    Commitment(String),
    #[error("replay record has {got} step hashes, the run's H + 1 is {want}")]
    Leaves { got: usize, want: usize },
    #[error("replay record's signature is not the trainer's")]
    Signature,
    #[error("replay record's {0} does not match the round's")]
    Mismatch(&'static str),
    #[error("replay record's step root is not the root of its step hashes")]
    StepRoot,
}

/// What a record must match: the round as the verifier agreed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordExpectation {
    pub run: RunId,
    pub round: RoundNumber,
    pub trainer: PeerId,
    pub base_model_hash: Hash32,
    pub data_ids: Vec<u32>,
    pub update_cid: Hash32,
    pub inner_steps: u32,
}

impl ReplayRecord {
    pub fn encode(&self) -> Vec<u8> {
        let commitment = self.commitment.encode();
        let mut out = Vec::with_capacity(1 + 4 + commitment.len() + 4 + 32 * self.leaves.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&(commitment.len() as u32).to_le_bytes());
        out.extend_from_slice(&commitment);
        out.extend_from_slice(&(self.leaves.len() as u32).to_le_bytes());
        for leaf in &self.leaves {
            out.extend_from_slice(&leaf.0);
        }
        out
    }

    /// Decodes a peer's record; at most `limits::INNER_STEPS_MAX + 1` leaves. Checks no signature.
    pub fn decode(bytes: &[u8]) -> Result<ReplayRecord, RecordError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], RecordError> {
            let end = at.checked_add(n).filter(|end| *end <= bytes.len());
            let end = end.ok_or(RecordError::Truncated(at))?;
            let slice = &bytes[at..end];
            at = end;
            Ok(slice)
        };
        let version = take(1)?[0];
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let commitment_len = u32_of(take(4)?);
        if commitment_len > limits::COMMITMENT_BYTES_MAX {
            return Err(RecordError::CommitmentTooLarge(commitment_len));
        }
        let commitment = SignedCommitment::decode(take(commitment_len)?)
            .map_err(|e| RecordError::Commitment(e.to_string()))?;
        let count = u32_of(take(4)?);
        let want = commitment.commitment.inner_steps as usize + 1;
        if count != want || count > limits::INNER_STEPS_MAX as usize + 1 {
            return Err(RecordError::Leaves { got: count, want });
        }
        let leaves = take(32 * count)?
            .chunks_exact(32)
            .map(|c| Hash32(c.try_into().expect("32 bytes")))
            .collect();
        let used = at;
        if used != bytes.len() {
            return Err(RecordError::Trailing(bytes.len() - used));
        }
        Ok(ReplayRecord { commitment, leaves })
    }

    /// Checks the record against the agreed round: signed by the trainer, the same run, round, base model, data,
    /// update and H, and a step root that is the root of the leaves.
    pub fn check(&self, expect: &RecordExpectation) -> Result<(), RecordError> {
        let c = &self.commitment.commitment;
        let data_ids: Vec<u64> = expect.data_ids.iter().map(|&d| u64::from(d)).collect();
        let fields = [
            ("run", c.run == expect.run),
            ("round", c.round == expect.round),
            ("trainer", c.peer == expect.trainer),
            ("base model", c.base_model_hash == expect.base_model_hash),
            ("data ids", c.data_ids == data_ids),
            ("update", c.update_cid == expect.update_cid),
            ("inner steps", c.inner_steps == expect.inner_steps),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, ok)| !ok) {
            return Err(RecordError::Mismatch(name));
        }
        if self.leaves.len() != c.inner_steps as usize + 1 {
            return Err(RecordError::Leaves {
                got: self.leaves.len(),
                want: c.inner_steps as usize + 1,
            });
        }
        if verify::merkle::step_root(&self.leaves) != c.step_root {
            return Err(RecordError::StepRoot);
        }
        if !self.commitment.signature_valid() {
            return Err(RecordError::Signature);
        }
        Ok(())
    }
}

/// What a trainer keeps of a round it trained, to re-create any of its states when drawn.
#[derive(Debug, Clone)]
pub struct KeptStart {
    /// State bytes before the first inner step.
    pub start: Vec<u8>,
    /// The shards it actually trained on (an attack test's liar differs from its assignment).
    pub trained_ids: Vec<u32>,
    /// The round seed its batches came from.
    pub seed: Hash32,
    pub leaves: Vec<Hash32>,
}

/// What a verifier knows of an update it verified, for a spot check once the round settles.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotTarget {
    pub update_cid: Hash32,
    /// The trainer's announced replay record (`Hash32::ZERO`: none announced).
    pub replay: Hash32,
    pub base_model_hash: Hash32,
    pub data_ids: Vec<u32>,
}

/// The spot-check draw of `trainer`'s update in a round that settled on `settled_model_hash`, among `verifiers`
/// (the members at the settle, the same list at every node that settled it).
pub fn draw(
    settled_model_hash: Hash32,
    round: RoundNumber,
    trainer: &PeerId,
    inner_steps: u32,
    verifiers: &[PeerId],
    probability_ppm: u32,
) -> Option<SpotCheck> {
    let seed = Hash32::of(
        &[
            &b"commonweight/node/spot-check-seed/v1"[..],
            &settled_model_hash.0,
            &round.0.to_le_bytes(),
        ]
        .concat(),
    );
    draw_spot_check(
        &seed,
        round,
        trainer,
        inner_steps,
        verifiers,
        probability_ppm,
        limits::SPOT_CHECK_STEPS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use verify::{Commitment, NodeKey, ReproClass};

    fn record(key: &NodeKey, leaves: Vec<Hash32>) -> (ReplayRecord, RecordExpectation) {
        let commitment = Commitment {
            run: RunId(Hash32([1; 32])),
            round: RoundNumber(3),
            peer: key.peer_id(),
            base_model_hash: Hash32([2; 32]),
            data_ids: vec![4, 5],
            update_cid: Hash32([6; 32]),
            update_bytes: 100,
            codec: 0,
            claimed_loss: 1.5,
            repro: ReproClass {
                backend: "b".into(),
                isa: "i".into(),
                threads: 1,
            },
            inner_steps: leaves.len() as u32 - 1,
            step_root: verify::merkle::step_root(&leaves),
        };
        let expect = RecordExpectation {
            run: commitment.run,
            round: commitment.round,
            trainer: commitment.peer,
            base_model_hash: commitment.base_model_hash,
            data_ids: vec![4, 5],
            update_cid: commitment.update_cid,
            inner_steps: commitment.inner_steps,
        };
        let record = ReplayRecord {
            commitment: commitment.sign(key),
            leaves,
        };
        (record, expect)
    }

    #[test]
    fn a_record_round_trips_and_binds_to_the_round() {
        let key = NodeKey::from_secret([7; 32]);
        let leaves: Vec<Hash32> = (0..5u8).map(|i| Hash32([i; 32])).collect();
        let (record, expect) = record(&key, leaves);
        let bytes = record.encode();
        let back = ReplayRecord::decode(&bytes).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.check(&expect), Ok(()));
        let mut other = expect.clone();
        other.update_cid = Hash32([9; 32]);
        assert_eq!(back.check(&other), Err(RecordError::Mismatch("update")));
        let mut other = expect.clone();
        other.data_ids = vec![4, 6];
        assert_eq!(back.check(&other), Err(RecordError::Mismatch("data ids")));
        // A leaf swapped after signing no longer has the committed root.
        let mut swapped = back.clone();
        swapped.leaves[2] = Hash32([0xee; 32]);
        assert_eq!(swapped.check(&expect), Err(RecordError::StepRoot));
        // A signature that is not the trainer's over these fields.
        let mut forged = back;
        forged.commitment.signature.0[0] ^= 1;
        assert_eq!(forged.check(&expect), Err(RecordError::Signature));
    }

    #[test]
    fn hostile_record_bytes_get_typed_errors() {
        let key = NodeKey::from_secret([7; 32]);
        let (record, _) = record(&key, vec![Hash32([1; 32]); 3]);
        let bytes = record.encode();
        for cut in [0, 1, 4, 5, bytes.len() - 1] {
            assert!(ReplayRecord::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(ReplayRecord::decode(&long), Err(RecordError::Trailing(1)));
        let mut version = bytes.clone();
        version[0] = 9;
        assert_eq!(ReplayRecord::decode(&version), Err(RecordError::Version(9)));
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ReplayRecord::decode(&huge),
            Err(RecordError::CommitmentTooLarge(_))
        ));
        // A leaf count that disagrees with the commitment's H.
        let count_at = bytes.len() - 3 * 32 - 4;
        let mut count = bytes;
        count[count_at..count_at + 4].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            ReplayRecord::decode(&count),
            Err(RecordError::Leaves { got: 7, want: 3 })
        );
    }

    #[test]
    fn every_node_draws_the_same_checks() {
        let members: Vec<PeerId> = (1..=4u8).map(|i| PeerId([i; 32])).collect();
        let model = Hash32([3; 32]);
        let all: Vec<_> = members
            .iter()
            .map(|t| draw(model, RoundNumber(2), t, 8, &members, 1_000_000))
            .collect();
        for (trainer, check) in members.iter().zip(&all) {
            let check = check.as_ref().expect("drawn at 100%");
            assert_ne!(check.verifier, *trainer);
            assert!(check.end_step <= 8 && check.first_step < check.end_step);
            assert_eq!(
                draw(model, RoundNumber(2), trainer, 8, &members, 1_000_000).as_ref(),
                Some(check)
            );
        }
        assert!(draw(model, RoundNumber(2), &members[0], 8, &members, 0).is_none());
    }
}
