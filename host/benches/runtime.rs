//! Runtime benchmarks: a warm call of `echo` with a 1 KB payload, a fresh
//! instance plus its first call, and loading a component from the compile
//! cache against compiling it.
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench runtime`. Besides criterion's report,
//! it prints the median and 99th percentile of single calls, timed one by
//! one, which criterion's batch timing cannot give.

mod support;

use support::{agent_path, delivery, payload_1k, report};

use agentserver::runtime::{Agent, AgentLimits, Runtime, RuntimeConfig, SessionKey};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fixture {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    echo: Arc<Agent>,
}

fn fixture() -> Fixture {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let component = runtime
        .load_component_file(&agent_path("echo"))
        .expect("echo");
    let echo = runtime
        .agent("echo", component, AgentLimits::default())
        .expect("agent");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");
    Fixture {
        tokio,
        runtime,
        echo,
    }
}

fn warm_call(c: &mut Criterion) {
    let f = fixture();
    let payload = payload_1k();
    assert_eq!(payload.len(), 1024);
    let session = SessionKey::from("warm");
    f.tokio
        .block_on(f.echo.call(&session, delivery(&payload)))
        .expect("first call");
    c.bench_function("runtime/warm_call_echo_1k", |b| {
        b.iter_custom(|iters| {
            f.tokio.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    f.echo
                        .call(&session, delivery(&payload))
                        .await
                        .expect("call");
                }
                start.elapsed()
            })
        })
    });
    let samples = f.tokio.block_on(async {
        let mut samples = Vec::with_capacity(100_000);
        for _ in 0..100_000 {
            let start = Instant::now();
            f.echo
                .call(&session, delivery(&payload))
                .await
                .expect("call");
            samples.push(start.elapsed());
        }
        samples
    });
    report("warm call, echo, 1 KB payload", samples);
}

fn fresh_instance(c: &mut Criterion) {
    let f = fixture();
    let payload = payload_1k();
    let mut n = 0u64;
    let mut next_session = move || {
        n += 1;
        SessionKey::from(format!("fresh-{n}"))
    };
    // Warm the pool's slots once, as a running server's would be.
    for _ in 0..100 {
        let session = next_session();
        f.tokio
            .block_on(f.echo.call(&session, delivery(&payload)))
            .expect("call");
        f.echo.end_session(&session);
    }
    c.bench_function("runtime/instantiate_and_first_call_echo_1k", |b| {
        b.iter_custom(|iters| {
            f.tokio.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let session = next_session();
                    let start = Instant::now();
                    f.echo
                        .call(&session, delivery(&payload))
                        .await
                        .expect("call");
                    total += start.elapsed();
                    f.echo.end_session(&session);
                }
                total
            })
        })
    });
    let samples = f.tokio.block_on(async {
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let session = next_session();
            let start = Instant::now();
            f.echo
                .call(&session, delivery(&payload))
                .await
                .expect("call");
            samples.push(start.elapsed());
            f.echo.end_session(&session);
        }
        samples
    });
    report("fresh instance + first call, echo, 1 KB payload", samples);
}

fn load_component(c: &mut Criterion) {
    let bytes = std::fs::read(agent_path("calculator")).expect("calculator");
    let cache = tempfile::tempdir().expect("tempdir");
    let cached = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let hash = cached.load_component(&bytes).expect("load").hash();
    let uncached = fixture().runtime;
    let mut group = c.benchmark_group("runtime/load_calculator");
    group.sample_size(20);
    group.bench_function("from_compile_cache", |b| {
        b.iter(|| {
            cached.forget_component(&hash);
            cached.load_component(&bytes).expect("load")
        })
    });
    group.bench_function("compile_from_bytes", |b| {
        b.iter(|| {
            uncached.forget_component(&hash);
            uncached.load_component(&bytes).expect("load")
        })
    });
    group.finish();
}

criterion_group!(benches, warm_call, fresh_instance, load_component);
criterion_main!(benches);
