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

use agentserver::client::{Client, Received};
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
        "messages_per_second = 1000000\nmessage_burst = 1000000\n\
         [storage]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"bench\"\n\
         [cluster]\nnats_url = \"{}\"\nnode = \"{name}\"\n",
        redis.url, nats.url
    )
}

async fn round_trip(client: &mut Client, message: &str) -> Duration {
    let start = Instant::now();
    client.send(message).await.unwrap();
    loop {
        match client.receive().await.unwrap() {
            Received::Text(text) if text.starts_with("<message") => return start.elapsed(),
            Received::Text(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let a =
            TestServer::start_with(&[("alice", &["echo"])], &[], &node(&nats, &redis, "a")).await;
        let b = TestServer::start_with(
            &[("bob", &["echo"])],
            &[("echo", "echo", &["echo"])],
            &node(&nats, &redis, "b"),
        )
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
        for _ in 0..WARMUP {
            round_trip(&mut inside, &message).await;
            round_trip(&mut across, &message).await;
        }
        let (mut inside_times, mut across_times) = (Vec::new(), Vec::new());
        while inside_times.len() < ROUNDS {
            for _ in 0..BLOCK {
                inside_times.push(round_trip(&mut inside, &message).await);
            }
            for _ in 0..BLOCK {
                across_times.push(round_trip(&mut across, &message).await);
            }
        }
        println!("| 1 KiB `<echo>` round trip, {ROUNDS} each | p50 | p99 | mean |");
        println!("|---|---|---|---|");
        let mut p50s = Vec::new();
        for (name, times) in [
            ("client and agent on one node", &mut inside_times),
            ("client on A, agent on B (over NATS)", &mut across_times),
        ] {
            times.sort();
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            p50s.push(percentile(times, 0.5));
            println!(
                "| {name} | {} | {} | {} |",
                micros(percentile(times, 0.5)),
                micros(percentile(times, 0.99)),
                micros(mean)
            );
        }
        println!(
            "\nThe cross-node hop adds {} at p50 ({:.2}× the round trip on one node).",
            micros(p50s[1].saturating_sub(p50s[0])),
            p50s[1].as_secs_f64() / p50s[0].as_secs_f64()
        );
    });
}
