//! Capability benchmarks: an outbound request through the host (the `fetch`
//! agent's `GET`, through the grant's checks and the pooled client) against
//! the same request made directly by this process with a pooled hyper
//! client, to the same keep-alive server on loopback, in one run; and a
//! storage `set` and `get` through the `memo` agent.
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench capabilities`.

mod support;

use agentserver::capability::{AgentGrants, BucketQuota, HttpGrant, StorageGrant};
use agentserver::runtime::{Agent, AgentLimits, Delivery, Runtime, RuntimeConfig, SessionKey};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{agent_path, report};

const SAMPLES: usize = 5_000;

/// A keep-alive HTTP/1.1 server on loopback answering every request with
/// 64 bytes; returns its port.
async fn upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(&[b'x'; 64]),
                    )))
                }),
            ));
        }
    });
    port
}

fn agent(runtime: &Runtime, name: &str, grants: AgentGrants) -> Arc<Agent> {
    let component = runtime
        .load_component_file(&agent_path(name))
        .expect("component");
    runtime
        .agent(
            name,
            component,
            AgentLimits {
                grants,
                ..AgentLimits::default()
            },
        )
        .expect("agent")
}

async fn call(agent: &Agent, tag: &str, payload: &str) -> Vec<String> {
    agent
        .call(
            &SessionKey::from("bench"),
            Delivery {
                thread: "bench-thread",
                sender: "user:bench",
                tag,
                payload,
                emitter: None,
            },
        )
        .await
        .expect("call")
}

/// Runs `step` `iters` times on `tokio` and returns the time it took.
fn timed<F, T>(tokio: &tokio::runtime::Runtime, iters: u64, step: impl Fn() -> F) -> Duration
where
    F: std::future::Future<Output = T>,
{
    tokio.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            step().await;
        }
        start.elapsed()
    })
}

fn outbound(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let port = tokio.block_on(upstream());
    let url = format!("http://127.0.0.1:{port}/");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let grants = AgentGrants {
        http: Some(HttpGrant::new(vec![format!("http://127.0.0.1:{port}")
            .parse()
            .expect("pattern")])),
        storage: None,
    };
    let fetch = agent(&runtime, "fetch", grants);
    let payload = format!("<fetch url=\"{url}\"></fetch>");
    let direct = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().expect("uri");
    let direct_get = || async {
        let response = direct.get(uri.clone()).await.expect("direct request");
        response.into_body().collect().await.expect("body");
    };
    let through_host = || async {
        let answer = call(&fetch, "fetch", &payload).await;
        assert!(answer[1].contains("status=\"200\""), "{answer:?}");
    };
    tokio.block_on(async {
        through_host().await;
        direct_get().await;
    });
    c.bench_function("capabilities/outbound_get_through_host", |b| {
        b.iter_custom(|iters| timed(&tokio, iters, through_host))
    });
    c.bench_function("capabilities/outbound_get_direct", |b| {
        b.iter_custom(|iters| timed(&tokio, iters, direct_get))
    });
    // Interleaved, one by one, so that both see the same machine.
    let (host, own) = tokio.block_on(async {
        let (mut host, mut own) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let start = Instant::now();
            through_host().await;
            host.push(start.elapsed());
            let start = Instant::now();
            direct_get().await;
            own.push(start.elapsed());
        }
        (host, own)
    });
    report(
        "outbound GET through the host (fetch agent call, 64-byte body)",
        host,
    );
    report(
        "the same GET made directly by the process (pooled hyper client)",
        own,
    );
}

fn storage(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let quota = BucketQuota {
        max_keys: 1_000,
        max_bytes: 1 << 20,
    };
    let grants = AgentGrants {
        http: None,
        storage: Some(StorageGrant {
            session: Some(quota),
            agent: Some(quota),
        }),
    };
    let memo = agent(&runtime, "memo", grants);
    let set = "<remember key=\"k\">a value of some thirty bytes.</remember>";
    let get = "<recall key=\"k\"></recall>";
    tokio.block_on(call(&memo, "remember", set));
    c.bench_function("capabilities/kv_set_memory", |b| {
        b.iter_custom(|iters| timed(&tokio, iters, || call(&memo, "remember", set)))
    });
    c.bench_function("capabilities/kv_get_memory", |b| {
        b.iter_custom(|iters| timed(&tokio, iters, || call(&memo, "recall", get)))
    });
    let time = |tag: &'static str, payload: &'static str| {
        tokio.block_on(async {
            let mut samples = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                let start = Instant::now();
                call(&memo, tag, payload).await;
                samples.push(start.elapsed());
            }
            samples
        })
    };
    report(
        "storage set through the memo agent (memory backend)",
        time("remember", set),
    );
    report(
        "storage get through the memo agent (memory backend)",
        time("recall", get),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = outbound, storage
}
criterion_main!(benches);
