//! Sanity gates: cheap checks on a decoded update that run before any expensive one.
//!
//! Norm outliers use a robust z-score on log norms: z = |ln‖Δ‖ − median| / (1.4826 · MAD), where median and MAD
//! (median absolute deviation) are over this round's log norms. 1.4826 · MAD estimates the standard deviation of a
//! normal sample while ignoring up to half of the sample, so a minority of attackers cannot move it. Log space makes
//! ×100 and ×0.01 equally far from honest, and the MAD has a floor (`NORM_LOG_MAD_FLOOR_MILLI`) so a round of
//! near-identical honest norms does not flag ordinary spread.

use types::limits::verify as limits;

/// Index and raw bits of the first NaN or infinity, if any.
pub fn first_non_finite(update: &[f32]) -> Option<(usize, u32)> {
    // Blocks checked with a branch-free fold (it vectorizes; a per-value early exit does not), then the first
    // block that has one is searched.
    const BLOCK: usize = 4096;
    let (block, chunk) = update
        .chunks(BLOCK)
        .enumerate()
        .find(|(_, chunk)| chunk.iter().fold(false, |bad, v| bad | !v.is_finite()))?;
    let at = chunk.iter().position(|v| !v.is_finite())?;
    let index = block * BLOCK + at;
    Some((index, update[index].to_bits()))
}

/// L2 norm, accumulated in f64 over 8 interleaved lanes (so it vectorizes), then summed lane by lane: the order is
/// fixed, so every verifier gets the same bits.
pub fn l2_norm(update: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [0.0f64; LANES];
    let chunks = update.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += (v as f64) * (v as f64);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(tail) {
        *lane += (v as f64) * (v as f64);
    }
    lanes.iter().sum::<f64>().sqrt()
}

/// Median of a non-empty slice (mean of the middle two for even counts).
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// This round's norm statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormStats {
    pub median_norm: f64,
    pub median_log: f64,
    /// MAD of log norms, floored.
    pub mad_log: f64,
}

/// Statistics over the round's norms, or `None` when fewer than `NORM_GATE_UPDATES_MIN` are positive and finite
/// (then the outlier gate does not run).
pub fn norm_stats(norms: &[f64]) -> Option<NormStats> {
    let logs: Vec<f64> = norms
        .iter()
        .filter(|n| n.is_finite() && **n > 0.0)
        .map(|n| n.ln())
        .collect();
    if logs.len() < limits::NORM_GATE_UPDATES_MIN {
        return None;
    }
    let median_log = median(&logs);
    let deviations: Vec<f64> = logs.iter().map(|l| (l - median_log).abs()).collect();
    let floor = limits::NORM_LOG_MAD_FLOOR_MILLI as f64 / 1000.0;
    let mad_log = median(&deviations).max(floor);
    Some(NormStats {
        median_norm: median_log.exp(),
        median_log,
        mad_log,
    })
}

/// Robust z-score of one norm against the round (infinite for a zero or infinite norm).
pub fn robust_z(norm: f64, stats: &NormStats) -> f64 {
    if !(norm.is_finite() && norm > 0.0) {
        return f64::INFINITY;
    }
    (norm.ln() - stats.median_log).abs() / (1.4826 * stats.mad_log)
}

/// True when `norm` is zero within rounding against the round median: a free rider.
pub fn is_zero_update(norm: f64, median_norm: f64) -> bool {
    let relative_max = limits::ZERO_NORM_RELATIVE_MAX_PICO as f64 * 1e-12;
    norm <= median_norm * relative_max
}

/// True when the robust z-score is above the gate.
pub fn is_norm_outlier(robust_z: f64) -> bool {
    robust_z > limits::NORM_ROBUST_Z_MAX_MILLI as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nan_and_inf() {
        assert_eq!(first_non_finite(&[1.0, 2.0]), None);
        assert_eq!(first_non_finite(&[1.0, f32::NAN]).map(|x| x.0), Some(1));
        assert_eq!(first_non_finite(&[f32::NEG_INFINITY]).map(|x| x.0), Some(0));
        // Past the first block, and the first of two.
        let mut long = vec![0.5f32; 10_000];
        long[9_000] = f32::NAN;
        long[5_000] = f32::INFINITY;
        assert_eq!(
            first_non_finite(&long),
            Some((5_000, f32::INFINITY.to_bits()))
        );
        assert_eq!(first_non_finite(&long[..5_000]), None);
        // The laned norm is the norm (13 values: one full chunk of 8 and a tail).
        let values: Vec<f32> = (1..=13).map(|i| i as f32 * 0.25).collect();
        let plain: f64 = values
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((l2_norm(&values) - plain).abs() < 1e-12 * plain);
        assert_eq!(l2_norm(&[]), 0.0);
    }

    #[test]
    fn outlier_gate_ignores_spread_and_flags_scale() {
        let norms = [1.0, 1.02, 0.98, 1.05, 0.97, 100.0];
        let stats = norm_stats(&norms).unwrap();
        assert!((stats.median_norm - 1.01).abs() < 0.02);
        for n in &norms[..5] {
            assert!(!is_norm_outlier(robust_z(*n, &stats)), "{n}");
        }
        assert!(is_norm_outlier(robust_z(100.0, &stats)));
        assert!(is_norm_outlier(robust_z(0.01, &stats)));
        assert!(is_norm_outlier(robust_z(0.0, &stats)));
        assert!(norm_stats(&[1.0, 2.0]).is_none());
    }
}
