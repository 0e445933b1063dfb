//! The trainer's step-hash tree: a Merkle tree over the hashes of the trainer's state after every inner step.
//!
//! Leaf `i` is `Hash32::of(state_i)`, where `state_i` is the canonical byte encoding of the trainer's full state after
//! `i` inner steps of the round (`state_0` is the committed start state). The encoding is the step executor's
//! (for the tch trainer: params LE f32 ‖ optimizer state LE ‖ step u64 LE). A round of H inner steps has H + 1 leaves;
//! the commitment carries only the root and H. Nodes hash as BLAKE3(0x00 ‖ leaf) and BLAKE3(0x01 ‖ left ‖ right);
//! a level with an odd count promotes its last node unchanged. A path is the list of siblings from leaf to root; its
//! length is fixed by (index, leaf count), so a path of the wrong length is rejected.

use serde::{Deserialize, Serialize};
use types::Hash32;

/// Siblings from a leaf up to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerklePath {
    pub siblings: Vec<Hash32>,
}

/// What a trainer records while it trains: one leaf per state, starting with the start state.
#[derive(Debug, Clone, Default)]
pub struct StepLog {
    pub leaves: Vec<Hash32>,
}

impl StepLog {
    /// Records the state after the next step (or the start state, first).
    pub fn record(&mut self, state: &[u8]) {
        self.leaves.push(Hash32::of(state));
    }

    pub fn root(&self) -> Hash32 {
        step_root(&self.leaves)
    }

    pub fn path(&self, index: usize) -> MerklePath {
        step_path(&self.leaves, index)
    }
}

fn leaf_node(leaf: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(&leaf.0);
    Hash32(*h.finalize().as_bytes())
}

fn inner_node(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(&left.0);
    h.update(&right.0);
    Hash32(*h.finalize().as_bytes())
}

fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| {
            if pair.len() == 2 {
                inner_node(&pair[0], &pair[1])
            } else {
                pair[0]
            }
        })
        .collect()
}

/// The root over `leaves` (at least one leaf).
pub fn step_root(leaves: &[Hash32]) -> Hash32 {
    assert!(
        !leaves.is_empty(),
        "a step tree has at least the start state"
    );
    let mut level: Vec<Hash32> = leaves.iter().map(leaf_node).collect();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// The path of leaf `index`.
pub fn step_path(leaves: &[Hash32], index: usize) -> MerklePath {
    assert!(index < leaves.len(), "leaf index in range");
    let mut level: Vec<Hash32> = leaves.iter().map(leaf_node).collect();
    let mut index = index;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        let sibling = index ^ 1;
        if sibling < level.len() {
            siblings.push(level[sibling]);
        }
        level = next_level(&level);
        index /= 2;
    }
    MerklePath { siblings }
}

/// True when `leaf` is leaf `index` of the tree of `leaf_count` leaves with `root`.
pub fn path_valid(
    root: &Hash32,
    leaf_count: u64,
    index: u64,
    leaf: &Hash32,
    path: &MerklePath,
) -> bool {
    if index >= leaf_count {
        return false;
    }
    let mut node = leaf_node(leaf);
    let mut index = index;
    let mut width = leaf_count;
    let mut siblings = path.siblings.iter();
    while width > 1 {
        let sibling = index ^ 1;
        if sibling < width {
            let Some(s) = siblings.next() else {
                return false;
            };
            node = if index.is_multiple_of(2) {
                inner_node(&node, s)
            } else {
                inner_node(s, &node)
            };
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none() && node == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n)
            .map(|i| Hash32::of(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn every_path_verifies_and_no_other_leaf_does() {
        for n in 1..=13 {
            let l = leaves(n);
            let root = step_root(&l);
            for i in 0..n {
                let path = step_path(&l, i);
                assert!(
                    path_valid(&root, n as u64, i as u64, &l[i], &path),
                    "n {n} i {i}"
                );
                let other = Hash32::of(b"other");
                assert!(!path_valid(&root, n as u64, i as u64, &other, &path));
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(!path_valid(&root, n as u64, j as u64, &l[i], &path) || l[i] == l[j]);
                }
                let mut longer = path.clone();
                longer.siblings.push(Hash32::ZERO);
                assert!(!path_valid(&root, n as u64, i as u64, &l[i], &longer));
            }
            assert!(!path_valid(
                &root,
                n as u64,
                n as u64,
                &l[0],
                &step_path(&l, 0)
            ));
        }
    }
}
