//! Bus benchmarks: the cost of one delegation hop between warm agents, and
//! the throughput of agent calls through the bus with many threads at once.
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench bus`.

mod support;

use support::agent_path;

use agentserver::bus::{
    AgentName, Bus, BusConfig, Grants, Listener, ListenerTarget, NoAudit, Session,
};
use agentserver::runtime::{AgentLimits, Runtime, RuntimeConfig};
use agentserver::xml::Tag;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn register(bus: &Bus, runtime: &Runtime, name: &str, component: &str, tag: &str) {
    let loaded = runtime
        .load_component_file(&agent_path(component))
        .expect("load");
    let limits = AgentLimits {
        max_concurrent: 16,
        max_queued: 4096,
        ..AgentLimits::default()
    };
    let agent = runtime.agent(name, loaded, limits).expect("agent");
    bus.register(Listener {
        name: AgentName::new(name).expect("name"),
        listens: vec![Tag::new(tag)],
        description: String::new(),
        target: ListenerTarget::Local(agent),
    })
    .expect("register");
}

/// `<square-sum>` with as many `<n>1</n>` as fit in 1 KB.
fn square_sum_1k() -> String {
    let open = "<square-sum>";
    let close = "</square-sum>";
    let n = (1024 - open.len() - close.len()) / "<n>1</n>".len();
    let mut payload = format!("{open}{}{close}", "<n>1</n>".repeat(n));
    while payload.len() < 1024 {
        payload.insert(open.len(), ' ');
    }
    payload
}

/// How a round trip's thread worker runs.
#[derive(Clone, Copy)]
enum Driven {
    /// On the task that sent the message, as a connection runs it.
    Here,
    /// As a task of its own (`Session::submit`).
    Spawned,
}

/// One message and its answer: the worker the message starts runs as
/// `driven` says, then the answer is taken from the outbox.
async fn round_trip(session: &Session, payload: &[u8], driven: Driven) -> Duration {
    let start = Instant::now();
    match driven {
        Driven::Here => {
            let submitted = session.submit_and_drive(payload).expect("accepted");
            if let Some(worker) = submitted.worker {
                worker.run().await;
            }
        }
        Driven::Spawned => {
            session.submit(payload).expect("accepted");
        }
    }
    session.outbox().pop().await.expect("answer");
    start.elapsed()
}

fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

fn delegation_hop(runtime: &Runtime) {
    let bus = Bus::new(BusConfig::default(), Arc::new(NoAudit));
    register(&bus, runtime, "delegator", "delegator", "square-sum");
    register(&bus, runtime, "calc", "calculator", "calculate");
    let large = square_sum_1k();
    assert_eq!(large.len(), 1024);
    let small = "<square-sum><n>3</n><n>4</n></square-sum>".to_owned();
    for (name, payload) in [("1 KB", &large), ("small", &small)] {
        for (how, driven) in [
            ("driven by the sender's task", Driven::Here),
            ("worker spawned", Driven::Spawned),
        ] {
            delegations(&bus, name, payload, how, driven);
        }
    }
}

/// Measures delegation round trips of `payload` and prints the figures.
fn delegations(bus: &Bus, name: &str, payload: &str, how: &str, driven: Driven) {
    tokio_runtime().block_on(async {
        let session = bus.open_session("bench", Grants::All);
        for _ in 0..2_000 {
            round_trip(&session, payload.as_bytes(), driven).await;
        }
        let before = bus.metrics().snapshot();
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            samples.push(round_trip(&session, payload.as_bytes(), driven).await);
        }
        let after = bus.metrics().snapshot();
        session.end();
        let calls = after.agent_calls - before.agent_calls;
        let in_agents_us = (after.latency_sum_us - before.latency_sum_us) as f64;
        let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
        let mean: f64 =
            samples.iter().map(|d| d.as_secs_f64() * 1e6).sum::<f64>() / samples.len() as f64;
        let agents_per_trip = in_agents_us / samples.len() as f64;
        println!(
            "delegation, {name} square-sum ({how}): session -> delegator -> calc -> session, {} round trips\n  \
             round trip: median {p50:.2} µs, p99 {p99:.2} µs, mean {mean:.2} µs\n  \
             per hop (3 hops): median {:.2} µs, p99 {:.2} µs\n  \
             inside the two agent calls ({calls} calls): {agents_per_trip:.2} µs per round trip\n  \
             the bus's own share per hop (mean round trip less agent time, / 3): {:.2} µs",
            samples.len(),
            p50 / 3.0,
            p99 / 3.0,
            (mean - agents_per_trip) / 3.0
        );
    });
}

fn throughput(runtime: &Runtime) {
    let bus = Bus::new(BusConfig::default(), Arc::new(NoAudit));
    register(&bus, runtime, "echo", "echo", "echo");
    let sessions = 128;
    let per_session = 2_000;
    let elapsed = tokio_runtime().block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..sessions {
            let session = bus.open_session(&format!("user{i}"), Grants::All);
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_session {
                    round_trip(&session, b"<echo>hello</echo>", Driven::Here).await;
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        start.elapsed()
    });
    let calls = sessions * per_session;
    println!(
        "throughput: {sessions} sessions x {per_session} echo round trips = {calls} agent calls \
         in {:.2} s: {:.0} calls/s",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    // `cargo bench -- --list` and `cargo test --benches` pass flags; run
    // only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    delegation_hop(&runtime);
    throughput(&runtime);
}
