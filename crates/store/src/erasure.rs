//! k-of-n Reed-Solomon coding of a collection payload into pieces, stripe by stripe (reed-solomon-simd).
//!
//! A stripe is k shards of `shard_bytes` of payload; piece i holds shard i of every stripe, in stripe order. Pieces
//! 0..k are the payload itself (the last stripe zero-padded); pieces k..n hold the recovery shards. Memory use is one
//! shard plus the encoder's stripe, whatever the payload size.

use std::io::{self, Read, Write};

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use types::Hash32;

use crate::manifest::check_erasure_params;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("bad erasure parameters: {0}")]
    Params(String),
    #[error("need {needed} pieces to decode, have {have}")]
    NotEnoughPieces { needed: usize, have: usize },
    #[error("piece index {index} is out of range for n={n}")]
    BadIndex { index: usize, n: usize },
    #[error("reed-solomon: {0}")]
    Codec(String),
    #[error("payload ended early: {0}")]
    Truncated(String),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureParams {
    pub data_pieces: u16,
    pub total_pieces: u16,
    pub shard_bytes: u32,
}

impl ErasureParams {
    pub fn new(
        data_pieces: u16,
        total_pieces: u16,
        shard_bytes: u32,
    ) -> Result<ErasureParams, ErasureError> {
        check_erasure_params(data_pieces, total_pieces, shard_bytes)
            .map_err(ErasureError::Params)?;
        Ok(ErasureParams {
            data_pieces,
            total_pieces,
            shard_bytes,
        })
    }

    /// k-of-n with the shard size fitted to the payload: the default shard, or less for a small payload so that
    /// padding stays under one 64-byte row per piece.
    pub fn for_payload(
        data_pieces: u16,
        total_pieces: u16,
        payload_bytes: u64,
    ) -> Result<ErasureParams, ErasureError> {
        let default = types::limits::store::ERASURE_SHARD_BYTES_DEFAULT as u64;
        let k = data_pieces.max(1) as u64;
        let stripes = payload_bytes.div_ceil(k * default).max(1);
        let fitted = payload_bytes.div_ceil(k * stripes).div_ceil(64).max(1) * 64;
        ErasureParams::new(data_pieces, total_pieces, fitted.min(default) as u32)
    }

    fn k(&self) -> usize {
        self.data_pieces as usize
    }

    fn m(&self) -> usize {
        (self.total_pieces - self.data_pieces) as usize
    }

    fn shard(&self) -> usize {
        self.shard_bytes as usize
    }
}

/// Reads `payload_bytes` from `payload` and writes the n pieces to `pieces` (one writer per piece, in index order).
pub fn encode<W: Write>(
    params: ErasureParams,
    payload: impl Read,
    payload_bytes: u64,
    pieces: &mut [W],
) -> Result<(), ErasureError> {
    let mut source = ReadSource(payload);
    encode_from(params, &mut source, payload_bytes, pieces)
}

/// `encode` for a payload already in memory: whole shards go to the encoder and the pieces straight from `payload`
/// (no copy into a scratch shard), and the payload's BLAKE3 hash, taken shard by shard in the same pass, is returned.
pub fn encode_slice<W: Write>(
    params: ErasureParams,
    payload: &[u8],
    pieces: &mut [W],
) -> Result<Hash32, ErasureError> {
    let mut source = SliceSource {
        rest: payload,
        hasher: blake3::Hasher::new(),
    };
    encode_from(params, &mut source, payload.len() as u64, pieces)?;
    Ok(Hash32(*source.hasher.finalize().as_bytes()))
}

/// Where original shards come from.
trait ShardSource {
    /// The next `take` payload bytes, zero-padded to `scratch.len()` (one shard).
    fn next_shard<'a>(
        &'a mut self,
        take: usize,
        scratch: &'a mut [u8],
    ) -> Result<&'a [u8], ErasureError>;
}

struct ReadSource<R>(R);

impl<R: Read> ShardSource for ReadSource<R> {
    fn next_shard<'a>(
        &'a mut self,
        take: usize,
        scratch: &'a mut [u8],
    ) -> Result<&'a [u8], ErasureError> {
        self.0
            .read_exact(&mut scratch[..take])
            .map_err(|e| ErasureError::Truncated(e.to_string()))?;
        scratch[take..].fill(0);
        Ok(scratch)
    }
}

struct SliceSource<'p> {
    rest: &'p [u8],
    hasher: blake3::Hasher,
}

impl ShardSource for SliceSource<'_> {
    fn next_shard<'a>(
        &'a mut self,
        take: usize,
        scratch: &'a mut [u8],
    ) -> Result<&'a [u8], ErasureError> {
        let (bytes, rest) = self.rest.split_at(take);
        self.rest = rest;
        self.hasher.update(bytes);
        if take == scratch.len() {
            return Ok(bytes);
        }
        scratch[..take].copy_from_slice(bytes);
        scratch[take..].fill(0);
        Ok(scratch)
    }
}

fn encode_from<W: Write>(
    params: ErasureParams,
    source: &mut impl ShardSource,
    payload_bytes: u64,
    pieces: &mut [W],
) -> Result<(), ErasureError> {
    assert_eq!(
        pieces.len(),
        params.total_pieces as usize,
        "one writer per piece"
    );
    let (k, shard) = (params.k(), params.shard());
    let stripe_bytes = (k * shard) as u64;
    let stripes = payload_bytes.div_ceil(stripe_bytes);
    let mut encoder = ReedSolomonEncoder::new(k, params.m(), shard)
        .map_err(|e| ErasureError::Codec(e.to_string()))?;
    // One shard at a time: it is read (and hashed, by a hashing reader), handed to the encoder and written to its
    // piece (and hashed again, by a hashing writer) while it is still in cache.
    let mut scratch = vec![0u8; shard];
    let mut left = payload_bytes;
    for _ in 0..stripes {
        for piece in pieces[..k].iter_mut() {
            let take = left.min(shard as u64) as usize;
            left -= take as u64;
            let original = source.next_shard(take, &mut scratch)?;
            encoder
                .add_original_shard(original)
                .map_err(|e| ErasureError::Codec(e.to_string()))?;
            piece.write_all(original)?;
        }
        let result = encoder
            .encode()
            .map_err(|e| ErasureError::Codec(e.to_string()))?;
        for (j, recovery) in result.recovery_iter().enumerate() {
            pieces[k + j].write_all(recovery)?;
        }
    }
    Ok(())
}

/// Rebuilds the payload from any k pieces, given as (piece index, reader), and writes `payload_bytes` to `out`.
pub fn decode<R: Read>(
    params: ErasureParams,
    pieces: &mut [(usize, R)],
    payload_bytes: u64,
    mut out: impl Write,
) -> Result<(), ErasureError> {
    let (k, n, shard) = (params.k(), params.total_pieces as usize, params.shard());
    check_indices(pieces, k, n)?;
    let pieces = &mut pieces[..k];
    pieces.sort_by_key(|(index, _)| *index);
    let stripe_bytes = (k * shard) as u64;
    let stripes = payload_bytes.div_ceil(stripe_bytes);
    let all_originals = pieces
        .iter()
        .enumerate()
        .all(|(slot, (index, _))| slot == *index);
    let mut decoder = ReedSolomonDecoder::new(k, params.m(), shard)
        .map_err(|e| ErasureError::Codec(e.to_string()))?;
    let mut shards = vec![vec![0u8; shard]; k];
    let mut stripe = vec![0u8; k * shard];
    let mut left = payload_bytes;
    for _ in 0..stripes {
        for (slot, (_, reader)) in pieces.iter_mut().enumerate() {
            reader
                .read_exact(&mut shards[slot])
                .map_err(|e| ErasureError::Truncated(e.to_string()))?;
        }
        if all_originals {
            for (slot, buf) in shards.iter().enumerate() {
                stripe[slot * shard..(slot + 1) * shard].copy_from_slice(buf);
            }
        } else {
            rebuild_stripe(&mut decoder, pieces, &shards, k, shard, &mut stripe)?;
        }
        let take = left.min(stripe_bytes) as usize;
        out.write_all(&stripe[..take])?;
        left -= take as u64;
    }
    Ok(())
}

fn check_indices<R>(pieces: &[(usize, R)], k: usize, n: usize) -> Result<(), ErasureError> {
    let mut seen = vec![false; n];
    let mut distinct = 0;
    for (index, _) in pieces {
        if *index >= n {
            return Err(ErasureError::BadIndex { index: *index, n });
        }
        if !seen[*index] {
            seen[*index] = true;
            distinct += 1;
        }
    }
    if distinct < k || pieces.len() < k {
        return Err(ErasureError::NotEnoughPieces {
            needed: k,
            have: distinct,
        });
    }
    // Duplicates among the first k would leave the decoder short; require the first k to be distinct.
    let mut first = pieces[..k].iter().map(|(i, _)| *i).collect::<Vec<_>>();
    first.sort_unstable();
    first.dedup();
    if first.len() < k {
        return Err(ErasureError::NotEnoughPieces {
            needed: k,
            have: first.len(),
        });
    }
    Ok(())
}

fn rebuild_stripe<R>(
    decoder: &mut ReedSolomonDecoder,
    pieces: &[(usize, R)],
    shards: &[Vec<u8>],
    k: usize,
    shard: usize,
    stripe: &mut [u8],
) -> Result<(), ErasureError> {
    let codec = |e: reed_solomon_simd::Error| ErasureError::Codec(e.to_string());
    for (slot, (index, _)) in pieces.iter().enumerate() {
        if *index < k {
            decoder
                .add_original_shard(*index, &shards[slot])
                .map_err(codec)?;
            stripe[index * shard..(index + 1) * shard].copy_from_slice(&shards[slot]);
        } else {
            decoder
                .add_recovery_shard(index - k, &shards[slot])
                .map_err(codec)?;
        }
    }
    let result = decoder.decode().map_err(codec)?;
    for (index, restored) in result.restored_original_iter() {
        stripe[index * shard..(index + 1) * shard].copy_from_slice(restored);
    }
    Ok(())
}

/// Re-creates the pieces named in `wanted` (indices) from any k pieces, writing each to its writer.
/// Decodes the payload stripe by stripe and re-encodes, so memory stays at a few stripes.
pub fn rebuild_pieces<R: Read, W: Write>(
    params: ErasureParams,
    sources: &mut [(usize, R)],
    piece_bytes: u64,
    wanted: &mut [(usize, W)],
) -> Result<(), ErasureError> {
    let (k, n, shard) = (params.k(), params.total_pieces as usize, params.shard());
    for (index, _) in wanted.iter() {
        if *index >= n {
            return Err(ErasureError::BadIndex { index: *index, n });
        }
    }
    let stripes = piece_bytes / shard as u64;
    let payload_bytes = stripes * (k * shard) as u64;
    // Decode to the padded payload (whole stripes), then re-encode one stripe at a time.
    let mut encoder = ReedSolomonEncoder::new(k, params.m(), shard)
        .map_err(|e| ErasureError::Codec(e.to_string()))?;
    let mut writer = StripeSink {
        encoder: &mut encoder,
        wanted,
        k,
        shard,
        buf: Vec::with_capacity(k * shard),
    };
    decode(params, sources, payload_bytes, &mut writer)?;
    assert!(writer.buf.is_empty(), "whole stripes in, whole stripes out");
    Ok(())
}

/// Receives decoded payload bytes, and for each full stripe writes the wanted pieces' shards.
struct StripeSink<'a, W> {
    encoder: &'a mut ReedSolomonEncoder,
    wanted: &'a mut [(usize, W)],
    k: usize,
    shard: usize,
    buf: Vec<u8>,
}

impl<W: Write> Write for StripeSink<'_, W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        let stripe_bytes = self.k * self.shard;
        while !data.is_empty() {
            let take = (stripe_bytes - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == stripe_bytes {
                self.flush_stripe()?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> StripeSink<'_, W> {
    fn flush_stripe(&mut self) -> io::Result<()> {
        let other = |e: reed_solomon_simd::Error| io::Error::other(e.to_string());
        for original in self.buf.chunks_exact(self.shard) {
            self.encoder.add_original_shard(original).map_err(other)?;
        }
        let result = self.encoder.encode().map_err(other)?;
        for (index, writer) in self.wanted.iter_mut() {
            let shard = if *index < self.k {
                &self.buf[*index * self.shard..(*index + 1) * self.shard]
            } else {
                result
                    .recovery(*index - self.k)
                    .expect("recovery index < m")
            };
            writer.write_all(shard)?;
        }
        drop(result);
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn encode_all(params: ErasureParams, data: &[u8]) -> Vec<Vec<u8>> {
        let mut pieces = vec![Vec::new(); params.total_pieces as usize];
        encode(params, data, data.len() as u64, &mut pieces).unwrap();
        pieces
    }

    #[test]
    fn any_k_pieces_decode() {
        let params = ErasureParams::new(4, 7, 128).unwrap();
        let data = payload(5000);
        let pieces = encode_all(params, &data);
        assert_eq!(&pieces[0][..128], &data[..128]);
        for subset in [[0, 1, 2, 3], [3, 4, 5, 6], [6, 0, 5, 2], [1, 4, 6, 3]] {
            let mut readers: Vec<(usize, &[u8])> =
                subset.iter().map(|&i| (i, &pieces[i][..])).collect();
            let mut out = Vec::new();
            decode(params, &mut readers, data.len() as u64, &mut out).unwrap();
            assert_eq!(out, data, "subset {subset:?}");
        }
    }

    #[test]
    fn too_few_or_bad_pieces_are_errors() {
        let params = ErasureParams::new(4, 7, 64).unwrap();
        let data = payload(1000);
        let pieces = encode_all(params, &data);
        let mut three: Vec<(usize, &[u8])> = (0..3).map(|i| (i, &pieces[i][..])).collect();
        assert!(matches!(
            decode(params, &mut three, 1000, Vec::new()),
            Err(ErasureError::NotEnoughPieces { .. })
        ));
        let mut dup: Vec<(usize, &[u8])> =
            [0, 0, 1, 2].iter().map(|&i| (i, &pieces[i][..])).collect();
        assert!(matches!(
            decode(params, &mut dup, 1000, Vec::new()),
            Err(ErasureError::NotEnoughPieces { .. })
        ));
        let mut bad: Vec<(usize, &[u8])> = [0, 1, 2, 9]
            .iter()
            .map(|&i| (i % 7 + i / 7 * 9, &pieces[i % 7][..]))
            .collect();
        assert!(matches!(
            decode(params, &mut bad, 1000, Vec::new()),
            Err(ErasureError::BadIndex { .. })
        ));
        let mut short: Vec<(usize, &[u8])> = (3..7).map(|i| (i, &pieces[i][..10])).collect();
        assert!(matches!(
            decode(params, &mut short, 1000, Vec::new()),
            Err(ErasureError::Truncated(_))
        ));
        assert!(ErasureParams::new(0, 4, 64).is_err());
        assert!(ErasureParams::new(4, 4, 64).is_err());
        assert!(ErasureParams::new(4, 6, 63).is_err());
    }

    #[test]
    fn fitted_shards_pad_little() {
        for payload in [0u64, 1, 1000, 3_000_000, 100 << 20] {
            let p = ErasureParams::for_payload(10, 16, payload).unwrap();
            let piece = crate::manifest::ErasureLayout::piece_bytes_for(payload, 10, p.shard_bytes);
            let stripes = piece / p.shard_bytes as u64;
            assert!(
                piece * 10 - payload < 10 * 64 * stripes.max(1),
                "payload {payload}: piece {piece}"
            );
        }
    }

    #[test]
    fn one_pass_piece_hashes_equal_two_pass() {
        // Shards that do and do not divide a 16 KiB chunk group, one stripe and many, a padded last stripe.
        for (k, n, shard, len) in [
            (10, 16, 64, 10_000),
            (10, 16, 1088, 500_000),
            (4, 7, 16 << 10, 1_000_000),
            (10, 16, 256 << 10, 6 << 20),
            (3, 5, 64, 0),
        ] {
            let params = ErasureParams::new(k, n, shard).unwrap();
            let data = payload(len);
            let piece_bytes = crate::manifest::ErasureLayout::piece_bytes_for(len as u64, k, shard);
            let mut writers: Vec<_> = (0..n)
                .map(|_| crate::bao::OutboardWriter::new(Vec::new(), piece_bytes))
                .collect();
            encode(params, &data[..], len as u64, &mut writers).unwrap();
            let two_pass = encode_all(params, &data);
            let mut from_slice = vec![Vec::new(); n as usize];
            let payload_hash = encode_slice(params, &data, &mut from_slice).unwrap();
            assert_eq!(payload_hash, Hash32::of(&data), "payload hash, len {len}");
            assert_eq!(from_slice, two_pass, "slice path, len {len}");
            for (index, writer) in writers.into_iter().enumerate() {
                let (bytes, hash, outboard) = writer.finish();
                assert_eq!(bytes, two_pass[index], "piece {index} bytes");
                let (hash_ref, outboard_ref) = crate::bao::outboard_of(&two_pass[index]);
                assert_eq!(hash, hash_ref, "piece {index} CID, shard {shard}");
                assert_eq!(
                    outboard, outboard_ref,
                    "piece {index} outboard, shard {shard}"
                );
            }
        }
    }

    #[test]
    fn rebuilt_pieces_equal_originals() {
        let params = ErasureParams::new(10, 16, 64).unwrap();
        let data = payload(10_000);
        let pieces = encode_all(params, &data);
        let mut sources: Vec<(usize, &[u8])> = (6..16).map(|i| (i, &pieces[i][..])).collect();
        let mut wanted: Vec<(usize, Vec<u8>)> =
            [0, 3, 5, 15].iter().map(|&i| (i, Vec::new())).collect();
        rebuild_pieces(params, &mut sources, pieces[0].len() as u64, &mut wanted).unwrap();
        for (index, bytes) in wanted {
            assert_eq!(bytes, pieces[index], "piece {index}");
        }
    }
}
