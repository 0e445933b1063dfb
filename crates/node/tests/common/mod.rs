//! Helpers shared by the node crate's integration tests and examples.

pub mod store_peer;
