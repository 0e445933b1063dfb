//! The deterministic whole-network simulator.
//!
//! Runs the production `round::RoundMachine` for many nodes in one process over a virtual clock and network,
//! with faults and Byzantine peers, and checks invariants after every step. Same scenario and seed: the same run,
//! bit for bit. See ARCHITECTURE.md, `crates/sim`.

pub mod report;
pub mod scenario;
pub mod standin;
pub mod world;

pub use report::{CheckerResult, SimFailure, Summary};
pub use scenario::{Aggregation, Link, Scenario, ScenarioError};

/// Runs `scenario` with `seed`. `Err` names the checker that failed and the seed that replays it.
pub fn run(scenario: &Scenario, seed: u64) -> Result<Summary, SimFailure> {
    world::World::new(scenario, seed).run()
}
