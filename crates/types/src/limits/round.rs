//! Bounds for the `round` crate.
