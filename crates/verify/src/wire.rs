//! Wire envelope shared by commitments, verdicts and fraud proofs: a version byte, then a canonical postcard body.
//!
//! Decoding checks the size against a limit before touching the body, rejects trailing bytes, and rejects
//! non-canonical encodings (the body must re-encode to the same bytes), so a signature over the decoded value covers
//! exactly the bytes that were received.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Errors decoding any verify wire message. Peer input: never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message is {got} bytes, limit is {max}")]
    TooLarge { got: usize, max: usize },
    #[error("message is empty")]
    Empty,
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    #[error("body does not decode: {0}")]
    Body(String),
    #[error("{0} trailing bytes after the body")]
    TrailingBytes(usize),
    #[error("body is not in canonical encoding")]
    NotCanonical,
    #[error("field {field} is out of bounds: {value} > {max}")]
    OutOfBounds {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("field {field} is invalid: {why}")]
    Invalid {
        field: &'static str,
        why: &'static str,
    },
}

/// The one wire version every verify message uses now.
pub const WIRE_VERSION_1: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION_1];
    // Serializing our own in-memory types into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).expect("postcard to vec"));
    out
}

pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            got: bytes.len(),
            max,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION_1 {
        return Err(WireError::UnknownVersion(version));
    }
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    let again = postcard::to_allocvec(&value).map_err(|e| WireError::Body(e.to_string()))?;
    if again != body {
        return Err(WireError::NotCanonical);
    }
    Ok(value)
}

pub(crate) fn check_len(field: &'static str, value: usize, max: usize) -> Result<(), WireError> {
    if value > max {
        return Err(WireError::OutOfBounds {
            field,
            value: value as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// An Ed25519 signature (64 bytes). Serialized as a byte string because serde derives stop at 32-element arrays.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature64(pub [u8; 64]);

impl Signature64 {
    pub const ZERO: Signature64 = Signature64([0; 64]);
}

impl std::fmt::Debug for Signature64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signature64({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl Serialize for Signature64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Signature64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature64, E> {
                let array: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature64(array))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}
