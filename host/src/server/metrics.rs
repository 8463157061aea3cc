//! `/metrics`: the server's and the bus's counters as Prometheus text.

use super::State;
use crate::bus::LATENCY_BUCKETS_US;
use crate::federation::LinkMetrics;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Renders every metric in the Prometheus text exposition format.
pub(crate) fn render(state: &State) -> String {
    let mut out = String::with_capacity(4096);
    let bus = state.bus.metrics().snapshot();
    let counters = &state.counters;
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "agentserver_connections",
        "Open WebSocket connections.",
        counters.connections.load(Ordering::Relaxed),
    );
    gauge(
        "agentserver_tcp_connections",
        "Open TCP connections, whatever their stage (max_connections caps them).",
        state.limits.open() as u64,
    );
    gauge(
        "agentserver_audit_held",
        "Audit entries recorded and not yet stored (grows while the store fails).",
        state.bus.audit_held(),
    );
    gauge(
        "agentserver_sessions",
        "Authenticated sessions.",
        counters.sessions.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP agentserver_messages_total Messages by kind.\n# TYPE agentserver_messages_total counter"
    );
    for (kind, value) in [
        ("received", counters.frames_received.load(Ordering::Relaxed)),
        ("routed", bus.messages_routed),
        ("delivered", bus.delivered_to_sessions),
        ("agent_calls", bus.agent_calls),
    ] {
        let _ = writeln!(out, "agentserver_messages_total{{kind=\"{kind}\"}} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP agentserver_refusals_total Refusals by kind.\n# TYPE agentserver_refusals_total counter"
    );
    for (kind, value) in &bus.refusals {
        let _ = writeln!(
            out,
            "agentserver_refusals_total{{kind=\"{}\"}} {value}",
            kind.code()
        );
    }
    for (kind, value) in [
        (
            "authentication",
            counters.auth_failures.load(Ordering::Relaxed),
        ),
        ("bad-frame", counters.bad_frames.load(Ordering::Relaxed)),
        ("flooding", counters.flood_closes.load(Ordering::Relaxed)),
        (
            "max-connections",
            state.limits.refused_capacity.load(Ordering::Relaxed),
        ),
        (
            "unauthenticated-per-address",
            state.limits.refused_address.load(Ordering::Relaxed),
        ),
        (
            "proxy-header",
            counters.proxy_refusals.load(Ordering::Relaxed),
        ),
        (
            "storage-unavailable",
            counters.storage_refusals.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "agentserver_refusals_total{{kind=\"{kind}\"}} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP agentserver_agent_call_seconds Agent call latency.\n# TYPE agentserver_agent_call_seconds histogram"
    );
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&bus.latency_buckets) {
        cumulative += count;
        let _ = writeln!(
            out,
            "agentserver_agent_call_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    cumulative += bus.latency_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "agentserver_agent_call_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "agentserver_agent_call_seconds_sum {}",
        bus.latency_sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "agentserver_agent_call_seconds_count {cumulative}");
    let _ = writeln!(
        out,
        "# HELP agentserver_agent_queue_depth Calls waiting per agent.\n# TYPE agentserver_agent_queue_depth gauge"
    );
    let table = state.bus.table();
    let stats: Vec<_> = table
        .agents()
        .filter_map(|listener| Some((&listener.name, listener.target.local()?.stats())))
        .collect();
    for (name, stats) in &stats {
        let _ = writeln!(
            out,
            "agentserver_agent_queue_depth{{agent=\"{name}\"}} {}",
            stats.queued
        );
    }
    // Each family's samples together, after its own HELP and TYPE, as the
    // exposition format asks.
    let _ = writeln!(
        out,
        "# HELP agentserver_agent_in_flight Calls running per agent.\n# TYPE agentserver_agent_in_flight gauge"
    );
    for (name, stats) in &stats {
        let _ = writeln!(
            out,
            "agentserver_agent_in_flight{{agent=\"{name}\"}} {}",
            stats.in_flight
        );
    }
    federation(&mut out, &state.federation.metrics());
    out
}

/// A metric family of the links: name, type, help, and each link's
/// samples (a `direction` label, empty for none, and the value).
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkMetrics) -> Vec<(&'static str, u64)>,
);

/// The federation links' families: traffic by direction, refusals, and
/// what waits on each link.
fn federation(out: &mut String, links: &[LinkMetrics]) {
    let families: [Family; 5] = [
        (
            "agentserver_federation_messages_total",
            "counter",
            "Signed messages and answers over each link, by direction.",
            |l| vec![("sent", l.sent), ("received", l.received)],
        ),
        (
            "agentserver_federation_bytes_total",
            "counter",
            "Bytes of frames over each link, by direction.",
            |l| vec![("sent", l.bytes_sent), ("received", l.bytes_received)],
        ),
        (
            "agentserver_federation_refused_total",
            "counter",
            "Frames from each peer refused and audited (bad signature, replay, unaccepted tag…).",
            |l| vec![("", l.refused)],
        ),
        (
            "agentserver_federation_queued",
            "gauge",
            "Messages waiting for each link's connection.",
            |l| vec![("", l.queued)],
        ),
        (
            "agentserver_federation_threads",
            "gauge",
            "Threads waiting for answers over each link.",
            |l| vec![("", l.threads)],
        ),
    ];
    for (name, kind, help, samples) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for link in links {
            for (direction, value) in samples(link) {
                let peer = &link.peer;
                if direction.is_empty() {
                    let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {value}");
                } else {
                    let _ = writeln!(
                        out,
                        "{name}{{peer=\"{peer}\",direction=\"{direction}\"}} {value}"
                    );
                }
            }
        }
    }
}
