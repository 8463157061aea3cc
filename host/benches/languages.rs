//! What an agent costs in each language: the smallest echo agent of each
//! (`echo`, Rust; `echo-py`, componentize-py; `echo-js`, componentize-js;
//! `echo-c`, clang + wasi-libc; `echo-go`, Go for wasip1) measured the same
//! way, in one run:
//!
//! - component size;
//! - compile time (Cranelift, from the component's bytes) and the load time
//!   from the on-disk compile cache (as at a restart: read and hash the
//!   component, map the cached code);
//! - a new session's first call (a fresh instance plus its first call),
//!   p50 and p99, with the new sessions 2 ms apart so that the agent's
//!   spare instance is ready;
//! - a warm call with a 1 KB payload, p50 and p99;
//! - resident memory per live idle instance, over 1,000 sessions.
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench languages`; it prints a Markdown
//! table for `docs/benchmarks.md`.

mod support;

use support::{agent_path, delivery, payload_1k};

use agentserver::runtime::{
    Agent, AgentLimits, ComponentOrigin, Runtime, RuntimeConfig, SessionKey,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LANGUAGES: [(&str, &str); 5] = [
    ("Rust", "echo"),
    ("Python", "echo-py"),
    ("JavaScript", "echo-js"),
    ("C", "echo-c"),
    ("Go", "echo-go"),
];
/// Sessions (live instances) the memory figure is measured over.
const SESSIONS: usize = 1_000;
/// Fresh instances timed for the first-call figure.
const FRESH: usize = 200;
/// Warm calls timed.
const WARM: usize = 5_000;
/// Loads from the cache timed.
const CACHED_LOADS: usize = 5;

fn runtime(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        max_instances: SESSIONS as u32 + 8,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// The process's resident memory, bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.2} µs")
    }
}

struct Figures {
    size: u64,
    compile: Duration,
    cached_load: Duration,
    first_call: (Duration, Duration),
    warm_call: (Duration, Duration),
    rss_per_instance: f64,
}

fn measure(tokio: &tokio::runtime::Runtime, name: &str) -> Figures {
    let path = agent_path(name);
    let size = std::fs::metadata(&path).expect("component").len();
    let cache = tempfile::tempdir().expect("cache dir");

    let started = Instant::now();
    let compiled = runtime(cache.path())
        .load_component_file(&path)
        .expect("compile");
    let compile = started.elapsed();
    assert_eq!(compiled.origin(), ComponentOrigin::Compiled);
    drop(compiled);

    let mut loads = Vec::new();
    for _ in 0..CACHED_LOADS {
        let fresh = runtime(cache.path());
        let started = Instant::now();
        let loaded = fresh.load_component_file(&path).expect("cached load");
        loads.push(started.elapsed());
        assert_eq!(loaded.origin(), ComponentOrigin::Cached);
    }
    loads.sort();
    let cached_load = percentile(&loads, 0.5);

    let runtime = runtime(cache.path());
    let component = runtime.load_component_file(&path).expect("load");
    let agent: Arc<Agent> = runtime
        .agent(name, component, AgentLimits::default())
        .expect("agent");
    let payload = payload_1k();

    let mut firsts = Vec::with_capacity(FRESH);
    for i in 0..FRESH {
        let session = SessionKey::from(format!("fresh-{i}").as_str());
        let started = Instant::now();
        tokio
            .block_on(agent.call(&session, delivery(&payload)))
            .expect("first call");
        firsts.push(started.elapsed());
        agent.end_session(&session);
        // A new session arrives a moment later: time enough for the agent
        // to make its next spare instance in the background.
        tokio.block_on(async { tokio::time::sleep(Duration::from_millis(2)).await });
    }
    firsts.sort();

    let warm_session = SessionKey::from("warm");
    let answer = tokio
        .block_on(agent.call(&warm_session, delivery(&payload)))
        .expect("warm-up");
    assert_eq!(answer.len(), 1, "{name} answers once");
    let mut warms = Vec::with_capacity(WARM);
    for _ in 0..WARM {
        let started = Instant::now();
        tokio
            .block_on(agent.call(&warm_session, delivery(&payload)))
            .expect("warm call");
        warms.push(started.elapsed());
    }
    warms.sort();
    agent.end_session(&warm_session);

    let before = resident_bytes();
    for i in 0..SESSIONS {
        let session = SessionKey::from(format!("live-{i}").as_str());
        tokio
            .block_on(agent.call(&session, delivery(&payload)))
            .expect("session call");
    }
    let after = resident_bytes();
    assert_eq!(agent.stats().instances, SESSIONS, "every session is live");
    let rss_per_instance = after.saturating_sub(before) as f64 / SESSIONS as f64;

    Figures {
        size,
        compile,
        cached_load,
        first_call: (percentile(&firsts, 0.5), percentile(&firsts, 0.99)),
        warm_call: (percentile(&warms, 0.5), percentile(&warms, 0.99)),
        rss_per_instance,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names none of these
    // agents skips the run.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");
    println!("| language | agent | component | compile | cached load | fresh instance + first call p50 / p99 | warm call p50 / p99 (1 KB) | RSS per idle instance (1,000 sessions) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (language, name) in LANGUAGES {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let f = measure(&tokio, name);
        println!(
            "| {language} | `{name}` | {:.1} MB | {} | {} | {} / {} | {} / {} | {:.1} KiB |",
            f.size as f64 / 1e6,
            micros(f.compile),
            micros(f.cached_load),
            micros(f.first_call.0),
            micros(f.first_call.1),
            micros(f.warm_call.0),
            micros(f.warm_call.1),
            f.rss_per_instance / 1024.0,
        );
    }
}
