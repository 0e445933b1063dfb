//! Property tests: every codec's encode → decode stays within the error bound its rustdoc states,
//! error feedback loses nothing, hostile bytes never panic, and aggregation ignores arrival order.

use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sync::aggregate::{median_norm_clip, trimmed_mean, Aggregator};
use sync::codec::{
    decode, Codec, CodecKind, DctSign, DenseBf16, DenseFp16, DenseFp32, ErrorFeedback, Int8Block,
    TopK,
};
use types::PeerId;

/// Values spread over eleven orders of magnitude, with exact zeros.
fn values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-1.0f32..1.0, -8i32..4, 0u8..10), 0..max_len).prop_map(|raw| {
        raw.into_iter()
            .map(|(m, e, zero)| if zero == 0 { 0.0 } else { m * 10f32.powi(e) })
            .collect()
    })
}

fn round_trip(codec: &dyn Codec, values: &[f32]) -> Vec<f32> {
    let bytes = codec.encode(values, &mut ErrorFeedback::off());
    let back = decode(&bytes, values.len()).expect("own encoding decodes");
    assert_eq!(back.len(), values.len());
    back
}

fn topk_codec() -> impl Strategy<Value = TopK> {
    (1u32..300, 1u8..=8, 1u32..5, 1.0f32..8.0).prop_flat_map(|(chunk_len, bits, group, sigmas)| {
        (1..=chunk_len).prop_map(move |k| TopK {
            chunk_len,
            k,
            value_bits: bits,
            group_chunks: group,
            range_sigmas: sigmas,
        })
    })
}

fn dct_codec() -> impl Strategy<Value = DctSign> {
    (1u32..17).prop_flat_map(|side| (1..=side * side).prop_map(move |k| DctSign { side, k }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn fp32_is_bit_exact(x in values(3000)) {
        let back = round_trip(&DenseFp32, &x);
        for (a, b) in x.iter().zip(&back) {
            prop_assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn bf16_error_bound(x in values(3000)) {
        let back = round_trip(&DenseBf16, &x);
        for (a, b) in x.iter().zip(&back) {
            prop_assert!((a - b).abs() <= a.abs() * 2f32.powi(-8) + 2f32.powi(-133), "{} vs {}", a, b);
        }
    }

    #[test]
    fn fp16_error_bound(x in values(3000)) {
        let back = round_trip(&DenseFp16, &x);
        for (a, b) in x.iter().zip(&back) {
            prop_assert!((a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{} vs {}", a, b);
        }
    }

    #[test]
    fn int8_error_bound(x in values(3000), block_len in 1u32..600, sigmas in 0.5f32..8.0) {
        let codec = Int8Block { block_len, range_sigmas: sigmas };
        let back = round_trip(&codec, &x);
        for (block, decoded) in x.chunks(block_len as usize).zip(back.chunks(block_len as usize)) {
            let scale = codec.block_scale(block);
            let range = 127.0 * scale;
            for (a, b) in block.iter().zip(decoded) {
                let bound = scale / 2.0 + (a.abs() - range).max(0.0) + a.abs() * 2f32.powi(-20);
                prop_assert!((a - b).abs() <= bound, "{} vs {} (scale {})", a, b, scale);
            }
        }
    }

    #[test]
    fn topk_error_bound(x in values(3000), codec in topk_codec()) {
        let back = round_trip(&codec, &x);
        let chunk_len = codec.chunk_len as usize;
        let group_len = chunk_len * codec.group_chunks as usize;
        for (group, decoded) in x.chunks(group_len).zip(back.chunks(group_len)) {
            let mut selected = Vec::new();
            for (c, chunk) in group.chunks(chunk_len).enumerate() {
                // Reference top-k: by magnitude, ties to the lower index.
                let mut order: Vec<usize> = (0..chunk.len()).collect();
                order.sort_by(|&a, &b| chunk[b].abs().total_cmp(&chunk[a].abs()).then(a.cmp(&b)));
                let k = (codec.k as usize).min(chunk.len());
                let smallest_kept = order[..k].iter().map(|&i| chunk[i].abs()).fold(f32::INFINITY, f32::min);
                for &i in &order[k..] {
                    prop_assert_eq!(decoded[c * chunk_len + i], 0.0);
                    prop_assert!(chunk[i].abs() <= smallest_kept);
                }
                selected.extend(order[..k].iter().map(|&i| (chunk[i], decoded[c * chunk_len + i])));
            }
            let low = selected.iter().map(|s| s.0).fold(f32::INFINITY, f32::min);
            let high = selected.iter().map(|s| s.0).fold(f32::NEG_INFINITY, f32::max);
            let (mut sum, mut sum_decoded, mut sum_abs) = (0.0f64, 0.0f64, 0.0f64);
            for &(a, b) in &selected {
                let slack = a.abs().max(b.abs()) * 1e-6;
                prop_assert!(b >= low - slack && b <= high + slack, "{} outside [{}, {}]", b, low, high);
                sum += f64::from(a);
                sum_decoded += f64::from(b);
                sum_abs += f64::from(a.abs());
            }
            prop_assert!((sum - sum_decoded).abs() <= 1e-5 * sum_abs + 1e-30);
        }
    }

    #[test]
    fn dct_error_bound(chunks in 1usize..4, codec in dct_codec(), seed in any::<u64>()) {
        let len = chunks * (codec.side * codec.side) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<f32> = (0..len).map(|_| rand::Rng::gen_range(&mut rng, -1.0f32..1.0)).collect();
        let back = round_trip(&codec, &x);
        let chunk_len = (codec.side * codec.side) as usize;
        for (a, b) in x.chunks(chunk_len).zip(back.chunks(chunk_len)) {
            let energy: f64 = a.iter().map(|&v| f64::from(v).powi(2)).sum();
            let sent: f64 = b.iter().map(|&v| f64::from(v).powi(2)).sum();
            let error: f64 = a.iter().zip(b).map(|(&u, &v)| (f64::from(u) - f64::from(v)).powi(2)).sum();
            prop_assert!(sent <= energy * (1.0 + 1e-4) + 1e-12);
            prop_assert!((error - (energy - sent)).abs() <= 1e-4 * energy + 1e-12, "{} vs {}", error, energy - sent);
        }
    }

    #[test]
    fn feedback_loses_nothing(rounds in prop::collection::vec(values(700), 1..4), which in 0usize..6) {
        let len = rounds[0].len();
        let kinds: [CodecKind; 6] = [
            CodecKind::Fp32,
            CodecKind::Bf16,
            CodecKind::Fp16,
            CodecKind::Int8Block(Int8Block { block_len: 64, range_sigmas: 2.0 }),
            CodecKind::TopK(TopK { chunk_len: 128, k: 4, ..TopK::default() }),
            CodecKind::DctSign(DctSign { side: 8, k: 5 }),
        ];
        let codec = kinds[which].codec();
        let mut feedback = ErrorFeedback::new(1.0);
        let mut total_in = vec![0.0f64; len];
        let mut total_sent = vec![0.0f64; len];
        let mut scale = 0.0f64;
        for round in &rounds {
            let input: Vec<f32> = (0..len).map(|i| round.get(i).copied().unwrap_or(0.5)).collect();
            let sent = decode(&codec.encode(&input, &mut feedback), len).unwrap();
            for i in 0..len {
                total_in[i] += f64::from(input[i]);
                total_sent[i] += f64::from(sent[i]);
                scale = scale.max(f64::from(input[i].abs()));
            }
        }
        let residual = feedback.residual().unwrap();
        for i in 0..len {
            let kept = total_sent[i] + f64::from(residual[i]);
            prop_assert!((kept - total_in[i]).abs() <= 1e-5 * scale * rounds.len() as f64 + 1e-30);
        }
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), len in 0usize..100) {
        let _ = decode(&bytes, len);
    }

    #[test]
    fn mutated_messages_never_panic(x in values(300), which in 0usize..6, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let kinds: [CodecKind; 6] = [
            CodecKind::Fp32,
            CodecKind::Bf16,
            CodecKind::Fp16,
            CodecKind::Int8Block(Int8Block::default()),
            CodecKind::TopK(TopK { chunk_len: 64, k: 8, ..TopK::default() }),
            CodecKind::DctSign(DctSign { side: 4, k: 3 }),
        ];
        let mut bytes = kinds[which].codec().encode(&x, &mut ErrorFeedback::off());
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] ^= value;
        }
        if let Ok(back) = decode(&bytes, x.len()) {
            prop_assert!(back.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn aggregation_ignores_arrival_order(
        updates in prop::collection::vec(prop::collection::vec(-1e3f32..1e3, 17), 1..9),
        seed in any::<u64>(),
    ) {
        let set: Vec<(PeerId, Vec<f32>)> = updates
            .into_iter()
            .enumerate()
            .map(|(i, v)| (PeerId([(i as u8).wrapping_mul(37); 32]), v))
            .collect();
        let mut shuffled = set.clone();
        shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let trim = (set.len() - 1) / 2;
        for aggregator in [Aggregator::Mean, Aggregator::MedianNormClip, Aggregator::TrimmedMean { trim }] {
            let a = aggregator.aggregate(&set).unwrap();
            let b = aggregator.aggregate(&shuffled).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&a), bits(&b));
        }
        // Clipping never lets the aggregate exceed the median norm.
        let clipped = median_norm_clip(&set).unwrap();
        let mut norms: Vec<f64> = set.iter().map(|(_, v)| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()).collect();
        norms.sort_by(f64::total_cmp);
        let norm: f64 = clipped.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        prop_assert!(norm <= norms[norms.len() - 1] * (1.0 + 1e-5) + 1e-9);
        // A trimmed mean lies between the per-coordinate extremes.
        let trimmed = trimmed_mean(&set, trim).unwrap();
        for (c, t) in trimmed.iter().enumerate() {
            let low = set.iter().map(|u| u.1[c]).fold(f32::INFINITY, f32::min);
            let high = set.iter().map(|u| u.1[c]).fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(*t >= low && *t <= high);
        }
    }
}
