//! Binding: does the signed commitment match this round and the revealed blob?
//!
//! Cheapest checks first; the first mismatch is the verdict, with the claimed and the actual value as evidence.

use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::commitment::SignedCommitment;
use crate::verdict::Reason;

/// What the verifier knows about the round, from the round protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundContext {
    pub run: RunId,
    pub round: RoundNumber,
    /// The round's public seed (drives data assignment, scoring samples and spot checks).
    pub round_seed: Hash32,
    /// `Hash32::of_f32s` of this round's base parameters.
    pub base_model_hash: Hash32,
    pub codec: u8,
    pub param_count: usize,
    pub inner_steps: u32,
    /// Largest blob this run's codec can produce for `param_count` values (at most `UPDATE_BYTES_MAX`).
    pub update_bytes_max: u64,
    /// Items in the run's dataset; data ids are `0..dataset_items`.
    pub dataset_items: u64,
}

/// The run's data assignment: a pure function of (round seed, round, peer), shared with the round protocol so
/// that anyone can recompute a peer's data ids.
pub trait DataAssignment {
    fn assigned_ids(&self, round_seed: &Hash32, round: RoundNumber, peer: &PeerId) -> Vec<u64>;
}

/// BLAKE3 over the little-endian bytes of a list of data ids (the evidence form of a list).
pub fn data_ids_digest(ids: &[u64]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    for id in ids {
        h.update(&id.to_le_bytes());
    }
    Hash32(*h.finalize().as_bytes())
}

/// Checks the commitment against the round and the blob. `known_bases` maps earlier rounds to their model hashes,
/// to name the round a stale base came from.
pub fn check_binding(
    ctx: &RoundContext,
    signed: &SignedCommitment,
    blob: &[u8],
    assignment: &dyn DataAssignment,
    known_bases: &[(RoundNumber, Hash32)],
) -> Result<(), Reason> {
    if signed.validate().is_err() || !signed.signature_valid() {
        return Err(Reason::BadSignature);
    }
    let c = &signed.commitment;
    if c.run != ctx.run {
        return Err(Reason::WrongRun {
            claimed: c.run,
            expected: ctx.run,
        });
    }
    if c.round != ctx.round {
        return Err(Reason::WrongRound {
            claimed: c.round,
            expected: ctx.round,
        });
    }
    if c.base_model_hash != ctx.base_model_hash {
        let from_round = known_bases
            .iter()
            .find(|(_, h)| *h == c.base_model_hash)
            .map(|(r, _)| *r);
        return Err(Reason::StaleBase {
            claimed: c.base_model_hash,
            expected: ctx.base_model_hash,
            from_round,
        });
    }
    if c.codec != ctx.codec {
        return Err(Reason::WrongCodec {
            claimed: c.codec,
            expected: ctx.codec,
        });
    }
    if c.inner_steps != ctx.inner_steps {
        return Err(Reason::WrongInnerSteps {
            claimed: c.inner_steps,
            expected: ctx.inner_steps,
        });
    }
    let expected_ids = assignment.assigned_ids(&ctx.round_seed, ctx.round, &c.peer);
    if c.data_ids != expected_ids {
        let first_difference = c
            .data_ids
            .iter()
            .zip(&expected_ids)
            .take_while(|(a, b)| a == b)
            .count() as u64;
        return Err(Reason::WrongData {
            claimed_digest: data_ids_digest(&c.data_ids),
            expected_digest: data_ids_digest(&expected_ids),
            first_difference,
        });
    }
    let actual_bytes = blob.len() as u64;
    let max = ctx.update_bytes_max.min(limits::UPDATE_BYTES_MAX);
    if actual_bytes > max {
        return Err(Reason::Oversized {
            bytes: actual_bytes,
            max,
        });
    }
    if actual_bytes != c.update_bytes {
        return Err(Reason::SizeMismatch {
            claimed: c.update_bytes,
            actual: actual_bytes,
        });
    }
    let actual_cid = Hash32::of(blob);
    if actual_cid != c.update_cid {
        return Err(Reason::CidMismatch {
            claimed: c.update_cid,
            actual: actual_cid,
        });
    }
    Ok(())
}
