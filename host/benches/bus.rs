//! Bus benchmarks: the cost of one delegation hop between warm agents, the
//! throughput of agent calls through the bus with many threads at once,
//! and the CPU an audited echo round trip costs between a connection's
//! read and write (`BUS_BENCH=audited` runs only that one, small enough
//! to count its instructions under valgrind: see `docs/benchmarks.md`).
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench bus`.

mod support;

use support::agent_path;

use agentserver::audit::{AuditLog, MemoryAuditStore};
use agentserver::bus::{
    AgentName, AuditSink, Bus, BusConfig, Grants, Listener, ListenerTarget, NoAudit, Session,
};
use agentserver::cli::process_cpu_seconds;
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

/// The server's own work on an echo, without sockets: 32 sessions at once
/// send `<echo>` round trips through the bus with the real audit log (a
/// memory store), as the connections of `agentserver bench` do; the CPU
/// the whole process spends (bus, agent calls, the audit writer thread)
/// per round trip. Stabler than the socket bench on a shared machine,
/// since it counts work rather than waiting.
fn audited_echo(runtime: &Runtime) {
    let filler = "hello, agent ".repeat(80);
    let large = format!("<echo>{}</echo>", &filler[..1024 - 13]);
    // BUS_BENCH_PAYLOAD: `25 B` or `1 KiB` alone.
    let only = std::env::var("BUS_BENCH_PAYLOAD").ok();
    for (name, payload) in [
        ("25 B", "<echo>hello, agent</echo>".to_owned()),
        ("1 KiB", large),
    ] {
        if only.as_ref().is_some_and(|only| only != name) {
            continue;
        }
        let store = Arc::new(MemoryAuditStore::new(100_000));
        let audit = Arc::new(AuditLog::open(store, None).expect("audit log"));
        let bus = Bus::new(
            BusConfig::default(),
            Arc::clone(&audit) as Arc<dyn AuditSink>,
        );
        register(&bus, runtime, "echo", "echo", "echo");
        // BUS_BENCH_TRIPS and BUS_BENCH_SESSIONS: round trips per session
        // (4,000) and sessions (32), fewer for a run under valgrind.
        let per_session = std::env::var("BUS_BENCH_TRIPS")
            .ok()
            .and_then(|trips| trips.parse().ok())
            .unwrap_or(4_000);
        let sessions: usize = std::env::var("BUS_BENCH_SESSIONS")
            .ok()
            .and_then(|sessions| sessions.parse().ok())
            .unwrap_or(32);
        let (elapsed, cpu) = tokio_runtime().block_on(async {
            let sessions: Vec<Arc<Session>> = (0..sessions)
                .map(|i| Arc::new(bus.open_session(&format!("user{i}"), Grants::All)))
                .collect();
            // Each session's agent answers, and so has its instance.
            for session in &sessions {
                let submitted = session
                    .submit_and_drive(payload.as_bytes())
                    .expect("accepted");
                if let Some(worker) = submitted.worker {
                    worker.run().await;
                }
                let answer = session.outbox().pop().await.expect("answer");
                assert!(answer.contains("<echoed>"), "{answer}");
            }
            let run = |count: usize| {
                let tasks: Vec<_> = sessions
                    .iter()
                    .map(|session| {
                        let (session, payload) = (Arc::clone(session), payload.clone());
                        tokio::spawn(async move {
                            for _ in 0..count {
                                round_trip(&session, payload.as_bytes(), Driven::Here).await;
                            }
                        })
                    })
                    .collect();
                async move {
                    for task in tasks {
                        task.await.expect("task");
                    }
                }
            };
            run(200).await;
            audit.flush(Duration::from_secs(30));
            let calls_before = bus.metrics().snapshot().agent_calls;
            let (start, cpu_start) = (Instant::now(), process_cpu_seconds("self"));
            run(per_session).await;
            audit.flush(Duration::from_secs(30));
            let measured = (start.elapsed(), process_cpu_seconds("self") - cpu_start);
            let after = bus.metrics().snapshot();
            assert_eq!(
                (after.agent_calls - calls_before) as usize,
                sessions.len() * per_session,
                "every trip called echo"
            );
            assert!(
                after.refusals.iter().all(|(_, count)| *count == 0),
                "no trip was refused: {:?}",
                after.refusals
            );
            for session in &sessions {
                session.end();
            }
            measured
        });
        let trips = (sessions * per_session) as f64;
        println!(
            "audited echo, {name}: {sessions} sessions x {per_session} round trips in {:.2} s: \
             {:.0} round trips/s, {:.2} µs of CPU per round trip",
            elapsed.as_secs_f64(),
            trips / elapsed.as_secs_f64(),
            cpu * 1e6 / trips
        );
    }
}

fn main() {
    // `cargo bench -- --list` and `cargo test --benches` pass flags; run
    // only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // BUS_BENCH=audited runs only the audited echo, with an instance pool
    // small enough for valgrind's address space (so at most 6 sessions):
    // under `valgrind --tool=callgrind`, instructions per round trip are a
    // figure that does not move with the machine's load.
    if std::env::var_os("BUS_BENCH").is_some_and(|only| only == "audited") {
        let small_pool = RuntimeConfig {
            max_instances: 6,
            ..RuntimeConfig::default()
        };
        audited_echo(&Runtime::new(small_pool).expect("runtime"));
        return;
    }
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    delegation_hop(&runtime);
    throughput(&runtime);
    audited_echo(&runtime);
}
