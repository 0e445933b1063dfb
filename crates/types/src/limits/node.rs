//! Bounds for the `node` crate: the run shell, its roles and its control API.

/// Update blobs a node holds or fetches at once (current and next round, every trainer).
pub const UPDATE_BLOBS_MAX: usize = 2 * super::round::COMMITTEE_PEERS_MAX;
/// Largest update blob a node fetches or accepts (an fp32 update of a 1B model is 4.4 GB; runs this size use
/// a sparse codec).
pub const UPDATE_BLOB_BYTES_MAX: u64 = 8 * 1024 * 1024 * 1024;
/// Largest snapshot record (round, model hash, members, outer optimizer state header).
pub const SNAPSHOT_RECORD_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Largest outer-optimizer state carried in a snapshot record besides the momentum (bytes).
pub const OUTER_STATE_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;
/// Largest run file (`run.json`: genesis plus the training spec).
pub const RUN_FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// How long a joiner without the run file looks for a peer that serves it (`node --run RUN_ID`).
pub const RUN_FILE_FETCH_TIMEOUT_MS: u64 = 120_000;
/// Pause between a joiner's rounds of asking providers and peers for the run file.
pub const RUN_FILE_FETCH_RETRY_MS: u64 = 500;
/// Bound on one DHT lookup of the run file's providers, and on one peer's transfer of it.
pub const RUN_FILE_PEER_TIMEOUT_MS: u64 = 5_000;
/// Inputs from background work (training, fetches, verification, aggregation) queued for the event loop.
pub const WORK_QUEUE_LEN_MAX: usize = 256;
/// Gossip publications kept for a retry while the mesh has no peers yet.
pub const PUBLISH_RETRY_QUEUE_LEN_MAX: usize = 256;
/// How long a failed publication is retried before it is dropped.
pub const PUBLISH_RETRY_FOR_MS: u64 = 30_000;
/// Interval of the event loop's retry and housekeeping tick.
pub const HOUSEKEEPING_INTERVAL_MS: u64 = 200;
/// Snapshot fetch attempts per resync before waiting for the machine's next request.
pub const SNAPSHOT_FETCH_ATTEMPTS_MAX: u32 = 3;
/// Rounds of model and update blobs kept on disk for serving peers that catch up.
pub const ROUNDS_KEPT: u64 = 4;
/// Rounds of history kept in memory for the status API (the file keeps all).
pub const HISTORY_ROUNDS_KEPT_MAX: usize = 10_000;
/// Validation windows a node evaluates after each settled round.
pub const EVAL_WINDOWS_MAX: usize = 4096;
/// Nodes one `commonweight swarm` starts.
pub const SWARM_NODES_MAX: usize = 64;
/// How long `swarm` waits for a node's control API to appear.
pub const NODE_START_TIMEOUT_MS: u64 = 60_000;
/// Largest update norm accepted, as a multiple of the median norm of the previous round's accepted updates.
pub const UPDATE_NORM_RATIO_MAX: f64 = 20.0;
/// Windows per side a verifier node evaluates to score one update: this many of the windows the trainer had to
/// train on and as many random windows outside its shards, under three models (θ, θ − Δ, the reference). At batch
/// 4 that is about two training steps of compute per scored update.
pub const SCORE_WINDOWS_PER_SIDE: usize = 4;
/// Draws a verifier node makes looking for random windows outside a trainer's shards before it gives up.
pub const SCORE_RANDOM_DRAWS_MAX: usize = 256;
/// Validation windows the verifier's loss evaluator reads from one data item (bounds one score's forward pass).
pub const SCORE_WINDOWS_PER_ITEM_MAX: usize = 64;
/// Signed verdicts a node holds before the ledger records them.
pub const LEDGER_PENDING_VERDICTS_MAX: usize = 65_536;
/// How long a node's verdict transaction may stay unapplied before it is signed and sent again.
pub const LEDGER_TX_RESUBMIT_MS: u64 = 20_000;
/// How long `swarm` waits, after the last round, for every node's ledger to mint it.
pub const SWARM_LEDGER_WAIT_MS: u64 = 120_000;
/// Tries a spot-checking verifier makes for each blob it needs from the trainer. The trainer re-creates its drawn
/// states when it settles the round, or when it adopts the next round's snapshot if it fell behind, which on a
/// loaded machine was measured up to 25 s after the verifier settled; the tries span a minute.
pub const SPOT_CHECK_FETCH_ATTEMPTS_MAX: u32 = 60;
/// Pause between those tries.
pub const SPOT_CHECK_FETCH_RETRY_MS: u64 = 1_000;
/// Rounds whose start state a trainer keeps for spot checks (the round in flight and the one settling).
pub const SPOT_CHECK_ROUNDS_KEPT: usize = 2;
/// Spot checks one verifier runs at a time (more drawn at once are skipped, and counted as failed here).
pub const SPOT_CHECKS_IN_FLIGHT_MAX: usize = 4;
/// Fraud proofs a node remembers having made or checked (a notice for one of them is ignored).
pub const FRAUD_NOTICES_SEEN_MAX: usize = 4_096;
