//! Token shard files: a fixed header, a BLAKE3 checksum, and little-endian token ids.
//!
//! Format, version 1 (all integers little-endian):
//!
//! | offset | bytes | field                                                        |
//! |--------|-------|--------------------------------------------------------------|
//! | 0      | 8     | magic `b"CWSHARD\0"`                                         |
//! | 8      | 2     | version, `1`                                                 |
//! | 10     | 1     | dtype: token width in bytes, `2` (u16) or `4` (u32)          |
//! | 11     | 1     | reserved, `0`                                                |
//! | 12     | 4     | vocab_size: every token id is `< vocab_size`                 |
//! | 16     | 8     | token_count                                                  |
//! | 24     | 32    | checksum: BLAKE3 of bytes 0..24 followed by the payload      |
//! | 56     | n·w   | payload: `token_count` ids, `w` = dtype bytes each           |
//!
//! The encoding is canonical: dtype is u16 exactly when `vocab_size <= 65536`, so one token list
//! and vocabulary give one byte string (shards are content-addressed by `store`). The decoder takes
//! untrusted bytes: it checks every field against `types::limits::data` before allocating, and
//! returns a `ShardError` for anything wrong; it never panics.

use std::path::{Path, PathBuf};

use types::limits::data as limits;
use types::Hash32;

pub const SHARD_MAGIC: [u8; 8] = *b"CWSHARD\0";
pub const SHARD_VERSION: u16 = 1;
pub const SHARD_HEADER_BYTES: usize = 56;
const CHECKSUM_OFFSET: usize = 24;

/// Largest vocabulary stored as u16.
const U16_VOCAB_SIZE_MAX: u32 = 1 << 16;

/// A decoded shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenShard {
    pub vocab_size: u32,
    pub tokens: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard is {bytes} bytes, shorter than the {SHARD_HEADER_BYTES}-byte header")]
    TooShort { bytes: usize },
    #[error("not a token shard (bad magic)")]
    BadMagic,
    #[error("unsupported shard version {0} (this build reads version {SHARD_VERSION})")]
    UnsupportedVersion(u16),
    #[error("bad dtype {0} (expected 2 for u16 or 4 for u32)")]
    BadDtype(u8),
    #[error("reserved header byte is {0}, expected 0")]
    BadReserved(u8),
    #[error("vocab_size {vocab_size} is outside 1..={max}")]
    BadVocabSize { vocab_size: u32, max: u32 },
    #[error("dtype {dtype} is not the canonical one for vocab_size {vocab_size}")]
    NonCanonicalDtype { dtype: u8, vocab_size: u32 },
    #[error("token_count {count} exceeds the limit {max}")]
    TooManyTokens { count: u64, max: u64 },
    #[error("payload is {actual} bytes, header says {expected}")]
    PayloadLength { expected: u64, actual: u64 },
    #[error("payload checksum mismatch: header {expected}, payload {actual}")]
    Checksum { expected: Hash32, actual: Hash32 },
    #[error("token {token} at index {index} is not below vocab_size {vocab_size}")]
    TokenOutOfRange {
        index: u64,
        token: u32,
        vocab_size: u32,
    },
    #[error("{path}: shard file is {bytes} bytes, more than the limit {max}")]
    FileTooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Canonical token width in bytes for a vocabulary.
pub fn dtype_for_vocab(vocab_size: u32) -> u8 {
    if vocab_size <= U16_VOCAB_SIZE_MAX {
        2
    } else {
        4
    }
}

/// Encodes `tokens` as a shard. Asserts the caller's invariants (programmer errors): the vocabulary
/// and count are within limits, and every token is below `vocab_size`.
pub fn encode_shard(tokens: &[u32], vocab_size: u32) -> Vec<u8> {
    assert!(
        vocab_size >= 1 && vocab_size <= limits::VOCAB_SIZE_MAX,
        "vocab_size {vocab_size}"
    );
    assert!(
        tokens.len() as u64 <= limits::SHARD_TOKENS_MAX,
        "{} tokens",
        tokens.len()
    );
    let dtype = dtype_for_vocab(vocab_size);
    let mut payload = Vec::with_capacity(tokens.len() * dtype as usize);
    for &token in tokens {
        assert!(
            token < vocab_size,
            "token {token} >= vocab_size {vocab_size}"
        );
        if dtype == 2 {
            payload.extend_from_slice(&(token as u16).to_le_bytes());
        } else {
            payload.extend_from_slice(&token.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(SHARD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&SHARD_MAGIC);
    out.extend_from_slice(&SHARD_VERSION.to_le_bytes());
    out.push(dtype);
    out.push(0);
    out.extend_from_slice(&vocab_size.to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    let checksum = shard_checksum(&out, &payload);
    out.extend_from_slice(&checksum.0);
    debug_assert_eq!(out.len(), SHARD_HEADER_BYTES);
    out.extend_from_slice(&payload);
    out
}

/// BLAKE3 over the header fields before the checksum, then the payload: a flipped bit anywhere
/// in the file is caught (the magic, version and dtype are also checked by value).
fn shard_checksum(header_fields: &[u8], payload: &[u8]) -> Hash32 {
    debug_assert_eq!(header_fields.len(), CHECKSUM_OFFSET);
    let mut hasher = blake3::Hasher::new();
    hasher.update(header_fields);
    hasher.update(payload);
    Hash32(*hasher.finalize().as_bytes())
}

/// Decodes untrusted shard bytes.
pub fn decode_shard(bytes: &[u8]) -> Result<TokenShard, ShardError> {
    let header = ShardHeader::parse(bytes)?;
    let payload = &bytes[SHARD_HEADER_BYTES..];
    let width = u64::from(header.dtype);
    // token_count <= SHARD_TOKENS_MAX (checked), so this product cannot overflow.
    let expected = header.token_count * width;
    if payload.len() as u64 != expected {
        return Err(ShardError::PayloadLength {
            expected,
            actual: payload.len() as u64,
        });
    }
    let actual = shard_checksum(&bytes[..CHECKSUM_OFFSET], payload);
    if actual != header.checksum {
        return Err(ShardError::Checksum {
            expected: header.checksum,
            actual,
        });
    }
    // Allocation is bounded by the payload actually present, which was just length-checked.
    let tokens: Vec<u32> = if header.dtype == 2 {
        payload
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    } else {
        payload
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    // Range-checked after decoding, so the decode loop above stays simple enough to vectorize.
    if let Some(index) = tokens.iter().position(|&t| t >= header.vocab_size) {
        return Err(ShardError::TokenOutOfRange {
            index: index as u64,
            token: tokens[index],
            vocab_size: header.vocab_size,
        });
    }
    Ok(TokenShard {
        vocab_size: header.vocab_size,
        tokens,
    })
}

/// The fixed-size header, validated field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    pub dtype: u8,
    pub vocab_size: u32,
    pub token_count: u64,
    pub checksum: Hash32,
}

impl ShardHeader {
    /// Parses and checks the header at the start of `bytes` (the payload is not checked here).
    pub fn parse(bytes: &[u8]) -> Result<ShardHeader, ShardError> {
        let Some(header) = bytes.get(..SHARD_HEADER_BYTES) else {
            return Err(ShardError::TooShort { bytes: bytes.len() });
        };
        if header[0..8] != SHARD_MAGIC {
            return Err(ShardError::BadMagic);
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != SHARD_VERSION {
            return Err(ShardError::UnsupportedVersion(version));
        }
        let dtype = header[10];
        if dtype != 2 && dtype != 4 {
            return Err(ShardError::BadDtype(dtype));
        }
        if header[11] != 0 {
            return Err(ShardError::BadReserved(header[11]));
        }
        let vocab_size = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if vocab_size == 0 || vocab_size > limits::VOCAB_SIZE_MAX {
            return Err(ShardError::BadVocabSize {
                vocab_size,
                max: limits::VOCAB_SIZE_MAX,
            });
        }
        if dtype != dtype_for_vocab(vocab_size) {
            return Err(ShardError::NonCanonicalDtype { dtype, vocab_size });
        }
        let token_count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        if token_count > limits::SHARD_TOKENS_MAX {
            return Err(ShardError::TooManyTokens {
                count: token_count,
                max: limits::SHARD_TOKENS_MAX,
            });
        }
        let checksum = Hash32(header[24..56].try_into().expect("32 bytes"));
        Ok(ShardHeader {
            dtype,
            vocab_size,
            token_count,
            checksum,
        })
    }
}

/// Writes a shard file atomically (temporary file, then rename). Returns BLAKE3 of the file bytes.
pub fn write_shard(path: &Path, tokens: &[u32], vocab_size: u32) -> Result<Hash32, ShardError> {
    let bytes = encode_shard(tokens, vocab_size);
    write_atomic(path, &bytes).map_err(|source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Hash32::of(&bytes))
}

/// Reads and decodes a shard file; the size is checked before the file is read.
pub fn read_shard(path: &Path) -> Result<TokenShard, ShardError> {
    read_shard_with_hash(path).map(|(shard, _)| shard)
}

/// Like `read_shard`, also returning BLAKE3 of the whole file (what `dataset.json` records).
pub fn read_shard_with_hash(path: &Path) -> Result<(TokenShard, Hash32), ShardError> {
    let io_error = |source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if bytes > limits::SHARD_BYTES_MAX {
        return Err(ShardError::FileTooLarge {
            path: path.to_path_buf(),
            bytes,
            max: limits::SHARD_BYTES_MAX,
        });
    }
    let contents = std::fs::read(path).map_err(io_error)?;
    let shard = decode_shard(&contents)?;
    Ok((shard, Hash32::of(&contents)))
}

/// Writes `bytes` to `path` via a sibling temporary file and a rename, so readers never see a
/// half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_u16_and_u32() {
        for vocab_size in [1u32, 256, 65536, 65537, limits::VOCAB_SIZE_MAX] {
            let tokens: Vec<u32> = (0..1000u32).map(|i| (i * 7919) % vocab_size).collect();
            let bytes = encode_shard(&tokens, vocab_size);
            let width = if vocab_size <= 65536 { 2 } else { 4 };
            assert_eq!(bytes.len(), SHARD_HEADER_BYTES + tokens.len() * width);
            let shard = decode_shard(&bytes).unwrap();
            assert_eq!(shard.vocab_size, vocab_size);
            assert_eq!(shard.tokens, tokens);
        }
    }

    #[test]
    fn empty_shard_round_trips() {
        let shard = decode_shard(&encode_shard(&[], 256)).unwrap();
        assert!(shard.tokens.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_shard(&[1, 2, 3, 4, 5], 300);
        for len in 0..bytes.len() {
            assert!(decode_shard(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn every_single_bit_flip_is_an_error() {
        let bytes = encode_shard(&[1, 2, 3, 4, 5, 255], 256);
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 1 << bit;
                assert!(
                    decode_shard(&corrupt).is_err(),
                    "flip byte {index} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn header_errors_are_specific() {
        let good = encode_shard(&[1, 2], 256);
        let with = |offset: usize, value: &[u8]| {
            let mut bytes = good.clone();
            bytes[offset..offset + value.len()].copy_from_slice(value);
            decode_shard(&bytes).unwrap_err()
        };
        assert!(matches!(with(0, b"X"), ShardError::BadMagic));
        assert!(matches!(
            with(8, &2u16.to_le_bytes()),
            ShardError::UnsupportedVersion(2)
        ));
        assert!(matches!(with(10, &[3]), ShardError::BadDtype(3)));
        assert!(matches!(
            with(10, &[4]),
            ShardError::NonCanonicalDtype { .. }
        ));
        assert!(matches!(with(11, &[1]), ShardError::BadReserved(1)));
        assert!(matches!(
            with(12, &0u32.to_le_bytes()),
            ShardError::BadVocabSize { .. }
        ));
        assert!(matches!(
            with(12, &u32::MAX.to_le_bytes()),
            ShardError::BadVocabSize { .. }
        ));
        assert!(matches!(
            with(16, &u64::MAX.to_le_bytes()),
            ShardError::TooManyTokens { .. }
        ));
        assert!(matches!(
            with(16, &3u64.to_le_bytes()),
            ShardError::PayloadLength { .. }
        ));
        assert!(matches!(with(56, &[9]), ShardError::Checksum { .. }));
    }

    #[test]
    fn out_of_range_token_with_valid_checksum_is_rejected() {
        // Build a shard by hand whose checksum is right but whose token is >= vocab_size.
        let mut bytes = encode_shard(&[1, 2], 256);
        bytes[56..58].copy_from_slice(&300u16.to_le_bytes());
        let checksum = shard_checksum(&bytes[..24], &bytes[56..]);
        bytes[24..56].copy_from_slice(&checksum.0);
        assert!(matches!(
            decode_shard(&bytes),
            Err(ShardError::TokenOutOfRange {
                index: 0,
                token: 300,
                ..
            })
        ));
    }

    #[test]
    fn file_round_trip_and_hash() {
        let dir = std::env::temp_dir().join(format!("cw-data-shard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.shard");
        let hash = write_shard(&path, &[5, 6, 7], 50257).unwrap();
        let (shard, read_hash) = read_shard_with_hash(&path).unwrap();
        assert_eq!(shard.tokens, vec![5, 6, 7]);
        assert_eq!(hash, read_hash);
        assert!(matches!(
            read_shard(&dir.join("missing")),
            Err(ShardError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
