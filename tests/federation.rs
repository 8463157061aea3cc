//! Two organisms, two owners, one signed link, over real TLS: organism A
//! (an `echo` agent) and organism B (a `calculate` agent), each certifying
//! its node key for `federation` and linking to the other for one tag each
//! way. Then the tags cross with the right `from` and threads, other tags
//! do not, a link only one owner signed carries nothing, forged, replayed
//! and misaddressed messages are dropped and audited while the connection
//! stays, and unlinking stops traffic at once.

use agentserver::client::{Client, Received};
use agentserver::commit::{key_id, CertificateRequest, NodeKey, Purpose};
use agentserver::federation::wire::{Federated, Greeting, Role};
use agentserver::privileged::{Command, SignedRecord, SigningKey};
use agentserver::xml::{canonicalize, Limits};
use agentserver_tests::organisms::{
    apply, certificate, fingerprint, link, node_key, signed_record,
};
use agentserver_tests::{recv_text, TestServer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Asks `message` and returns the answer frame that is not a catalog.
async fn ask(client: &mut Client, message: &str) -> String {
    client.send(message).await.unwrap();
    loop {
        let frame = recv_text(client).await;
        if !frame.starts_with("<catalog") {
            return frame;
        }
    }
}

async fn organisms() -> (TestServer, TestServer) {
    let a = TestServer::start(
        &[
            ("owner", &["echo"]),
            ("alice", &["echo", "calculate", "wordfreq"]),
        ],
        &[("echo", "echo", &["echo"])],
    )
    .await;
    let b = TestServer::start(
        &[("owner", &["calculate"]), ("bob", &["calculate", "echo"])],
        &[("calc", "calculator", &["calculate"])],
    )
    .await;
    (a, b)
}

/// The owners of A and B logged in, each having certified its server's
/// node key for audit and federation.
async fn certified(a: &TestServer, b: &TestServer) -> (Client, Client) {
    let (mut owner_a, _) = a.login("owner").await;
    let (mut owner_b, _) = b.login("owner").await;
    for (server, owner) in [(a, &mut owner_a), (b, &mut owner_b)] {
        let purposes = vec![Purpose::Audit, Purpose::Federation];
        let verdict = apply(server, owner, &certificate(server, purposes, 2)).await;
        assert!(verdict.contains("applied"), "{verdict}");
    }
    (owner_a, owner_b)
}

/// Certifies both node keys and links A (sends `calculate`, accepts `echo`)
/// and B (sends `echo`, accepts `calculate`); B links first, so that A's
/// gateway finds B ready.
async fn link_both(a: &TestServer, b: &TestServer) -> (Client, Client) {
    let (mut owner_a, mut owner_b) = certified(a, b).await;
    let verdict = apply(b, &mut owner_b, &link(a, &["echo"], &["calculate"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let verdict = apply(a, &mut owner_a, &link(b, &["calculate"], &["echo"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    (owner_a, owner_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_tags_cross_both_ways_and_nothing_else_does() {
    let (a, b) = organisms().await;
    let (_owner_a, _owner_b) = link_both(&a, &b).await;
    let (fa, fb) = (fingerprint(&a), fingerprint(&b));

    // A's user asks B's calculator, through A's gateway.
    let (mut alice, catalog) = a.login("alice").await;
    assert!(
        catalog.contains("calculate"),
        "the link's tag is in the catalog: {catalog}"
    );
    let answer = ask(&mut alice, "<calculate>2 + 3 * 4</calculate>").await;
    assert!(answer.contains("<result>14</result>"), "{answer}");
    assert!(
        answer.contains(&format!("<from>{fb}/calc</from>")),
        "{answer}"
    );
    let thread = answer
        .split("<thread>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .expect("the answer names its thread")
        .to_owned();
    // The thread goes on across the link.
    let again = ask(
        &mut alice,
        &format!(
            "<message><meta><thread>{thread}</thread></meta><calculate>1+1</calculate></message>"
        ),
    )
    .await;
    assert!(again.contains("<result>2</result>"), "{again}");
    assert!(
        again.contains(&format!("<thread>{thread}</thread>")),
        "{again}"
    );
    // B saw the message from A's user, named by A's fingerprint.
    assert!(
        b.audit
            .records()
            .iter()
            .any(|r| r.tag == "calculate" && r.from == format!("{fa}/user:alice")),
        "B audits the message as from {fa}/user:alice"
    );

    // B's user reaches A's echo agent the other way.
    let (mut bob, _) = b.login("bob").await;
    let echoed = ask(&mut bob, "<echo>across</echo>").await;
    assert!(echoed.contains("across"), "{echoed}");
    assert!(
        echoed.contains(&format!("<from>{fa}/echo</from>")),
        "{echoed}"
    );

    // A's /metrics counts the link's traffic: two questions and one answer
    // sent, two answers and one question received.
    let (status, metrics) =
        agentserver::client::get(&format!("https://{}/metrics", a.address()), &a.trust())
            .await
            .unwrap();
    assert_eq!(status, 200);
    for (direction, count) in [("sent", 3), ("received", 3)] {
        let sample = format!(
            "agentserver_federation_messages_total{{peer=\"{fb}\",direction=\"{direction}\"}} {count}\n"
        );
        assert!(metrics.contains(&sample), "no {sample:?} in:\n{metrics}");
    }
    assert!(metrics.contains(&format!(
        "agentserver_federation_refused_total{{peer=\"{fb}\"}} 0"
    )));

    // A tag no link sends stays home: A has no `wordfreq`, and nothing
    // carries it to B.
    let refused = ask(&mut alice, "<wordfreq>a a b</wordfreq>").await;
    assert!(refused.contains("no-listener"), "{refused}");
    assert!(!b.audit.records().iter().any(|r| r.tag == "wordfreq"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_one_owner_signed_carries_nothing() {
    let (a, b) = organisms().await;
    let (mut owner_a, _owner_b) = certified(&a, &b).await;
    // Only A's owner links.
    let verdict = apply(&a, &mut owner_a, &link(&b, &["calculate"], &["echo"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let (mut alice, _) = a.login("alice").await;
    alice.send("<calculate>2+2</calculate>").await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match alice.receive().await {
                Ok(Received::Text(frame)) if !frame.starts_with("<catalog") => return frame,
                Ok(Received::Text(_)) => {}
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the message fails within the queue wait");
    assert!(
        failed.contains("agent-failed") && failed.contains("down"),
        "{failed}"
    );
    assert!(!b.audit.records().iter().any(|r| r.tag == "calculate"));
    // B has no link to A: A's hellos are refused and only logged, so that
    // organisms B does not know cannot grow its audit log.
    assert!(!b
        .audit
        .records()
        .iter()
        .any(|r| r.tag == "federation-refused"));
}

/// A hello from A's node key to B, showing `certificate` and `link`.
fn hello(
    a: &TestServer,
    b: &TestServer,
    nonce: &str,
    certificate: &SignedRecord,
    link: &SignedRecord,
) -> String {
    let node = node_key(a);
    Greeting {
        role: Role::Hello,
        origin: fingerprint(a),
        destination: fingerprint(b),
        key_id: node.key_id().to_owned(),
        nonce: nonce.to_owned(),
        time_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    }
    .frame(node.signing_key(), certificate, link)
}

/// A hand-made peer: A's node key and A's records, speaking to B directly.
struct Forger {
    client: Client,
    node: NodeKey,
    origin: String,
    destination: String,
}

impl Forger {
    async fn connect(
        a: &TestServer,
        b: &TestServer,
        certificate: SignedRecord,
        link: SignedRecord,
    ) -> Forger {
        let node = node_key(a);
        let mut client = b.connect().await;
        let nonce = format!(
            "n-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        client
            .send(&hello(a, b, &nonce, &certificate, &link))
            .await
            .unwrap();
        let welcome = recv_text(&mut client).await;
        assert!(welcome.starts_with("<federation-hello"), "{welcome}");
        assert!(welcome.contains("role=\"welcome\""), "{welcome}");
        Forger {
            client,
            node,
            origin: fingerprint(a),
            destination: fingerprint(b),
        }
    }

    fn message(&self, id: &str, payload: &str) -> Federated {
        Federated {
            origin: self.origin.clone(),
            destination: self.destination.clone(),
            key_id: self.node.key_id().to_owned(),
            id: id.to_owned(),
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            thread: format!("thread-{id}"),
            sender: "user:mallory".into(),
            hops: 0,
            payload: canonicalize(payload.as_bytes(), &Limits::default(), &[]).unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_misaddressed_messages_are_dropped_and_the_connection_stays() {
    let (a, b) = organisms().await;
    let (_owner_a, _owner_b) = link_both(&a, &b).await;
    let both = vec![Purpose::Audit, Purpose::Federation];
    let certificate = signed_record(&a, &certificate(&a, both, 2));
    let link = signed_record(&a, &link(&b, &["calculate"], &["echo"]));
    let mut forger = Forger::connect(&a, &b, certificate, link).await;

    // A good message is answered.
    let good = forger.message("m1", "<calculate>6*7</calculate>");
    forger
        .client
        .send(&good.frame(forger.node.signing_key()).unwrap())
        .await
        .unwrap();
    let answer = recv_text(&mut forger.client).await;
    assert!(answer.contains("<result>42</result>"), "{answer}");
    assert!(answer.contains("thread=\"thread-m1\""), "{answer}");

    // The same frame again: a replay.
    forger
        .client
        .send(&good.frame(forger.node.signing_key()).unwrap())
        .await
        .unwrap();
    // Signed by a key no certificate names.
    let stranger = SigningKey::from_bytes(&[9; 32]);
    let forged = forger.message("m2", "<calculate>1+1</calculate>");
    forger
        .client
        .send(&forged.frame(&stranger).unwrap())
        .await
        .unwrap();
    // Addressed to a third organism.
    let mut elsewhere = forger.message("m3", "<calculate>1+2</calculate>");
    elsewhere.destination = "c".repeat(64);
    forger
        .client
        .send(&elsewhere.frame(forger.node.signing_key()).unwrap())
        .await
        .unwrap();
    // A tag outside B's `accept`.
    let outside = forger.message("m4", "<echo>not accepted</echo>");
    forger
        .client
        .send(&outside.frame(forger.node.signing_key()).unwrap())
        .await
        .unwrap();
    // The connection is still there: the next good message is answered,
    // and it is the first answer since the good one.
    let later = forger.message("m5", "<calculate>2*2</calculate>");
    forger
        .client
        .send(&later.frame(forger.node.signing_key()).unwrap())
        .await
        .unwrap();
    let answer = match tokio::time::timeout(Duration::from_secs(10), forger.client.receive()).await
    {
        Ok(Ok(Received::Text(text))) => text,
        other => panic!("expected an answer, got {other:?}"),
    };
    assert!(
        answer.contains("<result>4</result>") && answer.contains("thread-m5"),
        "{answer}"
    );

    let refused: Vec<String> = b
        .audit
        .records()
        .into_iter()
        .filter(|r| r.tag == "federation-refused")
        .map(|r| r.canonical)
        .collect();
    for reason in [
        "already received",
        "does not verify",
        "not over this link",
        "not among the tags the link accepts",
    ] {
        assert!(
            refused.iter().any(|r| r.contains(reason)),
            "no refusal mentioning {reason:?} in {refused:#?}"
        );
    }
    assert_eq!(
        b.audit
            .records()
            .iter()
            .filter(|r| r.tag == "calculate")
            .count(),
        2,
        "only m1 and m5 reached B's bus: {:#?}",
        b.audit
            .records()
            .iter()
            .filter(|r| r.tag == "calculate")
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_stops_traffic_at_once() {
    let (a, b) = organisms().await;
    let (mut owner_a, _owner_b) = link_both(&a, &b).await;
    let (mut alice, _) = a.login("alice").await;
    let answer = ask(&mut alice, "<calculate>1+1</calculate>").await;
    assert!(answer.contains("<result>2</result>"), "{answer}");
    let unlink = Command::Unlink {
        peer: fingerprint(&b),
    };
    let verdict = apply(&a, &mut owner_a, &unlink).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let refused = ask(&mut alice, "<calculate>2+2</calculate>").await;
    assert!(refused.contains("no-listener"), "{refused}");
    let again = apply(&a, &mut owner_a, &unlink).await;
    assert!(again.contains("no link"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_without_a_valid_federation_certificate_is_refused_and_audited() {
    let (a, b) = organisms().await;
    let (_owner_a, _owner_b) = link_both(&a, &b).await;
    let link = signed_record(&a, &link(&b, &["calculate"], &["echo"]));
    let node = node_key(&a);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let audit_only = signed_record(&a, &certificate(&a, vec![Purpose::Audit], 2));
    let expired = signed_record(
        &a,
        &Command::NodeCertificate(CertificateRequest {
            key_id: key_id(&node.verifying_key()),
            public_key: node.verifying_key(),
            purposes: vec![Purpose::Federation],
            not_after: now - 3_600,
        }),
    );
    for (certificate, reason) in [
        (&audit_only, "does not cover `federation` now"),
        (&expired, "does not cover `federation` now"),
    ] {
        let mut client = b.connect().await;
        let nonce = format!("n-{}", certificate.id);
        client
            .send(&hello(&a, &b, &nonce, certificate, &link))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
            Ok(Ok(Received::Closed(code, _))) => assert_eq!(code, 1008),
            other => panic!("expected the hello to be refused, got {other:?}"),
        }
        assert!(
            b.audit
                .records()
                .iter()
                .any(|r| r.tag == "federation-refused" && r.canonical.contains(reason)),
            "B audits the refused hello: {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_across_the_link_ends_at_the_thread_limit() {
    let (a, b) = organisms().await;
    let (mut owner_a, mut owner_b) = certified(&a, &b).await;
    // Each side sends `ping` to the other and accepts it: a `ping` taken
    // in is routed straight back out, forever but for the thread bounds.
    let verdict = apply(&b, &mut owner_b, &link(&a, &["ping"], &["ping"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let verdict = apply(&a, &mut owner_a, &link(&b, &["ping"], &["ping"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let (mut alice, _) = a.login("alice").await;
    // alice may not send `ping`: the owner grants it.
    let grant = Command::Grant {
        user: "alice".into(),
        tag: "ping".into(),
    };
    let verdict = apply(&a, &mut owner_a, &grant).await;
    assert!(verdict.contains("applied"), "{verdict}");
    alice.send("<ping>round and round</ping>").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match alice.receive().await {
                Ok(Received::Text(frame)) if frame.contains("thread-limit") => return frame,
                Ok(Received::Text(_)) => {}
                other => panic!("expected frames, got {other:?}"),
            }
        }
    })
    .await
    .expect("the loop ends at the thread limit");
    assert!(ended.contains("deep"), "{ended}");
}
