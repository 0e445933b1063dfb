//! Verification of updates: binding, sanity gates, scores, replay and fraud proofs. Sans-IO.
