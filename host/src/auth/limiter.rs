//! Counting authentication failures, per user name and per peer address,
//! in a sliding window. Past the limit, attempts are refused without
//! checking anything until the window has room again.
//!
//! Memory is bounded: at most [`MAX_TRACKED_KEYS`] keys are tracked, each
//! with at most `max_failures` timestamps; when full, keys whose failures
//! have all expired are dropped first, then the least recently failed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys (user names and addresses) tracked at once.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// A sliding-window failure counter.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// Allows `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> Self {
        FailureLimiter {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` has used up its failures within the window.
    pub fn is_blocked(&self, key: &str, now: Instant) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get_mut(key) {
            Some(times) => {
                expire(times, now, self.window);
                times.len() >= self.max_failures
            }
            None => false,
        }
    }

    /// Records a failure for `key`; says whether this failure is the one
    /// that reached the limit (so the key is now blocked, for the first
    /// time in this burst).
    pub fn record_failure(&self, key: &str, now: Instant) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_KEYS && !failures.contains_key(key) {
            failures.retain(|_, times| {
                expire(times, now, self.window);
                !times.is_empty()
            });
            if failures.len() >= MAX_TRACKED_KEYS {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let times = failures.entry(key.to_owned()).or_default();
        expire(times, now, self.window);
        let was_below = times.len() < self.max_failures;
        if times.len() == self.max_failures {
            times.pop_front();
        }
        times.push_back(now);
        was_below && times.len() == self.max_failures
    }
}

fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_recovers_after_the_window() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(!limiter.is_blocked("alice", start));
            let _ = limiter.record_failure("alice", start);
        }
        assert!(limiter.is_blocked("alice", start));
        assert!(!limiter.is_blocked("bob", start));
        assert!(limiter.is_blocked("alice", start + Duration::from_secs(59)));
        assert!(!limiter.is_blocked("alice", start + Duration::from_secs(60)));
    }
}
