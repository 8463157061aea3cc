//! Storage faults: a real `redis-server` (writing every change to its
//! append-only file) killed under traffic and started again. Meanwhile the
//! server goes on serving what needs no storage, says what it cannot do
//! (an agent's write fails with the store's reason, a signed command is
//! refused, the audit backlog shows in `/metrics`), never acknowledges what
//! it did not store, and recovers by itself: the audit entries it held are
//! stored in order, and the chain verifies with every message in it.

use agentserver::client::Client;
use agentserver::privileged::Command;
use agentserver::server::StorageConfig;
use agentserver::store::Stores;
use agentserver_tests::{agent_wasm, recv_text, recv_until, RedisServer, TestServer};
use std::time::{Duration, Instant};

async fn ask(client: &mut Client, message: &str) -> String {
    client.send(message).await.expect("send");
    recv_text(client).await
}

async fn metric(server: &TestServer, name: &str) -> u64 {
    let (status, text) = agentserver::client::get(
        &format!("https://{}/metrics", server.address()),
        &server.trust(),
    )
    .await
    .expect("metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_under_traffic_then_back_loses_nothing() {
    let mut redis = RedisServer::start_persistent();
    let extra = format!(
        "[storage]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"faults\"\n\
         [[agent]]\nname = \"memo\"\ncomponent = {:?}\nlistens = [\"remember\", \"recall\", \"tally\"]\n\
         [agent.storage]\nsession = {{ max_keys = 10, max_bytes = 1000 }}\n",
        redis.url,
        agent_wasm("memo").display().to_string(),
    );
    let server =
        TestServer::start_stored(&[("alice", &["*"])], &[("echo", "echo", &["echo"])], &extra)
            .await;
    let (mut alice, _) = server.login("alice").await;
    assert!(ask(&mut alice, "<echo>before</echo>")
        .await
        .ends_with("<echoed>before</echoed></message>"));
    let stored = ask(&mut alice, "<remember key=\"k\">one</remember>").await;
    assert!(stored.contains("<remembered key=\"k\">"), "{stored}");

    redis.stop();

    // What needs no storage is served; the audit entries wait in memory.
    for n in 0..20 {
        let answer = ask(&mut alice, &format!("<echo>during {n}</echo>")).await;
        assert!(
            answer.ends_with(&format!("<echoed>during {n}</echoed></message>")),
            "{answer}"
        );
    }
    // A write is not acknowledged: the agent hears the store's reason.
    let refused = ask(&mut alice, "<remember key=\"k\">two</remember>").await;
    assert!(
        refused.contains("<memo-failed>") && !refused.contains("<remembered"),
        "{refused}"
    );
    // A signed command needs its id stored: refused, nothing changed.
    let grant = Command::Grant {
        user: "alice".into(),
        tag: "anything".into(),
    };
    alice
        .send(&server.sign(&grant.to_unsigned_document()))
        .await
        .unwrap();
    let verdict = recv_until(&mut alice, "<privileged-result").await;
    assert!(
        verdict.contains("status=\"refused\"") && verdict.contains("redis"),
        "{verdict}"
    );
    assert!(metric(&server, "agentserver_audit_held").await > 0);

    redis.restart();

    // Back by itself: the agent's storage answers again, and what was held
    // is stored.
    let started = Instant::now();
    loop {
        let answer = ask(&mut alice, "<recall key=\"k\"/>").await;
        if answer.contains("<recalled key=\"k\">one</recalled>") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "storage never came back: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = ask(&mut alice, "<remember key=\"k\">three</remember>").await;
    assert!(stored.contains("<remembered key=\"k\">"), "{stored}");
    let started = Instant::now();
    while metric(&server, "agentserver_audit_held").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the held audit entries were never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;

    // The chain verifies, with every message of the outage in it, once.
    let stores = Stores::open(
        &StorageConfig::Redis {
            url: redis.url.clone(),
            prefix: "faults".into(),
        },
        std::path::Path::new("/nonexistent"),
    )
    .expect("open the store");
    let verified = stores.audit.verify().unwrap().expect("an intact chain");
    let entries = stores.audit.audit_entries(1, 10_000).unwrap();
    assert_eq!(verified.count, entries.len() as u64);
    for n in 0..20 {
        let payload = format!("<echo>during {n}</echo>");
        let found = entries
            .iter()
            .filter(|e| e.entry.contains(&payload))
            .count();
        assert_eq!(found, 1, "{payload} audited {found} times");
    }
}
