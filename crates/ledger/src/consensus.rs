//! Replication: the ledger as a commonware simplex application.
//!
//! Simplex orders 32-byte digests; this module supplies the blocks behind them. A leader's
//! [`App`] builds a [`Block`] from its mempool and broadcasts the bytes on the `blocks` p2p
//! channel; other validators verify it statelessly (chain id, parent digest, view, every
//! transaction and verdict signature, verdicts only from genesis verifiers) and vote. When the
//! [`LedgerReporter`] sees a finalization certificate, the app executes the finalized block and
//! any ancestors not yet executed (execute-after-order: invalid transactions are ordered but
//! come out as typed rejections) and stores them durably with the certificate. A validator
//! that missed blocks asks peers for stored records from its height (`SyncRequest`) and checks
//! the certificate that ends the batch before applying it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use commonware_codec::{Copying, Decode, DecodeExt, Encode};
use commonware_consensus::simplex::scheme::ed25519::Scheme as Ed25519Scheme;
use commonware_consensus::simplex::types::{Activity, Context, Finalization};
use commonware_consensus::simplex::Plan;
use commonware_consensus::{Automaton, CertifiableAutomaton, Relay, Reporter};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Digest as Sha256Digest;
use commonware_p2p::{Receiver, Recipients, Sender};
use commonware_runtime::{spawn_cell, Clock, ContextCell, Handle, Spawner};
use commonware_utils::channel::{mpsc, oneshot};
use commonware_utils::ordered::Set;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use types::limits::ledger as limits;
use types::{Hash32, PeerId};

use crate::chain::{genesis_digest, Block, Finality, Record};
use crate::replay::Replica;
use crate::state::{FraudProofChecker, Genesis, LedgerState};
use crate::wire::{decode_exact, encode, SignedTx, TxBody, WireError, WIRE_VERSION};

/// The signature scheme of this ledger's consensus certificates.
pub type Scheme = Ed25519Scheme;
pub type Digest = Sha256Digest;
pub type LedgerFinalization = Finalization<Scheme, Digest>;
type Ctx = Context<Digest, PublicKey>;

/// p2p channel numbers a validator registers.
pub const CHANNEL_VOTES: u64 = 0;
pub const CHANNEL_CERTIFICATES: u64 = 1;
pub const CHANNEL_RESOLVER: u64 = 2;
pub const CHANNEL_BLOCKS: u64 = 3;

/// Turns genesis validator ids into the ordered participant set simplex uses.
pub fn participants(genesis: &Genesis) -> Result<Set<PublicKey>, String> {
    let mut keys = Vec::with_capacity(genesis.validators.len());
    for peer in &genesis.validators {
        keys.push(public_key(peer)?);
    }
    Set::try_from(keys).map_err(|e| format!("validator set: {e:?}"))
}

pub fn public_key(peer: &PeerId) -> Result<PublicKey, String> {
    PublicKey::decode(Copying(&peer.0[..])).map_err(|e| format!("validator key {peer}: {e}"))
}

pub fn private_key(secret: &[u8; 32]) -> Result<PrivateKey, String> {
    PrivateKey::decode(Copying(&secret[..])).map_err(|e| format!("validator secret: {e}"))
}

pub fn peer_id(key: &PublicKey) -> PeerId {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.as_ref());
    PeerId(out)
}

pub fn to_digest_pub(bytes: &[u8; 32]) -> Digest {
    to_digest(bytes)
}

fn to_digest(bytes: &[u8; 32]) -> Digest {
    Digest::decode(Copying(&bytes[..])).expect("32 bytes always decode as a SHA-256 digest")
}

fn from_digest(digest: &Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Checks a stored simplex finalization certificate for `digest` against the genesis
/// validator set. Used by `ledger verify` and by block sync.
pub fn check_finalization(
    genesis: &Genesis,
    digest: &[u8; 32],
    bytes: &[u8],
) -> Result<(), String> {
    let n = genesis.validators.len();
    let max = LedgerFinalization::max_encode_size(n as u32);
    if bytes.len() > max {
        return Err(format!(
            "certificate is {} bytes, the limit is {max}",
            bytes.len()
        ));
    }
    let finalization = LedgerFinalization::decode_cfg(Copying(bytes), &n)
        .map_err(|e| format!("certificate does not decode: {e}"))?;
    if from_digest(&finalization.proposal.payload) != *digest {
        return Err("certificate is for another block".into());
    }
    let verifier = Scheme::verifier(genesis.namespace.as_bytes(), participants(genesis)?);
    // Batch verification randomness only affects speed, never the answer; seed it from the digest.
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*digest);
    if !finalization.verify(&mut rng, &verifier, &commonware_parallel::Sequential) {
        return Err("certificate signatures do not verify against the genesis validators".into());
    }
    Ok(())
}

/// Checks a transaction without state: encoding bounds, chain, signature, and for verdicts,
/// that each is signed by a genesis verifier. A block with any failing transaction is refused.
pub fn check_tx_stateless(genesis: &Genesis, chain: Hash32, tx: &SignedTx) -> Result<(), String> {
    tx.check_fields().map_err(|e| e.to_string())?;
    if tx.chain != chain {
        return Err("transaction for another ledger".into());
    }
    if !tx.signature_is_valid() {
        return Err("transaction signature does not verify".into());
    }
    if let TxBody::RecordVerdicts { verdicts } = &tx.body {
        for verdict in verdicts {
            if !genesis.verifiers.contains(&verdict.verifier) || !verdict.signature_is_valid() {
                return Err("verdict not signed by a genesis verifier".into());
            }
        }
    }
    Ok(())
}

/// Pending transactions of one validator, bounded by `MEMPOOL_TXS_MAX`.
#[derive(Clone, Default)]
pub struct Mempool {
    inner: Arc<Mutex<VecDeque<(Hash32, SignedTx)>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("mempool is full ({max} transactions)", max = limits::MEMPOOL_TXS_MAX)]
    Full,
    #[error("transaction refused: {0}")]
    Invalid(String),
}

impl Mempool {
    pub fn new() -> Mempool {
        Mempool::default()
    }

    /// Queues a transaction after the stateless checks.
    pub fn submit(&self, genesis: &Genesis, tx: SignedTx) -> Result<(), SubmitError> {
        check_tx_stateless(genesis, genesis.chain_id(), &tx).map_err(SubmitError::Invalid)?;
        let mut queue = self.inner.lock().expect("mempool lock");
        if queue.len() >= limits::MEMPOOL_TXS_MAX {
            return Err(SubmitError::Full);
        }
        queue.push_back((tx.id(), tx));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("mempool lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_candidates(&self, skip: &HashSet<Hash32>, max: usize) -> Vec<SignedTx> {
        let queue = self.inner.lock().expect("mempool lock");
        queue
            .iter()
            .filter(|(id, _)| !skip.contains(id))
            .take(max)
            .map(|(_, tx)| tx.clone())
            .collect()
    }

    fn remove(&self, ids: &HashSet<Hash32>) {
        let mut queue = self.inner.lock().expect("mempool lock");
        queue.retain(|(id, _)| !ids.contains(id));
    }
}

/// What tests and tools can read about a running validator's ledger.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub height: u64,
    pub state_root: Hash32,
    pub state: Option<LedgerState>,
    /// Records fetched from peers and applied.
    pub synced_records: u64,
    /// Blocks this validator proposed as leader.
    pub proposed_blocks: u64,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            height: 0,
            state_root: Hash32([0; 32]),
            state: None,
            synced_records: 0,
            proposed_blocks: 0,
        }
    }
}

#[derive(Clone, Default)]
pub struct Observer(Arc<Mutex<Snapshot>>);

impl Observer {
    pub fn get(&self) -> Snapshot {
        self.0.lock().expect("observer lock").clone()
    }
    fn set(&self, replica: &Replica, synced: u64) {
        let mut snap = self.0.lock().expect("observer lock");
        snap.height = replica.height();
        snap.state_root = replica.state().root();
        snap.state = Some(replica.state().clone());
        snap.synced_records += synced;
    }
    fn proposed(&self) {
        self.0.lock().expect("observer lock").proposed_blocks += 1;
    }
}

/// How a validator's application behaves. Everything but `Honest` exists for the Byzantine tests.
#[derive(Clone)]
pub enum Behavior {
    Honest,
    /// Proposes blocks carrying a mint verdict signed by a key that is not a genesis verifier.
    #[doc(hidden)]
    ForgeMint {
        forged_verdict_tx: Box<SignedTx>,
    },
}

/// Messages on the `blocks` channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum BlockMessage {
    /// A proposed block's bytes.
    Block(Vec<u8>),
    /// "Send me your stored records from this height on."
    SyncRequest { from_height: u64 },
    /// Stored records, oldest first, ending with a certified one.
    SyncResponse { records: Vec<Vec<u8>> },
}

/// Largest message on the `blocks` channel.
pub fn block_message_bytes_max() -> usize {
    limits::BLOCK_BYTES_MAX + limits::RECORD_BYTES_MAX
}

enum Message {
    Propose {
        context: Ctx,
        response: oneshot::Sender<Digest>,
    },
    Verify {
        context: Ctx,
        payload: Digest,
        response: oneshot::Sender<bool>,
    },
    /// A proposal held back because the mempool was empty (see `EMPTY_BLOCK_DELAY_MS`).
    ProposeDeferred {
        context: Ctx,
        response: oneshot::Sender<Digest>,
    },
    Broadcast {
        payload: Digest,
    },
    Finalized(Box<LedgerFinalization>),
}

/// The handle simplex holds: automaton, relay and reporter in one.
#[derive(Clone)]
pub struct Mailbox {
    sender: mpsc::Sender<Message>,
}

impl Automaton for Mailbox {
    type Context = Ctx;
    type Digest = Digest;

    async fn propose(&mut self, context: Ctx) -> oneshot::Receiver<Digest> {
        let (response, receiver) = oneshot::channel();
        // A full or closed mailbox drops `response`; simplex treats that as a failed proposal.
        let _ = self
            .sender
            .send(Message::Propose { context, response })
            .await;
        receiver
    }

    async fn verify(&mut self, context: Ctx, payload: Digest) -> oneshot::Receiver<bool> {
        let (response, receiver) = oneshot::channel();
        let _ = self
            .sender
            .send(Message::Verify {
                context,
                payload,
                response,
            })
            .await;
        receiver
    }
}

impl CertifiableAutomaton for Mailbox {}

impl Relay for Mailbox {
    type Digest = Digest;
    type PublicKey = PublicKey;
    type Plan = Plan<PublicKey>;

    fn broadcast(&mut self, payload: Digest, _plan: Plan<PublicKey>) -> commonware_actor::Feedback {
        match self.sender.try_send(Message::Broadcast { payload }) {
            Ok(()) => commonware_actor::Feedback::Ok,
            Err(mpsc::error::TrySendError::Full(_)) => commonware_actor::Feedback::Backoff,
            Err(mpsc::error::TrySendError::Closed(_)) => commonware_actor::Feedback::Closed,
        }
    }
}

/// Forwards finalization certificates to the app; other activity is not the ledger's concern.
#[derive(Clone)]
pub struct LedgerReporter {
    sender: mpsc::Sender<Message>,
}

impl Reporter for LedgerReporter {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> commonware_actor::Feedback {
        let Activity::Finalization(finalization) = activity else {
            return commonware_actor::Feedback::Ok;
        };
        // Dropping one is safe: a later finalization finalizes every ancestor.
        match self
            .sender
            .try_send(Message::Finalized(Box::new(finalization)))
        {
            Ok(()) => commonware_actor::Feedback::Ok,
            Err(mpsc::error::TrySendError::Full(_)) => commonware_actor::Feedback::Backoff,
            Err(mpsc::error::TrySendError::Closed(_)) => commonware_actor::Feedback::Closed,
        }
    }
}

/// Everything a validator's application needs.
pub struct AppConfig {
    pub genesis: Genesis,
    pub data_dir: PathBuf,
    pub checker: Box<dyn FraudProofChecker + Send>,
    pub mempool: Mempool,
    pub observer: Observer,
    pub behavior: Behavior,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Replica(#[from] crate::replay::ReplicaError),
}

/// The ledger application actor.
pub struct App<E: Clock + Spawner + commonware_runtime::Supervisor> {
    context: ContextCell<E>,
    genesis: Genesis,
    chain: Hash32,
    replica: Replica,
    mempool: Mempool,
    observer: Observer,
    behavior: Behavior,
    mailbox: mpsc::Receiver<Message>,
    /// Blocks proposed or received and not yet finalized, by digest.
    blocks: HashMap<[u8; 32], Arc<(Block, Vec<u8>)>>,
    /// Verify requests waiting for a block's bytes.
    waiters: HashMap<[u8; 32], Vec<(Ctx, oneshot::Sender<bool>)>>,
    /// The newest finalization we could not apply yet (missing blocks).
    pending: Option<Box<LedgerFinalization>>,
    /// View of the newest committed block; finalizations at or below it are old news.
    committed_view: u64,
    /// The app's own mailbox, for deferred proposals.
    self_sender: mpsc::Sender<Message>,
}

impl<E: Clock + Spawner + commonware_runtime::Supervisor> App<E> {
    pub fn new(context: E, cfg: AppConfig) -> Result<(App<E>, Mailbox, LedgerReporter), AppError> {
        let replica = Replica::open(&cfg.data_dir, &cfg.genesis, cfg.checker)?;
        cfg.observer.set(&replica, 0);
        let committed_view = tip_view(&replica);
        let (sender, receiver) = mpsc::channel(limits::CONSENSUS_MAILBOX_MAX);
        let app = App {
            context: ContextCell::new(context),
            chain: cfg.genesis.chain_id(),
            genesis: cfg.genesis,
            replica,
            mempool: cfg.mempool,
            observer: cfg.observer,
            behavior: cfg.behavior,
            mailbox: receiver,
            blocks: HashMap::new(),
            waiters: HashMap::new(),
            pending: None,
            committed_view,
            self_sender: sender.clone(),
        };
        Ok((
            app,
            Mailbox {
                sender: sender.clone(),
            },
            LedgerReporter { sender },
        ))
    }

    pub fn start(
        mut self,
        network: (
            impl Sender<PublicKey = PublicKey>,
            impl Receiver<PublicKey = PublicKey>,
        ),
    ) -> Handle<()> {
        spawn_cell!(self.context, self.run(network))
    }

    async fn run(
        mut self,
        network: (
            impl Sender<PublicKey = PublicKey>,
            impl Receiver<PublicKey = PublicKey>,
        ),
    ) {
        let (mut net_sender, mut net_receiver) = network;
        commonware_macros::select_loop! {
            self.context,
            on_stopped => {},
            Some(message) = self.mailbox.recv() else break => {
                self.handle(message, &mut net_sender);
            },
            Ok((from, bytes)) = net_receiver.recv() else break => {
                self.handle_network(from, bytes.as_ref(), &mut net_sender);
            },
        }
    }

    fn handle(&mut self, message: Message, net: &mut impl Sender<PublicKey = PublicKey>) {
        match message {
            Message::Propose { context, response } if self.defer_empty() => {
                // An empty mempool: hold the proposal a little (below the leader timeout) so
                // idle validators do not finalize and fsync empty blocks as fast as they can.
                let sender = self.self_sender.clone();
                let delay = std::time::Duration::from_millis(limits::EMPTY_BLOCK_DELAY_MS);
                let deferred = Message::ProposeDeferred { context, response };
                self.context
                    .as_present()
                    .child("pace")
                    .spawn(move |clock| async move {
                        clock.sleep(delay).await;
                        let _ = sender.send(deferred).await;
                    });
            }
            Message::Propose { context, response }
            | Message::ProposeDeferred { context, response } => {
                if let Some(digest) = self.propose(&context) {
                    let _ = response.send(to_digest(&digest));
                }
            }
            Message::Verify {
                context,
                payload,
                response,
            } => {
                let digest = from_digest(&payload);
                match self.blocks.get(&digest).cloned() {
                    Some(known) => {
                        let _ = response.send(self.verify(&context, &known.0));
                    }
                    None => self
                        .waiters
                        .entry(digest)
                        .or_default()
                        .push((context, response)),
                }
            }
            Message::Broadcast { payload } => {
                if let Some(known) = self.blocks.get(&from_digest(&payload)) {
                    let message = encode(&BlockMessage::Block(known.1.clone()));
                    net.send(
                        Recipients::All,
                        commonware_runtime::IoBuf::from(message),
                        true,
                    );
                }
            }
            Message::Finalized(finalization) => self.finalized(finalization, net),
        }
    }

    fn handle_network(
        &mut self,
        from: PublicKey,
        bytes: &[u8],
        net: &mut impl Sender<PublicKey = PublicKey>,
    ) {
        // Hostile input: every failure is dropped, never a panic.
        let Ok(message) =
            decode_exact::<BlockMessage>("block message", bytes, block_message_bytes_max())
        else {
            return;
        };
        match message {
            BlockMessage::Block(block_bytes) => self.received_block(block_bytes),
            BlockMessage::SyncRequest { from_height } => self.serve_sync(from, from_height, net),
            BlockMessage::SyncResponse { records } => self.apply_sync(records, net),
        }
    }

    fn received_block(&mut self, bytes: Vec<u8>) {
        if self.blocks.len() >= limits::PENDING_BLOCKS_MAX {
            return;
        }
        let Ok(block) = Block::from_bytes(&bytes) else {
            return;
        };
        let digest = block.digest();
        let known = Arc::new((block, bytes));
        self.blocks.insert(digest, known.clone());
        if let Some(waiters) = self.waiters.remove(&digest) {
            for (context, response) in waiters {
                let _ = response.send(self.verify(&context, &known.0));
            }
        }
    }

    /// Whether an honest proposal should wait for transactions first.
    fn defer_empty(&self) -> bool {
        matches!(self.behavior, Behavior::Honest) && self.mempool.is_empty()
    }

    /// Builds a block on `context.parent`. `None` when the parent's bytes are unknown.
    fn propose(&mut self, context: &Ctx) -> Option<[u8; 32]> {
        let parent = from_digest(&context.parent.1);
        let in_flight = self.in_flight_txs(parent)?;
        let mut txs = self
            .mempool
            .take_candidates(&in_flight, limits::TXS_PER_BLOCK_MAX);
        if let Behavior::ForgeMint { forged_verdict_tx } = &self.behavior {
            txs.insert(0, (**forged_verdict_tx).clone());
        }
        let block = Block {
            version: WIRE_VERSION,
            chain: self.chain,
            parent,
            view: context.round.view().get(),
            txs,
        };
        let bytes = block.to_bytes();
        let digest = block.digest();
        self.blocks.insert(digest, Arc::new((block, bytes)));
        self.observer.proposed();
        Some(digest)
    }

    /// Ids of transactions in the unfinalized blocks between the tip and `parent`; `None` if
    /// the walk meets a block we do not have.
    fn in_flight_txs(&self, mut cursor: [u8; 32]) -> Option<HashSet<Hash32>> {
        let tip = self.replica.tip_digest();
        let mut ids = HashSet::new();
        while cursor != tip {
            let known = self.blocks.get(&cursor)?;
            ids.extend(known.0.txs.iter().map(SignedTx::id));
            cursor = known.0.parent;
        }
        Some(ids)
    }

    fn verify(&self, context: &Ctx, block: &Block) -> bool {
        if block.chain != self.chain
            || block.parent != from_digest(&context.parent.1)
            || block.view != context.round.view().get()
        {
            return false;
        }
        block
            .txs
            .iter()
            .all(|tx| check_tx_stateless(&self.genesis, self.chain, tx).is_ok())
    }

    fn finalized(
        &mut self,
        finalization: Box<LedgerFinalization>,
        net: &mut impl Sender<PublicKey = PublicKey>,
    ) {
        let digest = from_digest(&finalization.proposal.payload);
        if finalization.proposal.round.view().get() <= self.committed_view
            || self.is_committed(&digest)
        {
            return;
        }
        let Some(chain) = self.chain_to(digest) else {
            let newer = self
                .pending
                .as_ref()
                .is_none_or(|p| p.proposal.round.view() < finalization.proposal.round.view());
            if newer {
                self.pending = Some(finalization);
            }
            self.request_sync(net);
            return;
        };
        let certified_height = self.replica.height() + chain.len() as u64;
        let mut batch = Vec::with_capacity(chain.len());
        for (i, known) in chain.iter().enumerate() {
            let finality = if i + 1 == chain.len() {
                Finality::Simplex {
                    finalization: finalization.encode().to_vec(),
                }
            } else {
                Finality::Ancestor { certified_height }
            };
            batch.push((known.1.clone(), finality));
        }
        if let Err(e) = self.commit(&batch, 0) {
            tracing::error!(error = %e, "cannot commit a finalized block");
            return;
        }
        let view = finalization.proposal.round.view().get();
        self.blocks.retain(|_, known| known.0.view > view);
        self.waiters
            .retain(|_, w| w.iter().any(|(c, _)| c.round.view().get() > view));
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.proposal.round.view().get() <= view)
        {
            self.pending = None;
        }
    }

    fn commit(
        &mut self,
        batch: &[(Vec<u8>, Finality)],
        synced: u64,
    ) -> Result<(), crate::replay::ReplicaError> {
        self.replica.commit(batch)?;
        let mut ids = HashSet::new();
        for (bytes, _) in batch {
            if let Ok(block) = Block::from_bytes(bytes) {
                ids.extend(block.txs.iter().map(SignedTx::id));
                self.committed_view = self.committed_view.max(block.view);
            }
        }
        self.mempool.remove(&ids);
        self.observer.set(&self.replica, synced);
        Ok(())
    }

    fn is_committed(&self, digest: &[u8; 32]) -> bool {
        // Committed blocks are pruned from `blocks`; the tip is the only one we can name cheaply.
        *digest == self.replica.tip_digest() || (*digest == genesis_digest(self.chain))
    }

    /// Blocks from just after the tip up to `digest`, oldest first; `None` if one is missing.
    fn chain_to(&self, digest: [u8; 32]) -> Option<Vec<Arc<(Block, Vec<u8>)>>> {
        let tip = self.replica.tip_digest();
        let mut out = Vec::new();
        let mut cursor = digest;
        while cursor != tip {
            let known = self.blocks.get(&cursor)?.clone();
            cursor = known.0.parent;
            out.push(known);
            if out.len() > limits::PENDING_BLOCKS_MAX {
                return None;
            }
        }
        out.reverse();
        Some(out)
    }

    fn request_sync(&mut self, net: &mut impl Sender<PublicKey = PublicKey>) {
        let from_height = self.replica.height() + 1;
        net.send(
            Recipients::All,
            commonware_runtime::IoBuf::from(encode(&BlockMessage::SyncRequest { from_height })),
            false,
        );
    }

    /// Answers a sync request with stored records from `from_height`, ending at a certified one.
    fn serve_sync(
        &mut self,
        to: PublicKey,
        from_height: u64,
        net: &mut impl Sender<PublicKey = PublicKey>,
    ) {
        let mut records = Vec::new();
        let mut certified_len = 0;
        let mut bytes_total = 0usize;
        let mut height = from_height;
        while let Ok(Some(bytes)) = self.replica.store().record_bytes(height) {
            bytes_total += bytes.len();
            if bytes_total > limits::RECORD_BYTES_MAX {
                break;
            }
            let Ok(record) = Record::from_bytes(&bytes) else {
                break;
            };
            records.push(bytes);
            if !matches!(record.finality, Finality::Ancestor { .. }) {
                certified_len = records.len();
            }
            height += 1;
        }
        records.truncate(certified_len);
        if records.is_empty() {
            return;
        }
        net.send(
            Recipients::One(to),
            commonware_runtime::IoBuf::from(encode(&BlockMessage::SyncResponse { records })),
            false,
        );
    }

    /// Applies fetched records after checking links and the certificate that ends them.
    fn apply_sync(&mut self, records: Vec<Vec<u8>>, net: &mut impl Sender<PublicKey = PublicKey>) {
        match self.check_sync(&records) {
            Ok(batch) => {
                let count = batch.len() as u64;
                if let Err(e) = self.commit(&batch, count) {
                    tracing::warn!(error = %e, "synced records do not apply");
                    return;
                }
                if let Some(pending) = self.pending.take() {
                    self.finalized(pending, net);
                }
            }
            Err(e) => tracing::debug!(error = %e, "refusing sync response"),
        }
    }

    fn check_sync(&self, records: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Finality)>, String> {
        let mut height = self.replica.height();
        let mut parent = self.replica.tip_digest();
        let mut batch = Vec::with_capacity(records.len());
        for bytes in records {
            let record = Record::from_bytes(bytes).map_err(|e: WireError| e.to_string())?;
            let block = Block::from_bytes(&record.block).map_err(|e| e.to_string())?;
            if record.height != height + 1 || block.parent != parent || block.chain != self.chain {
                return Err(format!(
                    "record {} does not extend height {height}",
                    record.height
                ));
            }
            let digest = block.digest();
            match &record.finality {
                Finality::Simplex { finalization } => {
                    check_finalization(&self.genesis, &digest, finalization)?
                }
                Finality::Ancestor { .. } => {}
                Finality::Sequencer { .. } => {
                    return Err("sequencer finality in a simplex ledger".into())
                }
            }
            height = record.height;
            parent = digest;
            batch.push((record.block, record.finality));
        }
        match batch.last() {
            Some((_, Finality::Simplex { .. })) => Ok(batch),
            _ => Err("sync batch does not end with a certificate".into()),
        }
    }
}

/// View of the last committed block (0 for an empty ledger).
fn tip_view(replica: &Replica) -> u64 {
    let height = replica.height();
    if height == 0 {
        return 0;
    }
    let record = replica
        .store()
        .record_bytes(height)
        .ok()
        .flatten()
        .and_then(|b| Record::from_bytes(&b).ok());
    record
        .and_then(|r| Block::from_bytes(&r.block).ok())
        .map_or(0, |b| b.view)
}

/// Moves signed transactions that `commonweight ledger transfer` (and friends) left in
/// `ledger_dir/outbox/` into `mempool`, deleting each file it handled. A file that does not
/// decode or is refused is renamed to `*.rejected` so it is not retried. Returns how many were
/// queued. Called by a running validator node.
pub fn drain_outbox(
    ledger_dir: &std::path::Path,
    genesis: &Genesis,
    mempool: &Mempool,
) -> std::io::Result<usize> {
    let outbox = ledger_dir.join("outbox");
    let Ok(entries) = std::fs::read_dir(&outbox) else {
        return Ok(0);
    };
    let mut queued = 0;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "tx") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let accepted = SignedTx::from_bytes(&bytes)
            .ok()
            .is_some_and(|tx| mempool.submit(genesis, tx).is_ok());
        if accepted {
            std::fs::remove_file(&path)?;
            queued += 1;
        } else {
            std::fs::rename(&path, path.with_extension("rejected"))?;
        }
    }
    Ok(queued)
}
