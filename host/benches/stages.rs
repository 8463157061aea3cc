//! The stages of one client round trip, each timed on its own with the
//! real parts: what an `<echo>` costs the server between reading the frame
//! and writing the answer, stage by stage (reading and writing the frames —
//! TLS and WebSocket — are what the bare echo of `agentserver bench` does).
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench stages`; prints a Markdown table of
//! the median time of each stage, for the default `agentserver bench`
//! payload and for a 1 KiB one.

mod support;

use agentserver::audit::{canonical_entry, chain, encode_hash, AuditLog, MemoryAuditStore};
use agentserver::bus::{
    AgentName, AuditKind, AuditRecord, AuditSink, Bus, BusConfig, Grants, Listener, ListenerTarget,
    NoAudit, Outbox, SessionId, ThreadId,
};
use agentserver::runtime::{AgentLimits, Delivery, Runtime, RuntimeConfig, SessionKey};
use agentserver::xml::{canonicalize, ingest, write_envelope, Limits, Tag};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::agent_path;

/// Runs `stage` `rounds` times after a warm-up and returns its median in
/// nanoseconds (timed in batches of 16, so the clock's own cost stays out).
fn median_ns(rounds: usize, mut stage: impl FnMut()) -> f64 {
    const BATCH: u32 = 16;
    for _ in 0..rounds / 10 {
        stage();
    }
    let mut samples: Vec<Duration> = (0..rounds / BATCH as usize)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCH {
                stage();
            }
            start.elapsed() / BATCH
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e9
}

/// The figures of every stage for one payload.
struct Stages {
    rows: Vec<(&'static str, f64)>,
}

fn stages(runtime: &Runtime, payload: &str) -> Stages {
    let limits = Limits::default();
    let rounds = 40_000;
    let mut rows = Vec::new();
    let frame = payload.as_bytes();

    rows.push((
        "repair + C14N of the client's frame (ingest)",
        median_ns(rounds, || {
            std::hint::black_box(ingest(frame, &limits).expect("ingest"));
        }),
    ));
    rows.push((
        "  the same through the full canonicalizer (a frame that needs it)",
        median_ns(rounds, || {
            std::hint::black_box(canonicalize(frame, &limits, &[]).expect("c14n"));
        }),
    ));

    // The bus, with the echo agent listening.
    let bus = Bus::new(BusConfig::default(), Arc::new(NoAudit));
    let loaded = runtime
        .load_component_file(&agent_path("echo"))
        .expect("load");
    let limits_agent = AgentLimits {
        max_concurrent: 16,
        max_queued: 4096,
        ..AgentLimits::default()
    };
    let agent = runtime.agent("echo", loaded, limits_agent).expect("agent");
    bus.register(Listener {
        name: AgentName::new("echo").expect("name"),
        listens: vec![Tag::new("echo")],
        description: String::new(),
        target: ListenerTarget::Local(Arc::clone(&agent)),
    })
    .expect("register");
    let echo = Tag::new("echo");
    rows.push((
        "routing: the listeners of the tag",
        median_ns(rounds, || {
            std::hint::black_box(bus.table().listeners(&echo).len());
        }),
    ));
    let session = bus.open_session("bench", Grants::All);
    rows.push((
        "submit: ingest, access check, routing, new thread, enqueue (no audit)",
        median_ns(rounds, || {
            let submitted = session.submit_and_drive(frame).expect("submit");
            // No runtime here: the unrun worker is dropped, not spawned.
            std::hint::black_box(submitted.thread);
        }),
    ));

    // The agent call, in a warm instance.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let key = SessionKey::from("bench-session");
    let delivery = Delivery {
        thread: "0b9a4d6e-2f61-4c3a-9b1e-7d8f00c2a511",
        sender: "user:bench",
        tag: "echo",
        payload,
        emitter: None,
    };
    let emitted = tokio.block_on(async {
        let call = || async {
            let mut out = agent.call(&key, delivery).await.expect("call");
            out.pop().expect("one payload")
        };
        let rounds = rounds / 4;
        for _ in 0..rounds / 10 {
            call().await;
        }
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            std::hint::black_box(call().await);
            samples.push(start.elapsed());
        }
        samples.sort();
        rows.push((
            "instance lookup + wasm call of echo (warm)",
            samples[samples.len() / 2].as_secs_f64() * 1e9,
        ));
        call().await
    });
    rows.push((
        "repair + C14N of the agent's emission",
        median_ns(rounds, || {
            std::hint::black_box(ingest(emitted.as_bytes(), &limits).expect("ingest"));
        }),
    ));
    let answer = ingest(emitted.as_bytes(), &limits)
        .expect("ingest")
        .payloads
        .remove(0);
    let thread = ThreadId::new();
    rows.push((
        "envelope of the answer",
        median_ns(rounds, || {
            std::hint::black_box(write_envelope(
                Some("echo"),
                None,
                Some(thread.as_str()),
                &[],
                &answer,
            ));
        }),
    ));

    // The audit log: the caller's share, then the writer's per entry.
    let session_id = SessionId::from_string("0e7c2b8a-4d1f-4b6e-8a3c-5f9d21e0b7c4");
    let record = AuditRecord {
        kind: AuditKind::Message,
        thread: Some(&thread),
        session: &session_id,
        from: "user:bench",
        tag: "echo",
        depth: 0,
        canonical: payload,
    };
    let log = AuditLog::open(Arc::new(MemoryAuditStore::default()), None).expect("audit log");
    rows.push((
        "audit record, the round trip's share (queue one entry)",
        median_ns(rounds, || log.record(record)),
    ));
    let mut previous = [0u8; 32];
    let mut seq = 0;
    rows.push((
        "audit entry, the writer's share (write, SHA-256 chain, hex)",
        median_ns(rounds, || {
            seq += 1;
            let entry = canonical_entry(seq, 1_795_521_600_123, &record);
            previous = chain(&previous, &entry);
            std::hint::black_box((entry, encode_hash(&previous)));
        }),
    ));
    drop(log);

    let outbox = Outbox::new(1_000);
    let frame_text: Arc<str> =
        write_envelope(Some("echo"), None, Some(thread.as_str()), &[], &answer).into();
    rows.push((
        "outbox: push and pop one frame",
        median_ns(rounds, || {
            outbox.push(Arc::clone(&frame_text));
            std::hint::black_box(outbox.try_pop());
        }),
    ));
    Stages { rows }
}

fn main() {
    // `cargo bench -- --list` and `cargo test --benches` pass flags; run
    // only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let small = stages(&runtime, "<echo>hello, agent</echo>");
    let large = stages(&runtime, &support::payload_1k());
    println!("| stage | `<echo>hello, agent</echo>` (25 B) | `<echo>` of 1 KiB |\n|---|---|---|");
    for ((name, small), (_, large)) in small.rows.iter().zip(&large.rows) {
        println!("| {name} | {small:.0} ns | {large:.0} ns |");
    }
}
