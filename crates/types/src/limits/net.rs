//! Bounds for the `net` crate.

// Channels between the app and the network event loop.
/// Commands queued from `NetClient`s to the event loop before senders wait.
pub const COMMAND_QUEUE_LEN_MAX: usize = 256;
/// Events queued from the event loop to the app; beyond this, events are dropped and counted.
pub const EVENT_QUEUE_LEN_MAX: usize = 1024;

// Connections.
/// Established connections in total.
pub const CONNECTIONS_ESTABLISHED_MAX: u32 = 256;
/// Established connections to one peer.
pub const CONNECTIONS_PER_PEER_MAX: u32 = 4;
/// Incoming connections still in their handshake.
pub const CONNECTIONS_PENDING_INCOMING_MAX: u32 = 64;
/// Outgoing connections still in their handshake.
pub const CONNECTIONS_PENDING_OUTGOING_MAX: u32 = 64;
/// Peers found in the DHT that a node dials by itself, beyond which it waits to be dialed.
pub const PEERS_DIAL_TARGET: usize = 32;
/// Idle connections stay open this long (gossip and the DHT keep useful ones busy).
pub const CONNECTION_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Bootstrap addresses accepted from config and flags.
pub const BOOTSTRAP_ADDRS_MAX: usize = 64;
/// Listen addresses accepted from config and flags.
pub const LISTEN_ADDRS_MAX: usize = 16;

// Kademlia.
/// Re-run the DHT bootstrap this often.
pub const KAD_BOOTSTRAP_INTERVAL_MS: u64 = 60_000;
/// A DHT query gives up after this long.
pub const KAD_QUERY_TIMEOUT_MS: u64 = 30_000;
/// Largest DHT packet.
pub const KAD_PACKET_BYTES_MAX: usize = 64 * 1024;
/// Providers returned to the app per `get_providers` call.
pub const KAD_PROVIDERS_MAX: usize = 64;
/// Once a provider query has found some providers, it answers after at most this much longer,
/// even if the query is still running (it may be waiting on dials to departed peers).
pub const KAD_PROVIDERS_GRACE_MS: u64 = 500;

// Gossip.
/// Largest gossip message on the wire (envelope included).
pub const GOSSIP_MESSAGE_BYTES_MAX: usize = 1024 * 1024;
/// Gossip heartbeat (mesh maintenance) period.
pub const GOSSIP_HEARTBEAT_MS: u64 = 500;
/// Gossip messages a node validates per peer per second before it ignores the rest.
pub const GOSSIP_MESSAGES_PER_PEER_PER_S_MAX: u32 = 200;
/// Topics a node subscribes to.
pub const GOSSIP_TOPICS_MAX: usize = 64;
/// Bytes in a topic name.
pub const GOSSIP_TOPIC_BYTES_MAX: usize = 256;
/// Gossip messages awaiting the app's validation verdict; beyond this, new ones are ignored.
pub const GOSSIP_PENDING_VALIDATIONS_MAX: usize = 4096;

// Blob transfer.
/// Bytes per blob chunk (the unit of request and of retry).
pub const BLOB_CHUNK_BYTES: u32 = 1024 * 1024;
/// Largest blob that can be fetched.
pub const BLOB_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Largest blob request frame (a request is a version, a tag, a hash and an index).
pub const BLOB_REQUEST_BYTES_MAX: usize = 64;
/// Largest blob response frame: a chunk plus its header.
pub const BLOB_RESPONSE_BYTES_MAX: usize = BLOB_CHUNK_BYTES as usize + 64;
/// Chunk requests in flight to one provider for one fetch. Each request is a fresh stream whose
/// flow-control window starts at 256 KiB (yamux), so filling a 100 Mbit/s x 100 ms link (1.25 MB
/// in flight) takes several at once; 16 keep the sender's TCP socket backlogged on that link
/// (netns test: the libp2p TCP connection moved bytes as fast as a plain TCP flow).
pub const BLOB_REQUESTS_PER_PROVIDER_MAX: usize = 16;
/// Chunks fetched but not yet taken by the caller, plus those in flight (memory bound per fetch).
pub const BLOB_WINDOW_CHUNKS_MAX: usize = 32;
/// Providers used by one fetch.
pub const BLOB_PROVIDERS_MAX: usize = 16;
/// Times one chunk is re-requested (from any provider) before the fetch fails.
pub const BLOB_CHUNK_ATTEMPTS_MAX: u32 = 8;
/// `Busy` answers one chunk may get before the fetch fails. `Busy` is back-pressure, not failure
/// (many fetches share one provider's BLOB_SERVING_MAX slots), so it has its own, larger budget:
/// with the 50 ms back-off, about a minute of waiting per chunk.
pub const BLOB_CHUNK_BUSY_RETRIES_MAX: u32 = 1200;
/// Failures after which a provider is dropped from a fetch.
pub const BLOB_PROVIDER_FAILURES_MAX: u32 = 3;
/// A chunk request gives up after this long.
pub const BLOB_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Chunks delivered to the caller and not yet taken (the receiver's channel length).
pub const BLOB_RECEIVER_CHUNKS_MAX: usize = 8;
/// Chunk requests a node serves at once; beyond this, it answers `Busy`.
pub const BLOB_SERVING_MAX: usize = 64;
/// Chunk requests served per peer per second before `Busy`.
pub const BLOB_REQUESTS_PER_PEER_PER_S_MAX: u32 = 1024;
/// Concurrent request-response streams per connection.
pub const BLOB_STREAMS_PER_CONNECTION_MAX: usize = 64;

// Rate limiting.
/// Peers tracked by a rate limiter; the oldest entries are evicted beyond this.
pub const RATE_LIMIT_PEERS_MAX: usize = 4096;

// Relay.
/// Relay reservations a relay server holds.
pub const RELAY_RESERVATIONS_MAX: usize = 128;
/// Relayed circuits a relay server carries at once.
pub const RELAY_CIRCUITS_MAX: usize = 64;
/// Bytes one relayed circuit may carry before the relay closes it.
pub const RELAY_CIRCUIT_BYTES_MAX: u64 = 1 << 30;
/// A relayed circuit lasts at most this long.
pub const RELAY_CIRCUIT_DURATION_MS: u64 = 10 * 60_000;

// Identity.
/// Bytes in a stored identity file (a version byte plus a 32-byte Ed25519 secret).
pub const IDENTITY_FILE_BYTES: usize = 33;

// Control API (node shell).
/// Body of a control API request.
pub const CONTROL_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Gossip messages a node shell keeps per topic for the control API.
pub const CONTROL_GOSSIP_KEPT_MAX: usize = 256;
