//! Bounds for the `sim` crate.

/// Nodes a scenario may start with (joiners included in the total).
pub const NODES_MAX: usize = 50_000;
/// Rounds a scenario may ask for.
pub const ROUNDS_MAX: u64 = 100_000;
/// Parameters of the stand-in model.
pub const STANDIN_PARAMS_MAX: usize = 1 << 20;
/// Size of a scenario file.
pub const SCENARIO_FILE_BYTES_MAX: usize = 1024 * 1024;
/// Gossip out-degree each node picks (the overlay's degree is about twice this).
pub const GOSSIP_DEGREE_PEERS_MAX: usize = 32;
/// Message ids each node remembers to drop gossip duplicates.
pub const SEEN_IDS_PER_NODE_MAX: usize = 8192;
/// Pending events in the simulator's queue.
pub const EVENTS_QUEUE_MAX: usize = 200_000_000;
/// Settled states each node keeps to serve catching-up peers.
pub const SERVED_STATES_PER_NODE_MAX: usize = 2;
/// Update blobs each node keeps (this round and the next).
pub const BLOBS_PER_NODE_MAX: usize = 2 * super::round::COMMITTEE_PEERS_MAX;
/// Virtual time a scenario may run, in ms (a guard against a livelocked scenario).
pub const VIRTUAL_TIME_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;
