//! Fraud proofs: a verifier's signed claim that one committed inner step is wrong, self-contained so that any node
//! can check it by re-executing that single step.
//!
//! A proof carries the trainer's own signed commitment (which fixes the step-tree root and the reproducibility
//! class), the round seed, the disputed step k, the trainer's committed states k and k + 1 with their Merkle paths,
//! and the verifier's identity, class and replayed hash, all under the verifier's signature. Checking it:
//!
//! 1. the verifier's signature and the trainer's commitment signature verify;
//! 2. both states hash to leaves k and k + 1 of the committed step tree (so both are the trainer's own claims);
//! 3. the checker re-executes step k from state k; when its reproducibility class equals the trainer's, fraud means
//!    the result's hash differs from leaf k + 1 (bit-exact); otherwise it means the relative L2 distance between the
//!    result and state k + 1 exceeds `CROSS_CLASS_TOLERANCE_PPB`.
//!
//! A verifier that signs a proof against an honest step gains nothing: step 3 fails for every checker.

use serde::{Deserialize, Serialize};
use types::limits::verify as limits;
use types::{Hash32, PeerId};

use crate::commitment::{ReproClass, SignedCommitment};
use crate::keys::{signature_valid, NodeKey, DOMAIN_FRAUD_PROOF};
use crate::merkle::{path_valid, MerklePath};
use crate::replay::{StepContext, StepExecutor};
use crate::wire::{self, check_len, Signature64, WireError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudProofBody {
    pub commitment: SignedCommitment,
    pub round_seed: Hash32,
    /// The disputed step: state `step` → state `step + 1`.
    pub step: u32,
    pub state_before: Vec<u8>,
    pub path_before: MerklePath,
    pub state_after: Vec<u8>,
    pub path_after: MerklePath,
    pub verifier: PeerId,
    pub verifier_repro: ReproClass,
    /// `Hash32::of` of the verifier's replayed state `step + 1`.
    pub replayed_after_hash: Hash32,
}

impl FraudProofBody {
    pub fn sign(self, key: &NodeKey) -> FraudProof {
        assert_eq!(
            key.peer_id(),
            self.verifier,
            "a verifier signs its own proofs"
        );
        let signature = key.sign(DOMAIN_FRAUD_PROOF, &wire::encode(&self));
        FraudProof {
            body: self,
            signature,
        }
    }

    /// The context of the disputed step.
    pub fn step_context(&self) -> StepContext {
        StepContext::of_commitment(&self.commitment.commitment, self.round_seed, self.step)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudProof {
    pub body: FraudProofBody,
    pub signature: Signature64,
}

/// Why a fraud proof does not prove fraud.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FraudCheckError {
    #[error("the verifier's signature does not verify")]
    BadVerifierSignature,
    #[error("the trainer's commitment signature does not verify")]
    BadCommitmentSignature,
    #[error("step {step} is outside the committed {inner_steps} inner steps")]
    StepOutOfRange { step: u32, inner_steps: u32 },
    #[error("the state before the step is not leaf {0} of the committed step tree")]
    StateBeforeNotCommitted(u32),
    #[error("the state after the step is not leaf {0} of the committed step tree")]
    StateAfterNotCommitted(u32),
    #[error("the step executor failed: {0}")]
    Executor(String),
    #[error("re-execution matches the trainer's state (bit-exact)")]
    NotFraudExact,
    #[error(
        "re-execution is within tolerance of the trainer's state (relative distance {distance:e})"
    )]
    NotFraudWithinTolerance { distance: f64 },
}

/// What a valid proof established.
#[derive(Debug, Clone, PartialEq)]
pub struct FraudFinding {
    pub peer: PeerId,
    pub step: u32,
    /// True when checked bit-exactly (same reproducibility class), false when by tolerance.
    pub exact: bool,
    /// `Hash32::of` of the encoded proof, the id a `Reason::Fraud` verdict names.
    pub proof_hash: Hash32,
}

impl FraudProof {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and bounds-checks; `check` verifies the content.
    pub fn decode(bytes: &[u8]) -> Result<FraudProof, WireError> {
        let proof: FraudProof = wire::decode(bytes, limits::FRAUD_PROOF_BYTES_MAX)?;
        let b = &proof.body;
        b.commitment.validate()?;
        b.verifier_repro_validate()?;
        check_len(
            "state_before",
            b.state_before.len(),
            limits::FRAUD_PROOF_STATE_BYTES_MAX,
        )?;
        check_len(
            "state_after",
            b.state_after.len(),
            limits::FRAUD_PROOF_STATE_BYTES_MAX,
        )?;
        check_len(
            "path_before",
            b.path_before.siblings.len(),
            limits::MERKLE_PATH_LEN_MAX,
        )?;
        check_len(
            "path_after",
            b.path_after.siblings.len(),
            limits::MERKLE_PATH_LEN_MAX,
        )?;
        Ok(proof)
    }

    pub fn hash(&self) -> Hash32 {
        Hash32::of(&self.encode())
    }

    /// Checks the proof by re-executing the disputed step with `executor` (see the module docs).
    pub fn check(&self, executor: &mut dyn StepExecutor) -> Result<FraudFinding, FraudCheckError> {
        let b = &self.body;
        if !signature_valid(
            &b.verifier,
            DOMAIN_FRAUD_PROOF,
            &wire::encode(b),
            &self.signature,
        ) {
            return Err(FraudCheckError::BadVerifierSignature);
        }
        if !b.commitment.signature_valid() {
            return Err(FraudCheckError::BadCommitmentSignature);
        }
        let c = &b.commitment.commitment;
        if b.step >= c.inner_steps {
            return Err(FraudCheckError::StepOutOfRange {
                step: b.step,
                inner_steps: c.inner_steps,
            });
        }
        let leaves = c.inner_steps as u64 + 1;
        let before = Hash32::of(&b.state_before);
        if !path_valid(&c.step_root, leaves, b.step as u64, &before, &b.path_before) {
            return Err(FraudCheckError::StateBeforeNotCommitted(b.step));
        }
        let after = Hash32::of(&b.state_after);
        if !path_valid(
            &c.step_root,
            leaves,
            b.step as u64 + 1,
            &after,
            &b.path_after,
        ) {
            return Err(FraudCheckError::StateAfterNotCommitted(b.step + 1));
        }
        let replayed = executor
            .execute(&b.step_context(), &b.state_before)
            .map_err(|e| FraudCheckError::Executor(e.to_string()))?;
        let exact = executor.repro_class() == c.repro;
        if exact {
            if Hash32::of(&replayed) == after {
                return Err(FraudCheckError::NotFraudExact);
            }
        } else {
            let distance = executor
                .distance(&replayed, &b.state_after)
                .map_err(|e| FraudCheckError::Executor(e.to_string()))?;
            if distance <= cross_class_tolerance(1) {
                return Err(FraudCheckError::NotFraudWithinTolerance { distance });
            }
        }
        Ok(FraudFinding {
            peer: c.peer,
            step: b.step,
            exact,
            proof_hash: self.hash(),
        })
    }
}

impl FraudProofBody {
    fn verifier_repro_validate(&self) -> Result<(), WireError> {
        check_len(
            "verifier_repro.backend",
            self.verifier_repro.backend.len(),
            limits::REPRO_FIELD_BYTES_MAX,
        )?;
        check_len(
            "verifier_repro.isa",
            self.verifier_repro.isa.len(),
            limits::REPRO_FIELD_BYTES_MAX,
        )?;
        check_len(
            "verifier_repro.threads",
            self.verifier_repro.threads as usize,
            limits::REPRO_THREADS_MAX as usize,
        )
    }
}

/// Relative L2 distance allowed after `steps` steps replayed on another reproducibility class: the per-step
/// tolerance times the step count (rounding differences compound at most linearly over a few steps).
pub fn cross_class_tolerance(steps: u32) -> f64 {
    limits::CROSS_CLASS_TOLERANCE_PPB as f64 * 1e-9 * steps.max(1) as f64
}
