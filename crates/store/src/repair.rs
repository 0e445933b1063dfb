//! The repair loop: a sans-IO state machine that notices pieces without a live, trusted holder and asks for them to be
//! rebuilt from any k others onto a peer chosen by rendezvous hashing; plus `rebuild_piece`, the I/O that carries a
//! rebuild out over `PieceProvider`s.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::Arc;

use types::limits::store::{
    REPAIR_ATTEMPTS_MAX, REPAIR_IN_FLIGHT_MAX, REPAIR_TIMEOUT_MS, STORAGE_PEERS_MAX,
};
use types::PeerId;

use crate::cid::Cid;
use crate::erasure::{self, ErasureParams};
use crate::fetch::fetch_blob;
use crate::local::{LocalStore, StoreError};
use crate::manifest::ErasureLayout;
use crate::placement;
use crate::provider::{LocalProvider, PieceProvider, ProviderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairInput {
    /// Keep this collection's pieces alive.
    Collection {
        root: Cid,
        layout: ErasureLayout,
    },
    PeerUp(PeerId),
    PeerDown(PeerId),
    /// The audit loop stopped trusting this peer.
    Banned(PeerId),
    /// `provider` holds (or no longer holds) `piece`: from provider records, a failed fetch or a failed audit.
    Holding {
        piece: Cid,
        provider: PeerId,
        holds: bool,
    },
    Tick {
        now_ms: u64,
    },
    /// The outcome of a `Rebuild` action.
    Rebuilt {
        root: Cid,
        piece_index: u16,
        target: PeerId,
        ok: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// Rebuild piece `piece_index` of `root` from `sources` ((piece index, holder), k of them) and place it on `target`.
    Rebuild {
        root: Cid,
        piece_index: u16,
        target: PeerId,
        sources: Vec<(u16, PeerId)>,
    },
    /// Fewer than k pieces have a live holder: the collection cannot be rebuilt until holders come back.
    Unrecoverable {
        root: Cid,
        available: usize,
        needed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairCounters {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub unrecoverable: u64,
}

#[derive(Debug, Clone)]
struct CollectionState {
    layout: ErasureLayout,
    holders: Vec<BTreeSet<PeerId>>,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    deadline_ms: u64,
}

#[derive(Debug, Default)]
pub struct RepairMachine {
    collections: BTreeMap<Cid, CollectionState>,
    piece_owner: BTreeMap<Cid, (Cid, u16)>,
    peers: BTreeSet<PeerId>,
    banned: BTreeSet<PeerId>,
    in_flight: BTreeMap<(Cid, u16), InFlight>,
    attempts: BTreeMap<(Cid, u16), u32>,
    reported_unrecoverable: BTreeSet<Cid>,
    counters: RepairCounters,
}

impl RepairMachine {
    pub fn new() -> RepairMachine {
        RepairMachine::default()
    }

    pub fn counters(&self) -> RepairCounters {
        self.counters
    }

    /// Live, trusted holders of each piece of `root`.
    pub fn holders(&self, root: Cid) -> Vec<Vec<PeerId>> {
        let Some(c) = self.collections.get(&root) else {
            return Vec::new();
        };
        c.holders
            .iter()
            .map(|h| h.iter().copied().filter(|p| self.usable(p)).collect())
            .collect()
    }

    fn usable(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer) && !self.banned.contains(peer)
    }

    pub fn handle(&mut self, input: RepairInput) -> Vec<RepairAction> {
        match input {
            RepairInput::Collection { root, layout } => {
                for (index, piece) in layout.pieces.iter().enumerate() {
                    self.piece_owner.insert(*piece, (root, index as u16));
                }
                let holders = vec![BTreeSet::new(); layout.pieces.len()];
                self.collections
                    .entry(root)
                    .or_insert(CollectionState { layout, holders });
            }
            RepairInput::PeerUp(peer) => {
                if self.peers.len() < STORAGE_PEERS_MAX {
                    self.peers.insert(peer);
                }
            }
            RepairInput::PeerDown(peer) => {
                self.peers.remove(&peer);
            }
            RepairInput::Banned(peer) => {
                self.banned.insert(peer);
            }
            RepairInput::Holding {
                piece,
                provider,
                holds,
            } => self.set_holding(piece, provider, holds),
            RepairInput::Tick { now_ms } => return self.tick(now_ms),
            RepairInput::Rebuilt {
                root,
                piece_index,
                target,
                ok,
            } => {
                if self.in_flight.remove(&(root, piece_index)).is_none() {
                    return Vec::new();
                }
                if ok {
                    self.counters.succeeded += 1;
                    self.attempts.remove(&(root, piece_index));
                    let piece = self.collections[&root].layout.pieces[piece_index as usize];
                    self.set_holding(piece, target, true);
                } else {
                    self.counters.failed += 1;
                }
            }
        }
        Vec::new()
    }

    fn set_holding(&mut self, piece: Cid, provider: PeerId, holds: bool) {
        let Some(&(root, index)) = self.piece_owner.get(&piece) else {
            return;
        };
        let holders = &mut self
            .collections
            .get_mut(&root)
            .expect("owner implies collection")
            .holders[index as usize];
        if holds {
            holders.insert(provider);
        } else {
            holders.remove(&provider);
        }
    }

    fn tick(&mut self, now_ms: u64) -> Vec<RepairAction> {
        let timed_out: Vec<(Cid, u16)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline_ms <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        for key in timed_out {
            self.in_flight.remove(&key);
            self.counters.failed += 1;
        }
        let mut actions = Vec::new();
        let roots: Vec<Cid> = self.collections.keys().copied().collect();
        for root in roots {
            self.plan_collection(root, now_ms, &mut actions);
        }
        actions
    }

    fn plan_collection(&mut self, root: Cid, now_ms: u64, actions: &mut Vec<RepairAction>) {
        let holders = self.holders(root);
        let layout = &self.collections[&root].layout;
        let k = layout.data_pieces as usize;
        let available: Vec<(u16, PeerId)> = holders
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.first().map(|p| (i as u16, *p)))
            .collect();
        let missing: Vec<u16> = (0..holders.len() as u16)
            .filter(|i| holders[*i as usize].is_empty())
            .collect();
        if missing.is_empty() {
            self.reported_unrecoverable.remove(&root);
            return;
        }
        if available.len() < k {
            if self.reported_unrecoverable.insert(root) {
                self.counters.unrecoverable += 1;
                actions.push(RepairAction::Unrecoverable {
                    root,
                    available: available.len(),
                    needed: k,
                });
            }
            return;
        }
        let usable: Vec<PeerId> = self
            .peers
            .iter()
            .copied()
            .filter(|p| !self.banned.contains(p))
            .collect();
        let placed = placement::place(root, layout.total_pieces, &usable);
        let sources: Vec<(u16, PeerId)> = available.iter().take(k).copied().collect();
        for index in missing {
            if self.in_flight.len() >= REPAIR_IN_FLIGHT_MAX
                || self.in_flight.contains_key(&(root, index))
            {
                continue;
            }
            let attempts = self.attempts.entry((root, index)).or_insert(0);
            if *attempts >= REPAIR_ATTEMPTS_MAX {
                continue;
            }
            let Some(target) = choose_target(root, index, &placed, &usable, &holders) else {
                continue;
            };
            *attempts += 1;
            self.in_flight.insert(
                (root, index),
                InFlight {
                    deadline_ms: now_ms + REPAIR_TIMEOUT_MS,
                },
            );
            self.counters.started += 1;
            actions.push(RepairAction::Rebuild {
                root,
                piece_index: index,
                target,
                sources: sources.clone(),
            });
        }
    }
}

/// The rendezvous placement's peer for the piece if it holds nothing of this collection, else the best-ranked peer
/// that holds nothing of it, else the best-ranked peer at all.
fn choose_target(
    root: Cid,
    index: u16,
    placed: &[PeerId],
    usable: &[PeerId],
    holders: &[Vec<PeerId>],
) -> Option<PeerId> {
    let holding: BTreeSet<PeerId> = holders.iter().flatten().copied().collect();
    if let Some(p) = placed.get(index as usize) {
        if !holding.contains(p) {
            return Some(*p);
        }
    }
    let ranked = placement::rank(root, index, usable);
    ranked
        .iter()
        .find(|p| !holding.contains(p))
        .or(ranked.first())
        .copied()
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("source peer {0} is not reachable")]
    UnknownPeer(PeerId),
    #[error("could not fetch source piece {index}: {error}")]
    Source { index: u16, error: String },
    #[error(transparent)]
    Erasure(#[from] crate::erasure::ErasureError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("target refused the piece: {0}")]
    Target(#[from] ProviderError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Carries out a `Rebuild`: fetches the k source pieces (verified) into `work` (the repairing node's own store),
/// rebuilds the piece, checks it hashes to its CID, and asks `target` to replicate it from `work`.
pub fn rebuild_piece(
    work: &Arc<LocalStore>,
    work_peer: PeerId,
    layout: &ErasureLayout,
    piece_index: u16,
    sources: &[(u16, PeerId)],
    target: &dyn PieceProvider,
    connect: &dyn Fn(PeerId) -> Option<Arc<dyn PieceProvider>>,
) -> Result<(), RebuildError> {
    rebuild_local(work, layout, piece_index, sources, connect)?;
    let piece = layout.pieces[piece_index as usize];
    let source = LocalProvider::new(work_peer, work.clone());
    target.replicate(piece, layout.piece_bytes, &source)?;
    Ok(())
}

/// Rebuilds piece `piece_index` into `work` from the k source pieces (fetched, verified, into `work` too); the
/// rebuilt bytes must hash to the piece's CID or nothing is stored. A storage node repairs its own placement so.
pub fn rebuild_local(
    work: &Arc<LocalStore>,
    layout: &ErasureLayout,
    piece_index: u16,
    sources: &[(u16, PeerId)],
    connect: &dyn Fn(PeerId) -> Option<Arc<dyn PieceProvider>>,
) -> Result<(), RebuildError> {
    let params = ErasureParams::new(layout.data_pieces, layout.total_pieces, layout.shard_bytes)?;
    for (index, peer) in sources {
        let cid = layout.pieces[*index as usize];
        let provider = connect(*peer).ok_or(RebuildError::UnknownPeer(*peer))?;
        fetch_blob(work, provider.as_ref(), cid, Some(layout.piece_bytes)).map_err(|f| {
            RebuildError::Source {
                index: *index,
                error: f.error,
            }
        })?;
    }
    let piece = layout.pieces[piece_index as usize];
    if !work.contains(piece)? {
        let mut readers = Vec::with_capacity(sources.len());
        for (index, _) in sources {
            let path = work.data_path(layout.pieces[*index as usize].0);
            readers.push((
                *index as usize,
                BufReader::with_capacity(1 << 20, File::open(&path)?),
            ));
        }
        let tmp = work
            .dir()
            .join("tmp")
            .join(format!("rebuild-{}-{piece_index}", piece.0.to_hex()));
        let mut wanted = vec![(
            piece_index as usize,
            BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
        )];
        let rebuilt =
            erasure::rebuild_pieces(params, &mut readers, layout.piece_bytes, &mut wanted);
        let flushed = wanted
            .pop()
            .expect("one writer")
            .1
            .into_inner()
            .map_err(|e| e.into_error());
        let stored = rebuilt.map_err(RebuildError::from).and_then(|_| {
            flushed?;
            // The rebuilt bytes must hash to the piece's CID, or nothing is stored.
            work.put_reader(
                BufReader::new(File::open(&tmp)?),
                layout.piece_bytes,
                Some(piece),
            )?;
            Ok(())
        });
        let _ = std::fs::remove_file(&tmp);
        stored?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ErasureLayout {
        ErasureLayout {
            data_pieces: 3,
            total_pieces: 5,
            shard_bytes: 64,
            piece_bytes: 64,
            pieces: (0..5u8).map(|i| Cid::of(&[i])).collect(),
        }
    }

    fn setup() -> (RepairMachine, Cid, Vec<PeerId>) {
        let mut m = RepairMachine::new();
        let root = Cid::of(b"root");
        let peers: Vec<PeerId> = (0..8u8).map(|i| PeerId([i; 32])).collect();
        m.handle(RepairInput::Collection {
            root,
            layout: layout(),
        });
        for p in &peers {
            m.handle(RepairInput::PeerUp(*p));
        }
        for (i, piece) in layout().pieces.iter().enumerate() {
            m.handle(RepairInput::Holding {
                piece: *piece,
                provider: peers[i],
                holds: true,
            });
        }
        (m, root, peers)
    }

    #[test]
    fn healthy_collection_needs_nothing() {
        let (mut m, _, _) = setup();
        assert!(m.handle(RepairInput::Tick { now_ms: 0 }).is_empty());
    }

    #[test]
    fn lost_holder_triggers_one_rebuild_onto_a_fresh_peer() {
        let (mut m, root, peers) = setup();
        m.handle(RepairInput::PeerDown(peers[1]));
        let actions = m.handle(RepairInput::Tick { now_ms: 0 });
        assert_eq!(actions.len(), 1, "{actions:?}");
        let RepairAction::Rebuild {
            piece_index,
            target,
            sources,
            ..
        } = &actions[0]
        else {
            panic!()
        };
        assert_eq!(*piece_index, 1);
        assert!(
            !peers[..5].contains(target),
            "target holds nothing of the collection"
        );
        assert_eq!(sources.len(), 3);
        assert!(sources.iter().all(|(_, p)| *p != peers[1]));
        // In flight: not asked twice.
        assert!(m.handle(RepairInput::Tick { now_ms: 1 }).is_empty());
        m.handle(RepairInput::Rebuilt {
            root,
            piece_index: 1,
            target: *target,
            ok: true,
        });
        assert!(m.handle(RepairInput::Tick { now_ms: 2 }).is_empty());
        assert_eq!(m.counters().succeeded, 1);
        assert_eq!(m.holders(root)[1], vec![*target]);
    }

    #[test]
    fn banned_holders_count_as_lost_and_too_few_is_unrecoverable() {
        let (mut m, root, peers) = setup();
        m.handle(RepairInput::Banned(peers[0]));
        let actions = m.handle(RepairInput::Tick { now_ms: 0 });
        assert!(
            matches!(&actions[..], [RepairAction::Rebuild { piece_index: 0, .. }]),
            "{actions:?}"
        );
        for p in &peers[1..4] {
            m.handle(RepairInput::PeerDown(*p));
        }
        let actions = m.handle(RepairInput::Tick {
            now_ms: REPAIR_TIMEOUT_MS + 1,
        });
        assert_eq!(
            actions,
            vec![RepairAction::Unrecoverable {
                root,
                available: 1,
                needed: 3
            }]
        );
        assert!(
            m.handle(RepairInput::Tick {
                now_ms: REPAIR_TIMEOUT_MS + 2
            })
            .is_empty(),
            "reported once"
        );
    }

    #[test]
    fn failed_rebuilds_retry_up_to_the_limit() {
        let (mut m, root, peers) = setup();
        m.handle(RepairInput::PeerDown(peers[2]));
        let mut starts = 0;
        for t in 0..(REPAIR_ATTEMPTS_MAX as u64 + 3) {
            for a in m.handle(RepairInput::Tick { now_ms: t }) {
                let RepairAction::Rebuild {
                    piece_index,
                    target,
                    ..
                } = a
                else {
                    panic!()
                };
                starts += 1;
                m.handle(RepairInput::Rebuilt {
                    root,
                    piece_index,
                    target,
                    ok: false,
                });
            }
        }
        assert_eq!(starts, REPAIR_ATTEMPTS_MAX);
        assert_eq!(m.counters().failed, REPAIR_ATTEMPTS_MAX as u64);
    }
}
