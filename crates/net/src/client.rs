//! The app's side of the network: a cloneable `NetClient` that sends `Command`s to the event loop,
//! and the `NetEvent`s the event loop sends back. No libp2p type appears here.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use types::{Hash32, PeerId};

use crate::blob::{BlobReceiver, BlobSource};
use crate::wire::{BlobRequest, BlobResponse};
use crate::NetError;

/// A gossip message awaiting the app's verdict, named opaquely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GossipId {
    pub(crate) message_id: Vec<u8>,
    pub(crate) propagation_source: PeerId,
}

/// The app's verdict on a gossip message. Only accepted messages are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Invalid: drop it and penalise the peer that sent it.
    Reject,
    /// Not useful (stale, duplicate in app terms): drop it, no penalty.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMessage {
    pub id: GossipId,
    pub topic: String,
    /// The signed author (gossip runs in strict mode, so every message has one).
    pub source: PeerId,
    /// The peer that forwarded it to us.
    pub forwarded_by: PeerId,
    pub data: Vec<u8>,
}

/// One connected peer, as `commonweight peers` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub peer: PeerId,
    /// The remote address of one open connection (the first).
    pub addr: String,
    /// The connection goes through a relay (`/p2p-circuit`).
    pub relayed: bool,
    /// Round-trip time of the last ping.
    pub rtt_ms: Option<f64>,
}

/// What the network tells the app.
#[derive(Debug, Clone, PartialEq)]
pub enum NetEvent {
    Listening {
        addr: String,
    },
    PeerConnected {
        peer: PeerId,
        addr: String,
        relayed: bool,
    },
    PeerDisconnected {
        peer: PeerId,
    },
    /// A gossip message; the app must answer with `NetClient::report_validation`.
    Gossip(GossipMessage),
    /// AutoNAT's view of our reachability.
    Reachability {
        public: bool,
    },
    /// A relay accepted our reservation: peers can reach us through it.
    RelayReservation {
        relay: PeerId,
    },
    /// A direct connection replaced a relayed one (DCUtR hole punch).
    HolePunched {
        peer: PeerId,
    },
}

/// Everything the event loop can be asked to do. Each request carries its reply channel.
pub enum Command {
    Listen {
        addr: String,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Dial {
        addr: String,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<String>>,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    ReportValidation {
        id: GossipId,
        verdict: Verdict,
    },
    SetBlobSource {
        source: Arc<dyn BlobSource>,
    },
    StartProviding {
        hash: Hash32,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    GetProviders {
        hash: Hash32,
        reply: oneshot::Sender<Result<Vec<PeerId>, NetError>>,
    },
    RequestChunk {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, NetError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A handle on the network. Cheap to clone; every call is a bounded round trip to the event loop.
#[derive(Clone)]
pub struct NetClient {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local_peer: PeerId,
}

impl NetClient {
    pub fn local_peer(&self) -> PeerId {
        self.local_peer
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    pub async fn listen(&self, addr: &str) -> Result<(), NetError> {
        self.call(|reply| Command::Listen {
            addr: addr.to_owned(),
            reply,
        })
        .await?
    }

    pub async fn dial(&self, addr: &str) -> Result<(), NetError> {
        self.call(|reply| Command::Dial {
            addr: addr.to_owned(),
            reply,
        })
        .await?
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Our listen addresses, each ending in `/p2p/<our id>`, ready to hand to others as bootstrap.
    pub async fn listen_addrs(&self) -> Result<Vec<String>, NetError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    pub async fn subscribe(&self, topic: &str) -> Result<(), NetError> {
        self.call(|reply| Command::Subscribe {
            topic: topic.to_owned(),
            reply,
        })
        .await?
    }

    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        self.call(|reply| Command::Publish {
            topic: topic.to_owned(),
            data,
            reply,
        })
        .await?
    }

    pub async fn report_validation(&self, id: GossipId, verdict: Verdict) -> Result<(), NetError> {
        self.commands
            .send(Command::ReportValidation { id, verdict })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Serve blobs from `source` to peers that ask.
    pub async fn set_blob_source(&self, source: Arc<dyn BlobSource>) -> Result<(), NetError> {
        self.commands
            .send(Command::SetBlobSource { source })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Announce in the DHT that we hold the blob `hash`.
    pub async fn start_providing(&self, hash: Hash32) -> Result<(), NetError> {
        self.call(|reply| Command::StartProviding { hash, reply })
            .await?
    }

    /// Ask the DHT who holds the blob `hash`.
    pub async fn get_providers(&self, hash: Hash32) -> Result<Vec<PeerId>, NetError> {
        self.call(|reply| Command::GetProviders { hash, reply })
            .await?
    }

    /// One chunk from one peer. `fetch_blob` builds whole-blob transfers on this.
    pub async fn request_chunk(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, NetError> {
        self.call(|reply| Command::RequestChunk {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Fetch the blob `hash` from `providers` in parallel, in order, through a bounded receiver.
    /// Bytes are not verified here: the caller (store) checks them against `hash`.
    pub fn fetch_blob(&self, hash: Hash32, providers: Vec<PeerId>) -> BlobReceiver {
        crate::blob::spawn_fetch(self.clone(), hash, providers)
    }

    /// Stop the event loop: close all connections and return.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}
