//! Bounds for the `sim` crate.
