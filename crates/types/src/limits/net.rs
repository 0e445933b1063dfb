//! Bounds for the `net` crate.
