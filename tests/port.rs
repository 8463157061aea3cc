//! The secure port, from outside: real TLS sockets, the real server, real
//! agents. docs/protocol.md sections 1, 3, 4, 5 and 6.

use agentserver::client::Received;
use agentserver_tests::{recv, recv_text, thread_of, TestServer};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const AGENTS: &[agentserver_tests::AgentSpec<'static>] = &[
    ("calc", "calculator", &["calculate"]),
    ("echo", "echo", &["echo"]),
    ("counter", "counter", &["count"]),
    ("delegator", "delegator", &["square-sum"]),
];

async fn server() -> TestServer {
    TestServer::start(
        &[
            ("alice", &["calculate", "echo", "square-sum"]),
            ("bob", &["*"]),
            ("carol", &["*"]),
            ("dave", &["echo"]),
        ],
        AGENTS,
    )
    .await
}

#[tokio::test]
async fn plaintext_connections_get_nothing() {
    let server = server().await;
    let mut tcp = tokio::net::TcpStream::connect(server.address())
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext got {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn each_user_sees_exactly_their_catalog() {
    let server = server().await;
    let (_alice, catalog) = server.login("alice").await;
    assert!(catalog.starts_with("<catalog resume-token=\""), "{catalog}");
    assert!(catalog.contains("\" session=\""), "{catalog}");
    assert!(
        catalog.contains(" session-timeout=\"1800\" user=\"alice\">"),
        "{catalog}"
    );
    let capabilities = catalog.split_once('>').unwrap().1;
    assert_eq!(
        capabilities,
        "<capability agent=\"calc\" tag=\"calculate\">The calc agent.</capability>\
         <capability agent=\"echo\" tag=\"echo\">The echo agent.</capability>\
         <capability agent=\"delegator\" tag=\"square-sum\">The delegator agent.</capability></catalog>"
    );
    let (_dave, catalog) = server.login("dave").await;
    assert!(
        catalog.ends_with(
            "><capability agent=\"echo\" tag=\"echo\">The echo agent.</capability></catalog>"
        ),
        "{catalog}"
    );
    let (_bob, catalog) = server.login("bob").await;
    assert_eq!(catalog.matches("<capability ").count(), 4, "{catalog}");
}

async fn refused_login(server: &TestServer, first_frame: &str) -> Received {
    let mut client = server.connect().await;
    client.send(first_frame).await.unwrap();
    recv(&mut client).await
}

#[tokio::test]
async fn every_failed_login_gets_the_same_1008() {
    let server = server().await;
    let failed = Received::Closed(1008, "authentication failed".into());
    let now = SystemTime::now();
    let wrong = r#"<authenticate user="alice" totp="000000"/>"#;
    assert_eq!(refused_login(&server, wrong).await, failed, "wrong code");
    let expired = server.code_at("bob", now - Duration::from_secs(120));
    let frame = format!(r#"<authenticate user="bob" totp="{expired}"/>"#);
    assert_eq!(refused_login(&server, &frame).await, failed, "expired code");
    let code = server.code("carol");
    let frame = format!(r#"<authenticate user="mallory" totp="{code}"/>"#);
    assert_eq!(refused_login(&server, &frame).await, failed, "unknown user");
    assert_eq!(
        refused_login(&server, "<echo>hi</echo>").await,
        failed,
        "anything else first"
    );

    let frame = format!(r#"<authenticate user="carol" totp="{code}"/>"#);
    let mut first = server.connect().await;
    first.send(&frame).await.unwrap();
    assert!(recv_text(&mut first).await.starts_with("<catalog"));
    assert_eq!(
        refused_login(&server, &frame).await,
        failed,
        "replayed code"
    );
}

#[tokio::test]
async fn login_failures_are_rate_limited() {
    let server = server().await;
    for _ in 0..5 {
        let wrong = r#"<authenticate user="dave" totp="111111"/>"#;
        assert!(matches!(
            refused_login(&server, wrong).await,
            Received::Closed(1008, _)
        ));
    }
    let right = format!(
        r#"<authenticate user="dave" totp="{}"/>"#,
        server.code("dave")
    );
    assert_eq!(
        refused_login(&server, &right).await,
        Received::Closed(1008, "authentication failed".into())
    );
}

#[tokio::test]
async fn echo_calculator_and_delegation_round_trips() {
    let server = server().await;
    let (mut alice, _) = server.login("alice").await;
    alice.send("<echo>hello <b>there</b></echo>").await.unwrap();
    let frame = recv_text(&mut alice).await;
    assert!(
        frame.starts_with("<message><meta><from>echo</from><thread>"),
        "{frame}"
    );
    assert!(
        frame.ends_with("</thread></meta><echoed>hello <b>there</b></echoed></message>"),
        "{frame}"
    );

    alice
        .send("<calculate>2 + 3 * 4</calculate>")
        .await
        .unwrap();
    let frame = recv_text(&mut alice).await;
    assert!(
        frame.contains("<from>calc</from>") && frame.ends_with("<result>14</result></message>"),
        "{frame}"
    );

    alice
        .send("<square-sum><n>3</n><n>4</n></square-sum>")
        .await
        .unwrap();
    let frame = recv_text(&mut alice).await;
    assert!(
        frame.contains("<from>calc</from>") && frame.ends_with("<result>25</result></message>"),
        "{frame}"
    );

    let thread = thread_of(&frame);
    alice
        .send(&format!(
            "<message><meta><thread>{thread}</thread></meta><calculate>1+1</calculate></message>"
        ))
        .await
        .unwrap();
    let frame = recv_text(&mut alice).await;
    assert_eq!(thread_of(&frame), thread);
    assert!(frame.ends_with("<result>2</result></message>"), "{frame}");
}

#[tokio::test]
async fn refusals_keep_the_connection() {
    let server = server().await;
    let (mut alice, _) = server.login("alice").await;
    alice.send("<count/>").await.unwrap();
    assert_eq!(
        recv_text(&mut alice).await,
        r#"<access-denied tag="count"></access-denied>"#
    );
    alice
        .send("<message><meta><thread>not-mine</thread></meta><echo>x</echo></message>")
        .await
        .unwrap();
    assert_eq!(
        recv_text(&mut alice).await,
        r#"<error code="unknown-thread" thread="not-mine"></error>"#
    );
    alice
        .send("<!DOCTYPE x [<!ENTITY a \"b\">]><echo>&a;</echo>")
        .await
        .unwrap();
    assert_eq!(
        recv_text(&mut alice).await,
        r#"<error code="malformed">entity declarations are not allowed</error>"#
    );
    alice
        .send("<echo><unclosed attr=\"x></echo>")
        .await
        .unwrap();
    assert!(recv_text(&mut alice)
        .await
        .starts_with(r#"<error code="malformed">"#));
    alice.send_binary(vec![1, 2, 3]).await.unwrap();
    assert!(recv_text(&mut alice)
        .await
        .starts_with(r#"<error code="bad-frame">"#));
    alice.send("<echo>still here</echo>").await.unwrap();
    assert!(recv_text(&mut alice)
        .await
        .ends_with("<echoed>still here</echoed></message>"));
}

#[tokio::test]
async fn repaired_input_carries_huh() {
    let server = server().await;
    let (mut alice, _) = server.login("alice").await;
    alice.send("Sure: <echo>fish & chips").await.unwrap();
    let frame = recv_text(&mut alice).await;
    assert!(
        frame.contains("<huh>removed text before the root element</huh>"),
        "{frame}"
    );
    assert!(frame.contains("<huh>escaped a bare &amp;</huh>"), "{frame}");
    assert!(
        frame.contains("<huh>closed unclosed element echo</huh>"),
        "{frame}"
    );
    assert!(
        frame.ends_with("<echoed>fish &amp; chips</echoed></message>"),
        "{frame}"
    );
}

#[tokio::test]
async fn flooding_with_bad_messages_closes_the_connection() {
    let server = server().await;
    let (mut dave, _) = server.login("dave").await;
    for _ in 0..21 {
        dave.send("<count/>").await.unwrap();
    }
    loop {
        match recv(&mut dave).await {
            Received::Text(frame) => assert!(frame.starts_with("<access-denied"), "{frame}"),
            Received::Closed(code, reason) => {
                assert_eq!((code, reason.as_str()), (1008, "flooding"));
                break;
            }
        }
    }
}

#[tokio::test]
async fn flooding_past_the_message_rate_closes_the_connection() {
    let server = server().await;
    let (mut bob, _) = server.login("bob").await;
    for _ in 0..150 {
        if bob.send("<echo>x</echo>").await.is_err() {
            break;
        }
    }
    loop {
        match recv(&mut bob).await {
            Received::Text(_) => continue,
            Received::Closed(code, reason) => {
                assert_eq!((code, reason.as_str()), (1008, "flooding"));
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_user_may_hold_only_so_many_connections() {
    let server = TestServer::start_with(
        &[("erin", &["echo"])],
        AGENTS,
        "max_connections_per_user = 1",
    )
    .await;
    let (_first, _) = server.login("erin").await;
    let mut second = server.connect().await;
    let code = server.code_at("erin", SystemTime::now() + Duration::from_secs(30));
    second
        .send(&format!(r#"<authenticate user="erin" totp="{code}"/>"#))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut second).await,
        Received::Closed(1008, "too many connections".into())
    );
}

#[tokio::test]
async fn end_session_closes_with_1000() {
    let server = server().await;
    let (mut alice, _) = server.login("alice").await;
    alice.send("<end-session/>").await.unwrap();
    assert_eq!(
        recv(&mut alice).await,
        Received::Closed(1000, "session ended".into())
    );
}

#[tokio::test]
async fn frame_size_limits_before_and_after_login() {
    let server = TestServer::start_with(
        &[("alice", &["echo"])],
        &[("echo", "echo", &["echo"])],
        "max_command_bytes = 3000000",
    )
    .await;
    // Before login a connection may send 16 KiB in all: past that the
    // server stops reading and drops it, whatever the frame claims to be.
    let mut stranger = server.connect().await;
    let padded = format!(
        r#"<authenticate user="alice" totp="000000" pad="{}"/>"#,
        "0".repeat(64 << 10)
    );
    let _ = stranger.send(&padded).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), stranger.receive())
        .await
        .expect("the connection ends within 10 s");
    assert!(!matches!(ended, Ok(Received::Text(_))), "{ended:?}");

    let (mut alice, _) = server.login("alice").await;
    // An ordinary message keeps the 1 MiB limit...
    let message = format!("<echo>{}</echo>", "x".repeat(2_000_000));
    alice.send(&message).await.unwrap();
    let refusal = recv_text(&mut alice).await;
    let expected = format!(
        r#"<error code="bad-frame">frame is {} bytes; the limit is 1048576"#,
        message.len()
    );
    assert!(refusal.starts_with(&expected), "{refusal}");
    // ...a privileged command may be larger, up to max_command_bytes...
    let command = format!(
        "<privileged-command><payload>{}</payload></privileged-command>",
        "x".repeat(2_000_000)
    );
    alice.send(&command).await.unwrap();
    let verdict = recv_text(&mut alice).await;
    assert!(
        verdict.starts_with(r#"<privileged-result status="refused""#) && !verdict.contains("large"),
        "{verdict}"
    );
    let command = command.replace("<payload>", &format!("<payload>{}", "y".repeat(1_500_000)));
    alice.send(&command).await.unwrap();
    let verdict = recv_text(&mut alice).await;
    let too_large = format!(
        "the command is {} bytes; the limit is 3000000",
        command.len()
    );
    assert!(verdict.contains(&too_large), "{verdict}");
    alice.send("<echo>still here</echo>").await.unwrap();
    assert!(recv_text(&mut alice)
        .await
        .ends_with("<echoed>still here</echoed></message>"));
    // ...and a frame past the WebSocket cap is refused from its header:
    // the server closes with 1009 and reads no further (so the close frame
    // may be lost to the reset the unread rest of the frame causes).
    let _ = alice.send(&"z".repeat(5 << 20)).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), alice.receive())
        .await
        .expect("the connection ends within 10 s");
    assert!(
        matches!(ended, Ok(Received::Closed(1009, _)) | Err(_)),
        "{ended:?}"
    );
}

async fn https_get(server: &TestServer, path: &str) -> (u16, String) {
    let url = format!("https://{}{path}", server.address());
    agentserver::client::get(&url, &server.trust())
        .await
        .expect("https get")
}

#[tokio::test]
async fn healthz_metrics_console_and_404() {
    let server = server().await;
    assert_eq!(https_get(&server, "/healthz").await, (200, "ok".into()));
    let (mut alice, _) = server.login("alice").await;
    alice.send("<echo>m</echo>").await.unwrap();
    recv_text(&mut alice).await;
    let (status, metrics) = https_get(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("agentserver_connections 1"), "{metrics}");
    assert!(metrics.contains("agentserver_sessions 1"), "{metrics}");
    assert!(
        metrics.contains("agentserver_agent_call_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentserver_agent_queue_depth{agent=\"echo\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentserver_agent_in_flight{agent=\"echo\"} 0"),
        "{metrics}"
    );
    // The exposition format: every family typed before its samples, and
    // its samples together.
    let mut typed = Vec::new();
    let mut current = String::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split(' ').next().unwrap().to_owned();
            assert!(!typed.contains(&family), "{family} typed twice:\n{metrics}");
            typed.push(family.clone());
            current = family;
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| *base == current)
                .unwrap_or(name);
            assert_eq!(family, current, "{line} outside its family:\n{metrics}");
        }
    }
    let (_, console) = https_get(&server, "/").await;
    assert!(console.contains("<title>AgentServer console</title>"));
    assert_eq!(
        https_get(&server, "/nope").await,
        (404, "not found\n".into())
    );
}

#[tokio::test]
async fn a_client_can_trust_the_development_certificate_as_its_ca() {
    use rustls::pki_types::pem::PemObject;
    let server = server().await;
    let pem = std::fs::read(server.dir.path().join("data/tls/cert.pem")).unwrap();
    let roots = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let url = format!("wss://localhost:{}/", server.address().port());
    let mut client =
        agentserver::client::Client::connect(&url, &agentserver::client::Trust::Ca(roots.clone()))
            .await
            .expect("the dev certificate verifies as its own CA for localhost");
    let code = server.code("bob");
    assert!(client
        .login("bob", &code)
        .await
        .unwrap()
        .starts_with("<catalog"));
    let wrong = agentserver::client::Trust::Fingerprint("00".repeat(32));
    assert!(agentserver::client::Client::connect(&url, &wrong)
        .await
        .is_err());
}

/// The `[[agent]]` tables of the agents the console test adds to [`AGENTS`]:
/// hostile (`hold`, `trap`) and the llm agent, allowed to reach `mock`.
fn console_agents(mock: &agentserver_tests::MockLlm) -> String {
    format!(
        "[[agent]]\nname = \"hostile\"\ncomponent = {:?}\nlistens = [\"hold\", \"trap\"]\n\
         [[agent]]\nname = \"llm\"\ncomponent = {:?}\nlistens = [\"ask\"]\ntimeout_ms = 30000\nmemory_bytes = 67108864\nfuel = 5000000000\n\
         [agent.http]\nallow = [{:?}]\n\
         [agent.storage]\nsession = {{ max_keys = 8, max_bytes = 65536 }}\n",
        agentserver_tests::agent_wasm("hostile").display().to_string(),
        agentserver_tests::agent_wasm("llm").display().to_string(),
        mock.base(),
    )
}

/// The web console in a real headless Chromium (Debian's `chromium`, driven
/// by `playwright-core`; `make test` installs both), as a person uses it
/// (`tests/browser/console.mjs`): log in with a typed code, type the
/// content of a tag, see who answered and the payload pretty-printed,
/// continue a thread, see a repair note and errors apart, watch a stream
/// grow in place, have the socket closed under the page and see it resume
/// without a code, and use it at phone size. With `UPDATE_SCREENSHOTS=1`
/// its screenshots replace those of `docs/clients/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_console_works_in_a_real_browser() {
    let mock = agentserver_tests::MockLlm::start(None);
    let tags: &[&str] = &["calculate", "echo", "square-sum", "count", "hold", "ask"];
    let server = TestServer::start_with(
        &[("alice", tags), ("bob", tags)],
        AGENTS,
        &console_agents(&mock),
    )
    .await;
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `make test` (or `npm --prefix tests/browser ci`)"
    );
    let shots = tempfile::tempdir().expect("tempdir");
    let args = vec![
        browser_dir.join("console.mjs").display().to_string(),
        format!("https://{}/", server.address()),
        "alice".to_owned(),
        server.code("alice"),
        "bob".to_owned(),
        server.code("bob"),
        mock.endpoint(),
        shots.path().display().to_string(),
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("node").args(args).output())
            .await
            .unwrap()
            .expect("node (make test installs it with the browser dependencies)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the console test failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{stdout}");
    assert_eq!(stdout.matches("ok: ").count(), 10, "{stdout}");
    assert!(stdout.contains("answer <result>14</result> from calc"));
    for name in ["console-desktop.png", "console-phone.png"] {
        let shot = shots.path().join(name);
        assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/clients");
            std::fs::copy(&shot, docs.join(name)).expect("copy the screenshot into docs/clients");
        }
    }
    server.stop().await;
}

/// Only connections that have not logged in count against
/// `max_unauthenticated_per_address`: an address may hold any number of
/// logged-in ones, while the third that has not logged in is turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_connections_do_not_count_against_the_address_cap() {
    let server = TestServer::start_with(
        &[
            ("alice", &["echo"]),
            ("bob", &["echo"]),
            ("carol", &["echo"]),
        ],
        &[("echo", "echo", &["echo"])],
        "max_unauthenticated_per_address = 2\n",
    )
    .await;
    let mut logged_in = Vec::new();
    for user in ["alice", "bob", "carol", "alice", "bob", "carol"] {
        let (client, _) = server.login(user).await;
        logged_in.push(client);
    }
    for client in &mut logged_in {
        client.send("<echo>here</echo>").await.unwrap();
        assert!(recv_text(client)
            .await
            .ends_with("<echoed>here</echoed></message>"));
    }
    // Two that have not logged in are held; the third is not.
    let _first = server.connect().await;
    let _second = server.connect().await;
    let third = agentserver::client::Client::connect(&server.url(), &server.trust()).await;
    assert!(
        third.is_err(),
        "a third connection that has not logged in was taken"
    );
    server.stop().await;
}
