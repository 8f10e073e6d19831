//! Leaky-bucket rate limiting with Synapse's semantics: a key may perform
//! `burst_count` actions at once, and the count drains at `per_second`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::config::RateLimit;

/// Buckets beyond this many are pruned of the ones that have drained.
const PRUNE_THRESHOLD: usize = 10_000;

pub struct Ratelimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    count: f64,
    updated: Instant,
}

impl Bucket {
    fn drained(self, rate: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.count - elapsed * rate).max(0.0)
    }
}

impl Ratelimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may act now; if `update`, the action is counted when allowed.
    /// On refusal, returns how long until it would be allowed.
    pub fn check(&self, key: &str, update: bool) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let count = buckets
            .get(key)
            .map_or(0.0, |b| b.drained(self.limit.per_second, now));
        if count + 1.0 > self.limit.burst_count {
            let excess = count + 1.0 - self.limit.burst_count;
            let wait = if self.limit.per_second > 0.0 {
                Duration::from_secs_f64(excess / self.limit.per_second)
            } else {
                Duration::from_secs(24 * 3600)
            };
            return Err(wait.max(Duration::from_millis(1)));
        }
        if update {
            if buckets.len() >= PRUNE_THRESHOLD {
                let rate = self.limit.per_second;
                buckets.retain(|_, b| b.drained(rate, now) > 0.0);
            }
            buckets.insert(
                key.to_owned(),
                Bucket {
                    count: count + 1.0,
                    updated: now,
                },
            );
        }
        Ok(())
    }

    /// Counts an action without checking (e.g. a failed login attempt).
    pub fn record(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let count = buckets
            .get(key)
            .map_or(0.0, |b| b.drained(self.limit.per_second, now));
        buckets.insert(
            key.to_owned(),
            Bucket {
                count: count + 1.0,
                updated: now,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let limiter = Ratelimiter::new(RateLimit {
            per_second: 0.5,
            burst_count: 2.0,
        });
        assert!(limiter.check("a", true).is_ok());
        assert!(limiter.check("a", true).is_ok());
        let wait = limiter.check("a", true).unwrap_err();
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert!(limiter.check("b", true).is_ok(), "keys are independent");
    }

    #[test]
    fn check_without_update_does_not_count() {
        let limiter = Ratelimiter::new(RateLimit {
            per_second: 0.1,
            burst_count: 1.0,
        });
        assert!(limiter.check("a", false).is_ok());
        assert!(limiter.check("a", false).is_ok());
        limiter.record("a");
        assert!(limiter.check("a", false).is_err());
    }
}
