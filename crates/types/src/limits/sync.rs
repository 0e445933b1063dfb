//! Bounds for the `sync` crate.
