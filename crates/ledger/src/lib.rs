//! The ownership ledger: a sans-IO state machine ([`state`]), its hash-chained redb store
//! ([`store`], [`replay`]), replication by commonware simplex ([`consensus`], [`validator`]),
//! a single-validator local sequencer ([`sequencer`]) and signed ownership exports ([`export`]).
//!
//! Verified work becomes shares: verifiers sign [`Verdict`]s, a `RecordVerdicts` transaction
//! records them, and accepted scored work is minted by the formula in [`state`]. Fraud proofs
//! slash; owners transfer; checkpoints freeze the ownership table that produced them.

pub mod chain;
#[cfg(feature = "simplex")]
pub mod consensus;
#[cfg(feature = "simplex")]
pub mod embedded;
pub mod export;
pub mod replay;
pub mod sequencer;
pub mod state;
pub mod store;
#[cfg(feature = "simplex")]
pub mod validator;
pub mod wire;

pub use chain::{Block, Finality, Record};
pub use replay::{verify_chain, Replica, ReplicaError, VerifyError, VerifyReport};
pub use sequencer::Sequencer;
pub use state::{
    shares_for, Account, Checkpoint, Effect, FraudProofChecker, Genesis, GenesisError, LedgerState,
    NoFraudProofs, Outcome, Rejection,
};
pub use store::{Store, StoreError};
pub use wire::{peer_of, FraudProof, SignedTx, TxBody, Verdict, WireError, WIRE_VERSION};
