//! Bounds for the `model` crate.
