//! Chunked top-k with low-bit quantization (SparseLoCo): per chunk of `chunk_len` values keep the
//! `k` largest magnitudes, send their indices at ⌈log2 chunk_len⌉ bits and their values at
//! `value_bits` bits through a per-group lookup table.
//!
//! Body (all little-endian):
//! - params: `chunk_len: u32`, `k: u32`, `value_bits: u8`, `group_chunks: u32` (13 bytes);
//! - tables: for each group of `group_chunks` chunks, `2^value_bits` f32 reconstruction values;
//! - indices: for each chunk in order, its `min(k, chunk size)` in-chunk indices, strictly
//!   increasing, packed LSB-first at `index_bits(chunk_len)` bits (12 for 4096), padded to a byte;
//! - codes: one `value_bits` code per index in the same order, packed the same way.
//!
//! Quantization (statistical, in the style of SparseLoCo's quantizer): over a group's selected
//! values, with mean μ and unbiased standard deviation σ, `step = range_sigmas·σ / 2^bits`,
//! `code = clamp(⌊(x − μ)/step⌋ + 2^bits/2, 0, 2^bits − 1)` (symmetric bins around μ, the outer two
//! open-ended), and the table entry of a bin is the mean of the values that fell in it.
//!
//! Error bound: a coordinate outside its chunk's top-k decodes to 0, and its magnitude is at most
//! the smallest selected magnitude of its chunk. A selected coordinate decodes to the mean of its
//! bin, so it is off by at most `step` when its bin is an inner one and by at most the spread of
//! its bin otherwise; per group, the sum of decoded values equals the sum of selected values (bin
//! means preserve sums) up to f32 rounding. With error feedback on, all of this error is carried.
//!
//! Size: `13 + groups·2^bits·4 + ⌈s·index_bits/8⌉ + ⌈s·bits/8⌉` bytes for `s` selected values:
//! with the defaults, about 112.3 bytes per 4096 values (146× smaller than fp32).

use types::limits::sync as limits;

use super::{
    bad_value, check_payload, finish_update, parse_value, start_update, Codec, CodecError, CodecId,
    CodecParseError,
};
use crate::wire::{self, index_bits, packed_bytes, BitReader, BitWriter, Reader};

/// Chunked top-k codec parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopK {
    /// Values per chunk; the top k are chosen within each chunk.
    pub chunk_len: u32,
    /// Values kept per chunk (a shorter last chunk keeps at most its length).
    pub k: u32,
    /// Bits per kept value (a table of 2^bits reconstruction values per group).
    pub value_bits: u8,
    /// Chunks sharing one quantization table.
    pub group_chunks: u32,
    /// Width of the quantization grid in units of σ (encoder only; not on the wire).
    pub range_sigmas: f32,
}

impl Default for TopK {
    /// SparseLoCo's setting: chunks of 4096, k = 64, 2-bit values.
    fn default() -> TopK {
        TopK {
            chunk_len: 4096,
            k: 64,
            value_bits: 2,
            group_chunks: 64,
            range_sigmas: 4.0,
        }
    }
}

const PARAMS_BYTES: u64 = 13;

/// Sizes a body must have, derived from the parameters and the value count.
struct Layout {
    chunks: u64,
    table_bytes: u64,
    index_bytes: u64,
    code_bytes: u64,
}

impl Layout {
    fn of(
        values: u64,
        chunk_len: u32,
        k: u32,
        value_bits: u8,
        group_chunks: u32,
    ) -> Option<Layout> {
        let chunk_len = u64::from(chunk_len);
        let k = u64::from(k).min(chunk_len);
        let chunks = values.div_ceil(chunk_len);
        let selected = if chunks == 0 {
            0
        } else {
            let last_len = values - (chunks - 1) * chunk_len;
            (chunks - 1).checked_mul(k)?.checked_add(k.min(last_len))?
        };
        let groups = chunks.div_ceil(u64::from(group_chunks));
        let table_bytes = groups.checked_mul(1u64 << value_bits)?.checked_mul(4)?;
        let index_bytes = packed_bytes(selected, index_bits(chunk_len as u32))?;
        let code_bytes = packed_bytes(selected, u32::from(value_bits))?;
        Some(Layout {
            chunks,
            table_bytes,
            index_bytes,
            code_bytes,
        })
    }

    fn body_bytes(&self) -> Option<u64> {
        PARAMS_BYTES
            .checked_add(self.table_bytes)?
            .checked_add(self.index_bytes)?
            .checked_add(self.code_bytes)
    }
}

impl TopK {
    pub(crate) fn from_options(pairs: &[(&str, &str)]) -> Result<TopK, CodecParseError> {
        let mut codec = TopK::default();
        for &(key, value) in pairs {
            match key {
                "chunk" => codec.chunk_len = parse_value(key, value)?,
                "k" => codec.k = parse_value(key, value)?,
                "bits" => codec.value_bits = parse_value(key, value)?,
                "group" => codec.group_chunks = parse_value(key, value)?,
                "sigmas" => codec.range_sigmas = parse_value(key, value)?,
                _ => {
                    return Err(CodecParseError::UnknownOption {
                        codec: "topk",
                        key: key.into(),
                    })
                }
            }
        }
        codec
            .check()
            .map_err(|(key, value)| bad_value(key, value))?;
        Ok(codec)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.chunk_len == 0 || self.chunk_len > limits::TOPK_CHUNK_VALUES_MAX {
            return Err(("chunk", self.chunk_len.to_string()));
        }
        if self.k == 0 || self.k > self.chunk_len {
            return Err(("k", self.k.to_string()));
        }
        if self.value_bits == 0 || self.value_bits > limits::TOPK_VALUE_BITS_MAX {
            return Err(("bits", self.value_bits.to_string()));
        }
        if self.group_chunks == 0 || self.group_chunks > limits::TOPK_GROUP_CHUNKS_MAX {
            return Err(("group", self.group_chunks.to_string()));
        }
        if !(self.range_sigmas.is_finite() && self.range_sigmas > 0.0) {
            return Err(("sigmas", self.range_sigmas.to_string()));
        }
        Ok(())
    }
}

/// Leaves in `order` the in-chunk indices of the `k` largest magnitudes, ascending.
/// Ties go to the lower index, so the choice is a pure function of the chunk.
pub(crate) fn select_top_k(chunk: &[f32], k: usize, order: &mut Vec<u32>) {
    order.clear();
    order.extend(0..chunk.len() as u32);
    if k < chunk.len() {
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            let (x, y) = (chunk[a as usize].abs(), chunk[b as usize].abs());
            y.total_cmp(&x).then(a.cmp(&b))
        });
        order.truncate(k);
    }
    order.sort_unstable();
}

/// One group's quantizer: codes and the bin-mean table.
fn quantize_group(
    values: &[f32],
    bins: usize,
    range_sigmas: f32,
    codes: &mut Vec<u32>,
) -> Vec<f32> {
    let count = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / count.max(1.0);
    let variance = if values.len() > 1 {
        values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (count - 1.0)
    } else {
        0.0
    };
    let mut step = f64::from(range_sigmas) * variance.sqrt() / bins as f64;
    if !(step.is_finite() && step > 0.0) {
        step = 1.0;
    }
    let half = (bins / 2) as f64;
    let mut sums = vec![0.0f64; bins];
    let mut counts = vec![0u64; bins];
    codes.clear();
    for &v in values {
        let bin = ((f64::from(v) - mean) / step).floor() + half;
        let code = bin.clamp(0.0, (bins - 1) as f64) as usize;
        sums[code] += f64::from(v);
        counts[code] += 1;
        codes.push(code as u32);
    }
    (0..bins)
        .map(|b| match counts[b] {
            0 => (mean + (b as f64 - half + 0.5) * step) as f32,
            n => (sums[b] / n as f64) as f32,
        })
        .collect()
}

impl Codec for TopK {
    fn id(&self) -> CodecId {
        CodecId::TopK
    }

    fn compress(&self, values: &[f32], mut residual: Option<&mut [f32]>) -> Vec<u8> {
        if let Err((name, value)) = self.check() {
            panic!("invalid top-k parameter {name} = {value}");
        }
        let layout = Layout::of(
            values.len() as u64,
            self.chunk_len,
            self.k,
            self.value_bits,
            self.group_chunks,
        )
        .expect("top-k layout overflows");
        let chunk_len = self.chunk_len as usize;
        let bits = u32::from(self.value_bits);
        let bins = 1usize << bits;
        let idx_bits = index_bits(self.chunk_len);
        let mut tables = Vec::with_capacity(layout.table_bytes as usize);
        let mut indices = BitWriter::with_capacity(layout.index_bytes as usize);
        let mut code_bits = BitWriter::with_capacity(layout.code_bytes as usize);
        let mut order = Vec::with_capacity(chunk_len);
        let mut positions = Vec::new();
        let mut picked = Vec::new();
        let mut codes = Vec::new();
        let group_len = chunk_len * self.group_chunks as usize;
        for (group_index, group) in values.chunks(group_len).enumerate() {
            positions.clear();
            picked.clear();
            for (chunk_index, chunk) in group.chunks(chunk_len).enumerate() {
                select_top_k(chunk, self.k as usize, &mut order);
                let base = group_index * group_len + chunk_index * chunk_len;
                for &index in &order {
                    indices.push(index, idx_bits);
                    positions.push(base + index as usize);
                    picked.push(chunk[index as usize]);
                }
            }
            let table = quantize_group(&picked, bins, self.range_sigmas, &mut codes);
            wire::put_f32s(&mut tables, &table);
            for (&code, &position) in codes.iter().zip(&positions) {
                code_bits.push(code, bits);
                if let Some(residual) = residual.as_deref_mut() {
                    residual[position] = values[position] - table[code as usize];
                }
            }
        }
        let body = layout.body_bytes().expect("top-k body overflows") as usize;
        let mut out = start_update(CodecId::TopK, values.len(), body);
        wire::put_u32(&mut out, self.chunk_len);
        wire::put_u32(&mut out, self.k);
        out.push(self.value_bits);
        wire::put_u32(&mut out, self.group_chunks);
        out.extend_from_slice(&tables);
        out.extend_from_slice(&indices.finish());
        out.extend_from_slice(&code_bits.finish());
        finish_update(out)
    }
}

pub(super) fn decode(body: &[u8], values: usize) -> Result<Vec<f32>, CodecError> {
    let mut reader = Reader::new(body);
    let chunk_len = reader.u32()?;
    let k = reader.u32()?;
    let value_bits = reader.u8()?;
    let group_chunks = reader.u32()?;
    let bad = |name, value: u32| {
        Err(CodecError::BadParameter {
            name,
            value: u64::from(value),
        })
    };
    if chunk_len == 0 || chunk_len > limits::TOPK_CHUNK_VALUES_MAX {
        return bad("chunk_len", chunk_len);
    }
    if k == 0 || k > chunk_len {
        return bad("k", k);
    }
    if value_bits == 0 || value_bits > limits::TOPK_VALUE_BITS_MAX {
        return bad("value_bits", u32::from(value_bits));
    }
    if group_chunks == 0 || group_chunks > limits::TOPK_GROUP_CHUNKS_MAX {
        return bad("group_chunks", group_chunks);
    }
    let layout = Layout::of(values as u64, chunk_len, k, value_bits, group_chunks);
    check_payload(layout.as_ref().and_then(Layout::body_bytes), body.len())?;
    let layout = layout.expect("checked by check_payload");
    let tables = reader.take(layout.table_bytes as usize)?;
    for (index, bytes) in tables.chunks_exact(4).enumerate() {
        if !f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).is_finite() {
            return Err(CodecError::NonFinite {
                index: index as u64,
            });
        }
    }
    let mut indices = BitReader::new(reader.take(layout.index_bytes as usize)?);
    let mut codes = BitReader::new(reader.take(layout.code_bytes as usize)?);
    let table_len = 1usize << value_bits;
    let idx_bits = index_bits(chunk_len);
    let chunk_len = chunk_len as usize;
    let mut out = vec![0.0f32; values];
    for chunk in 0..layout.chunks as usize {
        let base = chunk * chunk_len;
        let len = chunk_len.min(values - base);
        let table_start = (chunk / group_chunks as usize) * table_len * 4;
        let mut previous: Option<usize> = None;
        for _ in 0..(k as usize).min(len) {
            let index = indices.read(idx_bits)? as usize;
            if index >= len {
                return Err(CodecError::IndexOutOfRange {
                    chunk: chunk as u64,
                    index: index as u64,
                });
            }
            if previous.is_some_and(|p| p >= index) {
                return Err(CodecError::IndexOrder {
                    chunk: chunk as u64,
                });
            }
            previous = Some(index);
            let at = table_start + codes.read(u32::from(value_bits))? as usize * 4;
            out[base + index] =
                f32::from_le_bytes([tables[at], tables[at + 1], tables[at + 2], tables[at + 3]]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, ErrorFeedback, HEADER_BYTES};
    use super::*;

    #[test]
    fn keeps_the_largest_per_chunk() {
        let codec = TopK {
            chunk_len: 4,
            k: 1,
            value_bits: 2,
            group_chunks: 1,
            range_sigmas: 4.0,
        };
        let values = [0.1f32, -5.0, 0.2, 0.3, 7.0, 0.0, 0.0, -1.0, 0.5];
        let back = decode(
            &codec.encode(&values, &mut ErrorFeedback::off()),
            values.len(),
        )
        .unwrap();
        assert_eq!(back, vec![0.0, -5.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.5]);
    }

    #[test]
    fn default_size_is_sparseloco_like() {
        let values: Vec<f32> = (0..4096 * 64)
            .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
            .collect();
        let bytes = TopK::default().encode(&values, &mut ErrorFeedback::off());
        // 64 chunks · 64 values · 14 bits + one 4-entry table + params + header.
        assert_eq!(
            bytes.len(),
            HEADER_BYTES + 13 + 16 + 64 * 64 * 12 / 8 + 64 * 64 * 2 / 8
        );
    }

    #[test]
    fn bad_indices_are_rejected() {
        let codec = TopK {
            chunk_len: 16,
            k: 2,
            value_bits: 2,
            group_chunks: 1,
            range_sigmas: 4.0,
        };
        let values: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let bytes = codec.encode(&values, &mut ErrorFeedback::off());
        let index_at = HEADER_BYTES + 13 + 16;
        // Indices 14 and 15 at 4 bits each: byte 0xFE. Swap them to 15, 14.
        assert_eq!(bytes[index_at], 0xFE);
        let mut bad = bytes.clone();
        bad[index_at] = 0xEF;
        assert_eq!(decode(&bad, 16), Err(CodecError::IndexOrder { chunk: 0 }));
        let short = TopK {
            chunk_len: 16,
            ..codec
        };
        let bytes = short.encode(&values[..10], &mut ErrorFeedback::off());
        let mut bad = bytes.clone();
        bad[index_at] = 0xFE; // 14 and 15 in a chunk of 10
        assert_eq!(
            decode(&bad, 10),
            Err(CodecError::IndexOutOfRange {
                chunk: 0,
                index: 14
            })
        );
    }
}
