//! What more nodes buy on one machine: the aggregate round trips per second
//! of 12 clients, each sending 1 KiB `<echo>` messages one after another
//! for a fixed time, all on one node, then spread four by four over three
//! nodes of one organism that each run the `echo` agent (a tag served
//! locally is served locally, so no message crosses NATS).
//!
//! Real nodes in this process over real TLS, on the runtime's two worker
//! threads, a real `nats-server` and `redis-server` on loopback. Needs the
//! example agents (`make agents`). Run with `make bench` or `cargo bench
//! -p agentserver-tests --bench cluster_scale`; it prints a Markdown table
//! for `docs/benchmarks.md`.

use agentserver::client::Client;
use agentserver_tests::{NatsServer, RedisServer, TestServer};
use std::time::{Duration, Instant};

/// Clients in all.
const CLIENTS: usize = 12;
/// How long the clients send in each run, after a warm-up of a second.
const MEASURE: Duration = Duration::from_secs(3);
/// Runs of each setup, taking turns.
const ROUNDS: usize = 5;

fn node(nats: &NatsServer, redis: &RedisServer, prefix: &str, name: &str) -> String {
    format!(
        "messages_per_second = 1000000\nmessage_burst = 1000000\n{}",
        agentserver_tests::cluster_node(nats, redis, prefix, name)
    )
}

/// `CLIENTS` clients logged in on `nodes` in turn.
async fn clients_of(nodes: &[&TestServer]) -> Vec<Client> {
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (client, _) = nodes[n % nodes.len()].login(&format!("u{n}")).await;
        clients.push(client);
    }
    clients
}

/// Round trips per second of `clients` over [`MEASURE`], after a second
/// of warm-up; the clients are handed back.
async fn aggregate(clients: Vec<Client>) -> (f64, Vec<Client>) {
    let message = format!("<echo>{}</echo>", "x".repeat(1_024));
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + MEASURE;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let message = message.clone();
            tokio::spawn(async move {
                let mut counted = 0u64;
                loop {
                    agentserver_tests::timing::round_trip(&mut client, &message).await;
                    let now = Instant::now();
                    if now >= end {
                        return (counted, client);
                    }
                    if now >= start {
                        counted += 1;
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    let mut clients = Vec::new();
    for task in tasks {
        let (counted, client) = task.await.expect("a client task");
        total += counted;
        clients.push(client);
    }
    (total as f64 / MEASURE.as_secs_f64(), clients)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = agentserver_tests::timing::runtime();
    runtime.block_on(async {
        let users: Vec<String> = (0..CLIENTS).map(|n| format!("u{n}")).collect();
        let users: Vec<(&str, &[&str])> = users
            .iter()
            .map(|u| (u.as_str(), &["echo"][..]))
            .collect();
        let echo: &[agentserver_tests::AgentSpec<'_>] = &[("echo", "echo", &["echo"])];

        // Two organisms, each with a NATS and a Redis of its own, so that
        // neither hears the other: one node, and three.
        let (nats_one, redis_one) = (NatsServer::start(), RedisServer::start());
        let solo =
            TestServer::start_with(&users, echo, &node(&nats_one, &redis_one, "solo", "a")).await;
        let (nats, redis) = (NatsServer::start(), RedisServer::start());
        let a = TestServer::start_with(&users, echo, &node(&nats, &redis, "trio", "a")).await;
        let b = a.start_node(echo, &node(&nats, &redis, "trio", "b")).await;
        let c = a.start_node(echo, &node(&nats, &redis, "trio", "c")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;

        let mut on_one = clients_of(&[&solo]).await;
        let mut on_three = clients_of(&[&a, &b, &c]).await;
        let (mut ones, mut threes) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (rate, clients) = aggregate(on_one).await;
            ones.push(rate);
            on_one = clients;
            let (rate, clients) = aggregate(on_three).await;
            threes.push(rate);
            on_three = clients;
        }
        let (one, three) = (median(ones), median(threes));
        println!(
            "| {CLIENTS} clients, 1 KiB `<echo>`, median of {ROUNDS} runs of {} s, taking turns | round trips/s |",
            MEASURE.as_secs()
        );
        println!("|---|---|");
        println!("| one node | {one:.0} |");
        println!("| three nodes, four clients each | {three:.0} |");
        println!(
            "\nthree nodes give {:.2}× one node's round trips per second on this machine",
            three / one
        );
    });
}
