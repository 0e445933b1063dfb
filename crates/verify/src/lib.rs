//! Verification of updates: binding, sanity gates, scores, replay and fraud proofs. Sans-IO.
//!
//! Entry points: `pipeline::Verifier::verify_round` (all per-round gates, signed verdicts), `replay::ReplaySession`
//! and `replay::draw_spot_check` (spot checks, bisection, fraud proofs), `fraud::FraudProof::check` (anyone checks a
//! proof). Loss evaluation, update decoding, data assignment and step execution are traits the caller implements.

pub mod binding;
pub mod commitment;
pub mod committee;
pub mod fraud;
pub mod keys;
pub mod merkle;
pub mod pipeline;
pub mod rating;
pub mod replay;
pub mod sanity;
pub mod score;
pub mod similarity;
pub mod standin;
pub mod verdict;
pub mod wire;

pub use binding::{check_binding, DataAssignment, RoundContext};
pub use commitment::{Commitment, ReproClass, SignedCommitment};
pub use fraud::{FraudCheckError, FraudFinding, FraudProof, FraudProofBody};
pub use keys::NodeKey;
pub use merkle::{MerklePath, StepLog};
pub use pipeline::{RoundInputs, RoundReport, Submission, UpdateDecoder, Verifier, VerifyError};
pub use replay::{
    draw_spot_check, ExecError, ReplayAction, ReplayError, ReplayInput, ReplayOutcome,
    ReplaySession, SpotCheck, StepContext, StepExecutor,
};
pub use score::{EvalError, LossEvaluator};
pub use verdict::{Outcome, Reason, SignedVerdict, Verdict};
pub use wire::WireError;
