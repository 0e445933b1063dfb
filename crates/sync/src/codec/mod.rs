//! Update codecs: one trait, one self-describing versioned wire format, explicit error feedback.
//!
//! Every encoded update starts with the same 24-byte header, so [`decode`] needs no out-of-band
//! configuration:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `CWUP` |
//! | 4 | 1 | format version ([`FORMAT_VERSION`]) |
//! | 5 | 1 | codec id ([`CodecId`]) |
//! | 6 | 2 | reserved, must be zero |
//! | 8 | 8 | value count `n` (u64 LE) |
//! | 16 | 8 | body length in bytes (u64 LE): everything after the header |
//!
//! The body holds the codec's parameters, then its payload; each codec module documents its own.
//! All integers and floats are little-endian. Decoding checks every length, index and count against
//! `types::limits::sync` and the caller's expected length before allocating, and returns a
//! [`CodecError`] on anything malformed: decoding never panics.

mod dct;
mod dense;
mod int8;
mod topk;

use std::fmt;
use std::str::FromStr;

use types::limits::sync as limits;

pub use dct::DctSign;
pub use dense::{DenseBf16, DenseFp16, DenseFp32};
pub use int8::Int8Block;
pub use topk::TopK;

use crate::wire::{self, Reader, Truncated};

/// First four bytes of every encoded update.
pub const MAGIC: [u8; 4] = *b"CWUP";
/// Version of the header and of every codec body defined here.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes in the common header.
pub const HEADER_BYTES: usize = 24;

/// Wire identifier of a codec (header byte 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CodecId {
    Fp32 = 1,
    Bf16 = 2,
    Fp16 = 3,
    Int8Block = 4,
    TopK = 5,
    DctSign = 6,
}

impl CodecId {
    pub fn from_byte(byte: u8) -> Option<CodecId> {
        match byte {
            1 => Some(CodecId::Fp32),
            2 => Some(CodecId::Bf16),
            3 => Some(CodecId::Fp16),
            4 => Some(CodecId::Int8Block),
            5 => Some(CodecId::TopK),
            6 => Some(CodecId::DctSign),
            _ => None,
        }
    }
}

/// Why bytes are not a valid encoded update. Every decoder returns this, never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("update is truncated")]
    Truncated,
    #[error("update is {0} bytes, more than the limit")]
    TooLarge(usize),
    #[error("bad magic: not an encoded update")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    #[error("update was encoded with codec {found:?}, expected {expected:?}")]
    WrongCodec { expected: CodecId, found: CodecId },
    #[error("reserved header bits are set")]
    ReservedNonZero,
    #[error("update holds {found} values, expected {expected}")]
    LengthMismatch { expected: u64, found: u64 },
    #[error("expected length {0} is over the limit")]
    ExpectedTooLong(usize),
    #[error("body length field says {declared} bytes, {actual} present")]
    BodyLength { declared: u64, actual: u64 },
    #[error("payload must be {expected} bytes for these parameters, found {actual}")]
    PayloadSize { expected: u64, actual: u64 },
    #[error("codec parameter {name} = {value} is out of bounds")]
    BadParameter { name: &'static str, value: u64 },
    #[error("value {index} is not finite")]
    NonFinite { index: u64 },
    #[error("index {index} in chunk {chunk} is out of range")]
    IndexOutOfRange { chunk: u64, index: u64 },
    #[error("indices in chunk {chunk} are not strictly increasing")]
    IndexOrder { chunk: u64 },
    #[error("quantized code {code} is invalid")]
    InvalidCode { code: i64 },
}

impl From<Truncated> for CodecError {
    fn from(_: Truncated) -> CodecError {
        CodecError::Truncated
    }
}

/// A parsed, checked common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub codec: CodecId,
    /// Value count, already checked equal to the caller's expected length.
    pub values: usize,
    pub body_bytes: u64,
}

/// Error feedback state of one worker, held by the caller between rounds.
///
/// With feedback on, encoding `x` computes `e ← decay·e + x`, encodes `e`, and keeps
/// `e ← e − decode(encode(e))`: what was not sent is carried into the next round (SparseLoCo, DeMo).
/// With feedback off, `x` is encoded as is and nothing is carried. Save and restore it with
/// [`crate::outer::encode_feedback`] / [`crate::outer::decode_feedback`] (bit-exact).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFeedback {
    pub(crate) enabled: bool,
    pub(crate) decay: f32,
    /// Created at the first encode, sized to the update.
    pub(crate) residual: Option<Vec<f32>>,
}

impl ErrorFeedback {
    /// No feedback: each update is encoded on its own.
    pub fn off() -> ErrorFeedback {
        ErrorFeedback {
            enabled: false,
            decay: 0.0,
            residual: None,
        }
    }

    /// Feedback with the residual scaled by `decay` each round (1.0: classic error feedback).
    pub fn new(decay: f32) -> ErrorFeedback {
        assert!(
            decay.is_finite() && (0.0..=1.0).contains(&decay),
            "decay must be in [0, 1]"
        );
        ErrorFeedback {
            enabled: true,
            decay,
            residual: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn decay(&self) -> f32 {
        self.decay
    }

    /// What has not been sent yet (None before the first encode or when off).
    pub fn residual(&self) -> Option<&[f32]> {
        self.residual.as_deref()
    }
}

/// A codec for pseudo-gradients. Implementations are pure and deterministic.
pub trait Codec {
    /// Wire id written in the header.
    fn id(&self) -> CodecId;

    /// Encodes `values` on their own. When `residual` is given it holds a copy of `values` on
    /// entry, and on return holds `values − decode(bytes)` (what this message failed to carry).
    fn compress(&self, values: &[f32], residual: Option<&mut [f32]>) -> Vec<u8>;

    /// Encodes `values`, folding them into `feedback` first when it is on.
    fn encode(&self, values: &[f32], feedback: &mut ErrorFeedback) -> Vec<u8> {
        assert!(
            values.len() <= limits::UPDATE_VALUES_MAX,
            "update over UPDATE_VALUES_MAX"
        );
        if !feedback.enabled {
            return self.compress(values, None);
        }
        let decay = feedback.decay;
        let residual = feedback
            .residual
            .get_or_insert_with(|| vec![0.0; values.len()]);
        assert_eq!(
            residual.len(),
            values.len(),
            "error feedback was sized for another update"
        );
        for (e, x) in residual.iter_mut().zip(values) {
            *e = decay * *e + x;
        }
        let work = residual.clone();
        self.compress(&work, Some(residual))
    }

    /// Decodes bytes that must have been encoded by this codec, holding `expected_len` values.
    fn decode(&self, bytes: &[u8], expected_len: usize) -> Result<Vec<f32>, CodecError> {
        let header = read_header(bytes, expected_len)?;
        if header.codec != self.id() {
            return Err(CodecError::WrongCodec {
                expected: self.id(),
                found: header.codec,
            });
        }
        decode_body(&header, &bytes[HEADER_BYTES..])
    }
}

/// Decodes any encoded update; the header names the codec and its parameters.
pub fn decode(bytes: &[u8], expected_len: usize) -> Result<Vec<f32>, CodecError> {
    let header = read_header(bytes, expected_len)?;
    decode_body(&header, &bytes[HEADER_BYTES..])
}

/// Reads and checks the common header against the caller's expected value count.
pub fn read_header(bytes: &[u8], expected_len: usize) -> Result<Header, CodecError> {
    if expected_len > limits::UPDATE_VALUES_MAX {
        return Err(CodecError::ExpectedTooLong(expected_len));
    }
    if bytes.len() as u64 > limits::UPDATE_BYTES_MAX {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let mut reader = Reader::new(bytes);
    if reader.array::<4>()? != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = reader.u8()?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let id_byte = reader.u8()?;
    let codec = CodecId::from_byte(id_byte).ok_or(CodecError::UnknownCodec(id_byte))?;
    if reader.u16()? != 0 {
        return Err(CodecError::ReservedNonZero);
    }
    let values = reader.u64()?;
    if values != expected_len as u64 {
        return Err(CodecError::LengthMismatch {
            expected: expected_len as u64,
            found: values,
        });
    }
    let body_bytes = reader.u64()?;
    let actual = reader.remaining() as u64;
    if body_bytes != actual {
        return Err(CodecError::BodyLength {
            declared: body_bytes,
            actual,
        });
    }
    Ok(Header {
        codec,
        values: expected_len,
        body_bytes,
    })
}

fn decode_body(header: &Header, body: &[u8]) -> Result<Vec<f32>, CodecError> {
    match header.codec {
        CodecId::Fp32 => dense::decode_fp32(body, header.values),
        CodecId::Bf16 => dense::decode_bf16(body, header.values),
        CodecId::Fp16 => dense::decode_fp16(body, header.values),
        CodecId::Int8Block => int8::decode(body, header.values),
        CodecId::TopK => topk::decode(body, header.values),
        CodecId::DctSign => dct::decode(body, header.values),
    }
}

/// Starts an encoded update: header with the body length filled in by [`finish_update`].
pub(crate) fn start_update(codec: CodecId, values: usize, body_capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body_capacity);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(codec as u8);
    wire::put_u16(&mut out, 0);
    wire::put_u64(&mut out, values as u64);
    wire::put_u64(&mut out, 0);
    out
}

/// Writes the body length into a header made by [`start_update`].
pub(crate) fn finish_update(mut out: Vec<u8>) -> Vec<u8> {
    let body = (out.len() - HEADER_BYTES) as u64;
    out[16..24].copy_from_slice(&body.to_le_bytes());
    out
}

/// Checks that a payload has exactly the size its parameters imply.
pub(crate) fn check_payload(expected: Option<u64>, actual: usize) -> Result<(), CodecError> {
    let actual = actual as u64;
    match expected {
        Some(expected) if expected == actual => Ok(()),
        Some(expected) => Err(CodecError::PayloadSize { expected, actual }),
        None => Err(CodecError::PayloadSize {
            expected: u64::MAX,
            actual,
        }),
    }
}

/// Every codec with its parameters: what a run's genesis config or the CLI names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CodecKind {
    Fp32,
    Bf16,
    Fp16,
    Int8Block(Int8Block),
    TopK(TopK),
    DctSign(DctSign),
}

impl CodecKind {
    pub fn codec(&self) -> &dyn Codec {
        match self {
            CodecKind::Fp32 => &DenseFp32,
            CodecKind::Bf16 => &DenseBf16,
            CodecKind::Fp16 => &DenseFp16,
            CodecKind::Int8Block(codec) => codec,
            CodecKind::TopK(codec) => codec,
            CodecKind::DctSign(codec) => codec,
        }
    }

    pub fn id(&self) -> CodecId {
        self.codec().id()
    }
}

/// Why a codec name did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecParseError {
    #[error("unknown codec {0:?}; expected fp32, bf16, fp16, int8, topk or dct")]
    UnknownCodec(String),
    #[error("codec option {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("codec {codec} has no option {key:?}")]
    UnknownOption { codec: &'static str, key: String },
    #[error("codec option {key} has invalid value {value:?}")]
    BadValue { key: String, value: String },
}

impl FromStr for CodecKind {
    type Err = CodecParseError;

    /// `fp32`, `bf16`, `fp16`, `int8[:block=B,sigmas=S]`, `topk[:chunk=C,k=K,bits=B,group=G,sigmas=S]`,
    /// `dct[:side=S,k=K]`. Omitted options take the documented defaults.
    fn from_str(text: &str) -> Result<CodecKind, CodecParseError> {
        let (name, options) = match text.split_once(':') {
            Some((name, options)) => (name, options),
            None => (text, ""),
        };
        let mut pairs = Vec::new();
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| CodecParseError::NotKeyValue(option.into()))?;
            pairs.push((key.trim(), value.trim()));
        }
        match name.trim() {
            "fp32" => no_options("fp32", &pairs).map(|_| CodecKind::Fp32),
            "bf16" => no_options("bf16", &pairs).map(|_| CodecKind::Bf16),
            "fp16" => no_options("fp16", &pairs).map(|_| CodecKind::Fp16),
            "int8" => Int8Block::from_options(&pairs).map(CodecKind::Int8Block),
            "topk" => TopK::from_options(&pairs).map(CodecKind::TopK),
            "dct" => DctSign::from_options(&pairs).map(CodecKind::DctSign),
            other => Err(CodecParseError::UnknownCodec(other.into())),
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecKind::Fp32 => f.write_str("fp32"),
            CodecKind::Bf16 => f.write_str("bf16"),
            CodecKind::Fp16 => f.write_str("fp16"),
            CodecKind::Int8Block(c) => {
                write!(f, "int8:block={},sigmas={}", c.block_len, c.range_sigmas)
            }
            CodecKind::TopK(c) => write!(
                f,
                "topk:chunk={},k={},bits={},group={},sigmas={}",
                c.chunk_len, c.k, c.value_bits, c.group_chunks, c.range_sigmas
            ),
            CodecKind::DctSign(c) => write!(f, "dct:side={},k={}", c.side, c.k),
        }
    }
}

fn no_options(codec: &'static str, pairs: &[(&str, &str)]) -> Result<(), CodecParseError> {
    match pairs.first() {
        Some((key, _)) => Err(CodecParseError::UnknownOption {
            codec,
            key: (*key).into(),
        }),
        None => Ok(()),
    }
}

pub(crate) fn parse_value<T: FromStr>(key: &str, value: &str) -> Result<T, CodecParseError> {
    value.parse().map_err(|_| CodecParseError::BadValue {
        key: key.into(),
        value: value.into(),
    })
}

pub(crate) fn bad_value(key: &str, value: impl fmt::Display) -> CodecParseError {
    CodecParseError::BadValue {
        key: key.into(),
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for text in [
            "fp32",
            "bf16",
            "fp16",
            "int8",
            "topk",
            "dct",
            "topk:k=32,chunk=1024",
            "dct:side=32,k=16",
        ] {
            let kind: CodecKind = text.parse().unwrap();
            let again: CodecKind = kind.to_string().parse().unwrap();
            assert_eq!(kind, again);
        }
        assert!(matches!(
            "zip".parse::<CodecKind>(),
            Err(CodecParseError::UnknownCodec(_))
        ));
        assert!(matches!(
            "fp32:k=1".parse::<CodecKind>(),
            Err(CodecParseError::UnknownOption { .. })
        ));
        assert!(matches!(
            "topk:k=0".parse::<CodecKind>(),
            Err(CodecParseError::BadValue { .. })
        ));
        assert!(matches!(
            "topk:k".parse::<CodecKind>(),
            Err(CodecParseError::NotKeyValue(_))
        ));
    }

    #[test]
    fn header_errors_are_typed() {
        let codec = DenseFp32;
        let bytes = codec.encode(&[1.0, 2.0], &mut ErrorFeedback::off());
        assert_eq!(decode(&bytes, 2).unwrap(), vec![1.0, 2.0]);
        assert_eq!(
            decode(&bytes, 3),
            Err(CodecError::LengthMismatch {
                expected: 3,
                found: 2
            })
        );
        assert_eq!(decode(&bytes[..10], 2), Err(CodecError::Truncated));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad, 2), Err(CodecError::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad, 2), Err(CodecError::UnsupportedVersion(9)));
        let mut bad = bytes.clone();
        bad[5] = 77;
        assert_eq!(decode(&bad, 2), Err(CodecError::UnknownCodec(77)));
        let mut bad = bytes.clone();
        bad[6] = 1;
        assert_eq!(decode(&bad, 2), Err(CodecError::ReservedNonZero));
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(matches!(
            decode(&bad, 2),
            Err(CodecError::BodyLength { .. })
        ));
        assert_eq!(
            DenseBf16.decode(&bytes, 2),
            Err(CodecError::WrongCodec {
                expected: CodecId::Bf16,
                found: CodecId::Fp32
            })
        );
        assert_eq!(
            decode(&bytes, limits::UPDATE_VALUES_MAX + 1),
            Err(CodecError::ExpectedTooLong(limits::UPDATE_VALUES_MAX + 1))
        );
    }

    #[test]
    fn feedback_carries_what_was_not_sent() {
        let codec = TopK {
            chunk_len: 8,
            k: 2,
            ..TopK::default()
        };
        let mut feedback = ErrorFeedback::new(1.0);
        let values = [1.0f32, 0.5, -3.0, 0.25, 0.0, 2.0, -0.1, 0.3];
        let bytes = codec.encode(&values, &mut feedback);
        let sent = decode(&bytes, values.len()).unwrap();
        for i in 0..values.len() {
            let carried = feedback.residual().unwrap()[i];
            let error = (carried + sent[i] - values[i]).abs();
            assert!(error <= 1e-6 * values[i].abs(), "coordinate {i}");
        }
    }
}
