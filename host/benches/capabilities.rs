//! Capability benchmarks: an outbound request through the host (the `fetch`
//! agent's `GET`, through the grant's checks and the pooled client) against
//! the same request made directly by this process with a pooled hyper
//! client, to the same keep-alive server on loopback, in one run; and a
//! storage `set` and `get` through the `memo` agent, on each backend
//! (memory, SQLite in a temporary file, and a `redis-server` this benchmark
//! starts on loopback when one is installed).
//!
//! Needs the example agents (`make agents`). Run with `make bench` or
//! `cargo bench -p agentserver --bench capabilities`.

mod support;

use agentserver::capability::{
    AgentGrants, BucketQuota, HttpGrant, KeyValueStore, MemoryKeyValueStore, StorageGrant,
};
use agentserver::runtime::{
    Agent, AgentLimits, Delivery, Runtime, RuntimeConfig, RuntimeServices, SessionKey,
};
use agentserver::store::{RedisStore, SqliteStore};
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

/// An HTTP grant for the loopback server on `port`.
fn grants_http(port: u16) -> HttpGrant {
    HttpGrant::new(vec![format!("http://127.0.0.1:{port}")
        .parse()
        .expect("pattern")])
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
        http: Some(grants_http(port)),
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
    let client = Arc::new(
        agentserver::capability::OutboundClient::new(
            "bench",
            &grants_http(port),
            &agentserver::capability::Secrets::none(),
            Arc::new(agentserver::capability::NoUsageAudit),
        )
        .expect("client"),
    );
    let host_client_get = || async {
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::get(uri.clone()).body(body).expect("request");
        let scope = agentserver::capability::CallScope::new("s", "t");
        let response = Arc::clone(&client)
            .send(request, scope)
            .await
            .expect("send");
        response.into_body().collect().await.expect("body");
    };
    tokio.block_on(async {
        through_host().await;
        direct_get().await;
        host_client_get().await;
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
    let samples = tokio.block_on(async {
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let start = Instant::now();
            host_client_get().await;
            samples.push(start.elapsed());
        }
        samples
    });
    report(
        "the same GET through the host's outbound client, without the guest",
        samples,
    );
}

/// A `redis-server` on a free loopback port with nothing saved, killed
/// when dropped; `None` (and the Redis figures skipped) when there is no
/// `redis-server` on the PATH.
struct RedisChild(std::process::Child);

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(dir: &std::path::Path) -> Option<(RedisChild, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let child = RedisChild(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, format!("redis://127.0.0.1:{port}")))
}

fn storage(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut backends: Vec<(&str, Arc<dyn KeyValueStore>)> = vec![
        ("memory", Arc::new(MemoryKeyValueStore::new())),
        (
            "sqlite",
            Arc::new(SqliteStore::open(&dir.path().join("kv.sqlite3")).expect("sqlite")),
        ),
    ];
    let redis = redis_server(dir.path());
    match &redis {
        Some((_, url)) => backends.push((
            "redis",
            Arc::new(RedisStore::open(url, "bench").expect("redis")),
        )),
        None => println!("no redis-server on the PATH: the Redis figures are skipped"),
    }
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
    let set = "<remember key=\"k\">a value of some thirty bytes.</remember>";
    let get = "<recall key=\"k\"></recall>";
    for (name, keyvalue) in backends {
        let runtime = Runtime::with_services(
            RuntimeConfig::default(),
            RuntimeServices {
                keyvalue,
                ..RuntimeServices::default()
            },
        )
        .expect("runtime");
        let memo = agent(&runtime, "memo", grants.clone());
        tokio.block_on(call(&memo, "remember", set));
        c.bench_function(&format!("capabilities/kv_set_{name}"), |b| {
            b.iter_custom(|iters| timed(&tokio, iters, || call(&memo, "remember", set)))
        });
        c.bench_function(&format!("capabilities/kv_get_{name}"), |b| {
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
            &format!("storage set through the memo agent ({name} backend)"),
            time("remember", set),
        );
        report(
            &format!("storage get through the memo agent ({name} backend)"),
            time("recall", get),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = outbound, storage
}
criterion_main!(benches);
