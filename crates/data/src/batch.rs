//! Batch sampling: a pure function of (seed, shard, step) to `batch` windows of `seq_len + 1` tokens.
//!
//! Row `r` of step `s` starts at
//! `offset = (u64_le(BLAKE3("commonweight.batch.v1" ‖ seed ‖ s ‖ r)[0..8]) * starts) >> 64`,
//! where `starts = shard_len - seq_len` is the number of full windows and all integers are
//! little-endian u64. It is the same on every machine, needs no RNG state, and any verifier can
//! recompute which tokens a trainer saw at any step.

use types::limits::data as limits;

const DOMAIN: &[u8] = b"commonweight.batch.v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "batch size and sequence length must be at least 1 (got batch {batch}, seq_len {seq_len})"
    )]
    Empty { batch: usize, seq_len: usize },
    #[error("shard has {tokens} tokens; one window needs seq_len + 1 = {needed}")]
    ShardTooShort { tokens: usize, needed: usize },
    #[error("batch {batch} x (seq_len {seq_len} + 1) tokens exceeds the limit {max}")]
    TooManyTokens {
        batch: usize,
        seq_len: usize,
        max: usize,
    },
}

/// Start offsets of the `batch` windows for `step`. Each window is `seq_len + 1` tokens and lies
/// entirely inside the shard.
pub fn sample_offsets(
    seed: u64,
    shard_len: usize,
    step: u64,
    batch: usize,
    seq_len: usize,
) -> Result<Vec<usize>, BatchError> {
    if batch == 0 || seq_len == 0 {
        return Err(BatchError::Empty { batch, seq_len });
    }
    let window = seq_len.checked_add(1).ok_or(BatchError::TooManyTokens {
        batch,
        seq_len,
        max: limits::BATCH_TOKENS_MAX,
    })?;
    match batch.checked_mul(window) {
        Some(total) if total <= limits::BATCH_TOKENS_MAX => {}
        _ => {
            return Err(BatchError::TooManyTokens {
                batch,
                seq_len,
                max: limits::BATCH_TOKENS_MAX,
            })
        }
    }
    if shard_len < window {
        return Err(BatchError::ShardTooShort {
            tokens: shard_len,
            needed: window,
        });
    }
    // Valid starts are 0..=shard_len - window, that is `shard_len - seq_len` of them.
    let starts = (shard_len - seq_len) as u64;
    let offsets = (0..batch as u64)
        .map(|row| {
            let draw = row_draw(seed, step, row);
            ((u128::from(draw) * u128::from(starts)) >> 64) as usize
        })
        .collect();
    Ok(offsets)
}

/// `batch * (seq_len + 1)` tokens, row-major: row `r` is `shard[offset_r ..= offset_r + seq_len]`,
/// so inputs are `row[..seq_len]` and next-token targets are `row[1..]`.
pub fn sample_batch(
    seed: u64,
    shard_tokens: &[u32],
    step: u64,
    batch: usize,
    seq_len: usize,
) -> Result<Vec<u32>, BatchError> {
    let offsets = sample_offsets(seed, shard_tokens.len(), step, batch, seq_len)?;
    let mut out = Vec::with_capacity(batch * (seq_len + 1));
    for offset in offsets {
        out.extend_from_slice(&shard_tokens[offset..offset + seq_len + 1]);
    }
    Ok(out)
}

fn row_draw(seed: u64, step: u64, row: u64) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(&seed.to_le_bytes());
    hasher.update(&step.to_le_bytes());
    hasher.update(&row.to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(len: u32) -> Vec<u32> {
        (0..len).collect()
    }

    #[test]
    fn same_arguments_same_tokens() {
        let tokens = shard(10_000);
        let a = sample_batch(7, &tokens, 3, 8, 64).unwrap();
        let b = sample_batch(7, &tokens, 3, 8, 64).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 8 * 65);
    }

    #[test]
    fn different_step_or_seed_gives_different_tokens() {
        let tokens = shard(10_000);
        let base = sample_batch(7, &tokens, 3, 8, 64).unwrap();
        assert_ne!(base, sample_batch(7, &tokens, 4, 8, 64).unwrap());
        assert_ne!(base, sample_batch(8, &tokens, 3, 8, 64).unwrap());
    }

    #[test]
    fn rows_are_contiguous_windows() {
        // With tokens = positions, each row must be consecutive integers.
        let tokens = shard(5_000);
        let out = sample_batch(1, &tokens, 0, 16, 31).unwrap();
        for row in out.chunks(32) {
            for pair in row.windows(2) {
                assert_eq!(pair[1], pair[0] + 1);
            }
        }
    }

    #[test]
    fn known_answer_is_stable() {
        // Pins the documented formula: changing it changes which data every trainer saw.
        let offsets = sample_offsets(42, 1_000_000, 0, 4, 256).unwrap();
        let again: Vec<usize> = (0..4u64)
            .map(|row| ((u128::from(row_draw(42, 0, row)) * 999_744u128) >> 64) as usize)
            .collect();
        assert_eq!(offsets, again);
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"commonweight.batch.v1");
        for value in [42u64, 0, 0] {
            hasher.update(&value.to_le_bytes());
        }
        let first = u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().unwrap());
        assert_eq!(
            offsets[0],
            ((u128::from(first) * 999_744u128) >> 64) as usize
        );
    }

    #[test]
    fn tiny_shards_stay_in_range() {
        // Exactly one window: every row must be the whole shard.
        let tokens = shard(9);
        for step in 0..100 {
            let out = sample_batch(5, &tokens, step, 3, 8).unwrap();
            assert_eq!(
                out,
                [tokens.clone(), tokens.clone(), tokens.clone()].concat()
            );
        }
        // Two windows: both starts appear, and nothing reads past the end.
        let tokens = shard(10);
        let mut seen = [false; 2];
        for step in 0..200 {
            for offset in sample_offsets(5, tokens.len(), step, 4, 8).unwrap() {
                seen[offset] = true;
            }
            sample_batch(5, &tokens, step, 4, 8).unwrap();
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn offsets_cover_the_whole_shard() {
        let len = 1_000;
        let seq_len = 10;
        let mut hits = vec![0u32; len - seq_len];
        for step in 0..2_000 {
            for offset in sample_offsets(9, len, step, 8, seq_len).unwrap() {
                hits[offset] += 1;
            }
        }
        assert!(hits.iter().all(|&h| h > 0), "some start never drawn");
        assert!(hits[hits.len() - 1] > 0, "last start never drawn");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let tokens = shard(8);
        assert_eq!(
            sample_batch(0, &tokens, 0, 1, 8),
            Err(BatchError::ShardTooShort {
                tokens: 8,
                needed: 9
            })
        );
        assert!(matches!(
            sample_batch(0, &[], 0, 1, 1),
            Err(BatchError::ShardTooShort { .. })
        ));
        assert!(matches!(
            sample_batch(0, &tokens, 0, 0, 4),
            Err(BatchError::Empty { .. })
        ));
        assert!(matches!(
            sample_batch(0, &tokens, 0, 4, 0),
            Err(BatchError::Empty { .. })
        ));
        assert!(matches!(
            sample_batch(0, &tokens, 0, usize::MAX, 4),
            Err(BatchError::TooManyTokens { .. })
        ));
        assert!(matches!(
            sample_batch(0, &tokens, 0, 2, usize::MAX),
            Err(BatchError::TooManyTokens { .. })
        ));
    }
}
