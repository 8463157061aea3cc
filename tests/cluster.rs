//! Several nodes serving one organism, over a real `nats-server` and a
//! real `redis-server`: node A runs `echo`, node B runs `calculate` and
//! the hostile agent's `hold`. A client of A reaches B's agents with the
//! right thread and `from`; a node that leaves is dropped from every table
//! and the calls it had in flight end with `agent-failed` ("node lost");
//! a node that is not heard from is dropped within the heartbeat timeout.

use agentserver::client::{Client, Received};
use agentserver_tests::{NatsServer, RedisServer, TestServer};
use std::time::{Duration, Instant};

fn node(nats: &NatsServer, redis: &RedisServer, name: &str) -> String {
    format!(
        "[storage]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"organism\"\n\
         [cluster]\nnats_url = \"{}\"\nnode = \"{name}\"\n",
        redis.url, nats.url
    )
}

/// Node A (no agents) and node B (`echo`) of one organism, with the same
/// users: B gets A's users file, where `alice` may send `echo`.
async fn sharing_users(nats: &NatsServer, redis: &RedisServer) -> (TestServer, TestServer) {
    let a = TestServer::start_with(&[("alice", &["echo"])], &[], &node(nats, redis, "a")).await;
    let users = std::fs::read_to_string(a.dir.path().join("users.toml")).unwrap();
    let b = TestServer::start_with_files(
        &[],
        &[("echo", "echo", &["echo"])],
        &node(nats, redis, "b"),
        &[("users.toml", &users, 0o600)],
    )
    .await;
    (a, b)
}

/// The next frame that is not a catalog, within `limit`.
async fn answer(client: &mut Client, limit: Duration) -> String {
    tokio::time::timeout(limit, async {
        loop {
            match client.receive().await {
                Ok(Received::Text(frame)) if !frame.starts_with("<catalog") => return frame,
                Ok(Received::Text(_)) => {}
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("an answer in time")
}

/// Waits until A's routing table has (or has not) a listener for `tag`.
async fn until_listened(server: &TestServer, tag: &str, listened: bool) {
    let start = Instant::now();
    let tag = agentserver::xml::Tag::new(tag);
    while server.server().bus().table().listeners(&tag).is_empty() == listened {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the tables did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_one_node_reaches_the_agents_of_another() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let a = TestServer::start_with(
        &[("alice", &["echo", "calculate", "hold"])],
        &[("echo", "echo", &["echo"])],
        &node(&nats, &redis, "a"),
    )
    .await;
    let b = TestServer::start_with(
        &[("bob", &["echo"])],
        &[
            ("calc", "calculator", &["calculate"]),
            ("hostile", "hostile", &["hold"]),
        ],
        &node(&nats, &redis, "b"),
    )
    .await;
    until_listened(&a, "calculate", true).await;
    until_listened(&b, "echo", true).await;

    let (mut alice, catalog) = a.login("alice").await;
    assert!(catalog.contains("tag=\"calculate\""), "{catalog}");
    alice
        .send("<calculate>2 + 3 * 4</calculate>")
        .await
        .unwrap();
    let result = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(result.contains("<result>14</result>"), "{result}");
    assert!(
        result.contains("<from>calc</from>"),
        "the sender is named as on one node: {result}"
    );
    let thread = result
        .split("<thread>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap()
        .to_owned();
    alice
        .send(&format!(
            "<message><meta><thread>{thread}</thread></meta><calculate>1+1</calculate></message>"
        ))
        .await
        .unwrap();
    let again = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(
        again.contains("<result>2</result>") && again.contains(&thread),
        "{again}"
    );
    // B saw the message from A's user, as on one node.
    assert!(b
        .audit
        .records()
        .iter()
        .any(|r| r.tag == "calculate" && r.from == "user:alice"));

    // B's user reaches A's echo the other way.
    let (mut bob, _) = b.login("bob").await;
    bob.send("<echo>from b</echo>").await.unwrap();
    let echoed = answer(&mut bob, Duration::from_secs(10)).await;
    assert!(
        echoed.contains("from b") && echoed.contains("<from>echo</from>"),
        "{echoed}"
    );

    // A call in flight on B when B leaves ends with `node lost`.
    alice.send("<hold>30000</hold>").await.unwrap();
    let start = Instant::now();
    while b.server().bus().table().agents().all(|l| {
        l.target
            .local()
            .is_none_or(|agent| agent.stats().in_flight == 0)
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hold never started on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop_now().await;
    let lost = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(
        lost.contains("agent-failed") && lost.contains("node lost"),
        "{lost}"
    );
    until_listened(&a, "calculate", false).await;
    alice.send("<calculate>3+3</calculate>").await.unwrap();
    let refused = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(refused.contains("no-listener"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_dropped_within_the_heartbeat_timeout() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let a =
        TestServer::start_with(&[("alice", &["calculate"])], &[], &node(&nats, &redis, "a")).await;
    let b = TestServer::start_with(
        &[("bob", &["calculate"])],
        &[("calc", "calculator", &["calculate"])],
        &node(&nats, &redis, "b"),
    )
    .await;
    until_listened(&a, "calculate", true).await;
    // B goes silent without saying it leaves (dropped, not shut down: its
    // heartbeats just stop). A drops it once the timeout passes, well
    // within a few heartbeats more.
    let start = Instant::now();
    drop(b);
    until_listened(&a, "calculate", false).await;
    let bound = agentserver::cluster::NODE_TIMEOUT + Duration::from_secs(5);
    assert!(
        start.elapsed() < bound,
        "dropped after {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_used_on_one_node_is_refused_on_another() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let (a, b) = sharing_users(&nats, &redis).await;
    let code = a.code("alice");
    let mut on_a = a.connect().await;
    on_a.login("alice", &code)
        .await
        .expect("the code logs in on A");
    let mut on_b = b.connect().await;
    let replayed = on_b.login("alice", &code).await;
    assert!(replayed.is_err(), "the same code was accepted again on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_admitted_on_one_node_answers_clients_of_another() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let a = TestServer::start_with(
        &[("owner", &["echo"])],
        &[("echo", "echo", &["echo"])],
        &node(&nats, &redis, "a"),
    )
    .await;
    let b = TestServer::start_with(&[("bob", &["twin"])], &[], &node(&nats, &redis, "b")).await;
    // A's owner admits `twin` (the echo component under another name) on A.
    let dir = tempfile::tempdir().unwrap();
    agentserver_tests::clients::signed_twin(&a, dir.path());
    let (mut owner, _) = a.login("owner").await;
    owner
        .send(&std::fs::read_to_string(dir.path().join("twin.xml")).unwrap())
        .await
        .unwrap();
    let verdict = agentserver_tests::recv_until(&mut owner, "<privileged-result").await;
    assert!(verdict.contains("applied"), "{verdict}");
    // B learns of it from A's next announcement and routes to it.
    until_listened(&b, "twin", true).await;
    let (mut bob, _) = b.login("bob").await;
    bob.send("<twin>hello twin</twin>").await.unwrap();
    let echoed = answer(&mut bob, Duration::from_secs(10)).await;
    assert!(
        echoed.contains("hello twin") && echoed.contains("<from>twin</from>"),
        "{echoed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_on_one_node_count_on_every_node() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let (a, b) = sharing_users(&nats, &redis).await;
    // Five wrong codes for alice on A (the limit is five a minute)...
    for _ in 0..5 {
        let mut client = a.connect().await;
        assert!(client.login("alice", "000000").await.is_err());
    }
    // ...and her right code is refused on B too, without being checked (it
    // stays unused: A still takes it once the window passes).
    let mut on_b = b.connect().await;
    assert!(
        on_b.login("alice", &a.code("alice")).await.is_err(),
        "B let alice in after five failures on A"
    );
}
