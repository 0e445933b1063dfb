//! A validator for a real node: simplex on commonware's tokio runtime, talking over
//! commonware-p2p's authenticated `lookup` network (ed25519 handshake, encrypted streams) to the
//! other genesis validators at fixed `127.0.0.1`-style addresses.
//!
//! It runs on its own OS thread (commonware's tokio runner owns its runtime), so a node shell
//! that already runs tokio only shares the thread-safe [`Mempool`] and [`Observer`] with it.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::{ChaCha20Poly1305, Signer};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager};
use commonware_runtime::{Quota, Runner, Supervisor};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::channel::oneshot;
use commonware_utils::ordered::Map;
use types::limits::ledger as limits;
use types::PeerId;

use crate::consensus::{
    block_message_bytes_max, private_key, public_key, AppConfig, Behavior, Mempool, Observer,
    CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_RESOLVER, CHANNEL_VOTES,
};
use crate::state::{FraudProofChecker, Genesis};
use crate::validator::{self, Channels};

/// Everything an embedded validator needs.
pub struct EmbeddedConfig {
    pub genesis: Genesis,
    /// This validator's ed25519 secret (the node's identity key).
    pub secret: [u8; 32],
    /// The ledger directory (`DATA_DIR/ledger`): the redb chain store the CLI reads.
    pub ledger_dir: PathBuf,
    /// Where simplex keeps its journal (commonware runtime storage).
    pub consensus_dir: PathBuf,
    /// This validator's p2p listen address.
    pub listen: SocketAddr,
    /// Every genesis validator (this one included) and its p2p address.
    pub peers: Vec<(PeerId, SocketAddr)>,
    pub checker: Box<dyn FraudProofChecker + Send>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("validator key: {0}")]
    Key(String),
    #[error("validator addresses: {0}")]
    Peers(String),
    #[error("ledger validator thread: {0}")]
    Thread(String),
}

/// A running embedded validator. Dropping it stops the validator.
pub struct EmbeddedValidator {
    pub mempool: Mempool,
    pub observer: Observer,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl EmbeddedValidator {
    /// Stops the validator and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Whether the validator thread has ended (it should not, before `stop`).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for EmbeddedValidator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn peer_map(peers: &[(PeerId, SocketAddr)]) -> Result<Map<PublicKey, Address>, EmbeddedError> {
    let mut entries = Vec::with_capacity(peers.len());
    for (peer, addr) in peers {
        let key = public_key(peer).map_err(EmbeddedError::Peers)?;
        entries.push((key, Address::from(*addr)));
    }
    Map::try_from(entries).map_err(|e| EmbeddedError::Peers(format!("{e:?}")))
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(limits::P2P_MESSAGES_PER_SECOND_MAX).expect("nonzero"))
}

/// Starts the validator thread. Errors in the key or addresses are reported here; errors of
/// the running validator end its thread (see [`EmbeddedValidator::is_finished`]).
pub fn start(cfg: EmbeddedConfig) -> Result<EmbeddedValidator, EmbeddedError> {
    let signer = private_key(&cfg.secret).map_err(EmbeddedError::Key)?;
    let peers = peer_map(&cfg.peers)?;
    if peers.position(&signer.public_key()).is_none() {
        return Err(EmbeddedError::Key(
            "this key is not one of the ledger validators".into(),
        ));
    }
    std::fs::create_dir_all(&cfg.consensus_dir)
        .map_err(|e| EmbeddedError::Thread(e.to_string()))?;
    let mempool = Mempool::new();
    let observer = Observer::default();
    let (stop_tx, stop_rx) = oneshot::channel();
    let app = AppConfig {
        genesis: cfg.genesis.clone(),
        data_dir: cfg.ledger_dir.clone(),
        checker: cfg.checker,
        mempool: mempool.clone(),
        observer: observer.clone(),
        behavior: Behavior::Honest,
    };
    let namespace = format!("{}/p2p", cfg.genesis.namespace).into_bytes();
    let secret = cfg.secret;
    let listen = cfg.listen;
    let consensus_dir = cfg.consensus_dir.clone();
    let peer_count = NonZeroUsize::new(cfg.peers.len().max(1)).expect("nonzero");
    let thread = std::thread::Builder::new()
        .name("ledger-validator".into())
        .spawn(move || -> Result<(), String> {
            let runtime = commonware_runtime::tokio::Config::new()
                .with_worker_threads(limits::EMBEDDED_WORKER_THREADS)
                .with_storage_directory(consensus_dir);
            commonware_runtime::tokio::Runner::new(runtime).start(|context| async move {
                let handshake = Cups::<_, ChaCha20Poly1305>::new(
                    Sake {
                        signer,
                        synchrony_bound: Duration::from_secs(5),
                        max_handshake_age: Duration::from_secs(10),
                        version: sake::Version::V1,
                    },
                    cups::Version::V1,
                );
                let p2p = lookup::Config::local(
                    handshake,
                    &namespace,
                    listen,
                    peer_count,
                    block_message_bytes_max() as u32,
                    NonZeroUsize::new(limits::CONSENSUS_MAILBOX_MAX).expect("nonzero"),
                );
                let (mut network, mut oracle) = lookup::Network::new(context.child("p2p"), p2p);
                let _ = oracle.track(0, peers);
                let channels = Channels {
                    votes: network.register(CHANNEL_VOTES, quota()),
                    certificates: network.register(CHANNEL_CERTIFICATES, quota()),
                    resolver: network.register(CHANNEL_RESOLVER, quota()),
                    blocks: network.register(CHANNEL_BLOCKS, quota()),
                };
                let _network = network.start();
                let running =
                    validator::start(context.child("validator"), &secret, app, oracle, channels)
                        .map_err(|e| e.to_string())?;
                let _ = stop_rx.await;
                running.abort();
                Ok(())
            })
        })
        .map_err(|e| EmbeddedError::Thread(e.to_string()))?;
    Ok(EmbeddedValidator {
        mempool,
        observer,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
