//! Blockwise int8 (INTELLECT-1 style): one scale per block, codes in −127..=127, range ±kσ.
//!
//! Body: `block_len: u32`, `range_sigmas: f32`, then for each block of `block_len` values (the last
//! may be shorter) its `scale: f32` followed by one `i8` code per value. `x̂ = code · scale`.
//!
//! Encoding a block: σ is the block's root mean square, the range is `r = min(k·σ, max|x|)`,
//! `scale = r / 127`, `code = clamp(round(x / scale), −127, 127)`.
//!
//! Error bound, per value: `|x̂ − x| ≤ scale/2 + max(0, |x| − r)`, up to f32 rounding of the
//! product (≤ 2⁻²³·|x̂|). Values inside ±r lose at most half a step; values outside are clipped to ±r.
//! With error feedback on, the clipped part is carried to the next round.

use types::limits::sync as limits;

use super::{
    bad_value, check_payload, finish_update, parse_value, start_update, Codec, CodecError, CodecId,
    CodecParseError,
};
use crate::wire::{self, Reader};

/// Blockwise int8 codec parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Block {
    /// Values per block (each block carries one f32 scale).
    pub block_len: u32,
    /// The range in units of the block's RMS (k in ±kσ).
    pub range_sigmas: f32,
}

impl Default for Int8Block {
    fn default() -> Int8Block {
        Int8Block {
            block_len: 256,
            range_sigmas: 4.0,
        }
    }
}

const PARAMS_BYTES: u64 = 8;
const CODE_MAX: f32 = 127.0;

impl Int8Block {
    pub(crate) fn from_options(pairs: &[(&str, &str)]) -> Result<Int8Block, CodecParseError> {
        let mut codec = Int8Block::default();
        for &(key, value) in pairs {
            match key {
                "block" => codec.block_len = parse_value(key, value)?,
                "sigmas" => codec.range_sigmas = parse_value(key, value)?,
                _ => {
                    return Err(CodecParseError::UnknownOption {
                        codec: "int8",
                        key: key.into(),
                    })
                }
            }
        }
        if codec.block_len == 0 || codec.block_len > limits::INT8_BLOCK_VALUES_MAX {
            return Err(bad_value("block", codec.block_len));
        }
        if !(codec.range_sigmas.is_finite() && codec.range_sigmas > 0.0) {
            return Err(bad_value("sigmas", codec.range_sigmas));
        }
        Ok(codec)
    }

    /// The scale this codec gives a block (public so tests and callers can state the bound).
    pub fn block_scale(&self, block: &[f32]) -> f32 {
        let mut sum_squares = 0.0f64;
        let mut max_abs = 0.0f32;
        for x in block {
            sum_squares += f64::from(*x) * f64::from(*x);
            max_abs = max_abs.max(x.abs());
        }
        let rms = (sum_squares / block.len().max(1) as f64).sqrt();
        let range = (f64::from(self.range_sigmas) * rms).min(f64::from(max_abs));
        (range / f64::from(CODE_MAX)) as f32
    }
}

fn quantize(x: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    (x / scale).round().clamp(-CODE_MAX, CODE_MAX) as i8
}

impl Codec for Int8Block {
    fn id(&self) -> CodecId {
        CodecId::Int8Block
    }

    fn compress(&self, values: &[f32], mut residual: Option<&mut [f32]>) -> Vec<u8> {
        assert!(self.block_len >= 1 && self.block_len <= limits::INT8_BLOCK_VALUES_MAX);
        let block_len = self.block_len as usize;
        let blocks = values.len().div_ceil(block_len);
        let mut out = start_update(
            CodecId::Int8Block,
            values.len(),
            8 + blocks * 4 + values.len(),
        );
        wire::put_u32(&mut out, self.block_len);
        wire::put_f32(&mut out, self.range_sigmas);
        for (block_index, block) in values.chunks(block_len).enumerate() {
            let scale = self.block_scale(block);
            wire::put_f32(&mut out, scale);
            let start = out.len();
            out.resize(start + block.len(), 0);
            for (slot, x) in out[start..].iter_mut().zip(block) {
                *slot = quantize(*x, scale) as u8;
            }
            if let Some(residual) = residual.as_deref_mut() {
                let offset = block_index * block_len;
                for (i, x) in block.iter().enumerate() {
                    residual[offset + i] = x - f32::from(quantize(*x, scale)) * scale;
                }
            }
        }
        finish_update(out)
    }
}

pub(super) fn decode(body: &[u8], values: usize) -> Result<Vec<f32>, CodecError> {
    let mut reader = Reader::new(body);
    let block_len = reader.u32()?;
    let range_sigmas = reader.f32()?;
    if block_len == 0 || block_len > limits::INT8_BLOCK_VALUES_MAX {
        return Err(CodecError::BadParameter {
            name: "block_len",
            value: u64::from(block_len),
        });
    }
    if !(range_sigmas.is_finite() && range_sigmas > 0.0) {
        return Err(CodecError::BadParameter {
            name: "range_sigmas",
            value: u64::from(range_sigmas.to_bits()),
        });
    }
    let blocks = (values as u64).div_ceil(u64::from(block_len));
    let expected = blocks
        .checked_mul(4)
        .and_then(|b| b.checked_add(values as u64));
    check_payload(
        expected.and_then(|p| p.checked_add(PARAMS_BYTES)),
        body.len(),
    )?;
    let mut out = Vec::with_capacity(values);
    let mut remaining = values;
    while remaining > 0 {
        let len = remaining.min(block_len as usize);
        let scale = reader.f32()?;
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(CodecError::NonFinite {
                index: out.len() as u64,
            });
        }
        for &byte in reader.take(len)? {
            let code = byte as i8;
            if code == i8::MIN {
                return Err(CodecError::InvalidCode {
                    code: i64::from(code),
                });
            }
            let value = f32::from(code) * scale;
            if !value.is_finite() {
                return Err(CodecError::NonFinite {
                    index: out.len() as u64,
                });
            }
            out.push(value);
        }
        remaining -= len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, ErrorFeedback, HEADER_BYTES};
    use super::*;

    #[test]
    fn small_block_round_trips_within_half_a_step() {
        let codec = Int8Block {
            block_len: 4,
            range_sigmas: 4.0,
        };
        let values = [0.1f32, -0.2, 0.3, -0.4, 5.0, 0.0];
        let back = decode(&codec.encode(&values, &mut ErrorFeedback::off()), 6).unwrap();
        for (block, decoded) in values.chunks(4).zip(back.chunks(4)) {
            let scale = codec.block_scale(block);
            for (x, y) in block.iter().zip(decoded) {
                assert!((x - y).abs() <= scale / 2.0 + 1e-7, "{x} vs {y}");
            }
        }
        // A one-value block is exact up to rounding: its range is its own magnitude.
        assert!((back[4] - 5.0).abs() < 1e-6);
        assert_eq!(back[5], 0.0);
    }

    #[test]
    fn code_minus_128_and_bad_scales_are_rejected() {
        let codec = Int8Block {
            block_len: 2,
            range_sigmas: 3.0,
        };
        let bytes = codec.encode(&[1.0, -1.0], &mut ErrorFeedback::off());
        let mut bad = bytes.clone();
        bad[HEADER_BYTES + 8 + 4] = 0x80;
        assert_eq!(decode(&bad, 2), Err(CodecError::InvalidCode { code: -128 }));
        let mut bad = bytes.clone();
        bad[HEADER_BYTES + 8..HEADER_BYTES + 12].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert_eq!(decode(&bad, 2), Err(CodecError::NonFinite { index: 0 }));
        let mut bad = bytes.clone();
        bad[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            decode(&bad, 2),
            Err(CodecError::BadParameter {
                name: "block_len",
                ..
            })
        ));
    }
}
