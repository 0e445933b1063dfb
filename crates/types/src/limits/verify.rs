//! Bounds for the `verify` crate.
