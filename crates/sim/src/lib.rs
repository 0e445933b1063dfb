//! The deterministic whole-network simulator.
