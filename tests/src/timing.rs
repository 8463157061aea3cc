//! What the round-trip benchmarks share: one round trip over a client, and
//! two paths timed against each other in interleaved blocks, printed as a
//! Markdown table for `docs/benchmarks.md`.

use agentserver::client::{Client, Received};
use std::time::{Duration, Instant};

/// The runtime the benchmarks run on: two worker threads, as the server's
/// machine has two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Sends `message` and waits for its answer (a `<message>` frame).
pub async fn round_trip(client: &mut Client, message: &str) -> Duration {
    let start = Instant::now();
    client.send(message).await.expect("send");
    loop {
        match client.receive().await.expect("an answer") {
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

/// Times `rounds` round trips of `message` on each of two paths (`base`
/// first), after `warmup` untimed ones, in blocks of `block` taking turns,
/// and prints the table and what the second path adds at p50.
pub async fn compare(
    (base_name, base): (&str, &mut Client),
    (other_name, other): (&str, &mut Client),
    message: &str,
    (warmup, rounds, block): (usize, usize, usize),
) {
    for _ in 0..warmup {
        round_trip(base, message).await;
        round_trip(other, message).await;
    }
    let (mut base_times, mut other_times) = (Vec::new(), Vec::new());
    while base_times.len() < rounds {
        for _ in 0..block {
            base_times.push(round_trip(base, message).await);
        }
        for _ in 0..block {
            other_times.push(round_trip(other, message).await);
        }
    }
    println!("| 1 KiB `<echo>` round trip, {rounds} each | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    let mut p50s = Vec::new();
    for (name, times) in [(base_name, &mut base_times), (other_name, &mut other_times)] {
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
        "\n{other_name} adds {} at p50 ({:.2}× {base_name}).",
        micros(p50s[1].saturating_sub(p50s[0])),
        p50s[1].as_secs_f64() / p50s[0].as_secs_f64()
    );
}
