//! Bounds for the `verify` crate.
//!
//! Thresholds of the gates are here too: they bound what a verifier accepts, and every node must use the same ones
//! for verdicts to agree.

/// Largest update blob (encoded pseudo-gradient) a verifier reads: 1 GiB. A dense fp32 update of a 1B model is 4 GiB,
/// so runs that large must use a compressing codec.
pub const UPDATE_BYTES_MAX: u64 = 1 << 30;
/// Largest flat parameter vector a verifier handles (1.5 B parameters).
pub const PARAMS_MAX: usize = 1_500_000_000;
/// Most data ids assigned to one peer in one round.
pub const ASSIGNED_DATA_IDS_MAX: usize = 4096;
/// Most inner steps per round a commitment may claim (bounds the step-hash tree).
pub const INNER_STEPS_MAX: u32 = 100_000;
/// Depth of a step-hash Merkle path: ceil(log2(INNER_STEPS_MAX + 1)) = 17, rounded up.
pub const MERKLE_PATH_LEN_MAX: usize = 20;
/// Longest text field in a reproducibility class (backend version, CPU instruction set).
pub const REPRO_FIELD_BYTES_MAX: usize = 64;
/// Most threads a reproducibility class may declare.
pub const REPRO_THREADS_MAX: u16 = 1024;

/// Largest encoded signed commitment.
pub const COMMITMENT_BYTES_MAX: usize = 64 * 1024;
/// Largest serialized trainer state (params + optimizer state + step) carried inline in a fraud proof.
/// Larger models need the state by content address; see ARCHITECTURE (verify) for what is not done.
pub const FRAUD_PROOF_STATE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest encoded fraud proof: two inline states plus the commitment and paths.
pub const FRAUD_PROOF_BYTES_MAX: usize = 2 * FRAUD_PROOF_STATE_BYTES_MAX + 128 * 1024;
/// Largest encoded signed verdict.
pub const VERDICT_BYTES_MAX: usize = 16 * 1024;
/// Longest error text carried as evidence of a malformed blob.
pub const EVIDENCE_TEXT_BYTES_MAX: usize = 256;

/// Most updates one verifier checks in one round.
pub const UPDATES_PER_ROUND_MAX: usize = 1024;
/// Updates needed in a round before the norm-outlier gate runs (a median of fewer is meaningless).
pub const NORM_GATE_UPDATES_MIN: usize = 3;
/// Robust z-score (|log norm - median| / (1.4826 MAD)) above which an update's norm is an outlier, in milli-units.
pub const NORM_ROBUST_Z_MAX_MILLI: u32 = 6_000;
/// Floor on the MAD of log norms, in milli-units of natural log (50 = 5% relative spread), so that identical honest
/// norms do not turn a 6% difference into an outlier.
pub const NORM_LOG_MAD_FLOOR_MILLI: u32 = 50;
/// An update whose L2 norm is at most this, in units of 1e-12 relative to the round median norm, is a zero update.
pub const ZERO_NORM_RELATIVE_MAX_PICO: u64 = 1_000;

/// Count-sketch width used for copy detection (buckets).
pub const SKETCH_BUCKETS: usize = 4096;
/// Indices kept per update for the top-k overlap test.
pub const SKETCH_TOPK: usize = 256;
/// Cosine similarity of sketches at or above which two updates are copies, in milli-units.
pub const COPY_COSINE_MIN_MILLI: u32 = 980;
/// Top-k index overlap (Jaccard) at or above which two updates are copies, in milli-units.
pub const COPY_TOPK_JACCARD_MIN_MILLI: u32 = 900;
/// Rounds of update sketches and CIDs kept for copy and replay detection.
pub const HISTORY_ROUNDS_MAX: usize = 16;
/// Model hashes of earlier rounds kept to name the round a stale base came from.
pub const KNOWN_BASES_MAX: usize = 64;

/// Data ids sampled from a peer's assignment (and as many at random) for the statistical score, by default.
pub const SCORE_SAMPLE_IDS: usize = 4;
/// Most data ids a verifier may be configured to sample per side for the statistical score.
pub const SCORE_SAMPLE_IDS_MAX: usize = 64;
/// Updates scored (loss evaluated) per round by one verifier; the rest are accepted on the cheap gates.
pub const SCORED_PER_ROUND_MAX: usize = 64;
/// Gain ratio (an update's loss gain over the round's mean update's, on the same items) below which a scored update
/// is excluded as harmful, in milli-units. Calibration in `verify::score`.
pub const SCORE_GAIN_RATIO_MIN_MILLI: u32 = 600;
/// Bound on one round's score observation fed to the rating (a t statistic; also the observation of harm).
pub const SCORE_OBSERVATION_ABS_MAX: f64 = 4.0;
/// Floor of the observation of an update that passed the harm test: an own-data t below it is read as no own-data
/// signal at its worst, not as evidence of malice (at 4 + 4 items t has 3 degrees of freedom, and an honest
/// trainer was measured at t = −3.2 in a running swarm; see `verify::rating`).
pub const SCORE_OBSERVATION_UNHARMFUL_MIN: f64 = -2.0;
/// Peers tracked by the rating table.
pub const RATED_PEERS_MAX: usize = 100_000;

/// Chance, in parts per million, that a given (peer, round) is drawn for a replay spot check.
pub const SPOT_CHECK_PROBABILITY_PPM: u32 = 100_000;
/// Inner steps replayed in one spot check.
pub const SPOT_CHECK_STEPS: u32 = 4;
/// Relative L2 distance between replayed and claimed states allowed per step when reproducibility classes differ,
/// in parts per billion (1e-4 relative per step).
pub const CROSS_CLASS_TOLERANCE_PPB: u64 = 100_000;
/// Most state fetches one replay session issues (range + bisection).
pub const REPLAY_FETCHES_MAX: usize = 64;
