//! Dense codecs: fp32 (exact), bf16 and fp16 (round to nearest even).
//!
//! Body: no parameters; payload is `n` little-endian values of 4 (fp32) or 2 (bf16, fp16) bytes.
//!
//! Error bounds, per value `x` with reconstruction `x̂`:
//! - fp32: `x̂ == x` bit for bit.
//! - bf16: `|x̂ − x| ≤ 2⁻⁸·|x| + 2⁻¹³³` (8 significant bits; 2⁻¹³³ covers bf16 subnormals).
//! - fp16: for `|x| ≤ 65504`, `|x̂ − x| ≤ 2⁻¹¹·|x| + 2⁻²⁵`; larger magnitudes saturate to ±65504.
//!
//! Decoding rejects non-finite values: an honest encoder never produces them from finite input.

use half::{bf16, f16, slice::HalfFloatSliceExt};

use super::{check_payload, finish_update, start_update, Codec, CodecError, CodecId};

/// Exact fp32: the reference every other codec is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenseFp32;

/// bfloat16: fp32's range with 8 significant bits, 2 bytes per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenseBf16;

/// IEEE half precision: 11 significant bits, range ±65504, 2 bytes per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenseFp16;

impl Codec for DenseFp32 {
    fn id(&self) -> CodecId {
        CodecId::Fp32
    }

    fn compress(&self, values: &[f32], residual: Option<&mut [f32]>) -> Vec<u8> {
        let mut out = start_update(CodecId::Fp32, values.len(), values.len() * 4);
        let start = out.len();
        out.resize(start + values.len() * 4, 0);
        for (slot, value) in out[start..].chunks_exact_mut(4).zip(values) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        if let Some(residual) = residual {
            residual.fill(0.0);
        }
        finish_update(out)
    }
}

impl Codec for DenseBf16 {
    fn id(&self) -> CodecId {
        CodecId::Bf16
    }

    fn compress(&self, values: &[f32], residual: Option<&mut [f32]>) -> Vec<u8> {
        let mut out = start_update(CodecId::Bf16, values.len(), values.len() * 2);
        let start = out.len();
        out.resize(start + values.len() * 2, 0);
        // Clamp first: f32::MAX would otherwise round up to bf16 infinity.
        let encode = |x: f32| bf16::from_f32(x.clamp(-bf16::MAX.to_f32(), bf16::MAX.to_f32()));
        for (slot, value) in out[start..].chunks_exact_mut(2).zip(values) {
            slot.copy_from_slice(&encode(*value).to_bits().to_le_bytes());
        }
        if let Some(residual) = residual {
            for (r, x) in residual.iter_mut().zip(values) {
                *r = x - encode(*x).to_f32();
            }
        }
        finish_update(out)
    }
}

impl Codec for DenseFp16 {
    fn id(&self) -> CodecId {
        CodecId::Fp16
    }

    fn compress(&self, values: &[f32], mut residual: Option<&mut [f32]>) -> Vec<u8> {
        let mut out = start_update(CodecId::Fp16, values.len(), values.len() * 2);
        let start = out.len();
        out.resize(start + values.len() * 2, 0);
        // Clamp, then convert a block at a time: half's slice conversion uses F16C when the CPU has it.
        const BLOCK: usize = 4096;
        let max = f16::MAX.to_f32();
        let mut clamped = [0.0f32; BLOCK];
        let mut halves = [f16::ZERO; BLOCK];
        for (index, block) in values.chunks(BLOCK).enumerate() {
            let clamped = &mut clamped[..block.len()];
            let halves = &mut halves[..block.len()];
            for (c, x) in clamped.iter_mut().zip(block) {
                *c = x.clamp(-max, max);
            }
            halves.convert_from_f32_slice(clamped);
            let bytes = &mut out[start + index * BLOCK * 2..];
            for (slot, h) in bytes.chunks_exact_mut(2).zip(halves.iter()) {
                slot.copy_from_slice(&h.to_bits().to_le_bytes());
            }
            if let Some(residual) = residual.as_deref_mut() {
                let residual = &mut residual[index * BLOCK..index * BLOCK + block.len()];
                for ((r, x), h) in residual.iter_mut().zip(block).zip(halves.iter()) {
                    *r = x - h.to_f32();
                }
            }
        }
        finish_update(out)
    }
}

pub(super) fn decode_fp32(body: &[u8], values: usize) -> Result<Vec<f32>, CodecError> {
    check_payload((values as u64).checked_mul(4), body.len())?;
    // Convert, then check finiteness with a branch-free fold: both loops vectorize, a per-value early exit
    // does not.
    let out: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if out.iter().fold(false, |bad, v| bad | !v.is_finite()) {
        let index = out.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(CodecError::NonFinite {
            index: index as u64,
        });
    }
    Ok(out)
}

pub(super) fn decode_bf16(body: &[u8], values: usize) -> Result<Vec<f32>, CodecError> {
    decode_halves(body, values, |bits| bf16::from_bits(bits).to_f32())
}

pub(super) fn decode_fp16(body: &[u8], values: usize) -> Result<Vec<f32>, CodecError> {
    decode_halves(body, values, |bits| f16::from_bits(bits).to_f32())
}

fn decode_halves(
    body: &[u8],
    values: usize,
    widen: impl Fn(u16) -> f32,
) -> Result<Vec<f32>, CodecError> {
    check_payload((values as u64).checked_mul(2), body.len())?;
    let mut out = Vec::with_capacity(values);
    for (index, bytes) in body.chunks_exact(2).enumerate() {
        let value = widen(u16::from_le_bytes([bytes[0], bytes[1]]));
        if !value.is_finite() {
            return Err(CodecError::NonFinite {
                index: index as u64,
            });
        }
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, ErrorFeedback, HEADER_BYTES};
    use super::*;

    #[test]
    fn fp32_is_exact_and_sized() {
        let values = [0.0f32, -0.0, 1.5, f32::MIN_POSITIVE, -1e-45, 3.4e38];
        let bytes = DenseFp32.encode(&values, &mut ErrorFeedback::off());
        assert_eq!(bytes.len(), HEADER_BYTES + values.len() * 4);
        let back = decode(&bytes, values.len()).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&values));
    }

    #[test]
    fn halves_saturate_instead_of_overflowing() {
        let values = [f32::MAX, -f32::MAX, 1e6, -1e6];
        let back = decode(&DenseBf16.encode(&values, &mut ErrorFeedback::off()), 4).unwrap();
        assert!(back.iter().all(|x| x.is_finite()));
        let back = decode(&DenseFp16.encode(&values, &mut ErrorFeedback::off()), 4).unwrap();
        assert_eq!(back, vec![65504.0, -65504.0, 65504.0, -65504.0]);
    }

    #[test]
    fn non_finite_is_rejected() {
        let mut bytes = DenseFp16.encode(&[1.0, 2.0], &mut ErrorFeedback::off());
        let at = HEADER_BYTES + 2;
        bytes[at..at + 2].copy_from_slice(&f16::INFINITY.to_bits().to_le_bytes());
        assert_eq!(decode(&bytes, 2), Err(CodecError::NonFinite { index: 1 }));
        let mut bytes = DenseFp32.encode(&[1.0], &mut ErrorFeedback::off());
        bytes[HEADER_BYTES..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(decode(&bytes, 1), Err(CodecError::NonFinite { index: 0 }));
    }
}
