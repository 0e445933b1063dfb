//! Outer optimizer, update codecs and aggregation, over flat f32 vectors. Sans-IO.
//!
//! A round of low-communication training, as seen by this crate:
//! 1. each worker forms its pseudo-gradient Δ = θ − θ_local after H inner steps;
//! 2. it compresses Δ with a [`codec::Codec`], keeping its own [`codec::ErrorFeedback`];
//! 3. every node decodes the agreed set of updates ([`codec::decode`]) and combines them with
//!    an [`aggregate::Aggregator`], ordered by peer id so arrival order never matters;
//! 4. an [`outer::OuterOptimizer`] applies the aggregate to θ.
//!
//! No I/O, no clock, no threads, no global RNG: the same inputs give bit-identical outputs.

pub mod aggregate;
pub mod codec;
pub mod outer;
mod wire;
