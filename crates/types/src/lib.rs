//! Shared vocabulary of commonweight: ids, content hashes, and every bound in `limits`.
//!
//! This crate has no I/O and no heavy dependencies, so every other crate can name it.

pub mod ids;
pub mod limits;

pub use ids::{Hash32, HashParseError, PeerId, RoundNumber, RunId};
