//! What the benchmarks share: the built example agents, the 1 KB payload
//! and the delivery that carries it.

#![allow(dead_code)] // each benchmark uses its own part

use agentserver::runtime::Delivery;
use std::path::PathBuf;

/// Example agent `name`'s component, from `$AGENTSERVER_AGENTS_DIR` or the
/// workspace's `target/agents` (`make agents`).
pub fn agent_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("AGENTSERVER_AGENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/agents"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run `make agents`",
        path.display()
    );
    path
}

/// `<echo>…</echo>`, 1,024 bytes in all.
pub fn payload_1k() -> String {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(23);
    format!("<echo>{}</echo>", &text[..1024 - "<echo></echo>".len()])
}

/// `payload` as an `<echo>` from a bench user, on one thread.
pub fn delivery(payload: &str) -> Delivery<'_> {
    Delivery {
        thread: "bench-thread",
        sender: "user:bench",
        tag: "echo",
        payload,
        emitter: None,
    }
}

/// Prints the median, 99th percentile and maximum of `samples`, each one
/// call timed on its own (which criterion's batch timing cannot give).
pub fn report(what: &str, mut samples: Vec<std::time::Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "\n{what}: {} calls timed one by one: median {:.2} µs, p99 {:.2} µs, max {:.2} µs\n",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
