//! Capabilities end to end: the real server over real TLS, real components
//! built from `example-agents/`, and a real HTTP server on loopback standing
//! in for the world. Each test checks what the client sees, what the audit
//! log holds, and — from the upstream server's own log — where the host
//! connected and what it sent.

use agentserver::bus::{AuditKind, OwnedAuditRecord};
use agentserver::client::Client;
use agentserver::privileged::Command;
use agentserver_tests::upstream::Upstream;
use agentserver_tests::{agent_bytes, agent_wasm, recv_text, recv_until, TestServer};

/// The secret the host holds; nothing but the upstream server may see it.
const SECRET: &str = "s3cret-token-9f2c";

/// A server whose `fetch` agent may reach `allow` under `http_extra`
/// (extra `[agent.http]` lines), with a secrets file holding [`SECRET`].
async fn fetch_server(allow: &[String], http_extra: &str) -> TestServer {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    let extra = format!(
        "secrets = \"secrets.toml\"\n\
         [[agent]]\nname = \"fetch\"\ncomponent = {:?}\nlistens = [\"fetch\"]\ntimeout_ms = 10000\n\
         [agent.http]\nallow = [{}]\n{http_extra}\n\
         [[agent]]\nname = \"legacy\"\ncomponent = {:?}\nlistens = [\"echo\"]\n\
         [[agent]]\nname = \"hostile\"\ncomponent = {:?}\nlistens = [\"chatter\"]\n",
        agent_wasm("fetch").display().to_string(),
        allow.join(", "),
        agent_wasm("legacy").display().to_string(),
        agent_wasm("hostile").display().to_string(),
    );
    TestServer::start_with_files(
        &[("alice", &["fetch", "echo", "chatter"])],
        &[],
        &extra,
        &[("secrets.toml", &format!("upstream = \"{SECRET}\"\n"), 0o600)],
    )
    .await
}

/// Sends `<fetch ATTRIBUTES/>` and returns the frames of its thread up to
/// the last answer: `want` `<fetched>` frames, or the first failure.
async fn fetch_n(client: &mut Client, attributes: &str, want: usize) -> Vec<String> {
    client
        .send(&format!("<fetch {attributes}/>"))
        .await
        .expect("send");
    let mut frames: Vec<String> = Vec::new();
    loop {
        let frame = recv_text(client).await;
        let failed = frame.contains("<fetch-failed") || frame.contains("<error");
        frames.push(frame);
        let fetched = frames.iter().filter(|f| f.contains("<fetched")).count();
        if failed || fetched >= want {
            return frames;
        }
    }
}

async fn fetch(client: &mut Client, attributes: &str) -> Vec<String> {
    fetch_n(client, attributes, 1).await
}

/// Carries a signed registration of the `fetch` agent with `limits` and
/// returns the verdict frame.
async fn register_fetch(
    server: &TestServer,
    carrier: &mut Client,
    limits: agentserver::privileged::LimitChanges,
) -> String {
    let bytes = agent_bytes("fetch");
    let register = Command::Register(agentserver::privileged::Registration {
        name: "fetch".into(),
        listens: vec!["fetch".into()],
        description: String::new(),
        sha256: agentserver::runtime::ComponentHash::of(&bytes),
        component: agentserver::privileged::ComponentSource::Inline(bytes),
        limits,
        nodes: Default::default(),
    });
    carrier
        .send(&server.sign(&register.to_unsigned_document()))
        .await
        .unwrap();
    recv_until(carrier, "<privileged-result").await
}

fn http_records(server: &TestServer) -> Vec<OwnedAuditRecord> {
    server
        .audit
        .records()
        .into_iter()
        .filter(|r| r.kind == AuditKind::Capability && r.tag == "http-request")
        .collect()
}

/// Nothing a client or the audit log got may hold the secret.
fn assert_secret_hidden(server: &TestServer, frames: &[String]) {
    for frame in frames {
        assert!(!frame.contains(SECRET), "a client saw the secret: {frame}");
    }
    for record in server.audit.records() {
        assert!(
            !record.canonical.contains(SECRET),
            "the audit log holds the secret: {record:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_host_answers_with_the_secret_added_by_the_host() {
    let upstream = Upstream::start().await;
    let header = format!(
        "[[agent.http.header]]\nhost = {:?}\nname = \"authorization\"\nvalue = \"Bearer {{secret:upstream}}\"\n",
        upstream.base()
    );
    let server = fetch_server(&[upstream.base()], &header).await;
    let (mut alice, catalog) = server.login("alice").await;
    assert!(catalog.contains("tag=\"fetch\""), "{catalog}");

    let frames = fetch(&mut alice, &format!("url=\"{}/hello\"", upstream.base())).await;
    // The emitted progress frame arrives first, then the answer.
    assert!(frames[0].contains("<fetching n=\"1\""), "{frames:?}");
    let answer = frames.last().unwrap();
    assert!(
        answer.contains("status=\"200\"") && answer.contains("hello from upstream"),
        "{answer}"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert_secret_hidden(&server, &frames);

    let records = http_records(&server);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.from, "fetch");
    assert!(record.thread.is_some());
    for part in [
        "method=\"GET\"",
        "path=\"/hello\"",
        "status=\"200\"",
        "received=\"19\"",
    ] {
        assert!(
            record.canonical.contains(part),
            "{part}: {}",
            record.canonical
        );
    }

    // A guest may not set the header the host fills with a secret.
    let frames = fetch(
        &mut alice,
        &format!(
            "url=\"{}/hello\" header=\"authorization: Bearer mine\"",
            upstream.base()
        ),
    )
    .await;
    let answer = frames.last().unwrap();
    assert!(
        answer.contains("<fetch-failed") && answer.contains("authorization"),
        "{answer}"
    );
    assert_eq!(upstream.requests().len(), 1, "the forged request went out");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_addresses_the_grant_does_not_name_are_never_reached() {
    let upstream = Upstream::start().await;
    let by_name = format!("http://localhost:{}", upstream.port);
    let server = fetch_server(std::slice::from_ref(&by_name), "").await;
    let (mut alice, _) = server.login("alice").await;

    // An unlisted host (the same server by address, where only the name is
    // granted): denied before any connection.
    let frames = fetch(&mut alice, &format!("url=\"{}/hello\"", upstream.base())).await;
    let answer = frames.last().unwrap();
    assert!(
        answer.contains("<fetch-failed") && answer.contains("HttpRequestDenied"),
        "{answer}"
    );

    // A granted name that resolves to a loopback address the grant does not
    // name explicitly: refused after resolution, before connecting.
    let frames = fetch(&mut alice, &format!("url=\"{by_name}/hello\"")).await;
    let answer = frames.last().unwrap();
    assert!(
        answer.contains("<fetch-failed") && answer.contains("DestinationIpProhibited"),
        "{answer}"
    );
    assert_eq!(
        upstream.connections(),
        0,
        "the host connected where it must not"
    );

    let records = http_records(&server);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records[0].canonical.contains("the host is not granted"),
        "{records:?}"
    );
    assert!(
        records[1].canonical.contains("special address"),
        "{records:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_sizes_counts_and_time_are_bounded() {
    let upstream = Upstream::start().await;
    let limits = "max_requests = 2\nmax_response_bytes = 1000\ntimeout_ms = 500\n";
    let server = fetch_server(&[upstream.base()], limits).await;
    let (mut alice, _) = server.login("alice").await;

    // A redirect is handed to the guest, not followed by the host.
    let frames = fetch(&mut alice, &format!("url=\"{}/redirect\"", upstream.base())).await;
    assert!(
        frames.last().unwrap().contains("status=\"302\""),
        "{frames:?}"
    );
    assert_eq!(upstream.requests().len(), 1);

    // A response past max_response_bytes is cut inside the guest's client.
    let frames = fetch(&mut alice, &format!("url=\"{}/big\"", upstream.base())).await;
    let answer = frames.last().unwrap();
    assert!(
        answer.contains("<fetch-failed") && answer.contains("size exceeds limit: 1000"),
        "{answer}"
    );

    // The third request of one call is refused.
    let frames = fetch_n(
        &mut alice,
        &format!("url=\"{}/hello\" times=\"3\"", upstream.base()),
        3,
    )
    .await;
    let fetched = frames.iter().filter(|f| f.contains("<fetched")).count();
    assert_eq!(fetched, 2, "{frames:?}");
    assert!(
        frames
            .last()
            .unwrap()
            .contains("limit of 2 requests per call"),
        "{frames:?}"
    );

    // A server slower than the grant's time: cut.
    let frames = fetch(&mut alice, &format!("url=\"{}/slow\"", upstream.base())).await;
    let answer = frames.last().unwrap();
    assert!(
        answer.contains("<fetch-failed") && answer.to_lowercase().contains("timeout"),
        "{answer}"
    );

    let paths: Vec<String> = upstream.requests().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/redirect", "/big", "/hello", "/hello", "/slow"]);
    let records = http_records(&server);
    assert!(
        records
            .iter()
            .any(|r| r.canonical.contains("went past the grant's 1000 bytes")),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.canonical.contains("limit of 2 requests")),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r.canonical.contains("500 ms")),
        "{records:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_components_run_and_emission_storms_end_the_call() {
    let upstream = Upstream::start().await;
    let server = fetch_server(&[upstream.base()], "").await;
    let (mut alice, _) = server.login("alice").await;

    // Built against agentserver:agent@0.1.0, unchanged.
    alice.send("<echo>from the past</echo>").await.unwrap();
    let answer = recv_until(&mut alice, "<message").await;
    assert!(
        answer.contains("<echoed>from the past</echoed>"),
        "{answer}"
    );

    // host.emit past max_emitted_payloads ends the call like any limit.
    alice.send("<chatter/>").await.unwrap();
    let mut chats = 0;
    let failure = loop {
        let frame = recv_text(&mut alice).await;
        if frame.contains("<chat ") {
            chats += 1;
            continue;
        }
        break frame;
    };
    assert_eq!(chats, 256, "every emission within the limit arrives");
    assert!(
        failure.contains("agent-failed") && failure.contains("emitted past its limit"),
        "{failure}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_http_without_a_grant_is_refused() {
    // At boot.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("organism.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:0\"\n[[agent]]\nname = \"fetch\"\ncomponent = {:?}\nlistens = [\"fetch\"]\n",
            agent_wasm("fetch").display().to_string()
        ),
    )
    .unwrap();
    let config = agentserver::server::Config::load(&config_path).unwrap();
    let error = agentserver::server::start(config)
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("wasi:http/outgoing-handler") && text.contains("HTTP grant"),
        "{text}"
    );

    // By signed registration: refused with the reason, and audited.
    let server = TestServer::start(&[("alice", &["echo"])], &[]).await;
    let (mut alice, _) = server.login("alice").await;
    let verdict = register_fetch(&server, &mut alice, Default::default()).await;
    assert!(
        verdict.contains("status=\"refused\"") && verdict.contains("HTTP grant"),
        "{verdict}"
    );
    assert!(server
        .audit
        .records()
        .iter()
        .any(|r| r.kind == AuditKind::Privileged && r.canonical.contains("HTTP grant")));

    // With the grant, signed, the same component is admitted.
    let upstream = Upstream::start().await;
    let limits = agentserver::privileged::LimitChanges {
        grants: Some(agentserver::capability::AgentGrants {
            http: Some(agentserver::capability::HttpGrant::new(vec![upstream
                .base()
                .parse()
                .unwrap()])),
            storage: None,
        }),
        ..Default::default()
    };
    let verdict = register_fetch(&server, &mut alice, limits).await;
    assert!(verdict.contains("status=\"applied\""), "{verdict}");

    // Taking the grant away from a component that imports wasi:http is
    // refused the same way, and the agent keeps running as it was.
    let revoke = Command::Limits {
        name: "fetch".into(),
        changes: agentserver::privileged::LimitChanges {
            grants: Some(Default::default()),
            ..Default::default()
        },
    };
    alice
        .send(&server.sign(&revoke.to_unsigned_document()))
        .await
        .unwrap();
    let verdict = recv_until(&mut alice, "<privileged-result").await;
    assert!(
        verdict.contains("status=\"refused\"") && verdict.contains("HTTP grant"),
        "{verdict}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_agent_fetches_within_the_same_grant() {
    let upstream = Upstream::start().await;
    let extra = format!(
        "[[agent]]\nname = \"fetch-js\"\ncomponent = {:?}\nlistens = [\"fetch-js\"]\ntimeout_ms = 10000\n\
         [agent.http]\nallow = [{:?}]\n",
        agent_wasm("fetch-js").display().to_string(),
        upstream.base(),
    );
    let server = TestServer::start_with(&[("alice", &["fetch-js"])], &[], &extra).await;
    let (mut alice, _) = server.login("alice").await;

    alice
        .send(&format!("<fetch-js url=\"{}/hello\"/>", upstream.base()))
        .await
        .unwrap();
    assert!(recv_text(&mut alice).await.contains("<fetching n=\"1\""));
    let answer = recv_text(&mut alice).await;
    assert!(
        answer.contains("status=\"200\"") && answer.contains("hello from upstream"),
        "{answer}"
    );

    // A name the grant does not hold: refused inside fetch(), never sent.
    alice
        .send(&format!(
            "<fetch-js url=\"http://localhost:{}/hello\"/>",
            upstream.port
        ))
        .await
        .unwrap();
    let answer = recv_until(&mut alice, "<message><meta><from>fetch-js</from><thread>").await;
    let answer = if answer.contains("<fetching") {
        recv_text(&mut alice).await
    } else {
        answer
    };
    assert!(answer.contains("<fetch-failed"), "{answer}");
    assert_eq!(upstream.requests().len(), 1);
    let records = http_records(&server);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records[1].canonical.contains("the host is not granted"),
        "{records:?}"
    );
    server.stop().await;
}

/// A Go agent's `net/http` client, over the guest SDK's wasi:http transport:
/// a granted host answers, with the secret added by the host and never seen
/// by the agent or the client; a host the grant does not name is refused
/// before any connection, and Go's client reports the wasi:http error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_agent_reaches_a_granted_host_through_net_http() {
    let upstream = Upstream::start().await;
    let by_name = format!("http://localhost:{}", upstream.port);
    let extra = format!(
        "secrets = \"secrets.toml\"\n\
         [[agent]]\nname = \"fetch-go\"\ncomponent = {:?}\nlistens = [\"fetch-go\"]\ntimeout_ms = 10000\n\
         [agent.http]\nallow = [{:?}]\n\
         [[agent.http.header]]\nhost = {:?}\nname = \"authorization\"\nvalue = \"Bearer {{secret:upstream}}\"\n",
        agent_wasm("fetch-go").display().to_string(),
        upstream.base(),
        upstream.base(),
    );
    let server = TestServer::start_with_files(
        &[("alice", &["fetch-go"])],
        &[],
        &extra,
        &[("secrets.toml", &format!("upstream = \"{SECRET}\"\n"), 0o600)],
    )
    .await;
    let (mut alice, _) = server.login("alice").await;

    let url = format!("{}/hello", upstream.base());
    alice
        .send(&format!("<fetch-go url=\"{url}\"/>"))
        .await
        .unwrap();
    let answer = recv_text(&mut alice).await;
    assert!(
        answer.contains(r#"<fetched bytes="19" status="200">hello from upstream"#),
        "{answer}"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/hello");
    assert_eq!(
        seen[0].header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert_secret_hidden(&server, std::slice::from_ref(&answer));
    let records = http_records(&server);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].from, "fetch-go");

    alice
        .send(&format!("<fetch-go url=\"{by_name}/hello\"/>"))
        .await
        .unwrap();
    let refused = recv_text(&mut alice).await;
    assert!(
        refused.contains(&format!(
            "<fetch-failed url=\"{by_name}/hello\">Get \"{by_name}/hello\": HTTP-request-denied</fetch-failed>"
        )),
        "{refused}"
    );
    assert_eq!(
        upstream.connections(),
        1,
        "the host connected where it must not"
    );
    server.stop().await;
}
