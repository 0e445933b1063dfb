//! Versioned wire messages of the blob protocol and the gossip envelope, encoded and decoded by hand.
//!
//! Every decoder takes untrusted bytes: it checks the version, every tag, length and index against
//! `types::limits::net` before it allocates, rejects trailing bytes, and returns a typed error.
//!
//! Blob request, version 1: `[1][tag 0][hash: 32][chunk index: u32 LE]` (38 bytes).
//! Blob response, version 1: `[1][tag]` then, by tag:
//! - 0 `Chunk`: `[blob length: u64 LE][chunk index: u32 LE][chunk length: u32 LE][chunk bytes]`
//! - 1 `NotFound`, 2 `Busy`: nothing more.
//! - 3 `OutOfRange`: `[blob length: u64 LE]`.
//!
//! Gossip envelope, version 1: `[1][payload]`.

use types::limits::net as limits;
use types::Hash32;

pub const WIRE_VERSION: u8 = 1;

/// Bytes in an encoded blob request.
pub const BLOB_REQUEST_BYTES: usize = 1 + 1 + 32 + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unknown wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("unknown message tag {0}")]
    Tag(u8),
    #[error("message truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("blob of {0} bytes exceeds the limit")]
    BlobTooLarge(u64),
    #[error("chunk {index} is out of range for a blob of {blob_len} bytes")]
    ChunkIndex { index: u32, blob_len: u64 },
    #[error("chunk {index} has {len} bytes; a blob of {blob_len} bytes needs {expected}")]
    ChunkLength {
        index: u32,
        len: u32,
        blob_len: u64,
        expected: u32,
    },
}

/// A request for one chunk of a blob named by its content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRequest {
    pub hash: Hash32,
    pub chunk_index: u32,
}

/// The answer to a `BlobRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobResponse {
    Chunk {
        blob_len: u64,
        chunk_index: u32,
        bytes: Vec<u8>,
    },
    NotFound,
    Busy,
    OutOfRange {
        blob_len: u64,
    },
}

/// Chunks in a blob of `blob_len` bytes.
pub fn chunk_count(blob_len: u64) -> u64 {
    blob_len.div_ceil(u64::from(limits::BLOB_CHUNK_BYTES))
}

/// The byte length of chunk `index` of a blob of `blob_len` bytes, or `None` if out of range.
pub fn chunk_len(blob_len: u64, index: u32) -> Option<u32> {
    let chunk = u64::from(limits::BLOB_CHUNK_BYTES);
    let start = u64::from(index).checked_mul(chunk)?;
    if start >= blob_len {
        return None;
    }
    // Fits in u32: at most one chunk.
    Some((blob_len - start).min(chunk) as u32)
}

impl BlobRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOB_REQUEST_BYTES);
        out.push(WIRE_VERSION);
        out.push(0);
        out.extend_from_slice(&self.hash.0);
        out.extend_from_slice(&self.chunk_index.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobRequest, WireError> {
        let mut r = Reader::new(bytes);
        r.version()?;
        let tag = r.u8()?;
        if tag != 0 {
            return Err(WireError::Tag(tag));
        }
        let hash = Hash32(r.array::<32>()?);
        let chunk_index = r.u32()?;
        r.finish()?;
        Ok(BlobRequest { hash, chunk_index })
    }
}

impl BlobResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        match self {
            BlobResponse::Chunk {
                blob_len,
                chunk_index,
                bytes,
            } => {
                out.reserve(8 + 4 + 4 + bytes.len());
                out.push(0);
                out.extend_from_slice(&blob_len.to_le_bytes());
                out.extend_from_slice(&chunk_index.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            BlobResponse::NotFound => out.push(1),
            BlobResponse::Busy => out.push(2),
            BlobResponse::OutOfRange { blob_len } => {
                out.push(3);
                out.extend_from_slice(&blob_len.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobResponse, WireError> {
        if bytes.len() > limits::BLOB_RESPONSE_BYTES_MAX {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: limits::BLOB_RESPONSE_BYTES_MAX,
            });
        }
        let mut r = Reader::new(bytes);
        r.version()?;
        let response = match r.u8()? {
            0 => decode_chunk(&mut r)?,
            1 => BlobResponse::NotFound,
            2 => BlobResponse::Busy,
            3 => {
                let blob_len = r.u64()?;
                check_blob_len(blob_len)?;
                BlobResponse::OutOfRange { blob_len }
            }
            tag => return Err(WireError::Tag(tag)),
        };
        r.finish()?;
        Ok(response)
    }
}

fn check_blob_len(blob_len: u64) -> Result<(), WireError> {
    if blob_len > limits::BLOB_BYTES_MAX {
        return Err(WireError::BlobTooLarge(blob_len));
    }
    Ok(())
}

fn decode_chunk(r: &mut Reader<'_>) -> Result<BlobResponse, WireError> {
    let blob_len = r.u64()?;
    check_blob_len(blob_len)?;
    let chunk_index = r.u32()?;
    let len = r.u32()?;
    let expected = chunk_len(blob_len, chunk_index).ok_or(WireError::ChunkIndex {
        index: chunk_index,
        blob_len,
    })?;
    if len != expected {
        return Err(WireError::ChunkLength {
            index: chunk_index,
            len,
            blob_len,
            expected,
        });
    }
    // `len` is at most one chunk, checked above, before this allocation.
    let bytes = r.take(len as usize)?.to_vec();
    Ok(BlobResponse::Chunk {
        blob_len,
        chunk_index,
        bytes,
    })
}

/// Wraps an app payload for gossip.
pub fn encode_gossip(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(WIRE_VERSION);
    out.extend_from_slice(payload);
    out
}

/// Unwraps a gossip envelope, returning the app payload.
pub fn decode_gossip(bytes: &[u8]) -> Result<&[u8], WireError> {
    if bytes.len() > limits::GOSSIP_MESSAGE_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max: limits::GOSSIP_MESSAGE_BYTES_MAX,
        });
    }
    let mut r = Reader::new(bytes);
    r.version()?;
    Ok(r.rest())
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn version(&mut self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            return Err(WireError::Empty);
        }
        let version = self.u8()?;
        if version != WIRE_VERSION {
            return Err(WireError::Version(version));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let have = self.bytes.len() - self.pos;
        if n > have {
            return Err(WireError::Truncated { need: n, have });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }

    fn finish(&self) -> Result<(), WireError> {
        let left = self.bytes.len() - self.pos;
        if left != 0 {
            return Err(WireError::Trailing(left));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_errors() {
        let req = BlobRequest {
            hash: Hash32::of(b"x"),
            chunk_index: 7,
        };
        let bytes = req.encode();
        assert_eq!(bytes.len(), BLOB_REQUEST_BYTES);
        assert_eq!(BlobRequest::decode(&bytes), Ok(req));
        assert_eq!(BlobRequest::decode(&[]), Err(WireError::Empty));
        assert_eq!(BlobRequest::decode(&[2]), Err(WireError::Version(2)));
        assert_eq!(BlobRequest::decode(&[1, 9]), Err(WireError::Tag(9)));
        assert!(matches!(
            BlobRequest::decode(&bytes[..20]),
            Err(WireError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(BlobRequest::decode(&long), Err(WireError::Trailing(1)));
    }

    #[test]
    fn response_round_trip() {
        let chunk = limits::BLOB_CHUNK_BYTES as u64;
        let blob_len = 2 * chunk + 5;
        let cases = [
            BlobResponse::Chunk {
                blob_len,
                chunk_index: 2,
                bytes: vec![9; 5],
            },
            BlobResponse::Chunk {
                blob_len,
                chunk_index: 0,
                bytes: vec![1; chunk as usize],
            },
            BlobResponse::NotFound,
            BlobResponse::Busy,
            BlobResponse::OutOfRange { blob_len: 3 },
        ];
        for case in cases {
            assert_eq!(BlobResponse::decode(&case.encode()), Ok(case));
        }
    }

    #[test]
    fn response_rejects_lying_lengths() {
        let good = BlobResponse::Chunk {
            blob_len: 10,
            chunk_index: 0,
            bytes: vec![0; 10],
        }
        .encode();
        // Claim a chunk length that does not match the blob length.
        let mut bad = good.clone();
        bad[14..18].copy_from_slice(&11u32.to_le_bytes());
        assert!(matches!(
            BlobResponse::decode(&bad),
            Err(WireError::ChunkLength { .. })
        ));
        // Claim an index past the end.
        let mut bad = good.clone();
        bad[10..14].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            BlobResponse::decode(&bad),
            Err(WireError::ChunkIndex { .. })
        ));
        // Claim a huge blob.
        let mut bad = good;
        bad[2..10].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            BlobResponse::decode(&bad),
            Err(WireError::BlobTooLarge(_))
        ));
    }

    #[test]
    fn chunk_geometry() {
        let chunk = limits::BLOB_CHUNK_BYTES as u64;
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(chunk), 1);
        assert_eq!(chunk_count(chunk + 1), 2);
        assert_eq!(chunk_len(chunk + 1, 1), Some(1));
        assert_eq!(chunk_len(chunk + 1, 2), None);
        assert_eq!(chunk_len(u64::MAX, u32::MAX), Some(chunk as u32));
    }

    #[test]
    fn gossip_envelope() {
        assert_eq!(decode_gossip(&encode_gossip(b"hi")), Ok(&b"hi"[..]));
        assert_eq!(decode_gossip(&[]), Err(WireError::Empty));
        assert_eq!(decode_gossip(&[7, 1]), Err(WireError::Version(7)));
    }
}
