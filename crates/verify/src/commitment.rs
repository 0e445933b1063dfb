//! The trainer's signed commitment, as verify sees it.
//!
//! This is verify's own input type: the round crate maps its commitment onto it field by field. It binds a peer to
//! one update for one round before the update is revealed: the base model it trained from, the data it was assigned,
//! the update's content address, size and codec, its claimed loss, its reproducibility class and the root of its
//! step-hash tree (see `merkle`).

use serde::{Deserialize, Serialize};
use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::keys::{signature_valid, NodeKey, DOMAIN_COMMITMENT};
use crate::wire::{self, check_len, Signature64, WireError};

/// What must match for two machines to produce bit-identical training steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReproClass {
    /// Backend and its version, e.g. "libtorch-2.11.0-cpu".
    pub backend: String,
    /// CPU instruction set the kernels dispatch to, e.g. "x86_64-avx2".
    pub isa: String,
    /// Intra-op threads (reductions split differently with a different count).
    pub threads: u16,
}

impl ReproClass {
    fn validate(&self) -> Result<(), WireError> {
        check_len(
            "repro.backend",
            self.backend.len(),
            limits::REPRO_FIELD_BYTES_MAX,
        )?;
        check_len("repro.isa", self.isa.len(), limits::REPRO_FIELD_BYTES_MAX)?;
        check_len(
            "repro.threads",
            self.threads as usize,
            limits::REPRO_THREADS_MAX as usize,
        )
    }
}

/// The fields a trainer commits to for one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commitment {
    pub run: RunId,
    pub round: RoundNumber,
    pub peer: PeerId,
    /// `Hash32::of_f32s` of the parameters the trainer started from.
    pub base_model_hash: Hash32,
    /// Data ids assigned to the peer, in assignment order.
    pub data_ids: Vec<u64>,
    /// BLAKE3 of the encoded update blob.
    pub update_cid: Hash32,
    pub update_bytes: u64,
    /// Codec id of the blob (the run fixes one).
    pub codec: u8,
    /// Mean training loss the trainer reports (informational; never trusted).
    pub claimed_loss: f32,
    pub repro: ReproClass,
    /// Inner steps trained (H); the step tree has `inner_steps + 1` leaves.
    pub inner_steps: u32,
    /// Root of the step-hash tree.
    pub step_root: Hash32,
}

impl Commitment {
    pub fn signing_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    pub fn sign(self, key: &NodeKey) -> SignedCommitment {
        assert_eq!(key.peer_id(), self.peer, "a peer signs its own commitment");
        let signature = key.sign(DOMAIN_COMMITMENT, &self.signing_bytes());
        SignedCommitment {
            commitment: self,
            signature,
        }
    }

    fn validate(&self) -> Result<(), WireError> {
        check_len(
            "data_ids",
            self.data_ids.len(),
            limits::ASSIGNED_DATA_IDS_MAX,
        )?;
        check_len(
            "inner_steps",
            self.inner_steps as usize,
            limits::INNER_STEPS_MAX as usize,
        )?;
        if self.update_bytes > limits::UPDATE_BYTES_MAX {
            return Err(WireError::OutOfBounds {
                field: "update_bytes",
                value: self.update_bytes,
                max: limits::UPDATE_BYTES_MAX,
            });
        }
        self.repro.validate()
    }
}

/// A commitment with its trainer's signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedCommitment {
    pub commitment: Commitment,
    pub signature: Signature64,
}

impl SignedCommitment {
    pub fn signature_valid(&self) -> bool {
        let c = &self.commitment;
        signature_valid(
            &c.peer,
            DOMAIN_COMMITMENT,
            &c.signing_bytes(),
            &self.signature,
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and bounds-checks; does not check the signature.
    pub fn decode(bytes: &[u8]) -> Result<SignedCommitment, WireError> {
        let signed: SignedCommitment = wire::decode(bytes, limits::COMMITMENT_BYTES_MAX)?;
        signed.validate()?;
        Ok(signed)
    }

    pub(crate) fn validate(&self) -> Result<(), WireError> {
        self.commitment.validate()
    }
}
