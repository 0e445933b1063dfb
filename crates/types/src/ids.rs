//! Ids and 32-byte BLAKE3 hashes shared by all crates.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 32-byte BLAKE3 digest. Used for content addresses, model hashes and commitments.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash32 {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    /// BLAKE3 of a flat parameter vector, over its little-endian bytes.
    /// This is the definition of a "model hash" everywhere in commonweight.
    pub fn of_f32s(values: &[f32]) -> Hash32 {
        let mut hasher = blake3::Hasher::new();
        for chunk in values.chunks(16 * 1024) {
            let mut buf = Vec::with_capacity(chunk.len() * 4);
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            hasher.update(&buf);
        }
        Hash32(*hasher.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn from_hex(s: &str) -> Result<Hash32, HashParseError> {
        if s.len() != 64 {
            return Err(HashParseError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = &s[2 * i..2 * i + 2];
            *byte = u8::from_str_radix(pair, 16).map_err(|_| HashParseError::NotHex)?;
        }
        Ok(Hash32(out))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    #[error("a hash is 64 hex characters, got {0}")]
    Length(usize),
    #[error("a hash must be hex")]
    NotHex,
}

/// A participant, named by its Ed25519 public key (32 bytes).
/// `net` maps it to and from libp2p's own peer id; nothing else sees libp2p's type.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", &Hash32(self.0).to_hex()[..12])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Hash32(self.0).to_hex())
    }
}

/// A training run, named by the hash of its genesis config.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RunId(pub Hash32);

/// The index of a round within a run. Round 0 starts from the genesis model.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct RoundNumber(pub u64);

impl RoundNumber {
    pub fn next(self) -> RoundNumber {
        RoundNumber(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash32::of(b"commonweight");
        assert_eq!(Hash32::from_hex(&h.to_hex()), Ok(h));
        assert_eq!(Hash32::from_hex("zz"), Err(HashParseError::Length(2)));
        assert_eq!(
            Hash32::from_hex(&"g".repeat(64)),
            Err(HashParseError::NotHex)
        );
    }

    #[test]
    fn f32_hash_is_over_le_bytes() {
        let v = [1.0f32, -2.5, 3.25];
        let mut bytes = Vec::new();
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(Hash32::of_f32s(&v), Hash32::of(&bytes));
    }
}
