//! Blob transfer: serving chunks from an app-supplied `BlobSource`, and fetching a whole blob from
//! several providers in parallel, in bounded chunks, with retries on other providers.
//!
//! Bytes are not verified here: `net` only moves them; the store checks the content hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use types::limits::net as limits;
use types::{Hash32, PeerId};

use crate::client::NetClient;
use crate::wire::{chunk_count, chunk_len, BlobRequest, BlobResponse};
use crate::NetError;

/// Pause before re-asking a provider that answered `Busy`.
const BUSY_BACKOFF: Duration = Duration::from_millis(50);

/// Where a node's served blobs come from. The app (store) implements it.
/// Reads run on tokio's blocking pool, so they may touch the disk.
pub trait BlobSource: Send + Sync + 'static {
    /// The length of blob `hash`, or `None` if this node does not hold it.
    fn blob_len(&self, hash: &Hash32) -> Option<u64>;
    /// `len` bytes of blob `hash` from `offset`, or `None` if it is gone or unreadable.
    fn read(&self, hash: &Hash32, offset: u64, len: u32) -> Option<Vec<u8>>;
}

/// Blobs held in memory (tests, benchmarks, and the node shell before the store exists).
#[derive(Default, Clone)]
pub struct MemoryBlobs {
    blobs: Arc<RwLock<HashMap<Hash32, Arc<Vec<u8>>>>>,
}

impl MemoryBlobs {
    /// Holds `bytes` under their BLAKE3 hash, which it returns.
    pub fn insert(&self, bytes: Vec<u8>) -> Hash32 {
        let hash = Hash32::of(&bytes);
        self.blobs
            .write()
            .expect("lock")
            .insert(hash, Arc::new(bytes));
        hash
    }
}

impl BlobSource for MemoryBlobs {
    fn blob_len(&self, hash: &Hash32) -> Option<u64> {
        self.blobs
            .read()
            .expect("lock")
            .get(hash)
            .map(|b| b.len() as u64)
    }

    fn read(&self, hash: &Hash32, offset: u64, len: u32) -> Option<Vec<u8>> {
        let blob = self.blobs.read().expect("lock").get(hash)?.clone();
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len as usize)?;
        blob.get(start..end).map(<[u8]>::to_vec)
    }
}

/// The response to a chunk request, read from `source` (runs on the blocking pool).
pub(crate) fn serve_chunk(source: &dyn BlobSource, request: &BlobRequest) -> BlobResponse {
    let Some(blob_len) = source.blob_len(&request.hash) else {
        return BlobResponse::NotFound;
    };
    if blob_len > limits::BLOB_BYTES_MAX {
        return BlobResponse::NotFound;
    }
    let Some(len) = chunk_len(blob_len, request.chunk_index) else {
        return BlobResponse::OutOfRange { blob_len };
    };
    let offset = u64::from(request.chunk_index) * u64::from(limits::BLOB_CHUNK_BYTES);
    match source.read(&request.hash, offset, len) {
        Some(bytes) if bytes.len() == len as usize => BlobResponse::Chunk {
            blob_len,
            chunk_index: request.chunk_index,
            bytes,
        },
        _ => BlobResponse::NotFound,
    }
}

/// One chunk of a fetched blob, delivered in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobChunk {
    pub blob_len: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no providers given")]
    NoProviders,
    #[error("every provider failed or lacks the blob")]
    ProvidersExhausted,
    #[error("chunk {index} failed {attempts} times")]
    ChunkAttempts { index: u32, attempts: u32 },
    #[error("chunk {index}: every provider stayed busy ({retries} answers)")]
    ChunkBusy { index: u32, retries: u32 },
    #[error("the network stopped")]
    Stopped,
}

/// The caller's end of a fetch: chunks in order, then `None`. Bounded: a slow reader slows the fetch.
pub struct BlobReceiver {
    rx: mpsc::Receiver<Result<BlobChunk, FetchError>>,
}

impl BlobReceiver {
    pub async fn next(&mut self) -> Option<Result<BlobChunk, FetchError>> {
        self.rx.recv().await
    }

    /// Collects the whole blob (tests and small blobs; large ones should be streamed).
    pub async fn collect(mut self) -> Result<Vec<u8>, FetchError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if out.is_empty() {
                // blob_len is bounded by the decoder (BLOB_BYTES_MAX); reserve at most one window.
                let window =
                    limits::BLOB_WINDOW_CHUNKS_MAX as u64 * u64::from(limits::BLOB_CHUNK_BYTES);
                out.reserve(chunk.blob_len.min(window) as usize);
            }
            out.extend_from_slice(&chunk.bytes);
        }
        Ok(out)
    }
}

pub(crate) fn spawn_fetch(
    client: NetClient,
    hash: Hash32,
    mut providers: Vec<PeerId>,
) -> BlobReceiver {
    let (tx, rx) = mpsc::channel(limits::BLOB_RECEIVER_CHUNKS_MAX);
    providers.sort();
    providers.dedup();
    providers.truncate(limits::BLOB_PROVIDERS_MAX);
    tokio::spawn(async move {
        let mut fetch = Fetch::new(client, hash, providers, tx.clone());
        if let Err(err) = fetch.run().await {
            let _ = tx.send(Err(err)).await;
        }
    });
    BlobReceiver { rx }
}

struct Provider {
    peer: PeerId,
    in_flight: usize,
    failures: u32,
}

impl Provider {
    fn usable(&self) -> bool {
        self.failures < limits::BLOB_PROVIDER_FAILURES_MAX
    }
}

/// The state of one fetch. Chunks are requested no further than a window past the next chunk
/// owed to the caller, so memory stays bounded however the providers reorder their answers.
struct Fetch {
    client: NetClient,
    hash: Hash32,
    providers: Vec<Provider>,
    out: mpsc::Sender<Result<BlobChunk, FetchError>>,
    blob_len: Option<u64>,
    /// Chunks to request, lowest first.
    todo: std::collections::BTreeSet<u32>,
    /// Chunks received, not yet delivered.
    received: BTreeMap<u32, Vec<u8>>,
    attempts: HashMap<u32, u32>,
    /// `Busy` answers per chunk (counted apart from failed attempts).
    busy: HashMap<u32, u32>,
    next_to_deliver: u32,
}

type Answer = (u32, usize, Result<BlobResponse, NetError>);

impl Fetch {
    fn new(
        client: NetClient,
        hash: Hash32,
        peers: Vec<PeerId>,
        out: mpsc::Sender<Result<BlobChunk, FetchError>>,
    ) -> Fetch {
        let providers = peers
            .into_iter()
            .map(|peer| Provider {
                peer,
                in_flight: 0,
                failures: 0,
            })
            .collect();
        Fetch {
            client,
            hash,
            providers,
            out,
            blob_len: None,
            todo: [0].into_iter().collect(),
            received: BTreeMap::new(),
            attempts: HashMap::new(),
            busy: HashMap::new(),
            next_to_deliver: 0,
        }
    }

    async fn run(&mut self) -> Result<(), FetchError> {
        if self.providers.is_empty() {
            return Err(FetchError::NoProviders);
        }
        let mut in_flight: FuturesUnordered<futures::future::BoxFuture<'static, Answer>> =
            FuturesUnordered::new();
        loop {
            self.deliver().await?;
            if self.done() {
                return Ok(());
            }
            while let Some((index, provider)) = self.next_request() {
                in_flight.push(Box::pin(request(
                    self.client.clone(),
                    self.providers[provider].peer,
                    self.hash,
                    index,
                    provider,
                )));
            }
            let Some(answer) = in_flight.next().await else {
                // Nothing in flight and nothing could be sent: every provider is exhausted.
                return Err(FetchError::ProvidersExhausted);
            };
            self.on_answer(answer)?;
        }
    }

    fn done(&self) -> bool {
        match self.blob_len {
            Some(len) => u64::from(self.next_to_deliver) >= chunk_count(len),
            None => false,
        }
    }

    /// The next (chunk, provider) to ask, if the window and the providers allow one.
    fn next_request(&mut self) -> Option<(u32, usize)> {
        // Until the first answer names the blob length, ask for chunk 0 from one provider at a time.
        if self.blob_len.is_none() && self.providers.iter().any(|p| p.in_flight > 0) {
            return None;
        }
        let window_end = self
            .next_to_deliver
            .saturating_add(limits::BLOB_WINDOW_CHUNKS_MAX as u32);
        let index = *self.todo.iter().next()?;
        if index >= window_end {
            return None;
        }
        let provider = (0..self.providers.len())
            .filter(|&i| {
                self.providers[i].usable()
                    && self.providers[i].in_flight < limits::BLOB_REQUESTS_PER_PROVIDER_MAX
            })
            .min_by_key(|&i| {
                (
                    self.providers[i].in_flight,
                    self.providers[i].failures,
                    (i + index as usize) % self.providers.len(),
                )
            })?;
        self.todo.remove(&index);
        self.providers[provider].in_flight += 1;
        Some((index, provider))
    }

    fn on_answer(&mut self, (index, provider, result): Answer) -> Result<(), FetchError> {
        self.providers[provider].in_flight -= 1;
        match result {
            Ok(BlobResponse::Chunk {
                blob_len,
                chunk_index,
                bytes,
            }) if chunk_index == index && self.len_agrees(blob_len) => {
                self.on_length(blob_len);
                self.received.insert(index, bytes);
                return Ok(());
            }
            // An empty blob has no chunk 0: the provider names its length this way.
            Ok(BlobResponse::OutOfRange { blob_len: 0 }) if index == 0 && self.len_agrees(0) => {
                self.on_length(0);
                return Ok(());
            }
            // Busy is not the provider's fault: ask again (the request already waited a backoff).
            Ok(BlobResponse::Busy) => return self.on_busy(index),
            // A provider without the blob, or with a different length, is useless for this fetch.
            Ok(BlobResponse::NotFound)
            | Ok(BlobResponse::OutOfRange { .. })
            | Ok(BlobResponse::Chunk { .. }) => {
                self.providers[provider].failures = limits::BLOB_PROVIDER_FAILURES_MAX;
            }
            Err(NetError::Stopped) => return Err(FetchError::Stopped),
            // Timeouts, dropped connections, failed dials: count, and re-request elsewhere.
            Err(_) => self.providers[provider].failures += 1,
        }
        let attempts = self.attempts.entry(index).or_insert(0);
        *attempts += 1;
        if *attempts >= limits::BLOB_CHUNK_ATTEMPTS_MAX {
            return Err(FetchError::ChunkAttempts {
                index,
                attempts: *attempts,
            });
        }
        if !self.providers.iter().any(Provider::usable) {
            return Err(FetchError::ProvidersExhausted);
        }
        self.todo.insert(index);
        Ok(())
    }

    fn on_busy(&mut self, index: u32) -> Result<(), FetchError> {
        let retries = self.busy.entry(index).or_insert(0);
        *retries += 1;
        if *retries >= limits::BLOB_CHUNK_BUSY_RETRIES_MAX {
            return Err(FetchError::ChunkBusy {
                index,
                retries: *retries,
            });
        }
        self.todo.insert(index);
        Ok(())
    }

    fn len_agrees(&self, blob_len: u64) -> bool {
        self.blob_len.is_none_or(|len| len == blob_len)
    }

    fn on_length(&mut self, blob_len: u64) {
        if self.blob_len.is_some() {
            return;
        }
        self.blob_len = Some(blob_len);
        // chunk_count is bounded by BLOB_BYTES_MAX / BLOB_CHUNK_BYTES (the decoder checked blob_len).
        let count = chunk_count(blob_len) as u32;
        self.todo.extend(1..count);
    }

    async fn deliver(&mut self) -> Result<(), FetchError> {
        let Some(blob_len) = self.blob_len else {
            return Ok(());
        };
        while let Some(bytes) = self.received.remove(&self.next_to_deliver) {
            let offset = u64::from(self.next_to_deliver) * u64::from(limits::BLOB_CHUNK_BYTES);
            let chunk = BlobChunk {
                blob_len,
                offset,
                bytes,
            };
            // Awaiting here is the back-pressure: a slow reader stops new requests.
            self.out
                .send(Ok(chunk))
                .await
                .map_err(|_| FetchError::Stopped)?;
            self.next_to_deliver += 1;
        }
        Ok(())
    }
}

async fn request(
    client: NetClient,
    peer: PeerId,
    hash: Hash32,
    index: u32,
    provider: usize,
) -> Answer {
    let result = client
        .request_chunk(
            peer,
            BlobRequest {
                hash,
                chunk_index: index,
            },
        )
        .await;
    if matches!(result, Ok(BlobResponse::Busy)) {
        tokio::time::sleep(BUSY_BACKOFF).await;
    }
    (index, provider, result)
}
