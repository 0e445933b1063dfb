//! The peer-to-peer network: the only crate that names libp2p.
//!
//! Shape (as in rust-libp2p's file-sharing example): `new` builds an `EventLoop` that owns the
//! swarm, a cloneable `NetClient` that sends it `Command`s, and a bounded receiver of `NetEvent`s.
//! No libp2p type crosses this crate's API: peers are `types::PeerId` (Ed25519 public keys),
//! addresses are multiaddr strings, blobs are named by `types::Hash32`.
//!
//! Without the default `swarm` feature only `wire` is built (the fuzz targets use that).

pub mod wire;

#[cfg(feature = "swarm")]
mod behaviour;
#[cfg(feature = "swarm")]
pub mod blob;
#[cfg(feature = "swarm")]
mod client;
#[cfg(feature = "swarm")]
mod codec;
#[cfg(feature = "swarm")]
mod config;
#[cfg(feature = "swarm")]
mod event_loop;
#[cfg(feature = "swarm")]
pub mod identity;
#[cfg(feature = "swarm")]
pub mod rate;

#[cfg(feature = "swarm")]
pub use blob::{BlobChunk, BlobReceiver, BlobSource, FetchError, MemoryBlobs};
#[cfg(feature = "swarm")]
pub use client::{Command, GossipId, GossipMessage, NetClient, NetEvent, PeerInfo, Verdict};
#[cfg(feature = "swarm")]
pub use config::NetConfig;
#[cfg(feature = "swarm")]
pub use event_loop::{new, EventLoop};
#[cfg(feature = "swarm")]
pub use identity::{verify_signature, Identity, IdentityError};
pub use wire::WireError;

/// Errors from the network API. Peer misbehaviour never surfaces here; it is handled inside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("bad multiaddr {addr:?}: {reason}")]
    Addr { addr: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: String, reason: String },
    #[error("transport setup failed: {0}")]
    Transport(String),
    #[error("too many {what} (at most {max})")]
    TooMany { what: &'static str, max: usize },
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("no peers subscribed to the topic yet")]
    NoPeers,
    #[error("gossip: {0}")]
    Gossip(String),
    #[error("dht: {0}")]
    Dht(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("not an Ed25519 peer id")]
    BadPeer,
    #[error("the network event loop has stopped")]
    Stopped,
}
