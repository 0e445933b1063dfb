//! Bounds for the `data` crate.
