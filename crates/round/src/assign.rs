//! Pure functions anyone can recompute: round seeds, data assignment, the committee and proposer ranks.

use types::{Hash32, PeerId, RoundNumber, RunId};

fn hash_parts(domain: &[u8], parts: &[&[u8]]) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain);
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Hash32(*hasher.finalize().as_bytes())
}

/// The seed of a round: fixed by the run, the round number and the agreed base model, so no one can grind it
/// without changing the model everyone agreed on.
pub fn round_seed(run_id: RunId, round: RoundNumber, base_model_hash: Hash32) -> Hash32 {
    hash_parts(
        b"commonweight/round-seed",
        &[&run_id.0 .0, &round.0.to_le_bytes(), &base_model_hash.0],
    )
}

/// The seed of attempt `attempt` of a round: attempt 0 uses the round seed itself; a stalled round re-draws its
/// committee from a seed every node derives the same way, so dead members cannot hold a round forever.
pub fn attempt_seed(round_seed: Hash32, attempt: usize) -> Hash32 {
    if attempt == 0 {
        return round_seed;
    }
    hash_parts(
        b"commonweight/attempt-seed",
        &[&round_seed.0, &(attempt as u64).to_le_bytes()],
    )
}

/// The shard ids `peer` trains on in the round with `seed`: `count` distinct ids in `0..shards`, sorted.
/// Pure: a verifier recomputes it from public inputs. `dataset_cid` ties the draw to the manifest.
pub fn assign_data(
    seed: Hash32,
    peer: PeerId,
    dataset_cid: Hash32,
    shards: u32,
    count: u32,
) -> Vec<u32> {
    assert!(
        shards > 0 && count <= shards,
        "assign_data: count {count} must not exceed shards {shards}"
    );
    let key = hash_parts(
        b"commonweight/assign-data",
        &[&seed.0, &peer.0, &dataset_cid.0],
    );
    let mut reader = blake3::Hasher::new_keyed(&key.0).finalize_xof();
    let mut ids: Vec<u32> = Vec::with_capacity(count as usize);
    // Rejection sampling on a 64-bit draw: the modulo bias is below 2^-32 for any shard count we allow.
    while ids.len() < count as usize {
        let mut word = [0u8; 8];
        reader.fill(&mut word);
        let id = (u64::from_le_bytes(word) % u64::from(shards)) as u32;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids
}

fn rank_key(domain: &[u8], seed: Hash32, peer: PeerId) -> Hash32 {
    hash_parts(domain, &[&seed.0, &peer.0])
}

/// The round's trainers (and voters): the `size` members with the smallest `H(seed, peer)`. Sorted by peer id.
pub fn committee(seed: Hash32, members: &[PeerId], size: usize) -> Vec<PeerId> {
    let mut keyed: Vec<(Hash32, PeerId)> = members
        .iter()
        .map(|&p| (rank_key(b"commonweight/committee", seed, p), p))
        .collect();
    let size = size.min(keyed.len());
    if size < keyed.len() {
        keyed.select_nth_unstable(size);
        keyed.truncate(size);
    }
    let mut chosen: Vec<PeerId> = keyed.into_iter().map(|(_, p)| p).collect();
    chosen.sort_unstable();
    chosen
}

/// The order in which committee members act as proposer: rank 0 first, then rank 1 if rank 0 stays silent, ...
pub fn proposer_ranks(seed: Hash32, committee: &[PeerId]) -> Vec<PeerId> {
    let mut keyed: Vec<(Hash32, PeerId)> = committee
        .iter()
        .map(|&p| (rank_key(b"commonweight/proposer", seed, p), p))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// Digest of a sorted member list.
pub fn members_digest(members: &[PeerId]) -> Hash32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"commonweight/members");
    hasher.update(&(members.len() as u64).to_le_bytes());
    for member in members {
        hasher.update(&member.0);
    }
    Hash32(*hasher.finalize().as_bytes())
}

/// What votes agree on: the run, the round about to start, its model and its members.
pub fn state_digest(
    run_id: RunId,
    next_round: RoundNumber,
    model_hash: Hash32,
    members: &[PeerId],
) -> Hash32 {
    hash_parts(
        b"commonweight/state",
        &[
            &run_id.0 .0,
            &next_round.0.to_le_bytes(),
            &model_hash.0,
            &members_digest(members).0,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: u8) -> Vec<PeerId> {
        (0..n).map(|i| PeerId([i; 32])).collect()
    }

    #[test]
    fn assignment_is_pure_distinct_sorted_and_depends_on_peer() {
        let seed = Hash32::of(b"s");
        let cid = Hash32::of(b"d");
        let a = assign_data(seed, PeerId([1; 32]), cid, 100, 8);
        assert_eq!(a, assign_data(seed, PeerId([1; 32]), cid, 100, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.len() == 8 && a.iter().all(|&i| i < 100));
        assert_ne!(a, assign_data(seed, PeerId([2; 32]), cid, 100, 8));
        assert_eq!(
            assign_data(seed, PeerId([1; 32]), cid, 4, 4),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn committee_is_a_sorted_subset_and_ranks_permute_it() {
        let members = peers(50);
        let seed = Hash32::of(b"x");
        let chosen = committee(seed, &members, 10);
        assert_eq!(chosen.len(), 10);
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(chosen, committee(Hash32::of(b"y"), &members, 10));
        let mut ranks = proposer_ranks(seed, &chosen);
        ranks.sort();
        assert_eq!(ranks, chosen);
        assert_eq!(committee(seed, &members[..3], 10).len(), 3);
    }
}
