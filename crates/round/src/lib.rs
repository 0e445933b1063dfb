//! The round protocol as a sans-IO state machine.
//!
//! A run is fixed by its [`GenesisConfig`]; each round runs train → commit → reveal → aggregate → finalize.
//! [`RoundMachine::handle`] takes the time and one [`Input`], and returns [`Action`]s. Training and aggregation
//! are done by the caller (node or simulator) and reported back. See ARCHITECTURE.md, `crates/round`.

pub mod assign;
pub mod config;
pub mod deadline;
pub mod machine;
pub mod wire;

pub use assign::{
    assign_data, committee, members_digest, proposer_ranks, round_seed, state_digest,
};
pub use config::{ConfigError, GenesisConfig};
pub use machine::{
    Action, Boot, BoundViolation, Input, MessageKind, RoundMachine, Settled, Snapshot, Stats,
    Status, Verdict,
};
pub use wire::{DecodeError, Exclusion, Message};
