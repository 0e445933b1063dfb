//! Content ids: BLAKE3 digests written as CIDv1 (codec raw 0x55, multihash blake3 0x1e).

use std::fmt;
use std::str::FromStr;

use types::Hash32;

/// Multicodec `raw`: every blob (piece, manifest, file) is addressed as raw bytes.
pub const CODEC_RAW: u64 = 0x55;
/// Multicodec `blake3` hash function.
pub const MULTIHASH_BLAKE3: u64 = 0x1e;

/// The address of a blob: its BLAKE3 digest. Displays and parses as a CIDv1 string (base32, `b...`).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct Cid(pub Hash32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    #[error("not a CID: {0}")]
    Malformed(String),
    #[error("CID version {0} is not supported, only CIDv1")]
    Version(u64),
    #[error("CID codec {0:#x} is not supported, only raw (0x55)")]
    Codec(u64),
    #[error("CID hash function {0:#x} is not supported, only BLAKE3 (0x1e)")]
    HashCode(u64),
    #[error("CID digest is {0} bytes, BLAKE3 needs 32")]
    DigestLength(usize),
    #[error("CID string is {0} bytes, too long")]
    TooLong(usize),
}

/// A CIDv1 string for a 32-byte digest is 59 characters; anything much longer is not ours.
const CID_STRING_BYTES_MAX: usize = 128;

impl Cid {
    pub fn of(bytes: &[u8]) -> Cid {
        Cid(Hash32::of(bytes))
    }

    pub fn hash(&self) -> Hash32 {
        self.0
    }

    /// Binary CIDv1: varint(1) varint(0x55) varint(0x1e) varint(32) digest. All varints fit one byte.
    pub fn to_bytes(&self) -> [u8; 36] {
        let mut out = [0u8; 36];
        out[..4].copy_from_slice(&[0x01, 0x55, 0x1e, 0x20]);
        out[4..].copy_from_slice(&self.0 .0);
        out
    }

    /// Parses binary CIDv1 bytes (e.g. from a provider record) through the `cid` crate.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        if bytes.len() > CID_STRING_BYTES_MAX {
            return Err(CidError::TooLong(bytes.len()));
        }
        let parsed = cid::Cid::try_from(bytes).map_err(|e| CidError::Malformed(e.to_string()))?;
        Cid::from_parsed(&parsed)
    }

    fn from_parsed(parsed: &cid::Cid) -> Result<Cid, CidError> {
        if parsed.version() != cid::Version::V1 {
            return Err(CidError::Version(parsed.version() as u64));
        }
        if parsed.codec() != CODEC_RAW {
            return Err(CidError::Codec(parsed.codec()));
        }
        let hash = parsed.hash();
        if hash.code() != MULTIHASH_BLAKE3 {
            return Err(CidError::HashCode(hash.code()));
        }
        let digest = hash.digest();
        let digest: [u8; 32] = digest
            .try_into()
            .map_err(|_| CidError::DigestLength(digest.len()))?;
        Ok(Cid(Hash32(digest)))
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mh = multihash::Multihash::<64>::wrap(MULTIHASH_BLAKE3, &self.0 .0)
            .expect("32 bytes fit in 64");
        let cid = cid::Cid::new_v1(CODEC_RAW, mh);
        write!(f, "{cid}")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Cid, CidError> {
        if s.len() > CID_STRING_BYTES_MAX {
            return Err(CidError::TooLong(s.len()));
        }
        let parsed = cid::Cid::try_from(s).map_err(|e| CidError::Malformed(e.to_string()))?;
        Cid::from_parsed(&parsed)
    }
}

impl From<Hash32> for Cid {
    fn from(hash: Hash32) -> Cid {
        Cid(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_encoding_matches_cid_crate() {
        let cid = Cid::of(b"commonweight");
        let mh = multihash::Multihash::<64>::wrap(0x1e, &cid.0 .0).unwrap();
        let reference = cid::Cid::new_v1(0x55, mh);
        assert_eq!(reference.to_bytes(), cid.to_bytes().to_vec());
        assert_eq!(Cid::from_bytes(&cid.to_bytes()), Ok(cid));
    }

    #[test]
    fn string_round_trip() {
        let cid = Cid::of(b"hello");
        let s = cid.to_string();
        assert!(s.starts_with('b'), "{s}");
        assert_eq!(s.len(), 59);
        assert_eq!(s.parse::<Cid>(), Ok(cid));
    }

    #[test]
    fn rejects_other_hashes_and_codecs() {
        let sha = multihash::Multihash::<64>::wrap(0x12, &[7u8; 32]).unwrap();
        let s = cid::Cid::new_v1(0x55, sha).to_string();
        assert_eq!(s.parse::<Cid>(), Err(CidError::HashCode(0x12)));
        let b3 = multihash::Multihash::<64>::wrap(0x1e, &[7u8; 32]).unwrap();
        let s = cid::Cid::new_v1(0x71, b3).to_string();
        assert_eq!(s.parse::<Cid>(), Err(CidError::Codec(0x71)));
        let short = multihash::Multihash::<64>::wrap(0x1e, &[7u8; 16]).unwrap();
        let s = cid::Cid::new_v1(0x55, short).to_string();
        assert_eq!(s.parse::<Cid>(), Err(CidError::DigestLength(16)));
        assert!(matches!(
            "nonsense".parse::<Cid>(),
            Err(CidError::Malformed(_))
        ));
        assert!(matches!("".parse::<Cid>(), Err(CidError::Malformed(_))));
    }
}
