//! Federation signatures interoperate: a message signed by a small Python
//! script (`tests/oracle/federation_sign.py`: lxml's exclusive C14N,
//! `cryptography`'s Ed25519) with organism A's certified node key is
//! accepted by organism B over a real link, and B's signed answer verifies
//! in Python too; the same frame changed after signing is refused and
//! audited, and never answered.
//!
//! The script writes the `<federated>` element with its attributes out of
//! canonical order, in single quotes, with spaces and line breaks inside
//! the start tag, so only canonicalization — not copying bytes — can make
//! B's check agree with the signature.

use agentserver::client::{Client, Received};
use agentserver::commit::Purpose;
use agentserver::federation::wire::{signed_by, Federated, Greeting, Role};
use agentserver::xml::Limits;
use agentserver_tests::organisms::{
    apply, certificate, fingerprint, link, node_key, signed_record,
};
use agentserver_tests::{recv_text, TestServer};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The sender the Python script names: quotes and an ampersand, which
/// canonical form writes differently from the script.
const SENDER: &str = "user:ada & \"py\"";

/// The payload as the script writes it: single quotes and a namespace
/// declaration nothing uses, which exclusive C14N leaves out.
const PAYLOAD: &str = "<calculate xmlns:unused='urn:example:unused'>6*7</calculate>";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oracle/federation_sign.py")
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Organism A (an `echo` agent) and organism B (a `calculate` agent), each
/// node key certified, linked both ways: A sends `calculate` and accepts
/// `echo`, B the other way round.
async fn linked_organisms() -> (TestServer, TestServer) {
    let a = TestServer::start(&[("owner", &["echo"])], &[("echo", "echo", &["echo"])]).await;
    let b = TestServer::start(
        &[("owner", &["calculate"])],
        &[("calc", "calculator", &["calculate"])],
    )
    .await;
    let (mut owner_a, _) = a.login("owner").await;
    let (mut owner_b, _) = b.login("owner").await;
    for (server, owner) in [(&a, &mut owner_a), (&b, &mut owner_b)] {
        let verdict = apply(
            server,
            owner,
            &certificate(server, vec![Purpose::Audit, Purpose::Federation], 2),
        )
        .await;
        assert!(verdict.contains("applied"), "{verdict}");
    }
    let verdict = apply(&b, &mut owner_b, &link(&a, &["echo"], &["calculate"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    let verdict = apply(&a, &mut owner_a, &link(&b, &["calculate"], &["echo"])).await;
    assert!(verdict.contains("applied"), "{verdict}");
    (a, b)
}

/// A hand-made connection to B speaking for A: A's node key, certificate
/// and link in a hello B welcomes.
async fn connect_as_a(a: &TestServer, b: &TestServer) -> Client {
    let node = node_key(a);
    let certificate = signed_record(
        a,
        &certificate(a, vec![Purpose::Audit, Purpose::Federation], 2),
    );
    let link = signed_record(a, &link(b, &["calculate"], &["echo"]));
    let greeting = Greeting {
        role: Role::Hello,
        origin: fingerprint(a),
        destination: fingerprint(b),
        key_id: node.key_id().to_owned(),
        nonce: format!("py-{}", unix_now().as_nanos()),
        time_ms: unix_now().as_millis() as u64,
    };
    let mut client = b.connect().await;
    client
        .send(&greeting.frame(node.signing_key(), &certificate, &link))
        .await
        .unwrap();
    let welcome = recv_text(&mut client).await;
    assert!(
        welcome.starts_with("<federation-hello") && welcome.contains("role=\"welcome\""),
        "{welcome}"
    );
    client
}

/// A `<federation-message>` from A to B, signed by the Python script with
/// A's node key.
fn python_frame(a: &TestServer, b: &TestServer, id: &str, thread: &str) -> String {
    let output = std::process::Command::new("python3")
        .arg(script())
        .arg("sign")
        .arg("--key")
        .arg(a.dir.path().join("data/node.key"))
        .args(["--origin", &fingerprint(a)])
        .args(["--destination", &fingerprint(b)])
        .args(["--key-id", node_key(a).key_id()])
        .args(["--id", id, "--thread", thread, "--sender", SENDER])
        .args(["--hops", "0", "--payload", PAYLOAD])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let frame = String::from_utf8(output.stdout).unwrap();
    // Not canonical as written: only canonicalization makes B agree.
    assert!(
        frame.contains("<federated  time='") && !frame.contains("destination=\""),
        "{frame}"
    );
    frame
}

/// What the Python script makes of `frame` when it checks its signature
/// with the node public key `public_key`: `Ok(name=value lines)`, or
/// `Err(why)`.
fn python_verify(public_key: &Path, frame: &str) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .arg(script())
        .arg("verify")
        .arg("--public-key")
        .arg(public_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(frame.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The next frame from B, read as a signed message: the frame, what it
/// says, and whether B's node key signed it.
async fn next_message(client: &mut Client, b: &TestServer) -> (String, Federated, bool) {
    let frame = match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
        Ok(Ok(Received::Text(text))) => text,
        other => panic!("expected a signed answer, got {other:?}"),
    };
    let (message, signature, signed) =
        Federated::read(frame.as_bytes(), &Limits::default()).expect("a signed answer");
    let verified = signed_by(&node_key(b).verifying_key(), signed.as_bytes(), &signature);
    (frame, message, verified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_signed_in_python_over_lxml_c14n_is_accepted_and_answered() {
    let (a, b) = linked_organisms().await;
    let (fa, fb) = (fingerprint(&a), fingerprint(&b));
    let mut link = connect_as_a(&a, &b).await;

    link.send(&python_frame(&a, &b, "py-1", "py-thread-1"))
        .await
        .unwrap();
    let (frame, answer, verified) = next_message(&mut link, &b).await;
    assert!(verified, "B's node key signed the answer: {frame}");
    assert_eq!(answer.payload.as_str(), "<result>42</result>", "{frame}");
    assert_eq!(answer.thread, "py-thread-1", "answered on A's thread");
    assert_eq!(answer.sender, "calc");
    assert_eq!(
        (answer.origin.as_str(), answer.destination.as_str()),
        (&*fb, &*fa)
    );
    assert_eq!(answer.key_id, node_key(&b).key_id());

    // B's signature verifies in Python as well, over lxml's canonical form.
    let checked = python_verify(&b.dir.path().join("data/node.pub"), &frame)
        .expect("B's answer verifies in Python");
    for line in [
        "thread=py-thread-1",
        "sender=calc",
        &format!("origin={fb}"),
        &format!("destination={fa}"),
        "payload=<result>42</result>",
    ] {
        assert!(checked.lines().any(|l| l == line), "{line} in {checked}");
    }
    // And a frame changed after B signed it does not.
    let changed = frame.replace("<result>42</result>", "<result>43</result>");
    assert!(python_verify(&b.dir.path().join("data/node.pub"), &changed).is_err());

    // B took the message as from A's sender, named by A's fingerprint, in
    // its canonical form.
    let records = b.audit.records();
    let taken = records
        .iter()
        .find(|r| r.tag == "calculate")
        .expect("B audits the message");
    assert_eq!(taken.from, format!("{fa}/{SENDER}"));
    assert_eq!(taken.canonical, "<calculate>6*7</calculate>");
    assert!(!records.iter().any(|r| r.tag == "federation-refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_signed_frame_changed_after_signing_is_refused_and_audited() {
    let (a, b) = linked_organisms().await;
    let mut link = connect_as_a(&a, &b).await;
    let frame = python_frame(&a, &b, "py-2", "py-thread-2");

    // The payload changed after signing: 6*8 instead of 6*7.
    let payload_changed = frame.replace("6*7", "6*8");
    assert_ne!(payload_changed, frame);
    link.send(&payload_changed).await.unwrap();
    // The hop count changed after signing.
    let hops_changed = frame.replace("hops='0'", "hops='1'");
    assert_ne!(hops_changed, frame);
    link.send(&hops_changed).await.unwrap();
    // The frame as signed is still taken: the refused ones did not use up
    // its id, and the connection stays.
    link.send(&frame).await.unwrap();
    let (answer_frame, answer, verified) = next_message(&mut link, &b).await;
    assert!(verified, "{answer_frame}");
    assert_eq!(
        answer.payload.as_str(),
        "<result>42</result>",
        "the first answer is the signed frame's, none for the changed ones: {answer_frame}"
    );
    assert_eq!(answer.thread, "py-thread-2");

    let records = b.audit.records();
    let refused: Vec<&str> = records
        .iter()
        .filter(|r| r.tag == "federation-refused")
        .map(|r| r.canonical.as_str())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused.iter().all(|r| r.contains("does not verify")),
        "{refused:#?}"
    );
    let taken: Vec<&str> = records
        .iter()
        .filter(|r| r.tag == "calculate")
        .map(|r| r.canonical.as_str())
        .collect();
    assert_eq!(taken, ["<calculate>6*7</calculate>"]);
}
