//! Fetching a collection from providers: the manifest, then any k pieces in parallel, each verified as it streams;
//! a provider that sends bad bytes is reported and the piece is taken from elsewhere.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use types::limits::store::{FETCH_PROVIDERS_PER_PIECE_MAX, MANIFEST_BYTES_MAX};
use types::PeerId;

use crate::bao::{self, VerifyError};
use crate::cid::Cid;
use crate::collection::{self, CollectionError};
use crate::local::{LocalStore, StoreError};
use crate::manifest::Manifest;
use crate::provider::PieceProvider;

/// What the fetcher needs from the network: who provides a blob. The node answers from the DHT over `net`.
pub trait ProviderLookup: Send + Sync {
    fn providers(&self, blob: Cid) -> Vec<Arc<dyn PieceProvider>>;
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no provider returned a valid manifest for {0}")]
    NoManifest(Cid),
    #[error("could fetch only {have} of the {needed} pieces needed ({failures} failed fetches; last: {last_error})")]
    NotEnoughPieces {
        needed: usize,
        have: usize,
        failures: usize,
        last_error: String,
    },
    #[error(transparent)]
    Collection(#[from] CollectionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One provider that failed to deliver a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    pub peer: PeerId,
    pub blob: Cid,
    /// The piece index, or None for the manifest.
    pub piece_index: Option<usize>,
    /// True when bytes arrived but failed verification (corrupt or lying provider), false for missing/unreachable.
    pub bad_bytes: bool,
    pub error: String,
}

#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// (piece index, provider) for each piece fetched.
    pub fetched: Vec<(usize, PeerId)>,
    /// Pieces that were already held locally.
    pub already_held: Vec<usize>,
    pub failures: Vec<FetchFailure>,
}

/// Fetches a blob from one provider into the local store, verifying as it streams.
pub fn fetch_blob(
    store: &LocalStore,
    provider: &dyn PieceProvider,
    blob: Cid,
    expected_size: Option<u64>,
) -> Result<u64, FetchFailure> {
    let failure = |bad_bytes: bool, error: String| FetchFailure {
        peer: provider.peer(),
        blob,
        piece_index: None,
        bad_bytes,
        error,
    };
    let response = provider
        .read_ranges(blob, &bao::all_chunks())
        .map_err(|e| failure(false, e.to_string()))?;
    match store.put_from_response(blob, expected_size, response) {
        Ok(size) => Ok(size),
        Err(StoreError::Verify(VerifyError::Io(e))) => Err(failure(false, e)),
        Err(StoreError::Verify(VerifyError::Truncated)) => {
            Err(failure(false, "truncated response".into()))
        }
        Err(StoreError::Verify(e)) => Err(failure(true, e.to_string())),
        Err(e @ StoreError::HashMismatch { .. }) => Err(failure(true, e.to_string())),
        Err(e) => Err(failure(false, e.to_string())),
    }
}

/// Gets the manifest `root` into the local store (from any provider) and decodes it.
pub fn fetch_manifest(
    store: &LocalStore,
    root: Cid,
    lookup: &dyn ProviderLookup,
    report: &mut FetchReport,
) -> Result<Manifest, FetchError> {
    if !store.contains(root)? {
        let mut got = false;
        for provider in lookup
            .providers(root)
            .iter()
            .take(FETCH_PROVIDERS_PER_PIECE_MAX)
        {
            match fetch_manifest_from(store, provider.as_ref(), root) {
                Ok(()) => {
                    got = true;
                    break;
                }
                Err(failure) => report.failures.push(failure),
            }
        }
        if !got {
            return Err(FetchError::NoManifest(root));
        }
    }
    match collection::load_manifest(store, root) {
        Ok(manifest) => Ok(manifest),
        Err(e) => {
            // A blob that hashes right but is not a valid manifest: never keep it around as one.
            store.remove(root)?;
            Err(e.into())
        }
    }
}

fn fetch_manifest_from(
    store: &LocalStore,
    provider: &dyn PieceProvider,
    root: Cid,
) -> Result<(), FetchFailure> {
    // Check the claimed size before any body is read, so a huge "manifest" is refused at once.
    let mut response = provider
        .read_ranges(root, &bao::all_chunks())
        .map_err(|e| FetchFailure {
            peer: provider.peer(),
            blob: root,
            piece_index: None,
            bad_bytes: false,
            error: e.to_string(),
        })?;
    let mut size = [0u8; 8];
    let claimed =
        std::io::Read::read_exact(&mut response, &mut size).map(|_| u64::from_le_bytes(size));
    let fail = |bad_bytes, error: String| FetchFailure {
        peer: provider.peer(),
        blob: root,
        piece_index: None,
        bad_bytes,
        error,
    };
    let claimed = claimed.map_err(|e| fail(false, e.to_string()))?;
    if claimed > MANIFEST_BYTES_MAX as u64 {
        return Err(fail(true, format!("manifest claimed {claimed} bytes")));
    }
    let rest = std::io::Read::chain(&size[..], response);
    store
        .put_from_response(root, Some(claimed), rest)
        .map(|_| ())
        .map_err(|e| fail(true, e.to_string()))
}

/// Makes sure at least k pieces of the collection are in the local store, fetching missing ones in parallel
/// (up to `parallel` at once) from their providers. Originals (0..k) are tried first: they decode without algebra.
pub fn fetch_pieces(
    store: &LocalStore,
    manifest: &Manifest,
    lookup: &dyn ProviderLookup,
    parallel: usize,
    report: &mut FetchReport,
) -> Result<(), FetchError> {
    let layout = &manifest.erasure;
    let k = layout.data_pieces as usize;
    let mut queue = VecDeque::new();
    for (index, piece) in layout.pieces.iter().enumerate() {
        if store.contains(*piece)? {
            report.already_held.push(index);
        } else {
            queue.push_back(index);
        }
    }
    let held = report.already_held.len();
    if held >= k {
        return Ok(());
    }
    let shared = Mutex::new(FetchState {
        queue,
        held,
        in_flight: 0,
        fetched: Vec::new(),
        failures: Vec::new(),
    });
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, k) {
            scope.spawn(|| fetch_worker(store, manifest, lookup, &shared));
        }
    });
    let state = shared.into_inner().expect("workers do not panic");
    report.fetched.extend(state.fetched);
    report.failures.extend(state.failures);
    if state.held < k {
        return Err(FetchError::NotEnoughPieces {
            needed: k,
            have: state.held,
            failures: report.failures.len(),
            last_error: report
                .failures
                .last()
                .map_or_else(|| "none".to_string(), |f| f.error.clone()),
        });
    }
    Ok(())
}

struct FetchState {
    queue: VecDeque<usize>,
    held: usize,
    in_flight: usize,
    fetched: Vec<(usize, PeerId)>,
    failures: Vec<FetchFailure>,
}

fn fetch_worker(
    store: &LocalStore,
    manifest: &Manifest,
    lookup: &dyn ProviderLookup,
    shared: &Mutex<FetchState>,
) {
    let layout = &manifest.erasure;
    let k = layout.data_pieces as usize;
    loop {
        let index = {
            let mut state = shared.lock().expect("no worker panics");
            if state.held >= k || (state.queue.is_empty() && state.in_flight == 0) {
                return;
            }
            // Never fetch more than k: wait while the fetches in flight could still complete the set.
            if state.held + state.in_flight >= k || state.queue.is_empty() {
                drop(state);
                std::thread::sleep(std::time::Duration::from_millis(2));
                continue;
            }
            state.in_flight += 1;
            state.queue.pop_front().expect("checked non-empty")
        };
        let piece = layout.pieces[index];
        let mut got = None;
        let mut failures = Vec::new();
        for provider in lookup
            .providers(piece)
            .iter()
            .take(FETCH_PROVIDERS_PER_PIECE_MAX)
        {
            match fetch_blob(store, provider.as_ref(), piece, Some(layout.piece_bytes)) {
                Ok(_) => {
                    got = Some(provider.peer());
                    break;
                }
                Err(mut failure) => {
                    failure.piece_index = Some(index);
                    failures.push(failure);
                }
            }
        }
        let mut state = shared.lock().expect("no worker panics");
        state.in_flight -= 1;
        state.failures.extend(failures);
        if let Some(peer) = got {
            state.held += 1;
            state.fetched.push((index, peer));
        }
    }
}

/// `data get`: manifest, then k pieces, then decode into `out_dir`. Pins what it fetched.
pub fn get_collection(
    store: &LocalStore,
    root: Cid,
    lookup: &dyn ProviderLookup,
    out_dir: &Path,
    parallel: usize,
) -> Result<(Manifest, FetchReport), FetchError> {
    let mut report = FetchReport::default();
    let manifest = fetch_manifest(store, root, lookup, &mut report)?;
    fetch_pieces(store, &manifest, lookup, parallel, &mut report)?;
    collection::pin_collection(store, root, &manifest)?;
    store.register_collection(root, &manifest.name)?;
    collection::decode_to_dir(store, &manifest, out_dir)?;
    Ok((manifest, report))
}
