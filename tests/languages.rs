//! Agents in five languages through the real server, over the real TLS
//! port: the Rust, Python, JavaScript, C and Go example agents booted from
//! the organism's configuration answer and refuse bad input; interpreters
//! and a Go program stuck in a loop end in `agent-failed` while the others
//! go on; Python and Go agents keep state per session.
//!
//! Run-time admission of each language by a signed command, with the very
//! commands of `docs/agents/`, is tested in `host/tests/agent_docs.rs`.

use agentserver_tests::{agent_wasm, crc32, recv_text, TestServer};

/// One boot agent as an `[[agent]]` table, with its limits.
fn agent_table(name: &str, component: &str, tags: &[&str], limits: &str) -> String {
    let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[agent]]\nname = {name:?}\ncomponent = {:?}\nlistens = [{}]\n{limits}\n",
        agent_wasm(component).display().to_string(),
        tags.join(", ")
    )
}

/// A server with an agent of each language, the two spinning interpreters,
/// and users `alice` and `bob` allowed everything.
async fn polyglot_server() -> TestServer {
    let agents = [
        agent_table("echo", "echo", &["echo"], ""),
        agent_table("stats", "stats", &["stats", "stats-total"], ""),
        agent_table("sort", "sort", &["sort"], ""),
        agent_table("checksum", "checksum", &["checksum"], ""),
        agent_table("wordfreq", "wordfreq", &["wordfreq", "wordfreq-total"], ""),
        // Fuel to spare: the wall-time limit has to stop these.
        agent_table(
            "spin-py",
            "spin-py",
            &["spin-py"],
            "fuel = 100_000_000_000\ntimeout_ms = 300",
        ),
        agent_table(
            "spin-js",
            "spin-js",
            &["spin-js"],
            "fuel = 100_000_000_000\ntimeout_ms = 300",
        ),
        agent_table(
            "spin-go",
            "spin-go",
            &["spin-go"],
            "fuel = 100_000_000_000\ntimeout_ms = 300",
        ),
    ];
    TestServer::start_with(&[("alice", &["*"]), ("bob", &["*"])], &[], &agents.concat()).await
}

/// The payload of a `<message>` envelope: what follows `</meta>`.
fn payload(frame: &str) -> &str {
    frame
        .split_once("</meta>")
        .and_then(|(_, rest)| rest.strip_suffix("</message>"))
        .unwrap_or_else(|| panic!("not a message: {frame}"))
}

async fn ask(client: &mut agentserver::client::Client, message: &str) -> String {
    client.send(message).await.expect("send");
    recv_text(client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_language_answers_and_refuses_bad_input() {
    let server = polyglot_server().await;
    let (mut alice, catalog) = server.login("alice").await;
    for tag in [
        "checksum",
        "echo",
        "sort",
        "stats",
        "stats-total",
        "wordfreq",
        "wordfreq-total",
    ] {
        assert!(
            catalog.contains(&format!("tag=\"{tag}\"")),
            "{tag} in {catalog}"
        );
    }

    let answers = [
        ("<echo>hi</echo>", "<echoed>hi</echoed>"),
        (
            "<stats>1 2 3.5 4</stats>",
            r#"<stats-result count="4" mean="2.625" median="2.75" stdev="1.3768926368215255"></stats-result>"#,
        ),
        (
            r#"<sort order="desc">pear apple fig</sort>"#,
            "pear fig apple</sorted>",
        ),
        ("<checksum>123456789</checksum>", "<crc32>cbf43926</crc32>"),
        (
            r#"<wordfreq top="2">The cat and the hat</wordfreq>"#,
            r#"<word-counts distinct="4" words="5"><word count="2">the</word><word count="1">and</word></word-counts>"#,
        ),
        (
            "<checksum>a &amp; b</checksum>",
            &format!("<crc32>{:08x}</crc32>", crc32(b"a & b")),
        ),
    ];
    for (question, answer) in answers {
        let frame = ask(&mut alice, question).await;
        assert!(payload(&frame).ends_with(answer), "{question}: {frame}");
    }

    let refusals = [
        ("<stats>1 two 3</stats>", "stats", "malformed: "),
        (
            r#"<sort order="sideways">a b</sort>"#,
            "sort",
            "malformed: ",
        ),
        ("<checksum><b>x</b></checksum>", "checksum", "malformed: "),
        (
            r#"<wordfreq top="none">x</wordfreq>"#,
            "wordfreq",
            "malformed: top=\"none\" is not a whole number from 1 to 1000",
        ),
    ];
    for (question, agent, reason) in refusals {
        let frame = ask(&mut alice, question).await;
        assert!(
            frame.starts_with(&format!(r#"<error agent="{agent}" code="agent-failed""#))
                && frame.contains(reason),
            "{question}: {frame}"
        );
    }
    // The sort agent says how it collates.
    let frame = ask(&mut alice, "<sort>b a</sort>").await;
    assert!(payload(&frame).starts_with("<sorted collation="), "{frame}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_stuck_in_a_loop_fail_while_the_others_answer() {
    let server = polyglot_server().await;
    let (mut alice, _) = server.login("alice").await;
    alice.send("<spin-py/>").await.expect("send");
    alice.send("<spin-js/>").await.expect("send");
    alice.send("<spin-go/>").await.expect("send");
    // Answered while the two interpreters and the Go program spin.
    alice
        .send("<checksum>123456789</checksum>")
        .await
        .expect("send");
    alice.send("<stats>2 4</stats>").await.expect("send");

    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(recv_text(&mut alice).await);
    }
    for agent in ["spin-py", "spin-js", "spin-go"] {
        let failure = frames
            .iter()
            .find(|f| f.starts_with(&format!(r#"<error agent="{agent}" code="agent-failed""#)))
            .unwrap_or_else(|| panic!("{agent} failed: {frames:?}"));
        assert!(
            failure.contains("exceeded its time limit of 300 ms"),
            "{failure}"
        );
    }
    assert!(
        frames
            .iter()
            .any(|f| f.ends_with("<crc32>cbf43926</crc32></message>")),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f.contains(r#"<stats-result count="2" mean="3""#)),
        "{frames:?}"
    );
    // The spinning agents take new calls afterwards (and fail them again).
    let again = ask(&mut alice, "<spin-py/>").await;
    assert!(again.contains("agent-failed"), "{again}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_go_agents_keep_state_per_session() {
    let server = polyglot_server().await;
    let (mut alice, _) = server.login("alice").await;
    let (mut bob, _) = server.login("bob").await;
    ask(&mut alice, "<stats>1 2 3</stats>").await;
    ask(&mut alice, "<stats>10</stats>").await;
    ask(&mut bob, "<stats>5 7</stats>").await;

    let alice_total = ask(&mut alice, "<stats-total/>").await;
    assert!(
        payload(&alice_total).starts_with(r#"<stats-result count="4" mean="4""#)
            && alice_total.contains(r#"scope="session""#),
        "{alice_total}"
    );
    let bob_total = ask(&mut bob, "<stats-total/>").await;
    assert!(
        payload(&bob_total).starts_with(r#"<stats-result count="2" mean="6""#),
        "{bob_total}"
    );

    ask(&mut alice, "<wordfreq>to be or not to be</wordfreq>").await;
    ask(&mut bob, "<wordfreq>be quick</wordfreq>").await;
    ask(&mut alice, "<wordfreq>be</wordfreq>").await;
    let alice_words = ask(&mut alice, r#"<wordfreq-total top="1"/>"#).await;
    assert!(
        payload(&alice_words).ends_with(
            r#"<word-counts distinct="4" texts="2" words="7"><word count="3">be</word></word-counts>"#
        ),
        "{alice_words}"
    );
    let bob_words = ask(&mut bob, r#"<wordfreq-total top="1"/>"#).await;
    assert!(
        payload(&bob_words).ends_with(
            r#"<word-counts distinct="2" texts="1" words="2"><word count="1">be</word></word-counts>"#
        ),
        "{bob_words}"
    );
    server.stop().await;
}
