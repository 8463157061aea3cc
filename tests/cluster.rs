//! Several nodes serving one organism, over a real `nats-server` and a
//! real `redis-server`: node A runs `echo`, node B runs `calculate` and
//! the hostile agent's `hold`. A client of A reaches B's agents with the
//! right thread and `from`; a node that leaves is dropped from every table
//! and the calls it had in flight end with `agent-failed` ("node lost");
//! a node that is not heard from is dropped within the heartbeat timeout.
//! Structure is organism-wide: an agent admitted on one node runs on the
//! nodes it is placed on, grants and removals reach every node, and a
//! command id is spent everywhere. A session follows its client to another
//! node when its own is gone, with its kept frames, once.

use agentserver::client::{Client, Received};
use agentserver::privileged::{Command, ComponentSource, Placement, Registration};
use agentserver::runtime::ComponentHash;
use agentserver_tests::{
    agent_bytes, credentials, recv, recv_text, recv_until, resume, thread_of, NatsServer,
    ProcessNode, RedisServer, TestServer,
};
use std::time::{Duration, Instant};

fn node(nats: &NatsServer, redis: &RedisServer, name: &str) -> String {
    agentserver_tests::cluster_node(nats, redis, "organism", name)
}

/// Node A (no agents) and node B (`echo`) of one organism, with the same
/// users: `alice` may send `echo`.
async fn sharing_users(nats: &NatsServer, redis: &RedisServer) -> (TestServer, TestServer) {
    let a = TestServer::start_with(&[("alice", &["echo"])], &[], &node(nats, redis, "a")).await;
    let b = a
        .start_node(&[("echo", "echo", &["echo"])], &node(nats, redis, "b"))
        .await;
    (a, b)
}

/// Node A (`echo`, users `owner` and `user`, who may send `tag`) and node
/// B of the same organism, with no agents of its own.
async fn owner_on_a_and_empty_b(
    nats: &NatsServer,
    redis: &RedisServer,
    (user, tag): (&str, &str),
) -> (TestServer, TestServer) {
    let a = TestServer::start_with(
        &[("owner", &["echo"]), (user, &[tag])],
        &[("echo", "echo", &["echo"])],
        &node(nats, redis, "a"),
    )
    .await;
    let b = a.start_node(&[], &node(nats, redis, "b")).await;
    (a, b)
}

/// `command` signed with `server`'s organism key under id `id`.
fn signed(server: &TestServer, command: &Command, id: &str) -> String {
    server.sign(&command.to_unsigned_document().replacen(
        "<payload",
        &format!("<payload id=\"{id}\""),
        1,
    ))
}

/// Carries `document` on `client`'s connection; the verdict.
async fn apply(client: &mut Client, document: &str) -> String {
    client.send(document).await.unwrap();
    recv_until(client, "<privileged-result").await
}

/// Waits until `server` runs an agent named `name` itself (or no longer).
async fn until_local(server: &TestServer, name: &str, local: bool) {
    let start = Instant::now();
    let name = agentserver::bus::AgentName::new(name).unwrap();
    while server
        .server()
        .bus()
        .table()
        .agent(&name)
        .is_some_and(|listener| listener.target.local().is_some())
        != local
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "`{name}` did not {} on the node",
            if local { "start" } else { "stop" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next frame that is not a catalog, within `limit`.
async fn answer(client: &mut Client, limit: Duration) -> String {
    agentserver_tests::next_answer(client, limit, "an answer in time").await
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
        &[
            ("alice", &["echo", "calculate", "hold"]),
            ("bob", &["echo"]),
        ],
        &[("echo", "echo", &["echo"])],
        &node(&nats, &redis, "a"),
    )
    .await;
    let b = a
        .start_node(
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
    let thread = thread_of(&result);
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
    let b = a
        .start_node(
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
    let (a, b) = owner_on_a_and_empty_b(&nats, &redis, ("bob", "twin")).await;
    // A's owner admits `twin` (the echo component under another name) on A.
    let dir = tempfile::tempdir().unwrap();
    agentserver_tests::clients::signed_twin(&a, dir.path());
    let (mut owner, _) = a.login("owner").await;
    let verdict = apply(
        &mut owner,
        &std::fs::read_to_string(dir.path().join("twin.xml")).unwrap(),
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structure_applied_on_one_node_holds_on_every_node() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let (a, b) = owner_on_a_and_empty_b(&nats, &redis, ("carol", "echo")).await;
    let (mut owner, _) = a.login("owner").await;

    // Admitted through A, placed on B only: B runs it, A routes to it.
    let bytes = agent_bytes("echo");
    let admission = signed(
        &a,
        &Command::Register(Registration {
            name: "twin".into(),
            listens: vec!["twin".into()],
            description: "The echo agent on node b.".into(),
            sha256: ComponentHash::of(&bytes),
            component: ComponentSource::Inline(bytes),
            limits: Default::default(),
            nodes: Placement::Nodes(vec!["b".into()]),
        }),
        "twin-on-b",
    );
    let verdict = apply(&mut owner, &admission).await;
    assert!(verdict.contains("status=\"applied\""), "{verdict}");
    until_local(&b, "twin", true).await;
    until_listened(&a, "twin", true).await;
    until_local(&a, "twin", false).await;

    // A grant applied on A reaches B's users.
    let grant = signed(
        &a,
        &Command::Grant {
            user: "carol".into(),
            tag: "twin".into(),
        },
        "carol-twin",
    );
    let verdict = apply(&mut owner, &grant).await;
    assert!(verdict.contains("status=\"applied\""), "{verdict}");
    let start = Instant::now();
    while !std::fs::read_to_string(b.dir.path().join("users.toml"))
        .unwrap()
        .contains("\"twin\"")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "B never took the grant"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut carol, catalog) = b.login("carol").await;
    assert!(catalog.contains("tag=\"twin\""), "{catalog}");
    carol.send("<twin>placed on b</twin>").await.unwrap();
    let echoed = answer(&mut carol, Duration::from_secs(10)).await;
    assert!(
        echoed.contains("placed on b") && echoed.contains("<from>twin</from>"),
        "{echoed}"
    );

    // The same command carried to B is a replay there.
    let (mut owner_on_b, _) = b.login("owner").await;
    let replayed = apply(&mut owner_on_b, &admission).await;
    assert!(
        replayed.contains("status=\"refused\"") && replayed.contains("already used"),
        "{replayed}"
    );

    // A removal applied on A stops the agent on B.
    let removal = signed(
        &a,
        &Command::Remove {
            name: "twin".into(),
        },
        "remove-twin",
    );
    let verdict = apply(&mut owner, &removal).await;
    assert!(verdict.contains("status=\"applied\""), "{verdict}");
    until_local(&b, "twin", false).await;
    until_listened(&a, "twin", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_follows_its_client_to_another_node() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let a = TestServer::start_with(
        &[("alice", &["hold"])],
        &[("hostile", "hostile", &["hold"])],
        &node(&nats, &redis, "a"),
    )
    .await;
    let b = a
        .start_node(
            &[("hostile", "hostile", &["hold"])],
            &node(&nats, &redis, "b"),
        )
        .await;
    let (alice, catalog) = a.login("alice").await;
    let (id, first) = credentials(&catalog);

    // A resume on A spends the token for B too.
    drop(alice);
    let mut on_a = resume(&a, &id, &first).await;
    let catalog = recv_text(&mut on_a).await;
    let (_, token) = credentials(&catalog);
    let mut stale = resume(&b, &id, &first).await;
    assert_eq!(
        recv(&mut stale).await,
        Received::Closed(1008, "authentication failed".into()),
        "a token spent on A worked on B"
    );

    // A call answers while the client is away; then A dies.
    on_a.send("<hold ms=\"600\"/>").await.unwrap();
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.stop_now().await;

    // The client resumes on B and gets the kept answer, once.
    let mut on_b = resume(&b, &id, &token).await;
    let held = recv_text(&mut on_b).await;
    assert!(held.contains("<held"), "{held}");
    let catalog = recv_text(&mut on_b).await;
    assert!(catalog.contains("resumed=\"true\""), "{catalog}");
    let again = tokio::time::timeout(Duration::from_secs(1), on_b.receive()).await;
    assert!(again.is_err(), "a second frame arrived: {again:?}");
    // The session lives on B now: new calls run there.
    on_b.send("<hold ms=\"1\"/>").await.unwrap();
    let held = answer(&mut on_b, Duration::from_secs(10)).await;
    assert!(held.contains("<held"), "{held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_traffic_is_dropped_and_rejoins_when_restarted() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let a = TestServer::start_with(
        &[("alice", &["calculate", "hold"])],
        &[],
        &node(&nats, &redis, "a"),
    )
    .await;
    // Starting a process blocks: let the runtime move A's tasks meanwhile.
    let mut c = tokio::task::block_in_place(|| {
        ProcessNode::start(
            &a,
            &[
                ("calc", "calculator", &["calculate"]),
                ("hostile", "hostile", &["hold"]),
            ],
            &node(&nats, &redis, "c"),
        )
    });
    until_listened(&a, "calculate", true).await;
    until_listened(&a, "hold", true).await;
    let (mut alice, _) = a.login("alice").await;
    alice.send("<calculate>1+1</calculate>").await.unwrap();
    let two = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(two.contains("<result>2</result>"), "{two}");

    // A call is running on C when C is killed: it ends with `node lost`
    // once C's heartbeats are missed, not later.
    alice.send("<hold ms=\"30000\"/>").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill();
    let lost = answer(
        &mut alice,
        agentserver::cluster::NODE_TIMEOUT + Duration::from_secs(5),
    )
    .await;
    assert!(
        lost.contains("agent-failed") && lost.contains("node lost"),
        "{lost}"
    );
    until_listened(&a, "calculate", false).await;
    alice.send("<calculate>3+3</calculate>").await.unwrap();
    let refused = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(refused.contains("no-listener"), "{refused}");

    // Restarted, C rejoins and serves again.
    tokio::task::block_in_place(|| c.restart());
    until_listened(&a, "calculate", true).await;
    alice.send("<calculate>2+2</calculate>").await.unwrap();
    let four = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(four.contains("<result>4</result>"), "{four}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_agents_answer_while_nats_is_down_and_remote_routes_come_back() {
    let mut nats = NatsServer::start();
    let redis = RedisServer::start();
    let a = TestServer::start_with(
        &[("alice", &["echo", "calculate"])],
        &[("echo", "echo", &["echo"])],
        &node(&nats, &redis, "a"),
    )
    .await;
    let b = a
        .start_node(
            &[("calc", "calculator", &["calculate"])],
            &node(&nats, &redis, "b"),
        )
        .await;
    until_listened(&a, "calculate", true).await;
    let (mut alice, _) = a.login("alice").await;

    nats.stop();
    alice.send("<echo>nats is down</echo>").await.unwrap();
    let echoed = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(echoed.contains("nats is down"), "{echoed}");
    // Without heartbeats A drops B, and says so rather than hang.
    until_listened(&a, "calculate", false).await;
    alice.send("<calculate>1+1</calculate>").await.unwrap();
    let refused = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(refused.contains("no-listener"), "{refused}");

    // Back: both nodes reconnect by themselves and hear each other again.
    nats.restart();
    let start = Instant::now();
    let mut sent = 0;
    loop {
        sent += 1;
        alice
            .send(&format!("<calculate>{sent}+0</calculate>"))
            .await
            .unwrap();
        let frame = answer(&mut alice, Duration::from_secs(10)).await;
        if frame.contains("<result>") {
            assert!(
                frame.contains(&format!("<result>{sent}</result>")),
                "{frame}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the route to B never came back: {frame}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nothing arrives twice.
    let again = tokio::time::timeout(Duration::from_secs(1), alice.receive()).await;
    assert!(again.is_err(), "a second frame arrived: {again:?}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_nats_over_tls_with_a_token() {
    let secrets = tempfile::tempdir().unwrap();
    agentserver::server::tls::Identity::development(secrets.path()).unwrap();
    let (cert, key) = (
        secrets.path().join("cert.pem"),
        secrets.path().join("key.pem"),
    );
    let token = secrets.path().join("nats.token");
    std::fs::write(&token, "organism-token\n").unwrap();
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
        "--auth",
        "organism-token",
    ]);
    let redis = RedisServer::start();
    let url = nats.url.replace("nats://", "tls://");
    let node = |name: &str, token: &std::path::Path| {
        format!(
            "[storage]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"organism\"\n\
             [cluster]\nnats_url = \"{url}\"\nnode = \"{name}\"\nnats_ca = {:?}\nnats_token_file = {:?}\n",
            redis.url,
            cert.display().to_string(),
            token.display().to_string(),
        )
    };
    let a =
        TestServer::start_with(&[("alice", &["calculate", "add"])], &[], &node("a", &token)).await;
    let b = a
        .start_node(
            &[("calc", "calculator", &["calculate"])],
            &node("b", &token),
        )
        .await;
    until_listened(&a, "calculate", true).await;
    let (mut alice, _) = a.login("alice").await;
    alice.send("<calculate>6*7</calculate>").await.unwrap();
    let result = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(result.contains("<result>42</result>"), "{result}");

    // A node with the wrong token never joins: its agent is not routed to.
    let wrong = secrets.path().join("wrong.token");
    std::fs::write(&wrong, "guessed").unwrap();
    let _c = a
        .start_node(&[("adder", "calculator", &["add"])], &node("c", &wrong))
        .await;
    tokio::time::sleep(agentserver::cluster::NODE_TIMEOUT).await;
    assert!(
        a.server()
            .bus()
            .table()
            .listeners(&agentserver::xml::Tag::new("add"))
            .is_empty(),
        "a node without the token joined"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_crosses_three_nodes_and_comes_back_on_its_thread() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    // A runs nothing, B only the delegator, C only the calculator.
    let a = TestServer::start_with(
        &[("alice", &["square-sum"])],
        &[],
        &node(&nats, &redis, "a"),
    )
    .await;
    let b = a
        .start_node(
            &[("delegator", "delegator", &["square-sum"])],
            &node(&nats, &redis, "b"),
        )
        .await;
    let c = a
        .start_node(
            &[("calc", "calculator", &["calculate"])],
            &node(&nats, &redis, "c"),
        )
        .await;
    until_listened(&a, "square-sum", true).await;
    until_listened(&b, "calculate", true).await;
    let (mut alice, _) = a.login("alice").await;
    alice
        .send("<square-sum><n>3</n><n>4</n></square-sum>")
        .await
        .unwrap();
    let result = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(
        result.contains("<result>25</result>") && result.contains("<from>calc</from>"),
        "{result}"
    );
    // The answer is on the thread the message started, and continuing it
    // crosses the three nodes again.
    let thread = thread_of(&result);
    alice
        .send(&format!(
            "<message><meta><thread>{thread}</thread></meta><square-sum><n>1</n><n>2</n></square-sum></message>"
        ))
        .await
        .unwrap();
    let again = answer(&mut alice, Duration::from_secs(10)).await;
    assert!(
        again.contains("<result>5</result>")
            && again.contains(&format!("<thread>{thread}</thread>")),
        "{again}"
    );
    // Each node audited what passed through it: B the delegator's call, C
    // the calculator's, with the user as the first sender.
    assert!(b
        .audit
        .records()
        .iter()
        .any(|r| r.tag == "square-sum" && r.from == "user:alice"));
    assert!(c
        .audit
        .records()
        .iter()
        .any(|r| r.tag == "calculate" && r.from == "delegator"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_cluster_serves_a_delegation_across_three_nodes() {
    // Three loopback ports in a row that nothing listens on.
    let base = loop {
        let base = agentserver_tests::free_port();
        if base < 65_000
            && (1..3).all(|n| std::net::TcpListener::bind(("127.0.0.1", base + n)).is_ok())
        {
            break base;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(repo.join("deploy/cluster.sh"))
            .env("CLUSTER_ONCE", "1")
            .env("CLUSTER_PORT", base.to_string())
            .env(
                "CLUSTER_NATS_PORT",
                agentserver_tests::free_port().to_string(),
            )
            .env(
                "CLUSTER_REDIS_PORT",
                agentserver_tests::free_port().to_string(),
            )
            .env("CLUSTER_ROOT", root.path())
            .env("AGENTSERVER", agentserver_tests::agentserver_binary())
            .env("AGENTS_DIR", agentserver_tests::agents_dir())
            .output()
            .expect("bash")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("<result>25</result>"), "{stdout}");
    assert!(stdout.contains("crossed three nodes"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structural_change_published_on_nats_by_anyone_but_a_node_is_refused() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let (a, b) = owner_on_a_and_empty_b(&nats, &redis, ("carol", "twin")).await;
    let bytes = agent_bytes("echo");
    let admission = Command::Register(Registration {
        name: "twin".into(),
        listens: vec!["twin".into()],
        description: "An agent nobody admitted.".into(),
        sha256: ComponentHash::of(&bytes),
        component: ComponentSource::Inline(bytes),
        limits: Default::default(),
        nodes: Placement::All,
    });
    // Someone with access to NATS publishes, as if a node had applied them,
    // an admission signed with another key, and one signed with the
    // organism's key that no node applied (its id was never spent).
    let stranger = agentserver::privileged::new_signing_key().unwrap();
    let forged = agentserver_tests::sign_with(
        &stranger,
        &admission
            .to_unsigned_document()
            .replacen("<payload", "<payload id=\"forged\"", 1),
    );
    let unapplied = signed(&a, &admission, "never-applied");
    let intruder = async_nats::connect(nats.url.as_str()).await.unwrap();
    for document in [forged, unapplied] {
        intruder
            .publish("agentserver.structure.command.intruder", document.into())
            .await
            .unwrap();
    }
    intruder.flush().await.unwrap();

    // Each node refuses both, audited with the reason, and runs nothing.
    for server in [&a, &b] {
        let start = Instant::now();
        let refusals = loop {
            let refusals: Vec<String> = server
                .audit
                .records()
                .into_iter()
                .filter(|r| r.from == "node intruder")
                .map(|r| r.canonical)
                .collect();
            if refusals.len() == 2 {
                break refusals;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "refusals audited: {refusals:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            refusals[0].contains("status=\"refused\"") && refusals[0].contains("signature"),
            "{}",
            refusals[0]
        );
        assert!(
            refusals[1].contains("status=\"refused\"") && refusals[1].contains("no node"),
            "{}",
            refusals[1]
        );
        let twin = agentserver::bus::AgentName::new("twin").unwrap();
        assert!(server.server().bus().table().agent(&twin).is_none());
    }
}
