//! A storage node's maintenance pass: scrub held pieces, repair this node's share of every kept collection (fetch
//! a missing piece from a holder, or rebuild it from any k others), and audit the other holders.
//!
//! Repair is pull-based: every storage node computes rendezvous placement of each kept collection over the live
//! storage peers (the connected peers that announced they keep the collection, and itself) and makes sure it holds the pieces
//! placed on it. When a holder leaves, is banned by an audit, or loses a piece to corruption, placement moves that
//! piece to the next peer in its ranking (or the holder itself rebuilds it), and that peer pulls or rebuilds it.
//! Nobody pushes bytes at anyone, so a peer cannot fill another's disk. Views of who is live may differ for a while;
//! the cost of that is a piece held twice, never a piece lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::audit::{AuditInput, AuditMachine};
use store::collection;
use store::fetch::{self, ProviderLookup};
use store::local::{COUNTER_REPAIR_FAILED, COUNTER_REPAIR_STARTED, COUNTER_REPAIR_SUCCEEDED};
use store::provider::LocalProvider;
use store::repair::rebuild_local;
use store::{Cid, LocalStore, Manifest, PieceProvider, StoreError};
use types::limits::store::{
    KEPT_COLLECTIONS_MAX, NET_PROVIDER_LOOKUP_TIMEOUT_MS, SCRUB_BYTES_PER_PASS_MAX,
};
use types::{Hash32, PeerId};

use crate::storage::{audit_tick, blocking, keeper_key, NetLookup, StorageError, StoreNode};

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaintenanceReport {
    /// Held blobs hashed again.
    pub scrubbed: usize,
    /// Of them, how many no longer matched their address (removed, to be repaired).
    pub corrupt: usize,
    /// Pieces placed on this node that it fetched whole from a holder.
    pub refetched: usize,
    /// Pieces placed on this node that no live peer held, rebuilt from k others.
    pub rebuilt: usize,
    /// Pieces placed on this node that it could neither fetch nor rebuild this pass.
    pub failed: usize,
    /// Audit challenges sent to other holders.
    pub audit_challenges: u64,
}

/// The state a storage node keeps between passes.
#[derive(Default)]
pub struct Maintainer {
    audit: AuditMachine,
    /// Scrubbing resumes after this blob hash, so successive passes cover the whole store.
    scrub_after: Option<Hash32>,
    /// Collections whose keeper record this node has put in the DHT.
    keepers_announced: BTreeSet<Cid>,
}

/// One collection as this pass sees it: its manifest, the live storage peers, and who holds each piece.
struct Kept {
    root: Cid,
    manifest: Manifest,
    storage_peers: Vec<PeerId>,
    holders: Vec<Vec<PeerId>>,
}

impl StoreNode {
    /// Keeps collection `root`: fetches its manifest from peers, pins it, registers it, and announces it, so
    /// maintenance passes pull and repair this node's share of its pieces.
    pub async fn keep(&self, root: Cid) -> Result<Manifest, StorageError> {
        let store = self.store().clone();
        let lookup = self.lookup().clone();
        let manifest = blocking(move || {
            let kept = store.collections()?.len();
            if kept >= KEPT_COLLECTIONS_MAX && !store.contains(root)? {
                return Err(StorageError::TooManyCollections {
                    max: KEPT_COLLECTIONS_MAX,
                });
            }
            let mut report = fetch::FetchReport::default();
            let manifest = fetch::fetch_manifest(&store, root, &*lookup, &mut report)?;
            store.pin(root)?;
            store.register_collection(root, &manifest.name)?;
            Ok(manifest)
        })
        .await?;
        self.announce(root).await?;
        self.client().start_providing(keeper_key(root)).await?;
        Ok(manifest)
    }

    /// One maintenance pass over every collection this node keeps (`now_ms` and `seed` drive the audit machine).
    pub async fn maintain(
        &self,
        maintainer: &Arc<Mutex<Maintainer>>,
        now_ms: u64,
        seed: u64,
    ) -> Result<MaintenanceReport, StorageError> {
        let live = self.live_peers().await?;
        let roots = {
            let store = self.store().clone();
            blocking(move || Ok(store.collections()?)).await?
        };
        let mut kept_roots = Vec::new();
        for (root, _) in roots.into_iter().take(KEPT_COLLECTIONS_MAX) {
            let first_time = maintainer
                .lock()
                .expect("lock")
                .keepers_announced
                .insert(root);
            if first_time {
                // A publisher (`data add`) keeps what it published without calling `keep`.
                self.client().start_providing(keeper_key(root)).await?;
            }
            let providers = self.providers_of(keeper_key(root)).await;
            kept_roots.push((root, live_storage_peers(&providers, &live, self.me())));
        }
        let store = self.store().clone();
        let lookup = self.lookup().clone();
        let me = self.me();
        let maintainer = maintainer.clone();
        let (report, newly_held) = blocking(move || {
            let mut state = maintainer.lock().expect("lock");
            maintain_blocking(
                &store,
                &lookup,
                me,
                &kept_roots,
                &live,
                &mut state,
                now_ms,
                seed,
            )
        })
        .await?;
        for piece in newly_held {
            self.announce(piece).await?;
        }
        Ok(report)
    }

    fn me(&self) -> PeerId {
        self.client().local_peer()
    }

    async fn live_peers(&self) -> Result<BTreeSet<PeerId>, StorageError> {
        Ok(self
            .client()
            .peers()
            .await?
            .into_iter()
            .map(|info| info.peer)
            // A peer an audit banned is no storage peer: placement moves its pieces elsewhere.
            .filter(|peer| !self.lookup().is_bad(peer))
            .collect())
    }

    /// The DHT's providers of `key`; none if the lookup fails or times out (this pass then keeps to itself).
    async fn providers_of(&self, key: Hash32) -> Vec<PeerId> {
        let timeout = Duration::from_millis(NET_PROVIDER_LOOKUP_TIMEOUT_MS);
        match tokio::time::timeout(timeout, self.client().get_providers(key)).await {
            Ok(Ok(peers)) => peers,
            _ => Vec::new(),
        }
    }
}

/// The storage peers placement runs over: the connected peers that announced they keep the collection
/// (`keeper_key`), and this node.
fn live_storage_peers(providers: &[PeerId], live: &BTreeSet<PeerId>, me: PeerId) -> Vec<PeerId> {
    let mut peers: BTreeSet<PeerId> = providers
        .iter()
        .filter(|p| live.contains(p))
        .copied()
        .collect();
    peers.insert(me);
    peers.into_iter().collect()
}

#[allow(clippy::too_many_arguments)] // One pass's inputs; bundling them would only rename them.
fn maintain_blocking(
    store: &Arc<LocalStore>,
    lookup: &NetLookup,
    me: PeerId,
    roots: &[(Cid, Vec<PeerId>)],
    live: &BTreeSet<PeerId>,
    state: &mut Maintainer,
    now_ms: u64,
    seed: u64,
) -> Result<(MaintenanceReport, Vec<Cid>), StorageError> {
    let mut report = MaintenanceReport::default();
    scrub(store, state, &mut report)?;
    let mut newly_held = Vec::new();
    for (root, storage_peers) in roots {
        let Some(kept) = load_kept(store, lookup, *root, storage_peers, live, me)? else {
            continue;
        };
        newly_held.extend(repair_share(store, lookup, me, &kept, &mut report)?);
        track_holders(&mut state.audit, &kept, me);
    }
    let before = state.audit.counters().challenges;
    audit_tick(&mut state.audit, lookup, store, now_ms, seed)?;
    report.audit_challenges = state.audit.counters().challenges - before;
    Ok((report, newly_held))
}

/// Hashes held blobs again, up to SCRUB_BYTES_PER_PASS_MAX, resuming where the last pass stopped. A corrupt blob
/// is removed by the store (`LocalStore::verify`), so the repair step below sees it as missing.
fn scrub(
    store: &LocalStore,
    state: &mut Maintainer,
    report: &mut MaintenanceReport,
) -> Result<(), StorageError> {
    let mut held = store.list()?;
    held.sort_by_key(|info| info.cid.0);
    let start = match state.scrub_after {
        Some(after) => held.partition_point(|info| info.cid.0 <= after),
        None => 0,
    };
    let mut bytes = 0u64;
    let mut last = None;
    for info in held[start..].iter() {
        if bytes >= SCRUB_BYTES_PER_PASS_MAX {
            break;
        }
        bytes += info.size;
        last = Some(info.cid.0);
        report.scrubbed += 1;
        match store.verify(info.cid) {
            Ok(()) => {}
            Err(StoreError::Corrupt(cid, why)) => {
                tracing::warn!(%cid, %why, "scrub found a corrupt blob; removed it");
                report.corrupt += 1;
            }
            // Removed between the listing and now (a GC or a concurrent quarantine): nothing to check.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Past the end: the next pass starts from the beginning again.
    state.scrub_after = if start + report.scrubbed >= held.len() {
        None
    } else {
        last
    };
    Ok(())
}

/// The manifest of `root` (held locally: `keep` fetched it) and the live holders of each of its pieces.
fn load_kept(
    store: &LocalStore,
    lookup: &NetLookup,
    root: Cid,
    storage_peers: &[PeerId],
    live: &BTreeSet<PeerId>,
    me: PeerId,
) -> Result<Option<Kept>, StorageError> {
    let manifest = match collection::load_manifest(store, root) {
        Ok(manifest) => manifest,
        Err(e) => {
            // A corrupt manifest was removed by the store; the next `keep` fetches it again.
            tracing::warn!(%root, error = %e, "kept collection has no readable manifest");
            return Ok(None);
        }
    };
    let mut holders = Vec::with_capacity(manifest.erasure.pieces.len());
    for piece in &manifest.erasure.pieces {
        let mut live_holders: Vec<PeerId> = lookup
            .providers(*piece)
            .iter()
            .map(|p| p.peer())
            .filter(|p| live.contains(p))
            .collect();
        if store.contains(*piece)? {
            live_holders.push(me);
        }
        holders.push(live_holders);
    }
    Ok(Some(Kept {
        root,
        manifest,
        storage_peers: storage_peers.to_vec(),
        holders,
    }))
}

/// Makes sure this node holds every piece placement puts on it. Returns the pieces it newly holds.
fn repair_share(
    store: &Arc<LocalStore>,
    lookup: &NetLookup,
    me: PeerId,
    kept: &Kept,
    report: &mut MaintenanceReport,
) -> Result<Vec<Cid>, StorageError> {
    let layout = &kept.manifest.erasure;
    let mut newly_held = Vec::new();
    for index in crate::storage::assigned_pieces(kept.root, &kept.manifest, &kept.storage_peers, me)
    {
        let piece = layout.pieces[index];
        if store.contains(piece)? {
            store.pin(piece)?;
            continue;
        }
        store.add_counter(COUNTER_REPAIR_STARTED, 1)?;
        let refetched = kept.holders[index]
            .iter()
            .filter(|p| **p != me)
            .any(|peer| {
                fetch::fetch_blob(
                    store,
                    &lookup.provider(*peer),
                    piece,
                    Some(layout.piece_bytes),
                )
                .is_ok()
            });
        let rebuilt = !refetched && rebuild(store, lookup, me, kept, index);
        if refetched || rebuilt {
            store.pin(piece)?;
            store.add_counter(COUNTER_REPAIR_SUCCEEDED, 1)?;
            newly_held.push(piece);
            report.refetched += usize::from(refetched);
            report.rebuilt += usize::from(rebuilt);
        } else {
            store.add_counter(COUNTER_REPAIR_FAILED, 1)?;
            report.failed += 1;
        }
    }
    Ok(newly_held)
}

/// Rebuilds piece `index` from k pieces with live holders, then drops the source pieces it fetched only for this.
fn rebuild(
    store: &Arc<LocalStore>,
    lookup: &NetLookup,
    me: PeerId,
    kept: &Kept,
    index: usize,
) -> bool {
    let layout = &kept.manifest.erasure;
    let sources: Vec<(u16, PeerId)> = kept
        .holders
        .iter()
        .enumerate()
        .filter(|(j, holders)| *j != index && !holders.is_empty())
        .map(|(j, holders)| {
            // Prefer a copy held here: no transfer.
            let holder = if holders.contains(&me) {
                me
            } else {
                holders[0]
            };
            (j as u16, holder)
        })
        .take(usize::from(layout.data_pieces))
        .collect();
    if sources.len() < usize::from(layout.data_pieces) {
        tracing::warn!(root = %kept.root, index, live = sources.len(), "too few live pieces to rebuild");
        return false;
    }
    let held_before: Vec<bool> = sources
        .iter()
        .map(|(j, _)| store.contains(layout.pieces[*j as usize]).unwrap_or(true))
        .collect();
    let connect = |peer: PeerId| -> Option<Arc<dyn PieceProvider>> {
        if peer == me {
            Some(Arc::new(LocalProvider::new(me, store.clone())))
        } else {
            Some(Arc::new(lookup.provider(peer)))
        }
    };
    let result = rebuild_local(store, layout, index as u16, &sources, &connect);
    for ((j, _), held) in sources.iter().zip(held_before) {
        if !held {
            let _ = store.remove(layout.pieces[*j as usize]);
        }
    }
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(root = %kept.root, index, error = %e, "rebuild failed");
            false
        }
    }
}

/// Audits every other live holder of every piece of the collection.
fn track_holders(audit: &mut AuditMachine, kept: &Kept, me: PeerId) {
    let layout = &kept.manifest.erasure;
    for (index, holders) in kept.holders.iter().enumerate() {
        for provider in holders.iter().filter(|p| **p != me) {
            audit.handle(AuditInput::Track {
                piece: layout.pieces[index],
                size: layout.piece_bytes,
                provider: *provider,
            });
        }
    }
}

/// What `store status` and the control API's `/store` show: what the store holds, per kept collection, and its
/// audit and repair counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreView {
    pub dir: String,
    pub collections: Vec<CollectionView>,
    pub blobs: u64,
    pub pinned: u64,
    pub bytes_used: u64,
    pub quota_bytes: u64,
    pub counters: std::collections::BTreeMap<String, u64>,
    /// The running node's last maintenance pass (none when read from disk).
    pub last_pass: Option<MaintenanceReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CollectionView {
    pub root: String,
    pub name: String,
    pub total_pieces: u16,
    /// Indices of the pieces held here.
    pub held: Vec<usize>,
}

impl StoreView {
    pub fn pieces_held(&self) -> usize {
        self.collections.iter().map(|c| c.held.len()).sum()
    }
}

pub fn store_view(store: &LocalStore) -> Result<StoreView, StorageError> {
    let status = store.status()?;
    let mut collections = Vec::new();
    for (root, name) in store.collections()? {
        let (total_pieces, held) = match collection::load_manifest(store, root) {
            Ok(m) => {
                let mut held = Vec::new();
                for (index, piece) in m.erasure.pieces.iter().enumerate() {
                    if store.contains(*piece)? {
                        held.push(index);
                    }
                }
                (m.erasure.total_pieces, held)
            }
            Err(_) => (0, Vec::new()),
        };
        collections.push(CollectionView {
            root: root.to_string(),
            name,
            total_pieces,
            held,
        });
    }
    Ok(StoreView {
        dir: store.dir().display().to_string(),
        collections,
        blobs: status.blobs,
        pinned: status.pinned,
        bytes_used: status.bytes_used,
        quota_bytes: status.quota_bytes,
        counters: status.counters,
        last_pass: None,
    })
}
