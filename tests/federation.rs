//! Two organisms, two owners, one signed link, over real TLS: organism A
//! (an `echo` agent) and organism B (a `calculate` agent), each certifying
//! its node key for `federation` and linking to the other for one tag each
//! way. Then the tags cross with the right `from` and threads, other tags
//! do not, a link only one owner signed carries nothing, forged, replayed
//! and misaddressed messages are dropped and audited while the connection
//! stays, unlinking stops traffic at once, and a node key its owner
//! revokes is refused at once on the other side. A link may pin the peer's
//! CA instead of its certificate: the peer is reached with any certificate
//! that CA issued for its address (a renewed one too), and not with one
//! from another CA or for another host.

use agentserver::client::{Client, Received};
use agentserver::commit::{key_id, CertificateRequest, NodeKey, Purpose, RevocationRequest};
use agentserver::federation::wire::{revocations_frame, Federated, Greeting, Role};
use agentserver::federation::PeerTls;
use agentserver::privileged::{Command, SignedRecord, SigningKey};
use agentserver::xml::{canonicalize, Limits};
use agentserver_tests::organisms::{
    apply, certificate, fingerprint, link, link_pinned, node_key, signed_record,
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
    let failed = agentserver_tests::next_answer(
        &mut alice,
        Duration::from_secs(20),
        "the message fails within the queue wait",
    )
    .await;
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
    hello_as(&node_key(a), a, b, nonce, certificate, link)
}

/// A hello from A to B signed with `node`.
fn hello_as(
    node: &NodeKey,
    a: &TestServer,
    b: &TestServer,
    nonce: &str,
    certificate: &SignedRecord,
    link: &SignedRecord,
) -> String {
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
        Forger::connect_as(node_key(a), a, b, certificate, link).await
    }

    /// Like [`Forger::connect`], signing with `node` (certified by
    /// `certificate`).
    async fn connect_as(
        node: NodeKey,
        a: &TestServer,
        b: &TestServer,
        certificate: SignedRecord,
        link: SignedRecord,
    ) -> Forger {
        let mut client = b.connect().await;
        let nonce = format!(
            "n-{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        client
            .send(&hello_as(&node, a, b, &nonce, &certificate, &link))
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
    // The tag outside `accept` is answered on its thread, as a user's
    // would be: the first answer since the good one.
    let denied = recv_text(&mut forger.client).await;
    assert!(
        denied.contains("<access-denied tag=\"echo\">") && denied.contains("thread=\"thread-m4\""),
        "{denied}"
    );
    // The connection is still there: the next good message is answered.
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
async fn a_tag_the_peer_does_not_accept_is_answered_access_denied() {
    let (a, b) = organisms().await;
    let (mut owner_a, mut owner_b) = certified(&a, &b).await;
    // A sends `wordfreq` too, which B's owner does not accept.
    let verdict = apply(&b, &mut owner_b, &link(&a, &[], &["calculate"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let verdict = apply(&a, &mut owner_a, &link(&b, &["calculate", "wordfreq"], &[])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let (mut alice, _) = a.login("alice").await;
    let answer = ask(&mut alice, "<calculate>3*3</calculate>").await;
    assert!(answer.contains("<result>9</result>"), "{answer}");
    let denied = ask(&mut alice, "<wordfreq>a a b</wordfreq>").await;
    assert!(
        denied.contains("<access-denied tag=\"wordfreq\">"),
        "{denied}"
    );
    assert!(
        denied.contains(&format!("<from>{}/server</from>", fingerprint(&b))),
        "{denied}"
    );
    assert!(refusals(&b)
        .iter()
        .any(|r| r.contains("wordfreq") && r.contains("is not among the tags the link accepts")));
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
        hello_refused(&mut client).await;
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

/// A `node-certificate` for `node`, for audit and federation, two days.
fn certificate_for(node: &NodeKey) -> Command {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Command::NodeCertificate(CertificateRequest {
        key_id: node.key_id().to_owned(),
        public_key: node.verifying_key(),
        purposes: vec![Purpose::Audit, Purpose::Federation],
        not_after: now + 2 * 86_400,
    })
}

/// A `node-revoke` of `node`.
fn revoke(node: &NodeKey, reason: &str) -> Command {
    Command::NodeRevoke(RevocationRequest {
        key_id: node.key_id().to_owned(),
        reason: Some(reason.to_owned()),
    })
}

/// The `federation-refused` entries of `server`'s audit log.
fn refusals(server: &TestServer) -> Vec<String> {
    server
        .audit
        .records()
        .into_iter()
        .filter(|r| r.tag == "federation-refused")
        .map(|r| r.canonical)
        .collect()
}

/// Waits until `server` audits a refusal mentioning `reason`.
async fn refused_with(server: &TestServer, reason: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !refusals(server).iter().any(|r| r.contains(reason)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal mentioning {reason:?} in {:#?}",
            refusals(server)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Expects the server to refuse the hello just sent: the connection is
/// closed with 1008.
async fn hello_refused(client: &mut Client) {
    match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
        Ok(Ok(Received::Closed(code, _))) => assert_eq!(code, 1008),
        other => panic!("expected the hello to be refused, got {other:?}"),
    }
}

/// Expects the server to close the connection with 1008 and `reason`.
async fn closed_with(client: &mut Client, reason: &str) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
            Ok(Ok(Received::Closed(code, text))) => {
                assert_eq!((code, text.as_str()), (1008, reason));
                return;
            }
            // Revocations pushed after the welcome.
            Ok(Ok(Received::Text(frame))) if frame.starts_with("<federation-revocations") => {}
            other => panic!("expected the connection closed ({reason}), got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_revoked_by_its_owner_is_refused_at_once_over_the_open_link() {
    let (a, b) = organisms().await;
    let (_owner_a, mut owner_b) = link_both(&a, &b).await;
    // Traffic crosses both ways, so both gateways are connected.
    let (mut alice, _) = a.login("alice").await;
    let answer = ask(&mut alice, "<calculate>1+1</calculate>").await;
    assert!(answer.contains("<result>2</result>"), "{answer}");
    let (mut bob, _) = b.login("bob").await;
    let echoed = ask(&mut bob, "<echo>before</echo>").await;
    assert!(echoed.contains("before"), "{echoed}");

    // Someone holding B's node key (leaked) speaks to A as B.
    let b_node = node_key(&b);
    let b_certificate = signed_record(&b, &certificate_for(&b_node));
    let b_link = signed_record(&b, &link(&a, &["echo"], &["calculate"]));
    let mut leaked = Forger::connect_as(
        b_node.clone(),
        &b,
        &a,
        b_certificate.clone(),
        b_link.clone(),
    )
    .await;
    let message = leaked.message("r1", "<echo>leaked</echo>");
    leaked
        .client
        .send(&message.frame(leaked.node.signing_key()).unwrap())
        .await
        .unwrap();
    let answer = recv_text(&mut leaked.client).await;
    assert!(answer.contains("leaked"), "{answer}");

    // B's owner revokes B's node key, on B. B pushes the revocation to A
    // over its open connections; A refuses the key at once and closes
    // every connection it authenticated, the leaked one too.
    let verdict = apply(&b, &mut owner_b, &revoke(&b_node, "leaked")).await;
    assert!(verdict.contains("applied"), "{verdict}");
    closed_with(&mut leaked.client, "node key revoked").await;
    refused_with(&a, "node key revoked").await;
    assert!(
        refusals(&a).iter().any(|r| r.contains("leaked")),
        "the owner's reason is in the audit: {:#?}",
        refusals(&a)
    );
    // Revoking it twice is refused, and so is certifying it again.
    let again = apply(&b, &mut owner_b, &revoke(&b_node, "leaked")).await;
    assert!(again.contains("already revoked"), "{again}");
    let recertified = apply(&b, &mut owner_b, &certificate_for(&b_node)).await;
    assert!(recertified.contains("cannot be certified"), "{recertified}");

    // A new hello with the revoked key is refused and audited.
    let mut client = a.connect().await;
    client
        .send(&hello_as(
            &b_node,
            &b,
            &a,
            "n-after-revocation",
            &b_certificate,
            &b_link,
        ))
        .await
        .unwrap();
    hello_refused(&mut client).await;
    refused_with(&a, "hello refused: node key revoked").await;

    // B's own server signs nothing more: A's users cannot reach B's
    // calculator until B has a new node key.
    alice.send("<calculate>2+2</calculate>").await.unwrap();
    let failed = agentserver_tests::next_answer(
        &mut alice,
        Duration::from_secs(20),
        "the message fails within the queue wait",
    )
    .await;
    assert!(failed.contains("agent-failed"), "{failed}");

    // A fresh node key B's owner certifies speaks for B again.
    let fresh = NodeKey::from(SigningKey::from_bytes(&[42; 32]));
    let fresh_certificate = signed_record(&b, &certificate_for(&fresh));
    let mut renewed = Forger::connect_as(fresh, &b, &a, fresh_certificate, b_link).await;
    let message = renewed.message("r2", "<echo>renewed</echo>");
    renewed
        .client
        .send(&message.frame(renewed.node.signing_key()).unwrap())
        .await
        .unwrap();
    let answer = recv_text(&mut renewed.client).await;
    assert!(answer.contains("renewed"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_peer_owners_revocations_count_and_they_pre_empt_unseen_keys() {
    let (a, b) = organisms().await;
    let (_owner_a, _owner_b) = link_both(&a, &b).await;
    let b_link = signed_record(&b, &link(&a, &["echo"], &["calculate"]));
    let node = NodeKey::from(SigningKey::from_bytes(&[43; 32]));
    let mut peer = Forger::connect_as(
        node.clone(),
        &b,
        &a,
        signed_record(&b, &certificate_for(&node)),
        b_link.clone(),
    )
    .await;

    // A revocation of this key signed by A's owner (not B's) is refused,
    // audited, and the connection stays.
    let wrong = signed_record(&a, &revoke(&node, "not yours"));
    peer.client
        .send(&revocations_frame(&[wrong]))
        .await
        .unwrap();
    refused_with(&a, "not the peer owner's").await;
    let message = peer.message("p1", "<echo>still here</echo>");
    peer.client
        .send(&message.frame(peer.node.signing_key()).unwrap())
        .await
        .unwrap();
    let answer = recv_text(&mut peer.client).await;
    assert!(answer.contains("still here"), "{answer}");

    // B's owner revokes a key A never saw: A keeps it, and a hello with
    // that key, certified, is refused.
    let unseen = NodeKey::from(SigningKey::from_bytes(&[44; 32]));
    let pre_empt = signed_record(&b, &revoke(&unseen, "never used"));
    peer.client
        .send(&revocations_frame(&[pre_empt]))
        .await
        .unwrap();
    // Frames are taken in order: once the next message is answered, the
    // revocation is in force.
    let message = peer.message("p2", "<echo>in order</echo>");
    peer.client
        .send(&message.frame(peer.node.signing_key()).unwrap())
        .await
        .unwrap();
    let answer = recv_text(&mut peer.client).await;
    assert!(answer.contains("in order"), "{answer}");
    let mut client = a.connect().await;
    let unseen_certificate = signed_record(&b, &certificate_for(&unseen));
    client
        .send(&hello_as(
            &unseen,
            &b,
            &a,
            "n-unseen",
            &unseen_certificate,
            &b_link,
        ))
        .await
        .unwrap();
    hello_refused(&mut client).await;
    refused_with(&a, "hello refused: node key revoked").await;

    // B's owner's revocation of the very key that connected, sent over its
    // own connection: A closes it.
    let own = signed_record(&b, &revoke(&node, "rotated"));
    peer.client.send(&revocations_frame(&[own])).await.unwrap();
    closed_with(&mut peer.client, "node key revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_flood_limit_holds_for_the_link_not_each_connection() {
    let (a, b) = organisms().await;
    let (_owner_a, _owner_b) = link_both(&a, &b).await;
    let both = vec![Purpose::Audit, Purpose::Federation];
    let certificate = signed_record(&a, &certificate(&a, both, 2));
    let link = signed_record(&a, &link(&b, &["calculate"], &["echo"]));
    let mut first = Forger::connect(&a, &b, certificate.clone(), link.clone()).await;
    let mut second = Forger::connect(&a, &b, certificate, link).await;
    // A frame B takes without answering or counting it as refused: A's
    // owner's revocation of a key nobody uses, again and again.
    let unused = NodeKey::from(SigningKey::from_bytes(&[50; 32]));
    let frame = revocations_frame(&[signed_record(&a, &revoke(&unused, "unused"))]);
    // 80 on each: within one connection's burst of 100, past the link's.
    for _ in 0..80 {
        let _ = first.client.send(&frame).await;
        let _ = second.client.send(&frame).await;
    }
    let mut flooded = 0;
    for client in [&mut first.client, &mut second.client] {
        if let Ok(Ok(Received::Closed(1008, reason))) =
            tokio::time::timeout(Duration::from_secs(10), client.receive()).await
        {
            assert_eq!(reason, "flooding");
            flooded += 1;
        }
    }
    assert!(flooded >= 1, "the link's connections together flood");
}

/// A test CA: it issues server certificates for [`TestServer`]s that a
/// link pins by CA rather than by fingerprint.
struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    der: Vec<u8>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        TestCa { params, key, der }
    }

    /// A server certificate for `hosts` and its key, both PEM.
    fn issue(&self, hosts: &[&str]) -> (String, String) {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, hosts[0]);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The pin naming this CA.
    fn pin(&self) -> PeerTls {
        PeerTls::Ca(vec![self.der.clone()])
    }
}

/// An organism with a `calc` agent whose port presents `certificate`
/// (PEM certificate and key) instead of a development certificate.
async fn organism_with_certificate(certificate: &(String, String)) -> TestServer {
    TestServer::start_with_files(
        &[("owner", &["calculate"]), ("bob", &["calculate", "echo"])],
        &[("calc", "calculator", &["calculate"])],
        "tls_cert = \"server-cert.pem\"\ntls_key = \"server-key.pem\"",
        &[
            ("server-cert.pem", &certificate.0, 0o644),
            ("server-key.pem", &certificate.1, 0o600),
        ],
    )
    .await
}

/// Asks `message` and returns the first frame that is not a catalog,
/// waiting up to 30 s: long enough for a message held while the link is
/// down to fail.
async fn ask_patiently(client: &mut Client, message: &str) -> String {
    client.send(message).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), client.receive())
            .await
            .expect("an answer within 30 s")
            .expect("a frame");
        match frame {
            Received::Text(text) if text.starts_with("<catalog") => {}
            Received::Text(text) => return text,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_pin_reaches_the_peer_its_ca_certified_and_its_renewed_certificate() {
    let ca = TestCa::new("Organism B test CA");
    let a = TestServer::start(
        &[("owner", &["echo"]), ("alice", &["echo", "calculate"])],
        &[("echo", "echo", &["echo"])],
    )
    .await;
    let b = organism_with_certificate(&ca.issue(&["127.0.0.1"])).await;
    let (mut owner_a, mut owner_b) = certified(&a, &b).await;
    let b_link = link(&a, &["echo"], &["calculate"]);
    let verdict = apply(&b, &mut owner_b, &b_link).await;
    assert!(verdict.contains("applied"), "{verdict}");
    // A pins B's CA, not B's certificate.
    let a_link = link_pinned(&b, ca.pin(), &["calculate"], &["echo"]);
    assert!(
        a_link.to_xml().contains("<tls-ca>") && !a_link.to_xml().contains("tls-fingerprint"),
        "{}",
        a_link.to_xml()
    );
    let verdict = apply(&a, &mut owner_a, &a_link).await;
    assert!(verdict.contains("applied"), "{verdict}");

    let (mut alice, _) = a.login("alice").await;
    let answer = ask_patiently(&mut alice, "<calculate>6 * 7</calculate>").await;
    assert!(answer.contains("<result>42</result>"), "{answer}");
    assert!(
        answer.contains(&format!("<from>{}/calc</from>", fingerprint(&b))),
        "{answer}"
    );

    // B's certificate is renewed: a new key, a new certificate, the same
    // CA. B presents it from now on.
    let old = b.server().fingerprint().to_owned();
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    std::fs::write(b.dir.path().join("server-cert.pem"), cert).unwrap();
    std::fs::write(b.dir.path().join("server-key.pem"), key).unwrap();
    b.server().reload();
    let renewed = Client::connect(&b.url(), &ca.pin().trust()).await;
    assert!(renewed.is_ok(), "B presents a certificate its CA issued");
    let stale = Client::connect(&b.url(), &agentserver::client::Trust::Fingerprint(old)).await;
    assert!(stale.is_err(), "B no longer presents the old certificate");
    // B's owner signs its link again, which closes the connections over
    // it: A's gateway connects again and meets the renewed certificate,
    // with A's link unchanged.
    let verdict = apply(&b, &mut owner_b, &b_link).await;
    assert!(verdict.contains("applied"), "{verdict}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let answer = ask_patiently(&mut alice, "<calculate>6 * 8</calculate>").await;
    assert!(answer.contains("<result>48</result>"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_pin_refuses_another_cas_certificate_and_one_for_another_host() {
    let ca = TestCa::new("The pinned test CA");
    let other = TestCa::new("Another test CA");
    let a = TestServer::start(
        &[("owner", &["echo"]), ("alice", &["calculate", "wordfreq"])],
        &[],
    )
    .await;
    // B's certificate names its address, but another CA issued it; C's
    // comes from the pinned CA, but for another host than its address.
    let b = organism_with_certificate(&other.issue(&["127.0.0.1"])).await;
    let c = organism_with_certificate(&ca.issue(&["localhost"])).await;
    let (mut owner_a, mut owner_b) = certified(&a, &b).await;
    let (mut owner_c, _) = c.login("owner").await;
    let purposes = vec![Purpose::Audit, Purpose::Federation];
    let verdict = apply(&c, &mut owner_c, &certificate(&c, purposes, 2)).await;
    assert!(verdict.contains("applied"), "{verdict}");
    for (peer, owner, tag) in [
        (&b, &mut owner_b, "calculate"),
        (&c, &mut owner_c, "wordfreq"),
    ] {
        let verdict = apply(peer, owner, &link(&a, &[], &[tag])).await;
        assert!(verdict.contains("applied"), "{verdict}");
        let verdict = apply(&a, &mut owner_a, &link_pinned(peer, ca.pin(), &[tag], &[])).await;
        assert!(verdict.contains("applied"), "{verdict}");
    }

    // A's gateways cannot connect: each message waits for the connection,
    // then fails with the reason.
    let (mut alice, _) = a.login("alice").await;
    let (first, second) = tokio::join!(
        async {
            let (mut alice_b, _) = a.login("alice").await;
            ask_patiently(&mut alice_b, "<calculate>1+1</calculate>").await
        },
        ask_patiently(&mut alice, "<wordfreq>a a b</wordfreq>"),
    );
    for (answer, peer, reason) in [
        (&first, &b, "UnknownIssuer"),
        (&second, &c, "not valid for name"),
    ] {
        assert!(
            answer.contains("code=\"agent-failed\"")
                && answer.contains(&format!("link-{}", &fingerprint(peer)[..16]))
                && answer.contains("is down")
                && answer.contains("invalid peer certificate"),
            "{answer}"
        );
        assert!(answer.contains(reason), "{answer}");
        // Nothing reached the peer: no hello, no message.
        assert!(refusals(peer).is_empty(), "{:?}", refusals(peer));
        assert!(
            !peer
                .audit
                .records()
                .iter()
                .any(|r| r.from.starts_with(&fingerprint(&a))),
            "nothing from A reached the peer"
        );
    }

    // A link pins the peer one way: both, or neither, is refused.
    let pinned = link_pinned(&b, ca.pin(), &["calculate"], &[]).to_xml();
    let both = pinned.replace(
        " send=",
        &format!(" tls-fingerprint=\"{}\" send=", b.server().fingerprint()),
    );
    let neither = pinned
        .split("><tls-ca>")
        .next()
        .map(|start| format!("{start}/>"))
        .unwrap();
    for (body, reason) in [
        (both, "not both"),
        (neither, "pin the peer's TLS certificate"),
    ] {
        let document =
            format!("<privileged-command><payload>{body}</payload></privileged-command>");
        owner_a.send(&a.sign(&document)).await.unwrap();
        let verdict = agentserver_tests::recv_until(&mut owner_a, "<privileged-result").await;
        assert!(
            verdict.contains("refused") && verdict.contains(reason),
            "{body}: {verdict}"
        );
    }
}
