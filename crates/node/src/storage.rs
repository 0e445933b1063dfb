//! The store over the network: pieces of the local `store::LocalStore` served to peers and announced in the DHT, and
//! the `PieceProvider` / `ProviderLookup` that fetch pieces from peers through `net`.
//!
//! Wire: a blob travels as its raw bytes under its content hash (the blob protocol's name for it), and its post-order
//! bao outboard under `outboard_key(cid)` as `size: u64 LE || outboard`. The fetcher rebuilds a range response from
//! the two (`store::bao::encode_range_response_from_parts`) and the store verifies it as it streams, so bytes from a
//! lying or rotting peer fail their hash check and the piece is taken from elsewhere. Store and fetch calls block,
//! so they run on the blocking pool or on their own threads, never on the async loop.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use net::wire::{chunk_len, BlobRequest, BlobResponse};
use net::{BlobChunk, BlobReceiver, BlobSource, NetClient, NetError};
use store::audit::{AuditAction, AuditInput, AuditMachine};
use store::bao::{self, ChunkRanges};
use store::fetch::{self, FetchError, FetchReport, ProviderLookup};
use store::local::{
    COUNTER_AUDIT_BANNED, COUNTER_AUDIT_CHALLENGES, COUNTER_AUDIT_FAILED, COUNTER_AUDIT_PASSED,
};
use store::{placement, Cid, LocalStore, Manifest, PieceProvider, ProviderError, StoreError};
use tokio::runtime::Handle;
use types::limits::net::{BLOB_CHUNK_BYTES, BLOB_REQUEST_TIMEOUT_MS};
use types::limits::store::{
    NET_OUTBOARD_BYTES_MAX, NET_PIECES_IN_FLIGHT_MAX, NET_PIECE_TIMEOUT_MS,
    NET_PROVIDER_LOOKUP_TIMEOUT_MS, RANGE_RESPONSE_BYTES_MAX, TRACKED_PIECES_MAX,
};
use types::{Hash32, PeerId};

/// The blob-protocol name of a blob's outboard (with its size in front).
pub fn outboard_key(cid: Cid) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/store/outboard/v1");
    hasher.update(&cid.0 .0);
    Hash32(*hasher.finalize().as_bytes())
}

/// The DHT key under which the storage peers that keep collection `root` announce themselves. Holding the
/// manifest (a downloader does) is not enough: placement runs over the peers that promised to keep a share.
pub fn keeper_key(root: Cid) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/store/keeper/v1");
    hasher.update(&root.0 .0);
    Hash32(*hasher.finalize().as_bytes())
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Collection(#[from] store::collection::CollectionError),
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("no provider delivered piece {index} ({piece})")]
    PieceUnavailable { index: usize, piece: Cid },
    #[error("no peer connected (check the bootstrap addresses)")]
    NoPeers,
    #[error("blocking task failed: {0}")]
    Task(String),
    #[error("this node already keeps {max} collections (the limit)")]
    TooManyCollections { max: usize },
}

/// Serves the blobs of a `LocalStore` (and their outboards) to peers; anything else is asked of `fallback`
/// (the node's other blobs, e.g. round updates).
pub struct StoreBlobs {
    store: Arc<LocalStore>,
    outboards: RwLock<HashMap<Hash32, Cid>>,
    fallback: Option<Arc<dyn BlobSource>>,
}

impl StoreBlobs {
    pub fn new(store: Arc<LocalStore>, fallback: Option<Arc<dyn BlobSource>>) -> StoreBlobs {
        StoreBlobs {
            store,
            outboards: RwLock::new(HashMap::new()),
            fallback,
        }
    }

    pub fn store(&self) -> &Arc<LocalStore> {
        &self.store
    }

    /// Makes `cid`'s outboard reachable under `outboard_key(cid)`. Bounded: past TRACKED_PIECES_MAX blobs the
    /// outboards of new ones are not served (their fetchers look elsewhere).
    pub fn register(&self, cid: Cid) {
        let mut outboards = self.outboards.write().expect("lock");
        if outboards.len() < TRACKED_PIECES_MAX {
            outboards.insert(outboard_key(cid), cid);
        }
    }

    fn outboard_of(&self, hash: &Hash32) -> Option<Cid> {
        self.outboards.read().expect("lock").get(hash).copied()
    }

    fn read_outboard(&self, cid: Cid, offset: u64, len: u32) -> Option<Vec<u8>> {
        let size = self.store.size(cid).ok()??;
        let prefix = size.to_le_bytes();
        let end = offset.checked_add(u64::from(len))?;
        if end > 8 + bao::outboard_bytes(size) {
            return None;
        }
        let mut out = Vec::with_capacity(len as usize);
        if offset < 8 {
            out.extend_from_slice(&prefix[offset as usize..end.min(8) as usize]);
        }
        let file_len = end.saturating_sub(offset.max(8)) as usize;
        if file_len > 0 {
            let file = File::open(self.store.outboard_path(cid.0)).ok()?;
            let mut buf = vec![0u8; file_len];
            file.read_exact_at(&mut buf, offset.max(8) - 8).ok()?;
            out.extend_from_slice(&buf);
        }
        Some(out)
    }
}

impl BlobSource for StoreBlobs {
    fn blob_len(&self, hash: &Hash32) -> Option<u64> {
        if let Some(cid) = self.outboard_of(hash) {
            let size = self.store.size(cid).ok()??;
            return Some(8 + bao::outboard_bytes(size));
        }
        if let Ok(Some(size)) = self.store.size(Cid(*hash)) {
            return Some(size);
        }
        self.fallback.as_ref()?.blob_len(hash)
    }

    fn read(&self, hash: &Hash32, offset: u64, len: u32) -> Option<Vec<u8>> {
        if let Some(cid) = self.outboard_of(hash) {
            return self.read_outboard(cid, offset, len);
        }
        if let Ok(Some(_)) = self.store.size(Cid(*hash)) {
            // Raw bytes, not re-hashed here: the requester verifies them against the CID.
            let file = File::open(self.store.data_path(*hash)).ok()?;
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset).ok()?;
            return Some(buf);
        }
        self.fallback.as_ref()?.read(hash, offset, len)
    }
}

/// A peer, as a `PieceProvider` over the blob protocol. Its methods block: call them off the async loop.
pub struct NetProvider {
    client: NetClient,
    handle: Handle,
    peer: PeerId,
}

impl NetProvider {
    pub fn new(client: NetClient, handle: Handle, peer: PeerId) -> NetProvider {
        NetProvider {
            client,
            handle,
            peer,
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unreachable(e.to_string())
}

impl PieceProvider for NetProvider {
    fn peer(&self) -> PeerId {
        self.peer
    }

    fn read_ranges(
        &self,
        cid: Cid,
        ranges: &ChunkRanges,
    ) -> Result<Box<dyn Read + Send>, ProviderError> {
        let (size, outboard) =
            self.handle
                .block_on(fetch_outboard(&self.client, self.peer, cid))?;
        let data = if *ranges == bao::all_chunks() {
            let _runtime = self.handle.enter();
            RemoteBytes::streamed(self, cid, size)
        } else {
            RemoteBytes::sparse(self, cid, size)
        };
        let (reader, writer) = std::io::pipe().map_err(unreachable)?;
        let ranges = ranges.clone();
        // The writer thread ends when the response is written, the peer fails (the pipe closes early and the
        // reader sees a truncated response), or the reader goes away.
        std::thread::spawn(move || {
            let mut data = data;
            let _ = bao::encode_range_response_from_parts(
                cid.0,
                size,
                outboard,
                &ranges,
                |offset, buf| data.read_exact_at(offset, buf),
                writer,
            );
        });
        Ok(Box::new(reader))
    }

    fn replicate(
        &self,
        cid: Cid,
        _size: u64,
        _source: &dyn PieceProvider,
    ) -> Result<(), ProviderError> {
        // Peers pull the pieces placed on them (`StoreNode::pull_assigned`); nobody pushes over the network.
        Err(ProviderError::Refused(format!(
            "{cid}: storage peers pull their pieces; there is no push over the network"
        )))
    }
}

/// The size and outboard of `cid` from `peer`, bounded by NET_OUTBOARD_BYTES_MAX.
async fn fetch_outboard(
    client: &NetClient,
    peer: PeerId,
    cid: Cid,
) -> Result<(u64, Vec<u8>), ProviderError> {
    let mut receiver = client.fetch_blob(outboard_key(cid), vec![peer]);
    let mut bytes = Vec::new();
    let timeout = Duration::from_millis(NET_PIECE_TIMEOUT_MS);
    let fetched = tokio::time::timeout(timeout, async {
        while let Some(chunk) = receiver.next().await {
            let chunk = chunk.map_err(unreachable)?;
            if chunk.blob_len > 8 + NET_OUTBOARD_BYTES_MAX || chunk.blob_len < 8 {
                return Err(ProviderError::Refused(format!(
                    "outboard of {} bytes is out of bounds",
                    chunk.blob_len
                )));
            }
            bytes.extend_from_slice(&chunk.bytes);
        }
        Ok(())
    })
    .await;
    fetched.map_err(|_| unreachable("outboard fetch timed out"))??;
    if bytes.len() < 8 {
        return Err(ProviderError::NotFound(cid));
    }
    let size = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    bytes.drain(..8);
    Ok((size, bytes))
}

/// The bytes of a blob on a peer, read in increasing offset order by the response encoder: a whole-blob stream
/// (the blob protocol's windowed parallel fetch), or single chunks on demand for a few ranges (audits).
struct RemoteBytes {
    client: NetClient,
    handle: Handle,
    peer: PeerId,
    cid: Cid,
    size: u64,
    stream: Option<BlobReceiver>,
    current: Option<BlobChunk>,
}

impl RemoteBytes {
    /// Must be called inside the runtime (`Handle::enter`): the stream's fetch task starts at once.
    fn streamed(provider: &NetProvider, cid: Cid, size: u64) -> RemoteBytes {
        let stream = provider.client.fetch_blob(cid.0, vec![provider.peer]);
        RemoteBytes {
            stream: Some(stream),
            ..RemoteBytes::sparse(provider, cid, size)
        }
    }

    fn sparse(provider: &NetProvider, cid: Cid, size: u64) -> RemoteBytes {
        RemoteBytes {
            client: provider.client.clone(),
            handle: provider.handle.clone(),
            peer: provider.peer,
            cid,
            size,
            stream: None,
            current: None,
        }
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let mut pos = offset;
        let mut filled = 0;
        while filled < buf.len() {
            let chunk = self.chunk_at(pos)?;
            let start = (pos - chunk.offset) as usize;
            let n = (chunk.bytes.len() - start).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&chunk.bytes[start..start + n]);
            filled += n;
            pos += n as u64;
        }
        Ok(())
    }

    /// The chunk holding byte `pos`, fetching it if needed.
    fn chunk_at(&mut self, pos: u64) -> std::io::Result<&BlobChunk> {
        let holds = |c: &BlobChunk| c.offset <= pos && pos < c.offset + c.bytes.len() as u64;
        if !self.current.as_ref().is_some_and(holds) {
            let chunk = match self.stream.is_some() {
                true => self.next_streamed(pos)?,
                false => self.request(pos)?,
            };
            if chunk.blob_len != self.size || !holds(&chunk) {
                return Err(std::io::Error::other("peer sent a chunk that does not fit"));
            }
            self.current = Some(chunk);
        }
        Ok(self.current.as_ref().expect("just set"))
    }

    fn next_streamed(&mut self, pos: u64) -> std::io::Result<BlobChunk> {
        let stream = self.stream.as_mut().expect("streamed");
        let timeout = Duration::from_millis(2 * BLOB_REQUEST_TIMEOUT_MS);
        loop {
            let next = self
                .handle
                .block_on(async { tokio::time::timeout(timeout, stream.next()).await });
            let chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => return Err(std::io::Error::other(e.to_string())),
                Ok(None) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            };
            // Chunks arrive in order; the encoder never reads backwards, so earlier ones are done with.
            if pos < chunk.offset + chunk.bytes.len() as u64 {
                return Ok(chunk);
            }
        }
    }

    fn request(&self, pos: u64) -> std::io::Result<BlobChunk> {
        let index = u32::try_from(pos / u64::from(BLOB_CHUNK_BYTES))
            .map_err(|_| std::io::Error::other("offset out of range"))?;
        let request = BlobRequest {
            hash: self.cid.0,
            chunk_index: index,
        };
        let answer = self
            .handle
            .block_on(self.client.request_chunk(self.peer, request))
            .map_err(std::io::Error::other)?;
        match answer {
            BlobResponse::Chunk {
                blob_len,
                chunk_index,
                bytes,
            } if chunk_index == index && chunk_len(blob_len, index) == Some(bytes.len() as u32) => {
                Ok(BlobChunk {
                    blob_len,
                    offset: u64::from(index) * u64::from(BLOB_CHUNK_BYTES),
                    bytes,
                })
            }
            other => Err(std::io::Error::other(format!(
                "chunk {index} of {}: {other:?}",
                self.cid
            ))),
        }
    }
}

/// Providers of a blob from the DHT, as `NetProvider`s. Skips this node and peers marked bad (e.g. by audits).
pub struct NetLookup {
    client: NetClient,
    handle: Handle,
    bad: Arc<RwLock<BTreeSet<PeerId>>>,
}

impl NetLookup {
    pub fn new(client: NetClient, handle: Handle) -> NetLookup {
        NetLookup {
            client,
            handle,
            bad: Arc::default(),
        }
    }

    /// Stops using `peer` as a provider.
    pub fn mark_bad(&self, peer: PeerId) {
        self.bad.write().expect("lock").insert(peer);
    }

    pub fn is_bad(&self, peer: &PeerId) -> bool {
        self.bad.read().expect("lock").contains(peer)
    }
}

impl ProviderLookup for NetLookup {
    fn providers(&self, blob: Cid) -> Vec<Arc<dyn PieceProvider>> {
        let timeout = Duration::from_millis(NET_PROVIDER_LOOKUP_TIMEOUT_MS);
        let found = self.handle.block_on(async {
            tokio::time::timeout(timeout, self.client.get_providers(blob.0)).await
        });
        let peers = match found {
            Ok(Ok(peers)) => peers,
            _ => return Vec::new(),
        };
        let local = self.client.local_peer();
        let bad = self.bad.read().expect("lock");
        peers
            .into_iter()
            .filter(|p| *p != local && !bad.contains(p))
            .map(|peer| {
                Arc::new(NetProvider::new(
                    self.client.clone(),
                    self.handle.clone(),
                    peer,
                )) as Arc<dyn PieceProvider>
            })
            .collect()
    }
}

/// A node's store on the network: serves and announces what it holds, fetches collections from peers, and pulls
/// the pieces that placement puts on it.
#[derive(Clone)]
pub struct StoreNode {
    client: NetClient,
    blobs: Arc<StoreBlobs>,
    lookup: Arc<NetLookup>,
}

impl StoreNode {
    /// Serves `store` (then `fallback`) to peers and announces every blob it holds. Call inside the runtime.
    pub async fn start(
        client: NetClient,
        store: Arc<LocalStore>,
        fallback: Option<Arc<dyn BlobSource>>,
    ) -> Result<StoreNode, StorageError> {
        let blobs = Arc::new(StoreBlobs::new(store, fallback));
        client.set_blob_source(blobs.clone()).await?;
        let lookup = Arc::new(NetLookup::new(client.clone(), Handle::current()));
        let node = StoreNode {
            client,
            blobs,
            lookup,
        };
        node.announce_all().await?;
        Ok(node)
    }

    pub fn store(&self) -> &Arc<LocalStore> {
        self.blobs.store()
    }

    pub fn lookup(&self) -> &Arc<NetLookup> {
        &self.lookup
    }

    pub(crate) fn client(&self) -> &NetClient {
        &self.client
    }

    /// Serves `cid` and announces it in the DHT.
    pub async fn announce(&self, cid: Cid) -> Result<(), StorageError> {
        self.blobs.register(cid);
        self.client.start_providing(cid.0).await?;
        Ok(())
    }

    /// Announces every blob in the store (at start-up, and after a put or fetch). Returns how many.
    pub async fn announce_all(&self) -> Result<usize, StorageError> {
        let store = self.store().clone();
        let held = blocking(move || store.list().map_err(StorageError::from)).await?;
        for info in &held {
            self.announce(info.cid).await?;
        }
        Ok(held.len())
    }

    /// Fetches collection `root` from its providers (up to NET_PIECES_IN_FLIGHT_MAX pieces at once), verifies and
    /// decodes it into `out_dir`, then serves and announces what it fetched.
    pub async fn get_collection(
        &self,
        root: Cid,
        out_dir: &Path,
    ) -> Result<(Manifest, FetchReport), StorageError> {
        let store = self.store().clone();
        let lookup = self.lookup.clone();
        let out_dir = out_dir.to_path_buf();
        let (manifest, report) = blocking(move || {
            fetch::get_collection(&store, root, &*lookup, &out_dir, NET_PIECES_IN_FLIGHT_MAX)
                .map_err(StorageError::from)
        })
        .await?;
        self.announce(root).await?;
        for (index, _) in &report.fetched {
            self.announce(manifest.erasure.pieces[*index]).await?;
        }
        Ok((manifest, report))
    }

    /// Fetches manifest `root` and the pieces that rendezvous placement over `storage_peers` puts on this node,
    /// pins them, and announces them. Returns the indices of the pieces this node now holds.
    pub async fn pull_assigned(
        &self,
        root: Cid,
        storage_peers: &[PeerId],
    ) -> Result<Vec<usize>, StorageError> {
        let store = self.store().clone();
        let lookup = self.lookup.clone();
        let me = self.client.local_peer();
        let peers = storage_peers.to_vec();
        let held = blocking(move || pull_assigned(&store, &*lookup, root, &peers, me)).await?;
        self.announce(root).await?;
        self.client.start_providing(keeper_key(root)).await?;
        for (_, piece) in &held {
            self.announce(*piece).await?;
        }
        Ok(held.into_iter().map(|(index, _)| index).collect())
    }
}

/// The indices of the pieces of `manifest` (root `root`) that placement over `peers` puts on `me`.
pub fn assigned_pieces(root: Cid, manifest: &Manifest, peers: &[PeerId], me: PeerId) -> Vec<usize> {
    placement::place(root, manifest.erasure.total_pieces, peers)
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == me)
        .map(|(index, _)| index)
        .collect()
}

fn pull_assigned(
    store: &LocalStore,
    lookup: &dyn ProviderLookup,
    root: Cid,
    peers: &[PeerId],
    me: PeerId,
) -> Result<Vec<(usize, Cid)>, StorageError> {
    let mut report = FetchReport::default();
    let manifest = fetch::fetch_manifest(store, root, lookup, &mut report)?;
    store.pin(root)?;
    let layout = &manifest.erasure;
    let mut held = Vec::new();
    for index in assigned_pieces(root, &manifest, peers, me) {
        let piece = layout.pieces[index];
        if !store.contains(piece)? {
            let fetched = lookup.providers(piece).iter().any(|provider| {
                fetch::fetch_blob(store, provider.as_ref(), piece, Some(layout.piece_bytes)).is_ok()
            });
            if !fetched {
                return Err(StorageError::PieceUnavailable { index, piece });
            }
        }
        store.pin(piece)?;
        held.push((index, piece));
    }
    store.register_collection(root, &manifest.name)?;
    Ok(held)
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
}

/// `data get` from peers: starts a short-lived node (fresh identity) with `net`, waits until it has a peer,
/// fetches collection `root` into `store`, decodes it into `out_dir`, and stops. Owns its runtime, so it blocks.
pub fn get_collection_ephemeral(
    store: Arc<LocalStore>,
    config: net::NetConfig,
    root: Cid,
    out_dir: &Path,
) -> Result<(Manifest, FetchReport), StorageError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StorageError::Task(e.to_string()))?;
    runtime.block_on(async {
        let identity = net::Identity::generate();
        let (client, mut events, event_loop) = match net::new(&identity, config) {
            Ok(started) => started,
            Err(e) => return Err(StorageError::from(e)),
        };
        let net_task = tokio::spawn(event_loop.run());
        // Nothing here answers gossip; drain events so the bounded channel never stalls the network.
        let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
        let result: Result<(Manifest, FetchReport), StorageError> = async {
            wait_for_a_peer(&client).await?;
            let node = StoreNode::start(client.clone(), store, None).await?;
            node.get_collection(root, out_dir).await
        }
        .await;
        let _ = client.shutdown().await;
        let _ = net_task.await;
        drain.abort();
        result
    })
}

async fn wait_for_a_peer(client: &NetClient) -> Result<(), StorageError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(NET_PROVIDER_LOOKUP_TIMEOUT_MS);
    while client.peers().await?.is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err(StorageError::NoPeers);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl NetLookup {
    /// `peer` as a provider, whether or not the DHT names it.
    pub fn provider(&self, peer: PeerId) -> NetProvider {
        NetProvider::new(self.client.clone(), self.handle.clone(), peer)
    }
}

/// The audit loop's shell: one tick of `AuditMachine`, with its challenges carried out over the network (blocking:
/// run it on the blocking pool). A provider the machine bans is marked bad in `lookup`, so fetches stop using it;
/// the outcomes go into the store's audit counters (`store status`).
pub fn audit_tick(
    machine: &mut AuditMachine,
    lookup: &NetLookup,
    store: &LocalStore,
    now_ms: u64,
    seed: u64,
) -> Result<(), StorageError> {
    let before = machine.counters();
    let mut pending = machine.handle(AuditInput::Tick { now_ms, seed });
    while let Some(action) = pending.pop() {
        match action {
            AuditAction::Challenge {
                challenge_id,
                provider,
                piece,
                start,
                end,
            } => {
                let ranges = bao::byte_range_to_chunks(start, end);
                let input = match read_response(&lookup.provider(provider), piece, &ranges) {
                    Some(response) => AuditInput::Response {
                        challenge_id,
                        response,
                    },
                    None => AuditInput::NoResponse { challenge_id },
                };
                pending.extend(machine.handle(input));
            }
            AuditAction::Failed { .. } => {}
            AuditAction::Banned { provider } => lookup.mark_bad(provider),
        }
    }
    let after = machine.counters();
    let counted = [
        (
            COUNTER_AUDIT_CHALLENGES,
            after.challenges - before.challenges,
        ),
        (COUNTER_AUDIT_PASSED, after.passed - before.passed),
        (
            COUNTER_AUDIT_FAILED,
            (after.bad_proofs + after.timeouts) - (before.bad_proofs + before.timeouts),
        ),
        (COUNTER_AUDIT_BANNED, after.banned - before.banned),
    ];
    for (name, by) in counted {
        store.add_counter(name, by)?;
    }
    Ok(())
}

/// A provider's range response, bounded by RANGE_RESPONSE_BYTES_MAX; `None` if it could not be had.
fn read_response(provider: &NetProvider, piece: Cid, ranges: &ChunkRanges) -> Option<Vec<u8>> {
    let reader = provider.read_ranges(piece, ranges).ok()?;
    let mut response = Vec::new();
    reader
        .take(RANGE_RESPONSE_BYTES_MAX)
        .read_to_end(&mut response)
        .ok()?;
    Some(response)
}
