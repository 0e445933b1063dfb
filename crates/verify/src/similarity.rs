//! Copy and replay detection: compact sketches of updates, compared within a round and against earlier rounds.
//!
//! A sketch keeps (1) a count sketch of `SKETCH_BUCKETS` buckets: coordinate i adds s(i)·Δᵢ to bucket b(i), with b
//! and s from a seeded hash of i, so ⟨sketch(x), sketch(y)⟩ is an unbiased estimate of ⟨x, y⟩ and the sketch cosine
//! estimates the true cosine with error about 1/√buckets for unrelated vectors; and (2) the indices of the
//! `SKETCH_TOPK` largest |Δᵢ|, for the top-k overlap (Jaccard). Cost is O(N log k) per update and the sketch is
//! about 17 KiB whatever the model size, so `HISTORY_ROUNDS_MAX` rounds of them fit in memory.
//!
//! Two updates are copies when |cosine| ≥ `COPY_COSINE_MIN_MILLI` (catches scaled and sign-flipped copies) or when
//! their top-k sets overlap ≥ `COPY_TOPK_JACCARD_MIN_MILLI` (catches copies with noise added on small coordinates).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber};

/// A compact fingerprint of one update.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    pub buckets: Vec<f64>,
    /// Sorted indices of the largest magnitudes.
    pub topk: Vec<u64>,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Sketches `update` (finite values only). `seed` must be the same for all sketches that are compared.
///
/// The count sketch reads one coordinate in `SKETCH_STRIDE` (offset from the seed): cosines of long updates are
/// estimated as well from a quarter of their coordinates (error ≈ 1/√buckets either way), a copy is a copy on any
/// subset, and the sketch is the costliest gate that every verifier runs on every update. One splitmix64 per 4
/// sampled coordinates: each 16-bit lane gives one its bucket (low 12 bits) and sign (bit 15). The top-k indices
/// are over all coordinates.
pub fn sketch(update: &[f32], seed: u64) -> Sketch {
    const LANES: usize = 4;
    const SKETCH_STRIDE: usize = 4;
    const { assert!(limits::SKETCH_BUCKETS <= 1 << 12) };
    let mut buckets = vec![0.0f64; limits::SKETCH_BUCKETS];
    let offset = (splitmix64(seed) % SKETCH_STRIDE as u64) as usize;
    let sampled: Vec<f32> = update
        .iter()
        .skip(offset)
        .step_by(SKETCH_STRIDE)
        .copied()
        .collect();
    for (block, chunk) in sampled.chunks(LANES).enumerate() {
        let h = splitmix64(seed ^ block as u64);
        for (lane, &v) in chunk.iter().enumerate() {
            let bits = (h >> (16 * lane)) as usize;
            let bucket = (bits & 0xFFF) % limits::SKETCH_BUCKETS;
            let sign = if bits & 0x8000 != 0 { 1.0 } else { -1.0 };
            buckets[bucket] += sign * v as f64;
        }
    }
    Sketch {
        buckets,
        topk: topk_indices(update),
    }
}

/// Sorted indices of the `SKETCH_TOPK` largest |values|; ties keep the lower index, so the result is deterministic.
fn topk_indices(update: &[f32]) -> Vec<u64> {
    // Min-heap of (|v| bits, Reverse(index)): for non-negative finite f32, bit order is value order. The cached
    // minimum lets almost every coordinate be dismissed with one integer comparison.
    let mut heap: BinaryHeap<Reverse<(u32, Reverse<u64>)>> =
        BinaryHeap::with_capacity(limits::SKETCH_TOPK + 1);
    let mut min_bits = 0u32;
    for (i, &v) in update.iter().enumerate() {
        let bits = v.abs().to_bits();
        if heap.len() == limits::SKETCH_TOPK && bits <= min_bits {
            // Equal bits lose to the lower index already in the heap.
            continue;
        }
        let key = (bits, Reverse(i as u64));
        if heap.len() < limits::SKETCH_TOPK {
            heap.push(Reverse(key));
        } else if heap.peek().is_some_and(|Reverse(min)| key > *min) {
            heap.pop();
            heap.push(Reverse(key));
        }
        if heap.len() == limits::SKETCH_TOPK {
            min_bits = heap.peek().map_or(0, |Reverse((b, _))| *b);
        }
    }
    let mut topk: Vec<u64> = heap.into_iter().map(|Reverse((_, Reverse(i)))| i).collect();
    topk.sort_unstable();
    topk
}

/// Cosine of two sketches; 0 when either is zero.
pub fn cosine(a: &Sketch, b: &Sketch) -> f64 {
    let dot: f64 = a.buckets.iter().zip(&b.buckets).map(|(x, y)| x * y).sum();
    let na: f64 = a.buckets.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.buckets.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// Jaccard overlap of two sorted top-k index sets.
pub fn topk_jaccard(a: &Sketch, b: &Sketch) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.topk.len() && j < b.topk.len() {
        match a.topk[i].cmp(&b.topk[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.topk.len() + b.topk.len() - common;
    if union == 0 {
        return 0.0;
    }
    common as f64 / union as f64
}

/// True when two sketches are copies of each other (see the module docs).
pub fn is_copy(cosine: f64, jaccard: f64) -> bool {
    cosine.abs() >= limits::COPY_COSINE_MIN_MILLI as f64 / 1000.0
        || jaccard >= limits::COPY_TOPK_JACCARD_MIN_MILLI as f64 / 1000.0
}

/// An earlier update this verifier kept.
#[derive(Debug, Clone)]
pub struct SeenUpdate {
    pub round: RoundNumber,
    pub peer: PeerId,
    pub cid: Hash32,
    pub sketch: Sketch,
}

/// A match found against history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyMatch {
    pub of_peer: PeerId,
    pub of_round: RoundNumber,
    pub cosine: f64,
    pub topk_jaccard: f64,
}

/// Sketches and CIDs of the last `HISTORY_ROUNDS_MAX` rounds.
#[derive(Debug, Clone, Default)]
pub struct History {
    rounds: VecDeque<(RoundNumber, Vec<SeenUpdate>)>,
    cids: HashMap<Hash32, (RoundNumber, PeerId)>,
}

impl History {
    /// Where a CID was first seen, if it is in history.
    pub fn seen_cid(&self, cid: &Hash32) -> Option<(RoundNumber, PeerId)> {
        self.cids.get(cid).copied()
    }

    /// The first earlier update (oldest round first, then in insertion order) that `sketch` copies, if any.
    pub fn find_copy(&self, sketch: &Sketch) -> Option<CopyMatch> {
        self.find_match(sketch, |m| is_copy(m.cosine, m.topk_jaccard))
    }

    /// The first earlier update (same order) whose comparison with `sketch` satisfies `is_match`: for a caller
    /// with its own copy rule (the node's gate counts only the cosine, see `node::copy_gate`).
    pub fn find_match(
        &self,
        sketch: &Sketch,
        is_match: impl Fn(&CopyMatch) -> bool,
    ) -> Option<CopyMatch> {
        self.rounds
            .iter()
            .flat_map(|(_, seen)| seen)
            .map(|seen| compare(sketch, seen))
            .find(|m| is_match(m))
    }

    /// Adds a finished round; drops the oldest beyond `HISTORY_ROUNDS_MAX`.
    pub fn push_round(
        &mut self,
        round: RoundNumber,
        seen: Vec<SeenUpdate>,
        cids: Vec<(Hash32, PeerId)>,
    ) {
        assert!(
            seen.len() <= limits::UPDATES_PER_ROUND_MAX,
            "bounded by the round's submissions"
        );
        for (cid, peer) in cids {
            self.cids.entry(cid).or_insert((round, peer));
        }
        self.rounds.push_back((round, seen));
        while self.rounds.len() > limits::HISTORY_ROUNDS_MAX {
            let (old, _) = self.rounds.pop_front().expect("non-empty");
            self.cids.retain(|_, (r, _)| *r != old);
        }
    }
}

/// Compares a sketch with one earlier update.
pub fn copy_match(sketch: &Sketch, seen: &SeenUpdate) -> Option<CopyMatch> {
    Some(compare(sketch, seen)).filter(|m| is_copy(m.cosine, m.topk_jaccard))
}

/// Both similarity measures of a sketch against one earlier update, copy or not.
fn compare(sketch: &Sketch, seen: &SeenUpdate) -> CopyMatch {
    CopyMatch {
        of_peer: seen.peer,
        of_round: seen.round,
        cosine: cosine(sketch, &seen.sketch),
        topk_jaccard: topk_jaccard(sketch, &seen.sketch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (splitmix64(seed * 1_000_003 + i as u64) as f64 / u64::MAX as f64 - 0.5) as f32
            })
            .collect()
    }

    #[test]
    fn copies_match_and_unrelated_do_not() {
        let a = noise(20_000, 1);
        let b = noise(20_000, 2);
        let sa = sketch(&a, 7);
        let sb = sketch(&b, 7);
        assert!(cosine(&sa, &sb).abs() < 0.1);
        assert!(topk_jaccard(&sa, &sb) < 0.1);
        assert!(!is_copy(cosine(&sa, &sb), topk_jaccard(&sa, &sb)));
        let scaled: Vec<f32> = a.iter().map(|v| -3.0 * v).collect();
        let ss = sketch(&scaled, 7);
        assert!((cosine(&sa, &ss) + 1.0).abs() < 1e-9);
        assert_eq!(topk_jaccard(&sa, &ss), 1.0);
    }
}
