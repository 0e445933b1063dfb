//! Bounds for the `ledger` crate.

/// Largest encoded transaction accepted from a peer.
pub const TX_BYTES_MAX: usize = 64 * 1024;
/// Verdicts carried by one `RecordVerdicts` transaction.
pub const VERDICTS_PER_TX_MAX: usize = 256;
/// Bytes of an opaque fraud proof inside a `Slash` transaction.
pub const FRAUD_PROOF_BYTES_MAX: usize = 48 * 1024;
/// Bytes of a verdict's free-text rejection reason.
pub const VERDICT_REASON_BYTES_MAX: usize = 256;
/// Transactions in one block.
pub const TXS_PER_BLOCK_MAX: usize = 512;
/// Largest encoded consensus block (the payload ordered by simplex).
pub const BLOCK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest stored block record (block + outcomes + certificate).
pub const RECORD_BYTES_MAX: usize = 5 * 1024 * 1024;
/// Accounts the state may hold; a mint or transfer that would exceed it is rejected.
pub const ACCOUNTS_MAX: usize = 1_000_000;
/// Verifiers named in a genesis config.
pub const VERIFIERS_MAX: usize = 1024;
/// Consensus validators named in a genesis config.
pub const VALIDATORS_MAX: usize = 128;
/// Registered checkpoints the state may hold.
pub const CHECKPOINTS_MAX: usize = 100_000;
/// Largest genesis config file.
pub const GENESIS_BYTES_MAX: usize = 1024 * 1024;
/// Score weight denominator: a verdict's `score_ppm` is in `0..=SCORE_PPM_MAX`.
pub const SCORE_PPM_MAX: u32 = 1_000_000;
/// Tokens one verdict may credit (a bound on hostile inputs, far above any real round).
pub const TOKENS_PER_VERDICT_MAX: u64 = 1 << 40;
/// Pending transactions a validator's mempool holds before refusing new ones.
pub const MEMPOOL_TXS_MAX: usize = 100_000;
/// Unfinalized consensus blocks a validator keeps in memory.
pub const PENDING_BLOCKS_MAX: usize = 4096;
/// Consensus engine mailbox depth.
pub const CONSENSUS_MAILBOX_MAX: usize = 1024;
/// How long an honest leader with an empty mempool waits before proposing an empty block
/// (below `LEADER_TIMEOUT_MS`, so the view is not nullified).
pub const EMPTY_BLOCK_DELAY_MS: u64 = 250;
/// Simplex leader timeout.
pub const LEADER_TIMEOUT_MS: u64 = 1_000;
/// Simplex certification (notarization) timeout.
pub const CERTIFICATION_TIMEOUT_MS: u64 = 2_000;
/// Simplex nullify rebroadcast interval.
pub const TIMEOUT_RETRY_MS: u64 = 5_000;
/// Simplex skip timeout for an inactive leader.
pub const SKIP_TIMEOUT_MS: u64 = 10_000;
/// Simplex certificate fetch timeout.
pub const FETCH_TIMEOUT_MS: u64 = 1_000;
/// Views of votes simplex keeps below the finalized tip.
pub const VIEW_RETENTION_VIEWS: u64 = 10;
/// Block-sync requests one validator answers per second per peer.
pub const BLOCK_SYNC_REQUESTS_PER_SECOND_MAX: u32 = 1024;
/// Ledger export: rows in one ownership statement.
pub const EXPORT_ROWS_MAX: usize = ACCOUNTS_MAX;
/// Messages per second per p2p channel and peer an embedded validator accepts (and sends).
pub const P2P_MESSAGES_PER_SECOND_MAX: u32 = 10_000;
/// Worker threads of an embedded validator's commonware tokio runtime.
pub const EMBEDDED_WORKER_THREADS: usize = 1;
