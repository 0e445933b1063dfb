//! Shared helpers for the model integration tests: synthetic token batches.

use model::{Preset, TrainConfig};

/// A deterministic, learnable token stream: a noisy repeating phrase over the byte vocabulary.
pub fn synthetic_tokens(seed: u64, count: usize) -> Vec<u32> {
    let phrase = b"to be or not to be, that is the question. ";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 10 == 0 {
                (state >> 32) as u32 % 256
            } else {
                phrase[(i + seed as usize) % phrase.len()] as u32
            }
        })
        .collect()
}

pub fn tiny_train_config(steps: u64) -> TrainConfig {
    let mut train = Preset::Tiny.train_config(steps);
    train.batch_size = 4;
    train.seq_len = 32;
    train.warmup_steps = 2;
    train
}

/// The batch for `step`: distinct tokens per step, same for every trainer.
pub fn batch(train: &TrainConfig, step: u64) -> Vec<u32> {
    synthetic_tokens(step + 1, train.tokens_per_step())
}
