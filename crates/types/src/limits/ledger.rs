//! Bounds for the `ledger` crate.
