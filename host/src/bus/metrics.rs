//! Counters and histograms the bus keeps: messages routed and delivered,
//! refusals by kind, agent call latency. Plain atomics, so that counting
//! costs nothing on the hot path; the port exports them as Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in microseconds, of the call-latency histogram's buckets
/// (a last bucket, `+Inf`, takes the rest).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000, 1_000_000,
];

/// Kinds of refusal, as the `code` of the error frame (or `access-denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The user may not send that tag.
    AccessDenied,
    /// No agent listens to that tag.
    NoListener,
    /// The frame is not XML that can be repaired, or breaks a limit.
    Malformed,
    /// The thread is unknown or belongs to another session.
    UnknownThread,
    /// An agent call failed.
    AgentFailed,
    /// An agent was at `max_concurrent` with a full queue.
    Busy,
    /// A thread went past `max_hops` or `max_thread_messages`.
    ThreadLimit,
}

impl RefusalKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RefusalKind; 7] = [
        RefusalKind::AccessDenied,
        RefusalKind::NoListener,
        RefusalKind::Malformed,
        RefusalKind::UnknownThread,
        RefusalKind::AgentFailed,
        RefusalKind::Busy,
        RefusalKind::ThreadLimit,
    ];

    /// The kind's name on the wire and in metrics.
    pub fn code(self) -> &'static str {
        match self {
            RefusalKind::AccessDenied => "access-denied",
            RefusalKind::NoListener => "no-listener",
            RefusalKind::Malformed => "malformed",
            RefusalKind::UnknownThread => "unknown-thread",
            RefusalKind::AgentFailed => "agent-failed",
            RefusalKind::Busy => "busy",
            RefusalKind::ThreadLimit => "thread-limit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The bus's counters.
#[derive(Debug, Default)]
pub struct BusMetrics {
    messages_routed: AtomicU64,
    delivered_to_sessions: AtomicU64,
    agent_calls: AtomicU64,
    refusals: [AtomicU64; RefusalKind::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Messages that entered the bus and were routed (from sessions and agents).
    pub messages_routed: u64,
    /// Frames queued for sessions (messages and errors).
    pub delivered_to_sessions: u64,
    /// Agent calls made.
    pub agent_calls: u64,
    /// Refusals by kind, in [`RefusalKind::ALL`] order.
    pub refusals: Vec<(RefusalKind, u64)>,
    /// Call-latency histogram: count per bucket of [`LATENCY_BUCKETS_US`],
    /// then the `+Inf` bucket (not cumulative).
    pub latency_buckets: Vec<u64>,
    /// Sum of all call latencies, microseconds.
    pub latency_sum_us: u64,
}

impl BusMetrics {
    pub(crate) fn routed(&self) {
        self.messages_routed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn delivered_to_session(&self) {
        self.delivered_to_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, kind: RefusalKind) {
        self.refusals[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn agent_call(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.agent_calls.fetch_add(1, Ordering::Relaxed);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            messages_routed: load(&self.messages_routed),
            delivered_to_sessions: load(&self.delivered_to_sessions),
            agent_calls: load(&self.agent_calls),
            refusals: RefusalKind::ALL
                .iter()
                .map(|&kind| (kind, load(&self.refusals[kind.index()])))
                .collect(),
            latency_buckets: self.latency_buckets.iter().map(load).collect(),
            latency_sum_us: load(&self.latency_sum_us),
        }
    }
}

impl MetricsSnapshot {
    /// The count of refusals of `kind`.
    pub fn refusals_of(&self, kind: RefusalKind) -> u64 {
        self.refusals
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}
