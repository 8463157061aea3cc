//! Signed structural change, from outside: real server over TLS, real
//! components, commands signed with the organism's key (docs/protocol.md
//! section 9).

use agentserver::client::Client;
use agentserver::privileged::time::{format_instant, unix_seconds};
use agentserver::privileged::{new_signing_key, Command, ComponentSource, Registration};
use agentserver::runtime::ComponentHash;
use agentserver_tests::{agent_bytes, recv_text, recv_until, sign_with, TestServer};
use std::time::SystemTime;

const AGENTS: &[agentserver_tests::AgentSpec<'static>] = &[
    ("echo", "echo", &["echo"]),
    ("hostile", "hostile", &["forge", "hold"]),
];

async fn server_with(extra: &str) -> TestServer {
    TestServer::start_with(
        &[
            ("owner", &["echo"]),
            ("alice", &["echo", "twin", "slow", "forge"]),
            ("bob", &["echo"]),
            ("carol", &["echo", "forge"]),
        ],
        AGENTS,
        extra,
    )
    .await
}

fn register(name: &str, component: &str, tag: &str) -> String {
    let bytes = agent_bytes(component);
    Command::Register(Registration {
        name: name.into(),
        listens: vec![tag.into()],
        description: format!("A {component} under another name."),
        sha256: ComponentHash::of(&bytes),
        component: ComponentSource::Inline(bytes),
        limits: Default::default(),
        nodes: Default::default(),
    })
    .to_unsigned_document()
}

/// Sends `command` and returns the `<privileged-result>` frame.
async fn apply(client: &mut Client, command: &str) -> String {
    client.send(command).await.unwrap();
    recv_until(client, "<privileged-result").await
}

fn assert_applied(verdict: &str) {
    assert!(verdict.contains("status=\"applied\""), "{verdict}");
}

fn assert_refused(verdict: &str, reason: &str) {
    assert!(
        verdict.contains("status=\"refused\"") && verdict.contains(reason),
        "expected a refusal with {reason:?}, got {verdict}"
    );
}

/// A payload with explicit times, unsigned.
fn payload_at(id: &str, issued: u64, expires: u64, body: &str) -> String {
    format!(
        "<privileged-command><payload id=\"{id}\" issued=\"{}\" expires=\"{}\">{body}</payload></privileged-command>",
        format_instant(issued),
        format_instant(expires)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_admitted_limited_and_answers_over_wss() {
    let server = server_with("").await;
    let (mut owner, _) = server.login("owner").await;
    let (mut alice, catalog) = server.login("alice").await;
    assert!(!catalog.contains("tag=\"twin\""), "{catalog}");

    let verdict = apply(&mut owner, &server.sign(&register("twin", "echo", "twin"))).await;
    assert_applied(&verdict);
    assert!(verdict.starts_with("<privileged-result id=\""), "{verdict}");

    // Alice is entitled to `twin`: her catalog updates by itself.
    let catalog = recv_until(&mut alice, "<catalog").await;
    assert!(
        catalog.contains("<capability agent=\"twin\" tag=\"twin\">"),
        "{catalog}"
    );
    alice.send("<twin>hello</twin>").await.unwrap();
    let answer = recv_text(&mut alice).await;
    assert!(answer.contains("<echoed>hello</echoed>"), "{answer}");

    // Tighten its fuel until a call cannot finish.
    let limits = server.sign(
        "<privileged-command><payload><agent-limits name=\"twin\" fuel=\"1000\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &limits).await);
    alice.send("<twin>hello again</twin>").await.unwrap();
    let failed = recv_text(&mut alice).await;
    assert!(
        failed.contains("code=\"agent-failed\"") && failed.contains("fuel"),
        "{failed}"
    );
    // The boot agent is untouched.
    alice.send("<echo>still here</echo>").await.unwrap();
    assert!(recv_text(&mut alice)
        .await
        .contains("<echoed>still here</echoed>"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_lets_calls_in_flight_finish_then_nobody_listens() {
    let server = server_with("").await;
    let (mut owner, _) = server.login("owner").await;
    let (mut alice, _) = server.login("alice").await;
    assert_applied(
        &apply(
            &mut owner,
            &server.sign(&register("slowpoke", "hostile", "slow")),
        )
        .await,
    );
    let catalog = recv_until(&mut alice, "<catalog").await;
    assert!(catalog.contains("tag=\"slow\""), "{catalog}");

    // `slow` is no tag the hostile agent knows, so it answers `<ok/>`.
    alice.send("<slow/>").await.unwrap();
    assert!(recv_text(&mut alice).await.contains("<ok></ok>"));

    let removal = server.sign(
        "<privileged-command><payload><agent-removal name=\"slowpoke\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &removal).await);
    let catalog = recv_until(&mut alice, "<catalog").await;
    assert!(!catalog.contains("tag=\"slow\""), "{catalog}");
    alice.send("<slow/>").await.unwrap();
    let refused = recv_text(&mut alice).await;
    assert!(refused.contains("code=\"no-listener\""), "{refused}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_finishes_when_its_agent_is_removed() {
    let server = server_with("").await;
    let (mut owner, _) = server.login("owner").await;
    let (mut alice, _) = server.login("alice").await;
    // `hold` belongs to the boot agent `hostile`: remove it mid-call.
    let mut grant = server.sign(
        "<privileged-command><payload><user-grant user=\"alice\" tag=\"hold\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &grant).await);
    let _ = recv_until(&mut alice, "<catalog").await;
    alice.send("<hold ms=\"800\"/>").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let removal = server.sign(
        "<privileged-command><payload><agent-removal name=\"hostile\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &removal).await);
    let held = recv_until(&mut alice, "<message").await;
    assert!(held.contains("<held></held>"), "{held}");
    alice.send("<hold ms=\"1\"/>").await.unwrap();
    let refused = recv_until(&mut alice, "<error").await;
    assert!(refused.contains("code=\"no-listener\""), "{refused}");
    // The grant outlives the agent; granting again is refused as a no-op.
    grant = server.sign(
        "<privileged-command><payload><user-grant user=\"alice\" tag=\"hold\"/></payload></privileged-command>",
    );
    assert_refused(&apply(&mut owner, &grant).await, "already granted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_revocations_change_catalogs_live() {
    let server = server_with("").await;
    let (mut owner, _) = server.login("owner").await;
    let (mut bob, catalog) = server.login("bob").await;
    assert!(!catalog.contains("tag=\"forge\""), "{catalog}");
    bob.send("<forge>x</forge>").await.unwrap();
    assert!(recv_text(&mut bob).await.starts_with("<access-denied"));

    let grant = server.sign(
        "<privileged-command><payload><user-grant user=\"bob\" tag=\"forge\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &grant).await);
    let catalog = recv_until(&mut bob, "<catalog").await;
    assert!(catalog.contains("tag=\"forge\""), "{catalog}");
    let users = std::fs::read_to_string(server.dir.path().join("users.toml")).unwrap();
    assert!(
        users.contains("\"forge\""),
        "the grant is written down: {users}"
    );

    let revoke = server.sign(
        "<privileged-command><payload><user-revoke user=\"bob\" tag=\"forge\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &revoke).await);
    let catalog = recv_until(&mut bob, "<catalog").await;
    assert!(!catalog.contains("tag=\"forge\""), "{catalog}");
    bob.send("<forge>x</forge>").await.unwrap();
    assert!(recv_text(&mut bob).await.starts_with("<access-denied"));

    for (command, reason) in [
        (
            "<user-grant user=\"nobody\" tag=\"echo\"/>",
            "no user named",
        ),
        ("<user-revoke user=\"bob\" tag=\"forge\"/>", "not granted"),
        ("<user-grant user=\"bob\" tag=\"catalog\"/>", "reserved"),
        ("<user-grant user=\"bob\" tag=\"1bad\"/>", "not a tag"),
    ] {
        let signed = server.sign(&format!(
            "<privileged-command><payload>{command}</payload></privileged-command>"
        ));
        assert_refused(&apply(&mut owner, &signed).await, reason);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_change_nothing_and_say_why() {
    let server = server_with("max_command_bytes = 2000000").await;
    let (mut owner, _) = server.login("owner").await;
    let now = unix_seconds(SystemTime::now());
    let grant = |id: &str| {
        payload_at(
            id,
            now,
            now + 600,
            "<user-grant user=\"bob\" tag=\"forge\"/>",
        )
    };

    // Unsigned.
    assert_refused(&apply(&mut owner, &grant("u1")).await, "not signed");
    // Signed by another key.
    let stranger = new_signing_key().unwrap();
    assert_refused(
        &apply(&mut owner, &sign_with(&stranger, &grant("u2"))).await,
        "does not verify",
    );
    // One byte of the payload changed after signing.
    let tampered = server
        .sign(&grant("u3"))
        .replace("tag=\"forge\"", "tag=\"forgf\"");
    assert_refused(&apply(&mut owner, &tampered).await, "does not verify");
    // Expired, and issued in the future (beyond the 60 s skew).
    let expired = server.sign(&payload_at("u4", now - 3_600, now - 1_800, "<shutdown/>"));
    assert_refused(&apply(&mut owner, &expired).await, "expired");
    let early = server.sign(&payload_at("u5", now + 3_600, now + 7_200, "<shutdown/>"));
    assert_refused(&apply(&mut owner, &early).await, "in the future");
    // sha256 that is not the bytes'.
    let bytes = agent_bytes("echo");
    let mismatched = Command::Register(Registration {
        name: "twin".into(),
        listens: vec!["twin".into()],
        description: String::new(),
        sha256: ComponentHash::of(b"something else"),
        component: ComponentSource::Inline(bytes),
        limits: Default::default(),
        nodes: Default::default(),
    });
    assert_refused(
        &apply(&mut owner, &server.sign(&mismatched.to_unsigned_document())).await,
        "sha256 mismatch",
    );
    // A component that does not implement the agent world.
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let foreign = Command::Register(Registration {
        name: "twin".into(),
        listens: vec!["twin".into()],
        description: String::new(),
        sha256: ComponentHash::of(&empty_component),
        component: ComponentSource::Inline(empty_component),
        limits: Default::default(),
        nodes: Default::default(),
    });
    assert_refused(
        &apply(&mut owner, &server.sign(&foreign.to_unsigned_document())).await,
        "does not implement the agentserver:agent world",
    );
    // Name taken, tag taken, tag reserved.
    assert_refused(
        &apply(&mut owner, &server.sign(&register("echo", "echo", "twin"))).await,
        "already registered",
    );
    assert_refused(
        &apply(&mut owner, &server.sign(&register("twin", "echo", "echo"))).await,
        "already listened to by agent `echo`",
    );
    assert_refused(
        &apply(
            &mut owner,
            &server.sign(&register("twin", "echo", "catalog")),
        )
        .await,
        "reserved",
    );
    // A component file outside the components directory.
    let escape = Command::Register(Registration {
        name: "twin".into(),
        listens: vec!["twin".into()],
        description: String::new(),
        sha256: ComponentHash::of(b""),
        component: ComponentSource::File("../users.toml".into()),
        limits: Default::default(),
        nodes: Default::default(),
    });
    assert_refused(
        &apply(&mut owner, &server.sign(&escape.to_unsigned_document())).await,
        "must be a file name",
    );
    // Malformed XML and an oversized command.
    assert_refused(
        &apply(
            &mut owner,
            "<privileged-command><payload id=\"x\"></privileged-command>",
        )
        .await,
        "malformed",
    );
    let oversized = format!(
        "<privileged-command><payload>{}</payload></privileged-command>",
        "<pad/>".repeat(400_000)
    );
    assert_refused(&apply(&mut owner, &oversized).await, "the limit is 2000000");

    // The same signed command twice: the second is a replay.
    let once = server.sign(&grant("u6"));
    assert_applied(&apply(&mut owner, &once).await);
    assert_refused(&apply(&mut owner, &once).await, "already used");

    // Nothing but the one applied grant changed: no `twin`, echo is echo.
    let names: Vec<String> = server
        .audit
        .records()
        .iter()
        .filter(|r| r.kind == agentserver::bus::AuditKind::Privileged)
        .map(|r| r.canonical.clone())
        .collect();
    assert_eq!(names.len(), 15, "every command is audited: {names:#?}");
    assert_eq!(
        names
            .iter()
            .filter(|r| r.contains("status=\"applied\""))
            .count(),
        1
    );
    assert!(names[0].starts_with("<privileged-audit id=\"u1\" payload-sha256=\""));
    let (mut bob, catalog) = server.login("bob").await;
    assert!(!catalog.contains("twin"), "{catalog}");
    assert!(catalog.contains("tag=\"forge\""), "{catalog}");
    bob.send("<echo>same</echo>").await.unwrap();
    assert!(recv_text(&mut bob).await.contains("<echoed>same</echoed>"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14n_equivalent_changes_keep_the_signature_valid() {
    let server = server_with("").await;
    let (mut owner, _) = server.login("owner").await;
    let signed = server.sign(
        "<privileged-command><payload><user-grant user=\"bob\" tag=\"forge\"/></payload></privileged-command>",
    );
    // Attribute order, whitespace inside tags, an empty element written out,
    // a redundant namespace declaration, whitespace outside the payload.
    let equivalent = signed
        .replace(
            "<user-grant tag=\"forge\" user=\"bob\"></user-grant>",
            "<user-grant\n   user = 'bob'   tag='forge' xmlns:unused=\"urn:x\" />",
        )
        .replace("<payload ", "\n  <payload   xmlns:p=\"urn:p\" ")
        .replace("</payload>", "</payload >\n  ");
    assert_ne!(equivalent, signed);
    assert!(equivalent.contains("user = 'bob'"), "{equivalent}");
    assert_applied(&apply(&mut owner, &equivalent).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_users_cannot_smuggle_a_command() {
    let server = server_with("").await;
    let (mut alice, _) = server.login("alice").await;
    let grant = server.sign(
        "<privileged-command><payload><user-grant user=\"alice\" tag=\"hold\"/></payload></privileged-command>",
    );
    // A valid signed command inside a user's payload is just content.
    alice
        .send(&format!("<echo>{}</echo>", grant.trim()))
        .await
        .unwrap();
    let echoed = recv_text(&mut alice).await;
    assert!(echoed.contains("<echoed><privileged-command>"), "{echoed}");
    // An agent emitting it as its own payload: it goes nowhere privileged.
    let escaped = grant
        .trim()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    alice
        .send(&format!("<forge>{escaped}</forge>"))
        .await
        .unwrap();
    let forged = recv_text(&mut alice).await;
    assert!(
        !forged.contains("<privileged-result"),
        "an agent's emission is not a command: {forged}"
    );
    alice.send("<hold ms=\"1\"/>").await.unwrap();
    assert!(
        recv_text(&mut alice).await.starts_with("<access-denied"),
        "the grant was not applied"
    );
    let audited = server
        .audit
        .records()
        .iter()
        .filter(|r| r.kind == agentserver::bus::AuditKind::Privileged)
        .count();
    assert_eq!(audited, 0);
    // The very same command, carried as a command, is applied once.
    let (mut carol, _) = server.login("carol").await;
    assert_applied(&apply(&mut carol, &grant).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_shutdown_is_reported_to_the_server() {
    let server = server_with("").await;
    let (mut owner, _) = server.login("owner").await;
    let shutdown = server.sign(
        "<privileged-command><payload><shutdown mode=\"immediate\"/></payload></privileged-command>",
    );
    assert_applied(&apply(&mut owner, &shutdown).await);
    let mode = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        server.server().shutdown_requested(),
    )
    .await
    .expect("the request is seen");
    assert_eq!(mode, agentserver::privileged::ShutdownMode::Immediate);
    // Further commands are refused while it goes down.
    let again = server.sign(
        "<privileged-command><payload><user-grant user=\"bob\" tag=\"forge\"/></payload></privileged-command>",
    );
    assert_refused(&apply(&mut owner, &again).await, "shutting down");
    server.stop().await;
}
