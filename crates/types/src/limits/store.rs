//! Bounds for the `store` crate.

/// Largest single blob (a piece, a manifest, a raw file) the local store accepts: 64 GiB.
pub const BLOB_BYTES_MAX: u64 = 64 << 30;
/// Default size quota of a local store when the caller sets none: 1 TiB.
pub const QUOTA_BYTES_DEFAULT: u64 = 1 << 40;
/// Bao chunk-group size as log2 of 1 KiB BLAKE3 chunks: 4 means 16 KiB groups.
/// One outboard hash pair (64 bytes) per group, so outboards cost 0.4% of the data.
pub const BAO_CHUNK_LOG: u8 = 4;
/// Largest encoded manifest: 16 MiB (room for ~100k file entries).
pub const MANIFEST_BYTES_MAX: usize = 16 << 20;
/// Most files one collection manifest may name.
pub const MANIFEST_FILES_MAX: usize = 100_000;
/// Longest file name (a relative path, '/'-separated) in a manifest.
pub const MANIFEST_NAME_BYTES_MAX: usize = 1024;
/// Most (key, value) statistics entries in a dataset manifest.
pub const MANIFEST_STATS_MAX: usize = 1024;
/// Longest free-text field (collection name, tokenizer spec, config note) in a manifest.
pub const MANIFEST_TEXT_BYTES_MAX: usize = 4096;
/// Largest collection payload (sum of file sizes): 1 TiB.
pub const COLLECTION_BYTES_MAX: u64 = 1 << 40;
/// Erasure coding defaults: any 10 of 16 pieces rebuild the collection.
pub const ERASURE_DATA_PIECES_DEFAULT: u16 = 10;
pub const ERASURE_TOTAL_PIECES_DEFAULT: u16 = 16;
/// Most pieces (n) one collection may be coded into; reed-solomon-simd supports far more, placement does not need it.
pub const ERASURE_TOTAL_PIECES_MAX: u16 = 256;
/// Bytes of one Reed-Solomon shard per stripe (a stripe is k shards of payload). Must be a multiple of 64.
pub const ERASURE_SHARD_BYTES_DEFAULT: u32 = 256 << 10;
pub const ERASURE_SHARD_BYTES_MAX: u32 = 16 << 20;
/// Largest encoded provider record.
pub const PROVIDER_RECORD_BYTES_MAX: usize = 256;
/// How long a provider record is valid after it is announced: 24 hours.
pub const PROVIDER_RECORD_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Largest response to one range request (a bao proof plus data): 64 MiB.
pub const RANGE_RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Audit: how often each audited piece is challenged, on average.
pub const AUDIT_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// Audit: how long a provider has to answer a challenge.
pub const AUDIT_TIMEOUT_MS: u64 = 30 * 1000;
/// Audit: chunk groups asked for in one challenge.
pub const AUDIT_CHALLENGE_GROUPS: u64 = 1;
/// Audit: consecutive timeouts after which a provider stops being used (a bad proof bans at once).
pub const AUDIT_TIMEOUTS_MAX: u32 = 3;
/// Audit: most challenges outstanding at once.
pub const AUDIT_IN_FLIGHT_MAX: usize = 64;
/// Audit and repair: most pieces tracked by one machine.
pub const TRACKED_PIECES_MAX: usize = 1 << 20;
/// Audit and repair: most storage peers tracked.
pub const STORAGE_PEERS_MAX: usize = 10_000;
/// Repair: most reconstructions in flight at once.
pub const REPAIR_IN_FLIGHT_MAX: usize = 4;
/// Repair: how long one reconstruction may take before it is retried.
pub const REPAIR_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Repair: attempts per missing piece before it is reported unrepairable for now.
pub const REPAIR_ATTEMPTS_MAX: u32 = 5;
/// Fetch: providers tried per piece before giving up on that piece.
pub const FETCH_PROVIDERS_PER_PIECE_MAX: usize = 8;
/// Net: largest outboard a peer may send for one piece (16 MiB covers pieces up to 4 GiB at 16 KiB groups).
pub const NET_OUTBOARD_BYTES_MAX: u64 = 16 << 20;
/// Net: pieces fetched at once by `data get` and a joining node. Each piece fetch keeps
/// `net::BLOB_REQUESTS_PER_PROVIDER_MAX` (16) chunk streams open, and a connection carries at most
/// `net::BLOB_STREAMS_PER_CONNECTION_MAX` (64): 4 pieces stay within it even when one provider
/// holds them all (16 failed with refused streams), and 64 requests in flight fill loopback.
pub const NET_PIECES_IN_FLIGHT_MAX: usize = 4;
/// Net: a DHT provider lookup made by the store shell gives up after this long.
pub const NET_PROVIDER_LOOKUP_TIMEOUT_MS: u64 = 30_000;
/// Net: one whole-piece transfer gives up after this long.
pub const NET_PIECE_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Net: a storage node's maintenance pass (scrub, repair, audit) runs this often by default.
pub const STORE_MAINTENANCE_INTERVAL_MS: u64 = 60_000;
/// Net: bytes of held pieces one maintenance pass hashes again (scrubbing), so a pass stays short on a big store.
pub const SCRUB_BYTES_PER_PASS_MAX: u64 = 256 << 20;
/// Net: collections a storage node keeps (pins, repairs and audits).
pub const KEPT_COLLECTIONS_MAX: usize = 1024;
