//! Bounds for the `store` crate.
