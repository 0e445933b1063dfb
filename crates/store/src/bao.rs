//! Bao-verified ranges: outboards, range responses (size prefix + bao encoding) and their streaming verification.
//!
//! A range response is `size: u64 LE` followed by bao-tree's pre-order encoding of the requested chunk ranges
//! (chunk groups of 2^BAO_CHUNK_LOG KiB). The reader checks every parent and leaf hash against the root before it
//! hands a byte on, so any byte range verifies on its own, and a wrong size fails at the last chunk.

use std::io::{self, Read, Write};

use bao_tree::io::outboard::{EmptyOutboard, PostOrderMemOutboard};
use bao_tree::io::sync::{DecodeResponseIter, Outboard, ReadAt, WriteAt};
use bao_tree::io::{BaoContentItem, DecodeError, EncodeError};
/// The chunk ranges of a range request (re-exported so callers need not name bao-tree).
pub use bao_tree::ChunkRanges;
use bao_tree::{BaoTree, BlockSize, ChunkNum};
use types::limits::store::{BAO_CHUNK_LOG, BLOB_BYTES_MAX};
use types::Hash32;

/// Chunk-group size used for every outboard and proof in commonweight.
pub fn block_size() -> BlockSize {
    BlockSize::from_chunk_log(BAO_CHUNK_LOG)
}

/// Bytes in one chunk group (16 KiB).
pub fn group_bytes() -> u64 {
    block_size().bytes() as u64
}

pub fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, block_size())
}

/// Chunk ranges covering the byte range `start..end` (rounded out to whole 1 KiB chunks).
pub fn byte_range_to_chunks(start: u64, end: u64) -> ChunkRanges {
    assert!(start <= end);
    let first = ChunkNum(start / 1024);
    let last = ChunkNum(end.div_ceil(1024));
    ChunkRanges::from(first..last)
}

/// Every chunk: asks for the whole blob (and so also proves its size).
pub fn all_chunks() -> ChunkRanges {
    ChunkRanges::all()
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("response ended early (truncated)")]
    Truncated,
    #[error("response failed its bao proof: {0}")]
    Corrupt(String),
    #[error("claimed size {claimed} but {expected} was expected")]
    SizeMismatch { claimed: u64, expected: u64 },
    #[error("claimed size {size} is over the limit {max}")]
    Oversized { size: u64, max: u64 },
    #[error("response has {0} unexpected trailing bytes or more")]
    TrailingBytes(u64),
    #[error("i/o: {0}")]
    Io(String),
}

impl From<DecodeError> for VerifyError {
    fn from(e: DecodeError) -> VerifyError {
        match e {
            DecodeError::ParentHashMismatch(node) => {
                VerifyError::Corrupt(format!("parent hash mismatch at {node:?}"))
            }
            DecodeError::LeafHashMismatch(chunk) => {
                VerifyError::Corrupt(format!("leaf hash mismatch at {chunk:?}"))
            }
            DecodeError::ParentNotFound(_) | DecodeError::LeafNotFound(_) => VerifyError::Truncated,
            DecodeError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                VerifyError::Truncated
            }
            DecodeError::Io(io) => VerifyError::Io(io.to_string()),
        }
    }
}

/// Post-order outboard and root hash of in-memory bytes.
pub fn outboard_of(data: &[u8]) -> (Hash32, Vec<u8>) {
    let ob = PostOrderMemOutboard::create(data, block_size());
    (Hash32(*ob.root.as_bytes()), ob.data)
}

/// Builds the post-order outboard of a blob of known size from its bytes pushed in pieces of any length, in one pass:
/// the result (root and outboard bytes) is identical to `outboard_of` of the concatenation. Whole chunk groups are
/// hashed straight from the caller's slice; only a group split across two pushes is copied into a carry buffer.
pub struct OutboardBuilder {
    size: u64,
    pushed: u64,
    group_bytes: usize,
    groups_total: u64,
    groups_done: u64,
    carry: Vec<u8>,
    stack: Vec<blake3::Hash>,
    outboard: Vec<u8>,
    root: Option<blake3::Hash>,
}

impl OutboardBuilder {
    pub fn new(size: u64) -> OutboardBuilder {
        let group_bytes = group_bytes() as usize;
        let outboard_bytes = tree(size).outboard_size() as usize;
        OutboardBuilder {
            size,
            pushed: 0,
            group_bytes,
            groups_total: size.div_ceil(group_bytes as u64).max(1),
            groups_done: 0,
            carry: Vec::new(),
            stack: Vec::with_capacity(64),
            outboard: Vec::with_capacity(outboard_bytes),
            root: None,
        }
    }

    /// Bytes pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Appends `data` to the blob. Panics if more than `size` bytes are pushed in all (a caller bug, not peer input).
    pub fn push(&mut self, mut data: &[u8]) {
        assert!(
            self.pushed + data.len() as u64 <= self.size,
            "pushed past the declared size"
        );
        self.pushed += data.len() as u64;
        if !self.carry.is_empty() {
            let take = (self.group_bytes - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() == self.group_bytes || self.pushed == self.size {
                let carry = std::mem::take(&mut self.carry);
                self.add_group(&carry);
                self.carry = carry;
                self.carry.clear();
            }
        }
        while data.len() >= self.group_bytes {
            let (group, rest) = data.split_at(self.group_bytes);
            self.add_group(group);
            data = rest;
        }
        if !data.is_empty() {
            if self.pushed == self.size {
                self.add_group(data);
            } else {
                self.carry.reserve(self.group_bytes);
                self.carry.extend_from_slice(data);
            }
        }
    }

    /// The root hash and post-order outboard. Panics unless exactly `size` bytes were pushed (a caller bug).
    pub fn finish(mut self) -> (Hash32, Vec<u8>) {
        assert_eq!(self.pushed, self.size, "pushed fewer bytes than declared");
        if self.size == 0 {
            self.root = Some(blake3::hash(&[]));
        }
        let root = self.root.expect("the last group sets the root");
        debug_assert_eq!(self.outboard.len() as u64, tree(self.size).outboard_size());
        (Hash32(*root.as_bytes()), self.outboard)
    }

    /// Hashes one chunk group and merges finished subtrees, in the order bao-tree's post-order outboard stores them.
    fn add_group(&mut self, group: &[u8]) {
        use blake3::hazmat::HasherExt;
        let index = self.groups_done;
        self.groups_done += 1;
        let last = self.groups_done == self.groups_total;
        if last && index == 0 {
            self.root = Some(blake3::hash(group));
            return;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(index * self.group_bytes as u64);
        hasher.update(group);
        self.stack
            .push(blake3::Hash::from(hasher.finalize_non_root()));
        // Complete subtrees close as soon as their last group is in; the ragged right edge closes at the end.
        let merges = if last {
            self.stack.len() - 1
        } else {
            self.groups_done.trailing_zeros() as usize
        };
        for _ in 0..merges {
            let right = self.stack.pop().expect("two subtrees to merge");
            let left = self.stack.pop().expect("two subtrees to merge");
            self.outboard.extend_from_slice(left.as_bytes());
            self.outboard.extend_from_slice(right.as_bytes());
            let (l, r) = (*left.as_bytes(), *right.as_bytes());
            let mode = blake3::hazmat::Mode::Hash;
            if last && self.stack.is_empty() {
                self.root = Some(blake3::hazmat::merge_subtrees_root(&l, &r, mode));
            } else {
                let cv = blake3::hazmat::merge_subtrees_non_root(&l, &r, mode);
                self.stack.push(blake3::Hash::from(cv));
            }
        }
    }
}

/// A writer that builds the outboard of everything written through it on the way to `inner`, so a blob being written
/// (e.g. an erasure piece) gets its CID and outboard without a second pass over its bytes.
pub struct OutboardWriter<W> {
    inner: W,
    builder: OutboardBuilder,
}

impl<W: Write> OutboardWriter<W> {
    /// `size` is the exact number of bytes that will be written.
    pub fn new(inner: W, size: u64) -> OutboardWriter<W> {
        OutboardWriter {
            inner,
            builder: OutboardBuilder::new(size),
        }
    }

    /// The inner writer, the blob's root hash and its post-order outboard. Panics unless exactly `size` bytes were
    /// written (a caller bug).
    pub fn finish(self) -> (W, Hash32, Vec<u8>) {
        let (hash, outboard) = self.builder.finish();
        (self.inner, hash, outboard)
    }
}

impl<W: Write> Write for OutboardWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let left = self.builder.size - self.builder.pushed;
        if data.len() as u64 > left {
            return Err(io::Error::other(format!(
                "write of {} bytes past the declared blob size ({left} left)",
                data.len()
            )));
        }
        self.inner.write_all(data)?;
        self.builder.push(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a range response for `ranges` of a blob, validating every group against the outboard as it goes
/// (so a store never serves bytes that rotted on its disk).
pub fn encode_range_response(
    data: impl ReadAt,
    outboard: impl Outboard,
    ranges: &ChunkRanges,
    mut out: impl Write,
) -> Result<(), EncodeError> {
    out.write_all(&outboard.tree().size().to_le_bytes())?;
    bao_tree::io::sync::encode_ranges_validated(data, outboard, ranges, out)
}

/// Bytes of a post-order outboard for a blob of `size` bytes.
pub fn outboard_bytes(size: u64) -> u64 {
    tree(size).outboard_size()
}

/// Blob bytes that live elsewhere (e.g. arriving from a peer), read with `read_exact_at(offset, buf)`.
struct RemoteData<F> {
    size: u64,
    read_exact_at: std::sync::Mutex<F>,
}

impl<F: FnMut(u64, &mut [u8]) -> io::Result<()>> ReadAt for RemoteData<F> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = pos.saturating_add(buf.len() as u64).min(self.size);
        let len = end.saturating_sub(pos) as usize;
        let mut read = self
            .read_exact_at
            .lock()
            .map_err(|_| io::Error::other("reader poisoned"))?;
        (*read)(pos, &mut buf[..len])?;
        Ok(len)
    }
}

impl<F> bao_tree::io::sync::Size for RemoteData<F> {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.size))
    }
}

/// Writes a range response for `ranges` of blob `hash` from parts a peer sent separately: its post-order
/// `outboard` and its bytes (read through `read_exact_at`, in increasing offset order). Nothing is checked here:
/// the reader (`decode_range_response`) verifies every hash against `hash`, so a lying peer shows up there as a
/// corrupt response. An outboard of the wrong length is refused at once.
pub fn encode_range_response_from_parts(
    hash: Hash32,
    size: u64,
    outboard: Vec<u8>,
    ranges: &ChunkRanges,
    read_exact_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    mut out: impl Write,
) -> Result<(), EncodeError> {
    if size > BLOB_BYTES_MAX || outboard.len() as u64 != outboard_bytes(size) {
        return Err(EncodeError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "outboard length does not match the blob size",
        )));
    }
    let outboard = PostOrderMemOutboard {
        root: blake3::Hash::from_bytes(hash.0),
        tree: tree(size),
        data: outboard,
    };
    let data = RemoteData {
        size,
        read_exact_at: std::sync::Mutex::new(read_exact_at),
    };
    out.write_all(&size.to_le_bytes())?;
    bao_tree::io::sync::encode_ranges(data, outboard, ranges, out)
}

/// Reads and verifies a range response for blob `hash`, streaming: each verified leaf goes to `on_leaf(offset, bytes)`
/// before the next is read. `expected_size`, when known (e.g. from a manifest), must equal the claimed size.
/// Returns the (proven, if the ranges include the last chunk) size.
pub fn decode_range_response(
    hash: Hash32,
    expected_size: Option<u64>,
    ranges: &ChunkRanges,
    reader: impl Read,
    mut on_leaf: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<u64, VerifyError> {
    // No read limit is needed: the iterator reads exactly what the tree of `size` needs, and no more.
    let mut reader = reader;
    let mut size_bytes = [0u8; 8];
    reader
        .read_exact(&mut size_bytes)
        .map_err(|_| VerifyError::Truncated)?;
    let size = u64::from_le_bytes(size_bytes);
    if size > BLOB_BYTES_MAX {
        return Err(VerifyError::Oversized {
            size,
            max: BLOB_BYTES_MAX,
        });
    }
    if let Some(expected) = expected_size {
        if expected != size {
            return Err(VerifyError::SizeMismatch {
                claimed: size,
                expected,
            });
        }
    }
    let root = blake3::Hash::from_bytes(hash.0);
    let mut iter = DecodeResponseIter::new(root, tree(size), &mut reader, ranges);
    for item in &mut iter {
        match item? {
            BaoContentItem::Parent(_) => {}
            BaoContentItem::Leaf(leaf) => {
                on_leaf(leaf.offset, &leaf.data).map_err(|e| VerifyError::Io(e.to_string()))?
            }
        }
    }
    drop(iter);
    let mut probe = [0u8; 1];
    match reader.read(&mut probe) {
        Ok(0) => Ok(size),
        Ok(n) => Err(VerifyError::TrailingBytes(n as u64)),
        Err(e) => Err(VerifyError::Io(e.to_string())),
    }
}

/// Decodes a whole-blob response into `target` (any `WriteAt`, e.g. a file) while filling a post-order outboard
/// file, so a blob fetched from a peer is verified and indexed in one pass.
pub fn decode_full_into(
    hash: Hash32,
    expected_size: Option<u64>,
    reader: impl Read,
    mut target: impl WriteAt,
) -> Result<u64, VerifyError> {
    decode_range_response(
        hash,
        expected_size,
        &all_chunks(),
        reader,
        |offset, bytes| target.write_all_at(offset, bytes),
    )
}

/// Verifies an in-memory range response and returns the verified (offset, bytes) leaves.
pub fn verify_range_response(
    hash: Hash32,
    expected_size: u64,
    ranges: &ChunkRanges,
    response: &[u8],
) -> Result<Vec<(u64, Vec<u8>)>, VerifyError> {
    let mut leaves = Vec::new();
    decode_range_response(
        hash,
        Some(expected_size),
        ranges,
        response,
        |offset, bytes| {
            leaves.push((offset, bytes.to_vec()));
            Ok(())
        },
    )?;
    Ok(leaves)
}

/// An outboard that stores nothing; used when only verification is wanted.
pub fn empty_outboard(hash: Hash32, size: u64) -> EmptyOutboard {
    EmptyOutboard {
        tree: tree(size),
        root: blake3::Hash::from_bytes(hash.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::io::outboard::PostOrderMemOutboard;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
            .collect()
    }

    fn response(data: &[u8], ranges: &ChunkRanges) -> Vec<u8> {
        let ob = PostOrderMemOutboard::create(data, block_size());
        let mut out = Vec::new();
        encode_range_response(data, &ob, ranges, &mut out).unwrap();
        out
    }

    #[test]
    fn root_is_plain_blake3() {
        for len in [0, 1, 1024, 16 * 1024, 16 * 1024 + 1, 300_000] {
            let data = sample(len);
            assert_eq!(outboard_of(&data).0, Hash32::of(&data), "len {len}");
        }
    }

    #[test]
    fn outboard_builder_equals_outboard_of() {
        let group = group_bytes() as usize;
        let sizes = [
            0,
            1,
            1024,
            group - 1,
            group,
            group + 1,
            2 * group,
            3 * group + 5,
            4 * group,
            7 * group + 1000,
            300_000,
            1 << 20,
        ];
        for size in sizes {
            let data = sample(size);
            let reference = outboard_of(&data);
            for step in [1000, 64 * 7, group - 64, group, 3 * group + 64, usize::MAX] {
                let mut builder = OutboardBuilder::new(size as u64);
                for part in data.chunks(step.min(size.max(1))) {
                    builder.push(part);
                }
                assert_eq!(builder.finish(), reference, "size {size} step {step}");
            }
        }
    }

    #[test]
    fn any_range_verifies_on_its_own() {
        let data = sample(200_000);
        let hash = Hash32::of(&data);
        for (start, end) in [(0, 1), (50_000, 70_000), (199_000, 200_000), (0, 200_000)] {
            let ranges = byte_range_to_chunks(start, end);
            let resp = response(&data, &ranges);
            let leaves = verify_range_response(hash, data.len() as u64, &ranges, &resp).unwrap();
            for (offset, bytes) in leaves {
                assert_eq!(
                    &data[offset as usize..offset as usize + bytes.len()],
                    &bytes[..]
                );
            }
        }
    }

    #[test]
    fn response_from_parts_verifies_and_exposes_lies() {
        let data = sample(300_000);
        let hash = Hash32::of(&data);
        let (_, outboard) = outboard_of(&data);
        let read = |bytes: Vec<u8>| {
            move |offset: u64, buf: &mut [u8]| -> io::Result<()> {
                let start = offset as usize;
                buf.copy_from_slice(&bytes[start..start + buf.len()]);
                Ok(())
            }
        };
        for ranges in [all_chunks(), byte_range_to_chunks(100_000, 120_000)] {
            let mut resp = Vec::new();
            encode_range_response_from_parts(
                hash,
                300_000,
                outboard.clone(),
                &ranges,
                read(data.clone()),
                &mut resp,
            )
            .unwrap();
            let leaves = verify_range_response(hash, 300_000, &ranges, &resp).unwrap();
            assert!(!leaves.is_empty());
        }
        let mut bad = data.clone();
        bad[150_000] ^= 1;
        let mut resp = Vec::new();
        encode_range_response_from_parts(
            hash,
            300_000,
            outboard.clone(),
            &all_chunks(),
            read(bad),
            &mut resp,
        )
        .unwrap();
        assert!(matches!(
            verify_range_response(hash, 300_000, &all_chunks(), &resp),
            Err(VerifyError::Corrupt(_))
        ));
        let short = outboard[..outboard.len() - 64].to_vec();
        assert!(encode_range_response_from_parts(
            hash,
            300_000,
            short,
            &all_chunks(),
            read(data),
            Vec::new()
        )
        .is_err());
    }

    #[test]
    fn flipped_byte_truncation_and_wrong_size_are_rejected() {
        let data = sample(100_000);
        let hash = Hash32::of(&data);
        let ranges = all_chunks();
        let resp = response(&data, &ranges);
        let mut bad = resp.clone();
        bad[8 + 40_000] ^= 1;
        assert!(matches!(
            verify_range_response(hash, 100_000, &ranges, &bad),
            Err(VerifyError::Corrupt(_))
        ));
        assert!(matches!(
            verify_range_response(hash, 100_000, &ranges, &resp[..resp.len() - 1]),
            Err(VerifyError::Truncated)
        ));
        assert!(matches!(
            verify_range_response(hash, 99_999, &ranges, &resp),
            Err(VerifyError::SizeMismatch { .. })
        ));
        let mut lying = resp.clone();
        lying[..8].copy_from_slice(&99_000u64.to_le_bytes());
        assert!(decode_range_response(hash, None, &ranges, &lying[..], |_, _| Ok(())).is_err());
        let mut extra = resp.clone();
        extra.push(0);
        assert!(matches!(
            verify_range_response(hash, 100_000, &ranges, &extra),
            Err(VerifyError::TrailingBytes(_))
        ));
        let other = Hash32::of(b"other");
        assert!(verify_range_response(other, 100_000, &ranges, &resp).is_err());
    }
}
