//! A run's run file and dataset over the network, so a node joins knowing only a bootstrap address and the run id.
//!
//! Members serve their run file under `run_file_key(run_id)` over the blob protocol and announce it in the DHT. A
//! joiner asks the key's providers (and its connected peers) and keeps the first file that parses and whose genesis
//! hashes to the run id; the genesis carries the digest of the rest of the file (`runspec::spec_digest`), so no peer
//! can feed it a different run. The one field the run id does not bind, the dataset path, is replaced by the
//! joiner's own. The dataset travels as a store collection (`RunSpec::dataset_collection`): members
//! publish their dataset folder into their store (the same folder gives the same root CID everywhere) and serve
//! it; a joiner fetches the collection (the store checks every piece against its CID) and uses it only once its
//! training tokens hash to the genesis dataset hash.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use data::PreparedDataset;
use net::{BlobSource, NetClient, NetError};
use store::collection::{self, CollectionError, InputFile};
use store::erasure::ErasureParams;
use store::{Cid, CollectionKind, FileRole, LocalStore, StoreError};
use types::limits::node as limits;
use types::limits::store::{ERASURE_DATA_PIECES_DEFAULT, ERASURE_TOTAL_PIECES_DEFAULT};
use types::{Hash32, PeerId, RunId};

use crate::runspec::{dataset_hash, parse_spec, Run, RunSpecError};
use crate::storage::{StorageError, StoreNode};

#[derive(Debug, thiserror::Error)]
pub enum RunFetchError {
    #[error("no peer served the run file of run {run} within {waited_ms} ms ({tried} peers tried; last: {last})")]
    RunFileNotFound {
        run: Hash32,
        waited_ms: u64,
        tried: usize,
        last: String,
    },
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error(transparent)]
    Spec(#[from] RunSpecError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("dataset collection: {0}")]
    Collection(#[from] CollectionError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("dataset: {0}")]
    Data(#[from] data::DataError),
    #[error("the dataset {path} is not here and the run file names no dataset collection to fetch it from")]
    NoDataset { path: PathBuf },
    #[error(
        "dataset collection {cid}: its training tokens hash to {got}, the genesis names {expected}"
    )]
    DatasetMismatch {
        cid: String,
        got: Hash32,
        expected: Hash32,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blocking task failed: {0}")]
    Task(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunFetchError + '_ {
    move |source| RunFetchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The blob-protocol name (and DHT key) under which members serve the run file of `run_id`.
pub fn run_file_key(run_id: RunId) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/run-file/v1");
    hasher.update(&run_id.0 .0);
    Hash32(*hasher.finalize().as_bytes())
}

/// Where a data dir keeps the run file of `run_id` (next to the run's persisted state, and to `dataset/`, the
/// dataset a joiner fetched).
pub fn run_file_path(data_dir: &Path, run_id: Hash32) -> PathBuf {
    data_dir
        .join("runs")
        .join(&run_id.to_hex()[..16])
        .join("run.json")
}

/// Serves the run file under `run_file_key`, and every other blob from `inner`.
pub struct RunFileBlobs {
    key: Hash32,
    bytes: Arc<Vec<u8>>,
    inner: Arc<dyn BlobSource>,
}

impl RunFileBlobs {
    pub fn new(run_id: RunId, bytes: Vec<u8>, inner: Arc<dyn BlobSource>) -> RunFileBlobs {
        RunFileBlobs {
            key: run_file_key(run_id),
            bytes: Arc::new(bytes),
            inner,
        }
    }
}

impl BlobSource for RunFileBlobs {
    fn blob_len(&self, hash: &Hash32) -> Option<u64> {
        if *hash == self.key {
            return Some(self.bytes.len() as u64);
        }
        self.inner.blob_len(hash)
    }

    fn read(&self, hash: &Hash32, offset: u64, len: u32) -> Option<Vec<u8>> {
        if *hash != self.key {
            return self.inner.read(hash, offset, len);
        }
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len as usize)?;
        self.bytes.get(start..end).map(<[u8]>::to_vec)
    }
}

/// Fetches the run file of `run_id` from peers: the DHT providers of its key, then every connected peer, in
/// rounds until RUN_FILE_FETCH_TIMEOUT_MS. Returns the first file that parses and checks to `run_id`; a peer that
/// serves anything else is not asked again. The file's dataset path (local to whoever wrote it, and not bound by the
/// run id) is replaced by `dataset_dir`, so a peer cannot make this node read a folder of the peer's choosing.
pub async fn fetch_run_file(
    net: &NetClient,
    run_id: RunId,
    dataset_dir: &Path,
) -> Result<Run, RunFetchError> {
    let key = run_file_key(run_id);
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(limits::RUN_FILE_FETCH_TIMEOUT_MS);
    let me = net.local_peer();
    let mut bad: BTreeSet<PeerId> = BTreeSet::new();
    let mut tried: BTreeSet<PeerId> = BTreeSet::new();
    let mut last = String::from("no peer connected");
    while tokio::time::Instant::now() < deadline {
        for peer in candidates(net, key).await? {
            if peer == me || bad.contains(&peer) {
                continue;
            }
            tried.insert(peer);
            let bytes = match fetch_bounded(net, key, peer, limits::RUN_FILE_BYTES_MAX).await {
                Ok(bytes) => bytes,
                Err(reason) => {
                    last = format!("peer {peer}: {reason}");
                    continue;
                }
            };
            let origin = PathBuf::from(format!("<from peer {peer}>"));
            let checked = parse_spec(&bytes, &origin).and_then(|mut spec| {
                spec.dataset = dataset_dir.to_owned();
                Run::from_spec(spec)
            });
            match checked {
                Ok(run) if run.run_id == run_id => return Ok(run),
                Ok(run) => last = format!("peer {peer} served run {}", run.run_id.0),
                Err(e) => last = e.to_string(),
            }
            tracing::warn!(%peer, reason = %last, "peer served a bad run file");
            bad.insert(peer);
        }
        tokio::time::sleep(Duration::from_millis(limits::RUN_FILE_FETCH_RETRY_MS)).await;
    }
    Err(RunFetchError::RunFileNotFound {
        run: run_id.0,
        waited_ms: started.elapsed().as_millis() as u64,
        tried: tried.len(),
        last,
    })
}

/// The DHT providers of `key` (bounded wait), then the connected peers not among them.
async fn candidates(net: &NetClient, key: Hash32) -> Result<Vec<PeerId>, NetError> {
    let lookup = Duration::from_millis(limits::RUN_FILE_PEER_TIMEOUT_MS);
    let mut out = match tokio::time::timeout(lookup, net.get_providers(key)).await {
        Ok(Ok(providers)) => providers,
        _ => Vec::new(),
    };
    for info in net.peers().await? {
        if !out.contains(&info.peer) {
            out.push(info.peer);
        }
    }
    Ok(out)
}

/// Blob `key` from `peer`, refused past `max` bytes or after RUN_FILE_PEER_TIMEOUT_MS.
async fn fetch_bounded(
    net: &NetClient,
    key: Hash32,
    peer: PeerId,
    max: u64,
) -> Result<Vec<u8>, String> {
    let mut receiver = net.fetch_blob(key, vec![peer]);
    let mut out = Vec::new();
    let timeout = Duration::from_millis(limits::RUN_FILE_PEER_TIMEOUT_MS);
    let fetched = tokio::time::timeout(timeout, async {
        while let Some(chunk) = receiver.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if chunk.blob_len > max || out.len() as u64 + chunk.bytes.len() as u64 > max {
                return Err(format!(
                    "{} bytes, above the limit of {max}",
                    chunk.blob_len
                ));
            }
            out.extend_from_slice(&chunk.bytes);
        }
        Ok(())
    })
    .await;
    match fetched {
        Ok(Ok(())) if out.is_empty() => Err("empty".into()),
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out".into()),
    }
}

/// The files of a prepared dataset as a collection, in payload order: train shards, val shards, tokenizer,
/// `dataset.json`.
pub fn dataset_files(dataset: &PreparedDataset) -> Vec<InputFile> {
    let m = &dataset.manifest;
    let mut files = Vec::new();
    let mut add = |name: &str, role| {
        files.push(InputFile {
            path: dataset.dir.join(name),
            name: name.into(),
            role,
        })
    };
    for shard in &m.train.shards {
        add(&shard.file, FileRole::TrainShard);
    }
    for shard in &m.val.shards {
        add(&shard.file, FileRole::ValShard);
    }
    add(data::prepare::TOKENIZER_JSON, FileRole::Tokenizer);
    add(data::prepare::DATASET_JSON, FileRole::Stats);
    files
}

/// The collection kind of a prepared dataset: its tokenizer and statistics.
pub fn dataset_kind(manifest: &data::prepare::DatasetManifest) -> CollectionKind {
    let m = manifest;
    let stats = vec![
        ("train_tokens".to_string(), m.train.tokens),
        ("val_tokens".to_string(), m.val.tokens),
        ("train_text_bytes".to_string(), m.train.bytes),
        ("val_text_bytes".to_string(), m.val.bytes),
        ("vocab_size".to_string(), m.vocab_size as u64),
        ("documents".to_string(), m.documents),
    ];
    CollectionKind::Dataset {
        tokenizer: m.tokenizer_spec.clone(),
        stats,
    }
}

/// Publishes a run's prepared dataset into `store`; returns its root CID. Deterministic: the name comes from the
/// dataset hash and the erasure parameters from the defaults and the size, so every member holding the same folder
/// publishes the same collection.
pub fn publish_dataset(
    store: &LocalStore,
    dataset: &PreparedDataset,
    hash: Hash32,
) -> Result<Cid, CollectionError> {
    let files = dataset_files(dataset);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).map_or(0, |m| m.len()))
        .sum();
    let params = ErasureParams::for_payload(
        ERASURE_DATA_PIECES_DEFAULT,
        ERASURE_TOTAL_PIECES_DEFAULT,
        total,
    )?;
    let name = format!("dataset-{}", &hash.to_hex()[..16]);
    let manifest = collection::publish(
        store,
        dataset_kind(&dataset.manifest),
        &name,
        &files,
        params,
    )?;
    Ok(manifest.cid())
}

/// The dataset folder `dir`, if it holds the run's dataset (its training tokens hash to the genesis hash).
fn matching_dataset(dir: &Path, expected: Hash32) -> Option<PreparedDataset> {
    let dataset = PreparedDataset::open(dir).ok()?;
    let tokens = dataset.train_tokens().ok()?;
    (dataset_hash(&tokens) == expected).then_some(dataset)
}

/// Where this node reads the run's dataset, fetched if needed, and served to peers either way:
/// 1. the run file's `dataset` folder, if it holds the dataset;
/// 2. `run_dir/dataset`, a copy fetched earlier;
/// 3. the dataset collection from the run's members, into `run_dir/dataset` (the store checks every piece
///    against its CID; the folder is used only once its tokens hash to the genesis dataset hash).
///
/// In cases 1 and 2 a node whose store lacks the collection publishes the folder into it, so it serves it too.
pub async fn resolve_dataset(
    store_node: &StoreNode,
    run: &Run,
    run_dir: &Path,
) -> Result<PathBuf, RunFetchError> {
    let expected = run.genesis.dataset_cid;
    let root: Option<Cid> = match &run.spec.dataset_collection {
        Some(text) => Some(
            text.parse()
                .map_err(|e: store::CidError| RunSpecError::Invalid {
                    field: "dataset_collection",
                    reason: e.to_string(),
                })?,
        ),
        None => None,
    };
    let fetched_dir = run_dir.join("dataset");
    let local = {
        let dirs = [run.spec.dataset.clone(), fetched_dir.clone()];
        blocking(move || {
            Ok(dirs
                .into_iter()
                .find_map(|d| matching_dataset(&d, expected)))
        })
        .await?
    };
    if let Some(dataset) = local {
        let dir = dataset.dir.clone();
        if let Some(root) = root {
            serve_local_dataset(store_node, dataset, expected, root).await?;
        }
        return Ok(dir);
    }
    let Some(root) = root else {
        return Err(RunFetchError::NoDataset {
            path: run.spec.dataset.clone(),
        });
    };
    let partial = run_dir.join("dataset.part");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
    }
    println!("fetching dataset {root} from peers");
    let (manifest, report) = store_node.get_collection(root, &partial).await?;
    let check = partial.clone();
    let got = blocking(move || {
        let dataset = PreparedDataset::open(&check)?;
        Ok(dataset_hash(&dataset.train_tokens()?))
    })
    .await?;
    if got != expected {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(RunFetchError::DatasetMismatch {
            cid: root.to_string(),
            got,
            expected,
        });
    }
    if fetched_dir.exists() {
        std::fs::remove_dir_all(&fetched_dir).map_err(io_error(&fetched_dir))?;
    }
    std::fs::rename(&partial, &fetched_dir).map_err(io_error(&fetched_dir))?;
    let providers: BTreeSet<PeerId> = report.fetched.iter().map(|(_, p)| *p).collect();
    println!(
        "dataset {root} verified: {} files, {} bytes, {} pieces from {} peers",
        manifest.files.len(),
        manifest.payload_bytes(),
        report.fetched.len(),
        providers.len()
    );
    Ok(fetched_dir)
}

/// Publishes a local dataset folder into the node's store if the store lacks collection `root`, and announces it.
async fn serve_local_dataset(
    store_node: &StoreNode,
    dataset: PreparedDataset,
    hash: Hash32,
    root: Cid,
) -> Result<(), RunFetchError> {
    let store = store_node.store().clone();
    let published = blocking(move || {
        if store.contains(root)? {
            return Ok(None);
        }
        Ok(Some(publish_dataset(&store, &dataset, hash)?))
    })
    .await?;
    match published {
        Some(cid) if cid != root => {
            tracing::warn!(%cid, %root, "this dataset folder publishes to another collection; not serving the run's");
        }
        Some(_) => {
            store_node.announce_all().await?;
        }
        None => {}
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RunFetchError> + Send + 'static,
) -> Result<T, RunFetchError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RunFetchError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_file_blobs_serve_the_file_in_bounds_and_pass_the_rest_on() {
        let inner = Arc::new(net::MemoryBlobs::default());
        let run_id = RunId(Hash32::of(b"run"));
        let blobs = RunFileBlobs::new(run_id, b"0123456789".to_vec(), inner);
        let key = run_file_key(run_id);
        assert_eq!(blobs.blob_len(&key), Some(10));
        assert_eq!(blobs.read(&key, 2, 3), Some(b"234".to_vec()));
        assert_eq!(blobs.read(&key, 8, 3), None);
        assert_eq!(blobs.read(&key, u64::MAX, 3), None);
        assert_eq!(blobs.blob_len(&Hash32::of(b"other")), None);
        assert_ne!(run_file_key(RunId(Hash32::of(b"another"))), key);
    }
}
