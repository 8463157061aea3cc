//! The price of a cluster hop: the round trip of a 1 KiB `<echo>` from a
//! client of node B to the echo agent on B itself, next to the same round
//! trip from a client of node A, whose message crosses to B over NATS and
//! whose answer comes back the same way, in one run, interleaved in blocks
//! so that both see the same machine.
//!
//! Two real nodes in this process over real TLS, a real `nats-server` and
//! `redis-server` on loopback. Needs the example agents (`make agents`).
//! Run with `make bench` or `cargo bench -p agentserver-tests --bench
//! cluster_hop`; it prints a Markdown table for `docs/benchmarks.md`.

use agentserver_tests::{NatsServer, RedisServer, TestServer};
use std::time::{Duration, Instant};

/// Round trips timed per path.
const ROUNDS: usize = 4_000;
/// Round trips per block before switching paths.
const BLOCK: usize = 200;
/// Untimed round trips per path first.
const WARMUP: usize = 200;

fn node(nats: &NatsServer, redis: &RedisServer, name: &str) -> String {
    format!(
        "messages_per_second = 1000000\nmessage_burst = 1000000\n{}",
        agentserver_tests::cluster_node(nats, redis, "bench", name)
    )
}

fn main() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let runtime = agentserver_tests::timing::runtime();
    runtime.block_on(async {
        let a = TestServer::start_with(
            &[("alice", &["echo"]), ("bob", &["echo"])],
            &[],
            &node(&nats, &redis, "a"),
        )
        .await;
        let b = a
            .start_node(&[("echo", "echo", &["echo"])], &node(&nats, &redis, "b"))
            .await;
        let tag = agentserver::xml::Tag::new("echo");
        let start = Instant::now();
        while a.server().bus().table().listeners(&tag).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "A never saw B's echo"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut across, _) = a.login("alice").await;
        let (mut inside, _) = b.login("bob").await;
        let message = format!("<echo>{}</echo>", "x".repeat(1_024));
        agentserver_tests::timing::compare(
            ("client and agent on one node", &mut inside),
            ("client on A, agent on B (over NATS)", &mut across),
            &message,
            (WARMUP, ROUNDS, BLOCK),
        )
        .await;
        bare_nats_round_trip(&nats.url).await;
    });
}

/// The floor under a cluster hop: a 1 KiB NATS request and its reply
/// through the same `nats-server`, between two clients of this process,
/// with nothing else done.
async fn bare_nats_round_trip(url: &str) {
    use futures::StreamExt as _;
    let responder = async_nats::connect(url).await.unwrap();
    let requester = async_nats::connect(url).await.unwrap();
    let mut requests = responder.subscribe("bench.echo").await.unwrap();
    responder.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, request.payload).await;
            }
        }
    });
    let payload = "x".repeat(1_024).into_bytes();
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        let start = Instant::now();
        requester
            .request("bench.echo", payload.clone().into())
            .await
            .unwrap();
        if round >= WARMUP {
            times.push(start.elapsed());
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "\nbare NATS request and reply of 1 KiB through the same nats-server, {ROUNDS}: \
         p50 {:.1} µs, p99 {:.1} µs",
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
}
