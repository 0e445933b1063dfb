//! Per-peer token-bucket rate limits. Time is passed in, so the limiter is a plain state machine.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use types::limits::net as limits;

/// Allows each key `per_s` events per second, in bursts of up to `per_s`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_s: u32,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_s: u32) -> RateLimiter<K> {
        assert!(per_s > 0);
        RateLimiter {
            per_s,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now`; false means "over the limit, drop or refuse".
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        let cap = f64::from(self.per_s);
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= limits::RATE_LIMIT_PEERS_MAX {
                self.evict_full(now);
            }
            if self.buckets.len() >= limits::RATE_LIMIT_PEERS_MAX {
                // Every tracked key is active: refuse newcomers rather than grow without bound.
                return false;
            }
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: cap,
                    last: now,
                },
            );
        }
        let bucket = self.buckets.get_mut(key).expect("inserted above");
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * cap).min(cap);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets `key` (its peer disconnected).
    pub fn remove(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Drops buckets that have refilled completely: they carry no state.
    fn evict_full(&mut self, now: Instant) {
        let cap = f64::from(self.per_s);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * cap < cap
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(10);
        for _ in 0..10 {
            assert!(rl.allow(&1u32, t0));
        }
        assert!(!rl.allow(&1u32, t0));
        assert!(rl.allow(&2u32, t0), "keys are independent");
        assert!(rl.allow(&1u32, t0 + Duration::from_millis(100)));
        assert!(!rl.allow(&1u32, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1);
        for k in 0..limits::RATE_LIMIT_PEERS_MAX {
            assert!(rl.allow(&k, t0));
        }
        // All buckets are empty at t0: a newcomer is refused, not tracked.
        assert!(!rl.allow(&usize::MAX, t0));
        assert_eq!(rl.len(), limits::RATE_LIMIT_PEERS_MAX);
        // A second later every bucket is full again and can be evicted.
        assert!(rl.allow(&usize::MAX, t0 + Duration::from_secs(2)));
        assert_eq!(rl.len(), 1);
    }
}
