//! The LLM agent (Python, `example-agents/python/llm`) and the memo agent
//! (Rust, key-value storage) end to end: the real server over real TLS, the
//! repo's mock OpenAI-compatible server (`example-agents/mock-llm`) as a
//! real process on loopback.

use agentserver::bus::AuditKind;
use agentserver::capability::{BucketQuota, KeyValueStore, MemoryKeyValueStore, StorageGrant};
use agentserver::runtime::{AgentLimits, Delivery, Runtime, RuntimeServices, SessionKey};
use agentserver_tests::{
    agent_wasm, recv_text, recv_until, small_runtime_config, MockLlm, TestServer,
};
use std::sync::Arc;

const SECRET: &str = "sk-mock-7d41";

async fn llm_server(mock: &MockLlm) -> TestServer {
    let base = format!("http://127.0.0.1:{}", mock.port);
    let extra = format!(
        "secrets = \"secrets.toml\"\n\
         [[agent]]\nname = \"llm\"\ncomponent = {:?}\nlistens = [\"ask\"]\ntimeout_ms = 30000\nmemory_bytes = 67108864\nfuel = 5000000000\n\
         [agent.http]\nallow = [{base:?}]\n\
         [[agent.http.header]]\nhost = {base:?}\nname = \"authorization\"\nvalue = \"Bearer {{secret:mock}}\"\n\
         [agent.storage]\nsession = {{ max_keys = 8, max_bytes = 65536 }}\n\
         [[agent]]\nname = \"memo\"\ncomponent = {:?}\nlistens = [\"remember\", \"recall\", \"tally\"]\n\
         [agent.storage]\nsession = {{ max_keys = 2, max_bytes = 64 }}\nagent = {{ max_keys = 4, max_bytes = 64 }}\n",
        agent_wasm("llm").display().to_string(),
        agent_wasm("memo").display().to_string(),
    );
    TestServer::start_with_files(
        &[
            ("alice", &["ask", "remember", "recall", "tally"]),
            ("bob", &["ask", "remember", "recall", "tally"]),
        ],
        &[],
        &extra,
        &[("secrets.toml", &format!("mock = \"{SECRET}\"\n"), 0o600)],
    )
    .await
}

/// Sends `<ask>` and returns its `<partial>` texts and the final frame.
async fn ask(
    client: &mut agentserver::client::Client,
    endpoint: &str,
    question: &str,
) -> (Vec<String>, String) {
    client
        .send(&format!("<ask endpoint=\"{endpoint}\">{question}</ask>"))
        .await
        .expect("send");
    let mut partials = Vec::new();
    loop {
        let frame = recv_text(client).await;
        if let Some(start) = frame.find("<partial>") {
            let end = frame.find("</partial>").expect("closed partial");
            partials.push(frame[start + "<partial>".len()..end].to_owned());
            continue;
        }
        return (partials, frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_agent_streams_its_answer_and_remembers_the_conversation() {
    let mock = MockLlm::start(Some(SECRET));
    let server = llm_server(&mock).await;
    let (mut alice, catalog) = server.login("alice").await;
    assert!(catalog.contains("tag=\"ask\""), "{catalog}");

    let (partials, answer) = ask(&mut alice, &mock.endpoint(), "What is wasm").await;
    let expected = "You said: What is wasm. (mock model, 1 messages in the conversation)";
    assert!(
        answer.contains(&format!("<answer>{expected}</answer>")),
        "{answer}"
    );
    assert!(
        partials.len() > 1,
        "the answer streamed in parts: {partials:?}"
    );
    assert_eq!(partials.concat(), expected);

    // The conversation is kept in the session's bucket: the model sees it.
    let (_, answer) = ask(&mut alice, &mock.endpoint(), "And components").await;
    assert!(
        answer.contains("You said: And components. (mock model, 3 messages in the conversation)"),
        "{answer}"
    );
    // Another session starts its own conversation.
    let (mut bob, _) = server.login("bob").await;
    let (_, answer) = ask(&mut bob, &mock.endpoint(), "Hello").await;
    assert!(
        answer.contains("1 messages in the conversation"),
        "{answer}"
    );

    // The key went to the model server (it refuses requests without it),
    // and nowhere a client or the audit log can see.
    for record in server.audit.records() {
        assert!(!record.canonical.contains(SECRET), "{record:?}");
    }
    let requests = server
        .audit
        .records()
        .into_iter()
        .filter(|r| r.kind == AuditKind::Capability && r.tag == "http-request")
        .count();
    assert_eq!(requests, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_keeps_sessions_apart_and_holds_to_its_quota() {
    let mock = MockLlm::start(Some(SECRET));
    let server = llm_server(&mock).await;
    let (mut alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;

    alice
        .send("<remember key=\"k\">alice's</remember>")
        .await
        .unwrap();
    assert!(recv_until(&mut alice, "<message")
        .await
        .contains("<remembered"));
    bob.send("<recall key=\"k\"/>").await.unwrap();
    let answer = recv_until(&mut bob, "<message").await;
    assert!(
        answer.contains("missing=\"true\""),
        "bob saw alice's key: {answer}"
    );
    alice.send("<recall key=\"k\"/>").await.unwrap();
    assert!(recv_until(&mut alice, "<message")
        .await
        .contains(">alice's</recalled>"));

    // Past the quota (64 bytes of keys and values): refused in the guest,
    // nothing written, audited.
    let long = "x".repeat(100);
    alice
        .send(&format!("<remember key=\"k\">{long}</remember>"))
        .await
        .unwrap();
    let refused = recv_until(&mut alice, "<message").await;
    assert!(
        refused.contains("<memo-failed>") && refused.contains("at most 64 bytes"),
        "{refused}"
    );
    alice.send("<recall key=\"k\"/>").await.unwrap();
    assert!(recv_until(&mut alice, "<message")
        .await
        .contains(">alice's</recalled>"));

    // The agent bucket is shared by sessions.
    alice.send("<tally/>").await.unwrap();
    let tally = recv_text(&mut alice).await;
    assert!(tally.contains("<tally-is>1</tally-is>"), "{tally}");
    bob.send("<tally/>").await.unwrap();
    assert!(recv_until(&mut bob, "<message")
        .await
        .contains("<tally-is>2</tally-is>"));

    let writes: Vec<String> = server
        .audit
        .records()
        .into_iter()
        .filter(|r| r.kind == AuditKind::Capability && r.tag == "kv-write")
        .map(|r| r.canonical)
        .collect();
    assert_eq!(writes.len(), 4, "{writes:?}");
    assert!(
        writes[1].contains("error=\"the bucket holds at most 64 bytes"),
        "{writes:?}"
    );
    assert!(
        writes.iter().all(|w| !w.contains("alice's")),
        "values are never audited"
    );

    // A hostile key as large as a frame is refused by the quota, and its
    // audit entry stays small.
    let huge = "k".repeat(100_000);
    alice
        .send(&format!("<remember key=\"{huge}\">x</remember>"))
        .await
        .unwrap();
    assert!(recv_until(&mut alice, "<message")
        .await
        .contains("<memo-failed>"));
    let last = server
        .audit
        .records()
        .into_iter()
        .rfind(|r| r.kind == AuditKind::Capability && r.tag == "kv-write")
        .expect("the refused write is audited");
    assert!(last.canonical.contains("error="), "{}", last.canonical);
    assert!(
        last.canonical.len() < 1_024,
        "{} bytes",
        last.canonical.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_leaves_nothing_in_its_bucket() {
    let store = Arc::new(MemoryKeyValueStore::new());
    let runtime = Runtime::with_services(
        small_runtime_config(),
        RuntimeServices {
            keyvalue: store.clone(),
            ..RuntimeServices::default()
        },
    )
    .unwrap();
    let component = runtime
        .load_component_file(&agent_wasm("memo"))
        .expect("memo loads");
    let quota = BucketQuota {
        max_keys: 4,
        max_bytes: 256,
    };
    let limits = AgentLimits {
        grants: agentserver::capability::AgentGrants {
            http: None,
            storage: Some(StorageGrant {
                session: Some(quota),
                agent: None,
            }),
        },
        ..AgentLimits::default()
    };
    let memo = runtime.agent("memo", component, limits).unwrap();
    let session = SessionKey::from("s1");
    let answer = memo
        .call(
            &session,
            Delivery {
                thread: "t",
                sender: "user:a",
                tag: "remember",
                payload: "<remember key=\"k\">kept</remember>",
                emitter: None,
            },
        )
        .await
        .unwrap();
    assert!(answer[0].contains("<remembered"), "{answer:?}");
    let bucket = agentserver::capability::Bucket::session("memo", "s1");
    assert_eq!(store.get(&bucket, "k").unwrap().unwrap(), b"kept");
    memo.end_session(&session);
    assert_eq!(store.get(&bucket, "k").unwrap(), None);
    assert_eq!(store.keys(&bucket, 0).unwrap(), (Vec::new(), None));
}
