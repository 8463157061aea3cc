//! Flood control for one session: a token bucket for messages and a
//! sliding count of bad messages. Past either, the connection is closed
//! (1008, `flooding`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Flood limits, each with its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimits {
    /// Messages per second, sustained. Default 50.
    pub messages_per_second: f64,
    /// Messages in a burst. Default 100.
    pub burst: f64,
    /// Bad messages (access-denied, malformed, bad-frame) allowed within
    /// `bad_window`. Default 20.
    pub max_bad_messages: usize,
    /// The window bad messages are counted in. Default 10 s.
    pub bad_window: Duration,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            messages_per_second: 50.0,
            burst: 100.0,
            max_bad_messages: 20,
            bad_window: Duration::from_secs(10),
        }
    }
}

/// The flood state of one session, shared by its connections in turn.
#[derive(Debug)]
pub struct FloodGuard {
    limits: FloodLimits,
    tokens: f64,
    refilled: Instant,
    bad: VecDeque<Instant>,
}

impl FloodGuard {
    /// A full bucket.
    pub fn new(limits: FloodLimits) -> Self {
        FloodGuard {
            tokens: limits.burst,
            refilled: Instant::now(),
            bad: VecDeque::new(),
            limits,
        }
    }

    /// Takes a token for one message; `false` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.limits.messages_per_second).min(self.limits.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts one bad message; `false` when that is one too many.
    pub fn bad_message(&mut self, now: Instant) -> bool {
        while self
            .bad
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.limits.bad_window)
        {
            self.bad.pop_front();
        }
        self.bad.push_back(now);
        self.bad.len() <= self.limits.max_bad_messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_sustained_rate() {
        let mut guard = FloodGuard::new(FloodLimits::default());
        let start = Instant::now();
        assert!((0..100).all(|_| guard.take(start)));
        assert!(!guard.take(start));
        assert!(guard.take(start + Duration::from_millis(20)));
    }

    #[test]
    fn too_many_bad_messages_in_the_window_trip() {
        let mut guard = FloodGuard::new(FloodLimits::default());
        let start = Instant::now();
        assert!((0..20).all(|_| guard.bad_message(start)));
        assert!(!guard.bad_message(start));
        assert!(guard.bad_message(start + Duration::from_secs(11)));
    }
}
