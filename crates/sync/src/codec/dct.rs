//! DCT + top-k + sign (DeMo / DisTrO style): each chunk of `side²` values is read as a
//! `side × side` matrix, moved to the frequency domain by an orthonormal 2-D DCT-II, and only its
//! `k` largest coefficients are kept, each as one sign bit times a per-chunk magnitude.
//!
//! Body (all little-endian):
//! - params: `side: u32`, `k: u32` (8 bytes);
//! - scales: one f32 per chunk, the mean magnitude of the kept coefficients (≥ 0);
//! - indices: per chunk, `k` coefficient indices (row-major in the `side × side` spectrum),
//!   strictly increasing, packed LSB-first at `index_bits(side²)` bits (12 for side 64);
//! - signs: one bit per index in the same order, 1 meaning negative.
//!
//! The last chunk is zero-padded to `side²` values; decoding drops the padding.
//! Reconstruction is the orthonormal inverse DCT of the sparse ±scale spectrum.
//!
//! Error bound: on a full chunk, let `c` be the spectrum of `x` and `s` the scale. Then
//! `⟨x, x̂⟩ = s·Σ|c_kept| = k·s² = ‖x̂‖²`, so `‖x − x̂‖² = ‖x‖² − ‖x̂‖² ≤ ‖x‖²`: every message
//! removes exactly `‖x̂‖² = k·s²` of the chunk's energy and never adds any (up to f32 rounding).
//! With error feedback on (DeMo's momentum residual), what was not sent stays in the residual.

use types::limits::sync as limits;

use super::topk::select_top_k;
use super::{
    bad_value, check_payload, finish_update, parse_value, start_update, Codec, CodecError, CodecId,
    CodecParseError,
};
use crate::wire::{self, index_bits, packed_bytes, BitReader, BitWriter, Reader};

/// DCT + top-k + sign codec parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DctSign {
    /// Side of the square chunk: each chunk holds `side²` values.
    pub side: u32,
    /// Coefficients kept per chunk.
    pub k: u32,
}

impl Default for DctSign {
    /// Chunks of 64 × 64 = 4096 values, 64 coefficients kept (13 bits each: 12 index + 1 sign).
    fn default() -> DctSign {
        DctSign { side: 64, k: 64 }
    }
}

const PARAMS_BYTES: u64 = 8;

struct Layout {
    chunks: u64,
    kept: u64,
    index_bytes: u64,
    sign_bytes: u64,
}

impl Layout {
    fn of(values: u64, side: u32, k: u32) -> Option<Layout> {
        let chunk_len = u64::from(side) * u64::from(side);
        let chunks = values.div_ceil(chunk_len);
        let kept = chunks.checked_mul(u64::from(k))?;
        let index_bytes = packed_bytes(kept, index_bits(chunk_len as u32))?;
        let sign_bytes = packed_bytes(kept, 1)?;
        Some(Layout {
            chunks,
            kept,
            index_bytes,
            sign_bytes,
        })
    }

    fn body_bytes(&self) -> Option<u64> {
        PARAMS_BYTES
            .checked_add(self.chunks.checked_mul(4)?)?
            .checked_add(self.index_bytes)?
            .checked_add(self.sign_bytes)
    }
}

/// The orthonormal DCT-II matrix `C` (`C[u][i]`, row-major): spectrum = `C · X · Cᵀ`.
struct DctMatrix {
    side: usize,
    forward: Vec<f32>,
    /// `Cᵀ`, so both passes stream rows.
    transposed: Vec<f32>,
}

impl DctMatrix {
    fn new(side: usize) -> DctMatrix {
        let mut forward = vec![0.0f32; side * side];
        for u in 0..side {
            let alpha = if u == 0 {
                (1.0 / side as f64).sqrt()
            } else {
                (2.0 / side as f64).sqrt()
            };
            for i in 0..side {
                let angle =
                    std::f64::consts::PI * (2 * i + 1) as f64 * u as f64 / (2 * side) as f64;
                forward[u * side + i] = (alpha * angle.cos()) as f32;
            }
        }
        let mut transposed = vec![0.0f32; side * side];
        for u in 0..side {
            for i in 0..side {
                transposed[i * side + u] = forward[u * side + i];
            }
        }
        DctMatrix {
            side,
            forward,
            transposed,
        }
    }

    /// `out = A · B` for `side × side` row-major matrices, as row axpys (vectorizes, fixed order).
    fn multiply(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        let n = self.side;
        out.fill(0.0);
        for row in 0..n {
            let out_row = &mut out[row * n..(row + 1) * n];
            for (inner, &scale) in a[row * n..(row + 1) * n].iter().enumerate() {
                if scale == 0.0 {
                    continue;
                }
                for (o, &x) in out_row.iter_mut().zip(&b[inner * n..(inner + 1) * n]) {
                    *o += scale * x;
                }
            }
        }
    }

    /// spectrum = C · X · Cᵀ.
    fn forward(&self, block: &[f32], scratch: &mut [f32], spectrum: &mut [f32]) {
        self.multiply(block, &self.transposed, scratch);
        self.multiply(&self.forward, scratch, spectrum);
    }

    /// X = Cᵀ · spectrum · C. The encoder's residual and the decoder share this exact code path.
    fn inverse(&self, spectrum: &[f32], scratch: &mut [f32], block: &mut [f32]) {
        self.multiply(spectrum, &self.forward, scratch);
        self.multiply(&self.transposed, scratch, block);
    }
}

/// Per-chunk buffers, reused across chunks.
struct Scratch {
    block: Vec<f32>,
    spectrum: Vec<f32>,
    temp: Vec<f32>,
    order: Vec<u32>,
}

impl Scratch {
    fn new(chunk_len: usize) -> Scratch {
        Scratch {
            block: vec![0.0; chunk_len],
            spectrum: vec![0.0; chunk_len],
            temp: vec![0.0; chunk_len],
            order: Vec::with_capacity(chunk_len),
        }
    }
}

impl DctSign {
    pub(crate) fn from_options(pairs: &[(&str, &str)]) -> Result<DctSign, CodecParseError> {
        let mut codec = DctSign::default();
        for &(key, value) in pairs {
            match key {
                "side" => codec.side = parse_value(key, value)?,
                "k" => codec.k = parse_value(key, value)?,
                _ => {
                    return Err(CodecParseError::UnknownOption {
                        codec: "dct",
                        key: key.into(),
                    })
                }
            }
        }
        if codec.side == 0 || codec.side > limits::DCT_SIDE_VALUES_MAX {
            return Err(bad_value("side", codec.side));
        }
        if codec.k == 0 || codec.k > codec.side * codec.side {
            return Err(bad_value("k", codec.k));
        }
        Ok(codec)
    }
}

impl Codec for DctSign {
    fn id(&self) -> CodecId {
        CodecId::DctSign
    }

    fn compress(&self, values: &[f32], mut residual: Option<&mut [f32]>) -> Vec<u8> {
        assert!(
            self.side >= 1 && self.side <= limits::DCT_SIDE_VALUES_MAX,
            "dct side out of bounds"
        );
        assert!(
            self.k >= 1 && self.k <= self.side * self.side,
            "dct k out of bounds"
        );
        let side = self.side as usize;
        let chunk_len = side * side;
        let layout =
            Layout::of(values.len() as u64, self.side, self.k).expect("dct layout overflows");
        let idx_bits = index_bits(chunk_len as u32);
        let matrix = DctMatrix::new(side);
        let mut scratch = Scratch::new(chunk_len);
        let mut scales = Vec::with_capacity(layout.chunks as usize * 4);
        let mut indices = BitWriter::with_capacity(layout.index_bytes as usize);
        let mut signs = BitWriter::with_capacity(layout.sign_bytes as usize);
        for (chunk_index, chunk) in values.chunks(chunk_len).enumerate() {
            scratch.block[..chunk.len()].copy_from_slice(chunk);
            scratch.block[chunk.len()..].fill(0.0);
            matrix.forward(&scratch.block, &mut scratch.temp, &mut scratch.spectrum);
            select_top_k(&scratch.spectrum, self.k as usize, &mut scratch.order);
            let magnitude: f64 = scratch
                .order
                .iter()
                .map(|&i| f64::from(scratch.spectrum[i as usize].abs()))
                .sum();
            let scale = (magnitude / f64::from(self.k)) as f32;
            wire::put_f32(&mut scales, scale);
            for &index in &scratch.order {
                indices.push(index, idx_bits);
                signs.push(u32::from(scratch.spectrum[index as usize] < 0.0), 1);
            }
            if let Some(residual) = residual.as_deref_mut() {
                let negative: Vec<bool> = scratch
                    .order
                    .iter()
                    .map(|&i| scratch.spectrum[i as usize] < 0.0)
                    .collect();
                reconstruct(&matrix, &mut scratch, scale, &negative);
                let base = chunk_index * chunk_len;
                for (i, x) in chunk.iter().enumerate() {
                    residual[base + i] = x - scratch.block[i];
                }
            }
        }
        let body = layout.body_bytes().expect("dct body overflows") as usize;
        let mut out = start_update(CodecId::DctSign, values.len(), body);
        wire::put_u32(&mut out, self.side);
        wire::put_u32(&mut out, self.k);
        out.extend_from_slice(&scales);
        out.extend_from_slice(&indices.finish());
        out.extend_from_slice(&signs.finish());
        finish_update(out)
    }
}

/// Fills `scratch.block` with the inverse DCT of ±scale at `scratch.order` (signs in `negative`).
fn reconstruct(matrix: &DctMatrix, scratch: &mut Scratch, scale: f32, negative: &[bool]) {
    scratch.spectrum.fill(0.0);
    for (&index, &is_negative) in scratch.order.iter().zip(negative) {
        scratch.spectrum[index as usize] = if is_negative { -scale } else { scale };
    }
    matrix.inverse(&scratch.spectrum, &mut scratch.temp, &mut scratch.block);
}

pub(super) fn decode(body: &[u8], values: usize) -> Result<Vec<f32>, CodecError> {
    let mut reader = Reader::new(body);
    let side = reader.u32()?;
    let k = reader.u32()?;
    if side == 0 || side > limits::DCT_SIDE_VALUES_MAX {
        return Err(CodecError::BadParameter {
            name: "side",
            value: u64::from(side),
        });
    }
    if k == 0 || k > side * side {
        return Err(CodecError::BadParameter {
            name: "k",
            value: u64::from(k),
        });
    }
    let layout = Layout::of(values as u64, side, k);
    check_payload(layout.as_ref().and_then(Layout::body_bytes), body.len())?;
    let layout = layout.expect("checked by check_payload");
    debug_assert_eq!(layout.kept, layout.chunks * u64::from(k));
    let scales = reader.take(layout.chunks as usize * 4)?;
    let mut indices = BitReader::new(reader.take(layout.index_bytes as usize)?);
    let mut signs = BitReader::new(reader.take(layout.sign_bytes as usize)?);
    let side = side as usize;
    let chunk_len = side * side;
    let idx_bits = index_bits(chunk_len as u32);
    let matrix = DctMatrix::new(side);
    let mut scratch = Scratch::new(chunk_len);
    let mut negative = Vec::with_capacity(k as usize);
    let mut out = Vec::with_capacity(values);
    for (chunk, scale_bytes) in scales.chunks_exact(4).enumerate() {
        let scale = f32::from_le_bytes([
            scale_bytes[0],
            scale_bytes[1],
            scale_bytes[2],
            scale_bytes[3],
        ]);
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(CodecError::NonFinite {
                index: chunk as u64,
            });
        }
        scratch.order.clear();
        negative.clear();
        for _ in 0..k {
            let index = indices.read(idx_bits)?;
            if index as usize >= chunk_len {
                return Err(CodecError::IndexOutOfRange {
                    chunk: chunk as u64,
                    index: u64::from(index),
                });
            }
            if scratch.order.last().is_some_and(|&p| p >= index) {
                return Err(CodecError::IndexOrder {
                    chunk: chunk as u64,
                });
            }
            scratch.order.push(index);
            negative.push(signs.read(1)? == 1);
        }
        reconstruct(&matrix, &mut scratch, scale, &negative);
        let len = chunk_len.min(values - out.len());
        for (i, &value) in scratch.block[..len].iter().enumerate() {
            if !value.is_finite() {
                return Err(CodecError::NonFinite {
                    index: (out.len() + i) as u64,
                });
            }
        }
        out.extend_from_slice(&scratch.block[..len]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, ErrorFeedback};
    use super::*;

    #[test]
    fn dct_matrix_is_orthonormal() {
        let matrix = DctMatrix::new(8);
        let mut product = vec![0.0f32; 64];
        matrix.multiply(&matrix.forward, &matrix.transposed, &mut product);
        for u in 0..8 {
            for v in 0..8 {
                let expected = if u == v { 1.0 } else { 0.0 };
                assert!((product[u * 8 + v] - expected).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn a_single_frequency_is_recovered_exactly_in_shape() {
        // x = one DCT basis function: the top-1 spectrum is that coefficient, and k=1 recovers x.
        let codec = DctSign { side: 4, k: 1 };
        let matrix = DctMatrix::new(4);
        let mut spectrum = vec![0.0f32; 16];
        spectrum[5] = -2.0;
        let mut scratch = vec![0.0f32; 16];
        let mut x = vec![0.0f32; 16];
        matrix.inverse(&spectrum, &mut scratch, &mut x);
        let back = decode(&codec.encode(&x, &mut ErrorFeedback::off()), 16).unwrap();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn partial_chunk_decodes_to_its_length() {
        let codec = DctSign { side: 4, k: 3 };
        let values: Vec<f32> = (0..21).map(|i| (i as f32).sin()).collect();
        let back = decode(&codec.encode(&values, &mut ErrorFeedback::off()), 21).unwrap();
        assert_eq!(back.len(), 21);
    }
}
