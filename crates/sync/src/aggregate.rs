//! Aggregation of decoded updates: plain mean, median-norm clipping (Templar), trimmed mean.
//!
//! Determinism: inputs are sorted by [`PeerId`] before anything is computed, and every sum runs
//! in that order with f64 accumulators, rounded to f32 once at the end. So the same set of
//! updates, in any arrival order, gives a bit-identical result on every machine (IEEE-754
//! arithmetic, no threads, no fused multiply-add).

use types::limits::sync as limits;
use types::PeerId;

/// Why a set of updates cannot be aggregated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("no updates to aggregate")]
    Empty,
    #[error("{0} updates is more than the limit")]
    TooManyPeers(usize),
    #[error("peer {0} sent two updates")]
    DuplicatePeer(PeerId),
    #[error("update from {peer} has {found} values, expected {expected}")]
    LengthMismatch {
        peer: PeerId,
        expected: usize,
        found: usize,
    },
    #[error("update from {0} holds a non-finite value")]
    NonFinite(PeerId),
    #[error("trimming {trim} per side needs more than {} updates, got {peers}", 2 * trim)]
    TrimTooLarge { trim: usize, peers: usize },
}

/// How updates are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregator {
    /// Coordinate-wise mean.
    Mean,
    /// Scale every update whose L2 norm exceeds the median norm down to it, then take the mean.
    MedianNormClip,
    /// Per coordinate, drop the `trim` smallest and `trim` largest values, average the rest.
    TrimmedMean { trim: usize },
}

impl Aggregator {
    pub fn aggregate(&self, updates: &[(PeerId, Vec<f32>)]) -> Result<Vec<f32>, AggregateError> {
        match *self {
            Aggregator::Mean => mean(updates),
            Aggregator::MedianNormClip => median_norm_clip(updates),
            Aggregator::TrimmedMean { trim } => trimmed_mean(updates, trim),
        }
    }
}

/// Checks the set and returns it sorted by peer id.
fn sorted(updates: &[(PeerId, Vec<f32>)]) -> Result<Vec<&(PeerId, Vec<f32>)>, AggregateError> {
    if updates.is_empty() {
        return Err(AggregateError::Empty);
    }
    if updates.len() > limits::AGGREGATE_PEERS_MAX {
        return Err(AggregateError::TooManyPeers(updates.len()));
    }
    let mut ordered: Vec<_> = updates.iter().collect();
    ordered.sort_unstable_by_key(|update| update.0);
    let expected = ordered[0].1.len();
    for (index, (peer, values)) in ordered.iter().map(|u| (&u.0, &u.1)).enumerate() {
        if index > 0 && ordered[index - 1].0 == *peer {
            return Err(AggregateError::DuplicatePeer(*peer));
        }
        if values.len() != expected {
            return Err(AggregateError::LengthMismatch {
                peer: *peer,
                expected,
                found: values.len(),
            });
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(AggregateError::NonFinite(*peer));
        }
    }
    Ok(ordered)
}

/// Coordinate-wise mean, summed in peer-id order in f64.
pub fn mean(updates: &[(PeerId, Vec<f32>)]) -> Result<Vec<f32>, AggregateError> {
    let ordered = sorted(updates)?;
    let weights = vec![1.0f64; ordered.len()];
    Ok(weighted_mean(&ordered, &weights))
}

/// Templar's robust mean: each update's L2 norm is computed (f64); updates above the median norm
/// are scaled down to it (`scale = median / norm`), then the mean is taken. With an even count the
/// median is the mean of the two middle norms. One huge update cannot move θ further than an
/// honest median-sized one.
pub fn median_norm_clip(updates: &[(PeerId, Vec<f32>)]) -> Result<Vec<f32>, AggregateError> {
    let ordered = sorted(updates)?;
    let norms: Vec<f64> = ordered
        .iter()
        .map(|(_, values)| {
            values
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let mut by_size = norms.clone();
    by_size.sort_unstable_by(f64::total_cmp);
    let middle = by_size.len() / 2;
    let median = if by_size.len() % 2 == 1 {
        by_size[middle]
    } else {
        (by_size[middle - 1] + by_size[middle]) / 2.0
    };
    let weights: Vec<f64> = norms
        .iter()
        .map(|&norm| if norm > median { median / norm } else { 1.0 })
        .collect();
    Ok(weighted_mean(&ordered, &weights))
}

/// Coordinate-wise trimmed mean: per coordinate, sort the values (total order, ties are equal
/// values so the order among them does not matter), drop `trim` from each end, average the rest
/// in sorted order in f64. Needs more than `2·trim` updates.
pub fn trimmed_mean(
    updates: &[(PeerId, Vec<f32>)],
    trim: usize,
) -> Result<Vec<f32>, AggregateError> {
    let ordered = sorted(updates)?;
    let peers = ordered.len();
    if trim.checked_mul(2).is_none_or(|t| t >= peers) {
        return Err(AggregateError::TrimTooLarge { trim, peers });
    }
    let kept = (peers - 2 * trim) as f64;
    let len = ordered[0].1.len();
    let mut column = vec![0.0f32; peers];
    let mut out = Vec::with_capacity(len);
    for coordinate in 0..len {
        for (slot, (_, values)) in column.iter_mut().zip(&ordered) {
            *slot = values[coordinate];
        }
        column.sort_unstable_by(f32::total_cmp);
        let sum: f64 = column[trim..peers - trim]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        out.push((sum / kept) as f32);
    }
    Ok(out)
}

/// Σ wᵢ·xᵢ / n over peers in the given order, per coordinate, accumulated in f64.
fn weighted_mean(ordered: &[&(PeerId, Vec<f32>)], weights: &[f64]) -> Vec<f32> {
    let len = ordered[0].1.len();
    let mut sums = vec![0.0f64; len];
    for ((_, values), &weight) in ordered.iter().map(|u| (&u.0, &u.1)).zip(weights) {
        for (sum, &value) in sums.iter_mut().zip(values.iter()) {
            *sum += weight * f64::from(value);
        }
    }
    let count = ordered.len() as f64;
    sums.into_iter().map(|sum| (sum / count) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(byte: u8) -> PeerId {
        PeerId([byte; 32])
    }

    #[test]
    fn mean_of_three() {
        let updates = vec![
            (peer(3), vec![3.0, 0.0]),
            (peer(1), vec![1.0, 3.0]),
            (peer(2), vec![2.0, 0.0]),
        ];
        assert_eq!(mean(&updates).unwrap(), vec![2.0, 1.0]);
    }

    #[test]
    fn median_norm_clip_bounds_an_outlier() {
        let updates = vec![
            (peer(1), vec![1.0, 0.0]),
            (peer(2), vec![0.0, 1.0]),
            (peer(3), vec![1000.0, 0.0]),
        ];
        let out = median_norm_clip(&updates).unwrap();
        // The outlier is scaled to norm 1: (1 + 0 + 1)/3, (0 + 1 + 0)/3.
        assert!((out[0] - 2.0 / 3.0).abs() < 1e-6 && (out[1] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn trimmed_mean_drops_extremes() {
        let updates = vec![
            (peer(1), vec![1.0]),
            (peer(2), vec![2.0]),
            (peer(3), vec![-1e30]),
            (peer(4), vec![3.0]),
            (peer(5), vec![1e30]),
        ];
        assert_eq!(trimmed_mean(&updates, 1).unwrap(), vec![2.0]);
        assert_eq!(
            trimmed_mean(&updates, 3),
            Err(AggregateError::TrimTooLarge { trim: 3, peers: 5 })
        );
    }

    #[test]
    fn bad_sets_are_rejected() {
        assert_eq!(mean(&[]), Err(AggregateError::Empty));
        let duplicate = vec![(peer(1), vec![1.0]), (peer(1), vec![2.0])];
        assert_eq!(
            mean(&duplicate),
            Err(AggregateError::DuplicatePeer(peer(1)))
        );
        let ragged = vec![(peer(1), vec![1.0]), (peer(2), vec![2.0, 3.0])];
        assert!(matches!(
            mean(&ragged),
            Err(AggregateError::LengthMismatch { .. })
        ));
        let nan = vec![(peer(1), vec![f32::NAN])];
        assert_eq!(mean(&nan), Err(AggregateError::NonFinite(peer(1))));
    }
}
