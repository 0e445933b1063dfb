//! Adaptive phase deadlines: `median + k * MAD` of the arrival offsets seen so far, clamped to genesis bounds.

/// When a phase that started at `start_ms` may close, given arrival offsets (ms after `start_ms`) so far.
/// With no arrivals yet the phase waits for its maximum.
pub fn adaptive_deadline_ms(
    start_ms: u64,
    arrivals_ms: &[u64],
    min_ms: u64,
    max_ms: u64,
    k_millis: u32,
) -> u64 {
    assert!(
        min_ms <= max_ms,
        "adaptive_deadline_ms: min {min_ms} > max {max_ms}"
    );
    if arrivals_ms.is_empty() {
        return start_ms.saturating_add(max_ms);
    }
    let median = median_of(arrivals_ms.to_vec());
    let deviations: Vec<u64> = arrivals_ms.iter().map(|&a| a.abs_diff(median)).collect();
    let mad = median_of(deviations);
    let spread = mad.saturating_mul(u64::from(k_millis)) / 1000;
    let limit = median.saturating_add(spread).clamp(min_ms, max_ms);
    start_ms.saturating_add(limit)
}

fn median_of(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// `ceil(permille * expected / 1000)`, at least 1 when anything is expected.
pub fn quorum_count(expected: usize, permille: u16) -> usize {
    if expected == 0 {
        return 0;
    }
    (expected * usize::from(permille)).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_tracks_arrivals_within_bounds() {
        assert_eq!(adaptive_deadline_ms(1000, &[], 10, 500, 3000), 1500);
        // median 100, MAD 10, k = 3 -> 130
        assert_eq!(
            adaptive_deadline_ms(1000, &[90, 100, 110, 100, 120], 10, 500, 3000),
            1130
        );
        assert_eq!(adaptive_deadline_ms(0, &[1, 1, 1], 50, 500, 3000), 50);
        assert_eq!(
            adaptive_deadline_ms(0, &[400, 900, 2000], 50, 500, 3000),
            500
        );
    }

    #[test]
    fn quorum_rounds_up() {
        assert_eq!(quorum_count(16, 667), 11);
        assert_eq!(quorum_count(1, 10), 1);
        assert_eq!(quorum_count(0, 1000), 0);
    }
}
