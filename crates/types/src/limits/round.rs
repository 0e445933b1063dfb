//! Bounds for the `round` crate.

/// Largest encoded round message (commitment, commit set, proposal, vote, join, leave).
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// Largest encoded genesis config (it lists the founding members).
pub const GENESIS_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Run name and model preset name lengths.
pub const NAME_BYTES_MAX: usize = 64;
/// Members of a run at any time (genesis founders included).
pub const MEMBERS_MAX: usize = 100_000;
/// Trainers drawn per round (the committee); also the voters of that round.
pub const COMMITTEE_PEERS_MAX: usize = 256;
/// Shard ids one trainer is assigned per round.
pub const DATA_IDS_PER_TRAINER_MAX: usize = 64;
/// Shards in a dataset manifest.
pub const DATASET_SHARDS_MAX: u32 = 1 << 24;
/// New members admitted by one proposal; the rest wait for the next round.
pub const JOINS_PER_ROUND_MAX: usize = 256;
/// Members removed by one proposal.
pub const LEAVES_PER_ROUND_MAX: usize = 256;
/// Joins a node keeps pending (announced, not yet admitted).
pub const PENDING_JOINS_MAX: usize = 4 * JOINS_PER_ROUND_MAX;
/// Proposer ranks tried in one round before the round is declared stalled and ranks wrap.
pub const PROPOSER_RANKS_MAX: u32 = 16;
/// Messages for the next round buffered while this round is still open.
pub const FUTURE_MESSAGES_MAX: usize = 4096;
/// Rounds ahead of ours whose votes are tallied, to detect that we fell behind.
pub const AHEAD_ROUNDS_TRACKED_MAX: usize = 8;
/// Distinct voters tallied per tracked round ahead of ours.
pub const AHEAD_VOTERS_PER_ROUND_MAX: usize = 1024;
/// Matching votes of known members for a later round needed before a node catches up to it (a synced node that
/// knows fewer other members needs all of them).
pub const CATCH_UP_VOTES_MIN: usize = 3;
/// Arrival times kept per phase for the adaptive deadline.
pub const ARRIVALS_PER_PHASE_MAX: usize = COMMITTEE_PEERS_MAX;
/// Smallest and largest phase limits a genesis config may set.
pub const PHASE_MS_MIN: u64 = 10;
pub const PHASE_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Largest MAD multiplier k (in thousandths) of the adaptive deadline `median + k * MAD`.
pub const DEADLINE_MAD_K_MILLIS_MAX: u32 = 100_000;
/// Peers named in one resync or catch-up action.
pub const RESYNC_PEERS_MAX: usize = 16;
/// Proposer ranks after which a voter whose round did not settle may vote again, for a later rank's proposal.
pub const REVOTE_AFTER_RANKS: u32 = 1;
/// Top proposer ranks of the current round that a join or leave announcement is sent to directly.
pub const ANNOUNCE_TARGET_PEERS: usize = 3;
/// Proposer ranks tried with one committee before a stalled round re-draws its committee (an *attempt*).
pub const RANKS_PER_ATTEMPT: u32 = 2;
/// Committees one round may draw; the union of their members also stays within `COMMITTEE_PEERS_MAX`.
pub const ATTEMPTS_PER_ROUND_MAX: usize = 8;
/// Pending join and leave announcements one node forwards to a new round's first proposers.
pub const ANNOUNCES_FORWARDED_PER_ROUND_MAX: usize = 64;
/// Resync requests for one vouched-for state before a synced node gives up on it and goes on in its own round.
pub const RESYNC_RETRIES_MAX: u32 = 8;
