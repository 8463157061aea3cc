//! Sessions that outlive sockets, from outside (docs/protocol.md section 8):
//! resume with pending frames in order, token rotation, expiry, dropped
//! frames, take-over, and ending from either side.

use agentserver::client::{Client, Received};
use agentserver_tests::{attribute, credentials, recv, recv_text, recv_until, resume, TestServer};
use std::time::Duration;

const AGENTS: &[agentserver_tests::AgentSpec<'static>] = &[
    ("hostile", "hostile", &["hold", "quit"]),
    ("counter", "counter", &["count"]),
];

async fn server_with(extra: &str) -> TestServer {
    TestServer::start_with(
        &[
            ("alice", &["hold", "quit", "count"]),
            ("bob", &["hold", "quit", "count"]),
            ("carol", &["hold", "quit", "count"]),
        ],
        AGENTS,
        extra,
    )
    .await
}

async fn assert_refused(mut client: Client) {
    assert_eq!(
        recv(&mut client).await,
        Received::Closed(1008, "authentication failed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_produced_while_away_arrive_in_order_on_resume() {
    let server = server_with("").await;
    let (mut alice, catalog) = server.login("alice").await;
    assert!(catalog.contains("session-timeout=\""), "{catalog}");
    let (id, token) = credentials(&catalog);
    assert_eq!(token.len(), 64, "256 bits, hex");
    for ms in [300, 1, 2] {
        alice.send(&format!("<hold ms=\"{ms}\"/>")).await.unwrap();
    }
    drop(alice);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut again = resume(&server, &id, &token).await;
    for _ in 0..3 {
        let frame = recv_text(&mut again).await;
        assert!(frame.contains("<held></held>"), "{frame}");
    }
    let catalog = recv_text(&mut again).await;
    assert!(catalog.starts_with("<catalog"), "{catalog}");
    assert_eq!(attribute(&catalog, "resumed").as_deref(), Some("true"));
    let (same_id, new_token) = credentials(&catalog);
    assert_eq!(same_id, id);
    assert_ne!(new_token, token);
    // The session carries on, and the old token no longer works.
    again.send("<hold ms=\"1\"/>").await.unwrap();
    assert!(recv_text(&mut again).await.contains("<held></held>"));
    drop(again);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_refused(resume(&server, &id, &token).await).await;
    let mut third = resume(&server, &id, &new_token).await;
    assert!(recv_text(&mut third).await.contains("resumed=\"true\""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_state_lives_across_a_resume_and_dies_with_the_session() {
    let server = server_with("").await;
    let (mut alice, catalog) = server.login("alice").await;
    let (id, token) = credentials(&catalog);
    alice.send("<count/>").await.unwrap();
    assert!(recv_text(&mut alice)
        .await
        .contains("<count-is>1</count-is>"));
    drop(alice);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = resume(&server, &id, &token).await;
    let catalog = recv_until(&mut again, "<catalog").await;
    let (_, token) = credentials(&catalog);
    again.send("<count/>").await.unwrap();
    assert!(recv_text(&mut again)
        .await
        .contains("<count-is>2</count-is>"));

    // The client ends it: closed 1000, the token is dead, the state is gone.
    again.send("<end-session/>").await.unwrap();
    assert_eq!(
        recv(&mut again).await,
        Received::Closed(1000, "session ended".into())
    );
    assert_refused(resume(&server, &id, &token).await).await;
    let (mut fresh, _) = server.login("alice").await;
    fresh.send("<count/>").await.unwrap();
    assert!(recv_text(&mut fresh)
        .await
        .contains("<count-is>1</count-is>"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_can_end_the_session() {
    let server = server_with("").await;
    let (mut bob, catalog) = server.login("bob").await;
    let (id, token) = credentials(&catalog);
    bob.send("<quit/>").await.unwrap();
    let frame = recv_text(&mut bob).await;
    assert!(
        frame.starts_with("<message>") && frame.contains("<end-session></end-session>"),
        "{frame}"
    );
    assert_eq!(
        recv(&mut bob).await,
        Received::Closed(1000, "session ended".into())
    );
    assert_refused(resume(&server, &id, &token).await).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_the_session_from_a_socket_still_open() {
    let server = server_with("").await;
    let (mut first, catalog) = server.login("carol").await;
    let (id, token) = credentials(&catalog);
    let mut second = resume(&server, &id, &token).await;
    assert!(recv_text(&mut second).await.contains("resumed=\"true\""));
    assert_eq!(
        recv(&mut first).await,
        Received::Closed(1008, "session resumed elsewhere".into())
    );
    second.send("<hold ms=\"1\"/>").await.unwrap();
    assert!(recv_text(&mut second).await.contains("<held></held>"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_session_expires() {
    let server = server_with("session_timeout = 1").await;
    let (alice, catalog) = server.login("alice").await;
    assert_eq!(attribute(&catalog, "session-timeout").as_deref(), Some("1"));
    let (id, token) = credentials(&catalog);
    drop(alice);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_refused(resume(&server, &id, &token).await).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_past_the_bound_are_dropped_and_counted() {
    let server = server_with("max_pending_frames = 4").await;
    let (mut bob, catalog) = server.login("bob").await;
    let (id, token) = credentials(&catalog);
    for n in 0..7 {
        bob.send(&format!("<hold ms=\"{}\"/>", 50 + n))
            .await
            .unwrap();
    }
    drop(bob);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut again = resume(&server, &id, &token).await;
    let first = recv_text(&mut again).await;
    assert_eq!(first, "<error code=\"frames-dropped\" count=\"3\"></error>");
    for _ in 0..4 {
        assert!(recv_text(&mut again).await.contains("<held></held>"));
    }
    assert!(recv_text(&mut again).await.starts_with("<catalog"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_and_wrong_tokens_get_the_same_refusal() {
    let server = server_with("").await;
    let (_alice, catalog) = server.login("alice").await;
    let (id, _) = credentials(&catalog);
    assert_refused(resume(&server, &id, &"0".repeat(64)).await).await;
    assert_refused(resume(&server, "no-such-session", &"0".repeat(64)).await).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_resumes_are_audited_without_their_secrets() {
    let server = server_with("").await;
    let code = server.code("alice");
    let (alice, catalog) = server.login("alice").await;
    let (id, token) = credentials(&catalog);
    drop(alice);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = resume(&server, &id, &token).await;
    assert!(recv_text(&mut again).await.contains("resumed=\"true\""));
    assert_refused(resume(&server, &id, &token).await).await;
    let mut wrong = server.connect().await;
    wrong
        .send("<authenticate user=\"bob\" totp=\"000000\"/>")
        .await
        .unwrap();
    assert_refused(wrong).await;

    let records = server.audit.records();
    let events: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == agentserver::bus::AuditKind::Auth)
        .map(|r| r.canonical.as_str())
        .collect();
    assert_eq!(events.len(), 4, "{events:#?}");
    assert!(events[0].starts_with("<auth event=\"login\" peer=\"127.0.0.1\" user=\"alice\">"));
    assert!(events[1].starts_with("<auth event=\"resume\" "));
    assert!(events[2].starts_with("<auth event=\"resume-refused\" "));
    assert!(events[3].starts_with("<auth event=\"login-refused\" peer=\"127.0.0.1\" user=\"bob\">"));
    for record in &records {
        assert!(
            !record.canonical.contains(&token),
            "a resume token in {record:?}"
        );
        assert!(
            !record.canonical.contains(&code),
            "a TOTP code in {record:?}"
        );
        assert!(
            !record.canonical.contains("000000"),
            "a TOTP code in {record:?}"
        );
    }
    server.stop().await;
}

/// The flood allowance belongs to the session: a client that drops its
/// socket and resumes goes on with what it had left, so reconnecting does
/// not buy a fresh burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_goes_on_with_the_sessions_flood_allowance() {
    let server = server_with("messages_per_second = 1\nmessage_burst = 5\n").await;
    let (mut client, catalog) = server.login("alice").await;
    let (id, token) = credentials(&catalog);
    for _ in 0..4 {
        client.send("<count/>").await.unwrap();
        recv_text(&mut client).await;
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = resume(&server, &id, &token).await;
    recv_until(&mut again, "<catalog").await;
    // Four more within the second: past the burst of five.
    for _ in 0..4 {
        if again.send("<count/>").await.is_err() {
            break;
        }
    }
    loop {
        match recv(&mut again).await {
            Received::Closed(code, reason) => {
                assert_eq!((code, reason.as_str()), (1008, "flooding"));
                break;
            }
            Received::Text(_) => {}
        }
    }
    server.stop().await;
}
