//! Piece placement by rendezvous (highest-random-weight) hashing: every node computes the same placement from the
//! collection root and the peer list, and a peer leaving moves only the pieces it held.

use types::{Hash32, PeerId};

use crate::cid::Cid;

/// Weight of `peer` for piece `piece_index` of collection `root`.
pub fn score(root: Cid, piece_index: u16, peer: &PeerId) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/placement/v1");
    hasher.update(&root.0 .0);
    hasher.update(&piece_index.to_le_bytes());
    hasher.update(&peer.0);
    let digest = Hash32(*hasher.finalize().as_bytes());
    u64::from_le_bytes(digest.0[..8].try_into().expect("8 bytes"))
}

/// Peers ordered by weight for one piece, best first (ties broken by PeerId, so the order is total).
pub fn rank(root: Cid, piece_index: u16, peers: &[PeerId]) -> Vec<PeerId> {
    let mut ranked: Vec<(u64, PeerId)> = peers
        .iter()
        .map(|p| (score(root, piece_index, p), *p))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.dedup_by_key(|(_, p)| *p);
    ranked.into_iter().map(|(_, p)| p).collect()
}

/// Assigns each of `n` pieces to one peer: the best-ranked peer holding the fewest pieces so far. With at least n
/// peers every piece lands on a different peer. Empty `peers` gives an empty placement.
pub fn place(root: Cid, n: u16, peers: &[PeerId]) -> Vec<PeerId> {
    if peers.is_empty() {
        return Vec::new();
    }
    let mut load: std::collections::BTreeMap<PeerId, u32> = peers.iter().map(|p| (*p, 0)).collect();
    let mut out = Vec::with_capacity(n as usize);
    for index in 0..n {
        let ranked = rank(root, index, peers);
        let least = ranked
            .iter()
            .map(|p| load[p])
            .min()
            .expect("peers is not empty");
        let chosen = *ranked
            .iter()
            .find(|p| load[*p] == least)
            .expect("some peer has the least load");
        *load.get_mut(&chosen).expect("chosen is a peer") += 1;
        out.push(chosen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(count: u8) -> Vec<PeerId> {
        (0..count).map(|i| PeerId([i; 32])).collect()
    }

    #[test]
    fn distinct_peers_and_deterministic() {
        let root = Cid::of(b"root");
        let placed = place(root, 16, &peers(20));
        let mut unique = placed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 16);
        let mut shuffled = peers(20);
        shuffled.reverse();
        assert_eq!(place(root, 16, &shuffled), placed);
    }

    #[test]
    fn fewer_peers_than_pieces_spreads_load() {
        let placed = place(Cid::of(b"x"), 16, &peers(4));
        for p in peers(4) {
            assert_eq!(placed.iter().filter(|q| **q == p).count(), 4);
        }
        assert!(place(Cid::of(b"x"), 16, &[]).is_empty());
    }

    #[test]
    fn removing_a_peer_moves_only_its_pieces_in_rank() {
        let root = Cid::of(b"r");
        let all = peers(30);
        let gone = rank(root, 0, &all)[0];
        let rest: Vec<PeerId> = all.iter().copied().filter(|p| *p != gone).collect();
        for index in 0..16 {
            let before: Vec<PeerId> = rank(root, index, &all)
                .into_iter()
                .filter(|p| *p != gone)
                .collect();
            assert_eq!(before, rank(root, index, &rest));
        }
    }
}
