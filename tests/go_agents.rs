//! The Go example agents (`example-agents/go`, built by Go for wasip1 from
//! `wit/agent.wit` with wit-bindgen's Go bindings) over the real runtime:
//! `wordfreq` ranks the words of its text and keeps a tally per session,
//! refuses what it does not understand as malformed and goes on answering;
//! `echo-go` echoes; `spin-go`, a Go program stuck in a loop, is stopped by
//! its limits; many calls in one instance stay within its memory limit
//! while Go's collector frees what each call allocated.
//!
//! Build them first: `bash example-agents/go/build.sh target/agents`.

use agentserver::runtime::{AgentLimits, CallError, GuestFailure};
use agentserver_tests::{agent, call};
use std::time::{Duration, Instant};

#[tokio::test]
async fn wordfreq_ranks_the_words_of_its_text() {
    let wordfreq = agent("wordfreq", AgentLimits::default());
    for (payload, expected) in [
        (
            r#"<wordfreq top="3">the cat and the hat and the bat</wordfreq>"#,
            r#"<word-counts distinct="5" words="8"><word count="3">the</word><word count="2">and</word><word count="1">bat</word></word-counts>"#,
        ),
        (
            "<wordfreq>Don&apos;t panic &amp; DON'T</wordfreq>",
            r#"<word-counts distinct="2" words="3"><word count="2">don't</word><word count="1">panic</word></word-counts>"#,
        ),
        (
            "<wordfreq></wordfreq>",
            r#"<word-counts distinct="0" words="0"></word-counts>"#,
        ),
    ] {
        let out = call(&wordfreq, "s1", "wordfreq", payload).await;
        assert_eq!(out.unwrap(), [expected], "{payload}");
    }
}

#[tokio::test]
async fn wordfreq_keeps_a_tally_per_session() {
    let wordfreq = agent("wordfreq", AgentLimits::default());
    call(&wordfreq, "alice", "wordfreq", "<wordfreq>a b a</wordfreq>")
        .await
        .unwrap();
    call(&wordfreq, "alice", "wordfreq", "<wordfreq>b c</wordfreq>")
        .await
        .unwrap();
    call(&wordfreq, "bob", "wordfreq", "<wordfreq>z</wordfreq>")
        .await
        .unwrap();
    let alice = call(
        &wordfreq,
        "alice",
        "wordfreq-total",
        r#"<wordfreq-total top="2"></wordfreq-total>"#,
    )
    .await;
    assert_eq!(
        alice.unwrap(),
        [
            r#"<word-counts distinct="3" texts="2" words="5"><word count="2">a</word><word count="2">b</word></word-counts>"#
        ]
    );
    let bob = call(
        &wordfreq,
        "bob",
        "wordfreq-total",
        "<wordfreq-total></wordfreq-total>",
    )
    .await;
    assert_eq!(
        bob.unwrap(),
        [r#"<word-counts distinct="1" texts="1" words="1"><word count="1">z</word></word-counts>"#]
    );
    assert_eq!(wordfreq.stats().instances, 2);
}

#[tokio::test]
async fn wordfreq_refuses_what_it_does_not_understand() {
    let wordfreq = agent("wordfreq", AgentLimits::default());
    for (tag, payload, expected) in [
        (
            "wordfreq",
            "<wordfreq>a <b>bold</b> move</wordfreq>",
            "<wordfreq> takes text only, but holds the child element <b>: escape markup as &lt;",
        ),
        (
            "wordfreq",
            r#"<wordfreq top="0">a</wordfreq>"#,
            r#"top="0" is not a whole number from 1 to 1000"#,
        ),
        (
            "words",
            "<words>a</words>",
            "wordfreq listens to <wordfreq> and <wordfreq-total>, not <words>",
        ),
    ] {
        match call(&wordfreq, "s1", tag, payload).await {
            Err(CallError::Guest(GuestFailure::Malformed(reason))) => {
                assert_eq!(reason, expected, "{payload}")
            }
            other => panic!("expected malformed for {payload}, got {other:?}"),
        }
        // The instance is kept and goes on answering.
        let out = call(&wordfreq, "s1", "wordfreq", "<wordfreq>ok</wordfreq>").await;
        assert_eq!(
            out.unwrap(),
            [r#"<word-counts distinct="1" words="1"><word count="1">ok</word></word-counts>"#]
        );
    }
    assert_eq!(wordfreq.stats().instances, 1);
}

#[tokio::test]
async fn echo_go_echoes() {
    let echo = agent("echo-go", AgentLimits::default());
    let out = call(&echo, "s1", "echo", "<echo>hello, &lt;agent&gt;</echo>").await;
    assert_eq!(out.unwrap(), ["<echoed>hello, &lt;agent&gt;</echoed>"]);
    match call(&echo, "s1", "echo", "no element").await {
        Err(CallError::Guest(GuestFailure::Malformed(reason))) => {
            assert_eq!(reason, "expected one element")
        }
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_go_loop_is_stopped_by_its_limits() {
    // Fuel to spare: the wall-time limit has to stop it.
    let by_time = agent(
        "spin-go",
        AgentLimits {
            fuel: 100_000_000_000,
            timeout_ms: 200,
            ..AgentLimits::default()
        },
    );
    let started = Instant::now();
    let out = call(&by_time, "s1", "spin-go", "<spin-go></spin-go>").await;
    assert_eq!(out, Err(CallError::Timeout { timeout_ms: 200 }));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Time to spare: the fuel runs out first.
    let by_fuel = agent(
        "spin-go",
        AgentLimits {
            fuel: 5_000_000,
            timeout_ms: 60_000,
            ..AgentLimits::default()
        },
    );
    let out = call(&by_fuel, "s1", "spin-go", "<spin-go></spin-go>").await;
    assert_eq!(out, Err(CallError::OutOfFuel { fuel: 5_000_000 }));
}

/// Ten thousand calls with 1 KB texts in one instance, under the default
/// 16 MiB memory limit: each call allocates its parsed text, words and
/// answer, about 10 KB, so the instance stays within bounds only if Go's
/// collector frees them.
#[tokio::test]
async fn many_calls_in_one_instance_stay_within_its_memory() {
    let limits = AgentLimits::default();
    assert_eq!(limits.memory_bytes, 16 << 20);
    let wordfreq = agent("wordfreq", limits);
    let mut text = String::new();
    while text.len() < 1024 {
        text.push_str("the quick brown fox jumps over the lazy dog ");
    }
    for i in 0..10_000u32 {
        let payload = format!("<wordfreq top=\"1\">call{i} {text}</wordfreq>");
        match call(&wordfreq, "one-session", "wordfreq", &payload).await {
            Ok(out) => assert!(
                out[0].ends_with(r#"<word count="48">the</word></word-counts>"#),
                "call {i}: {out:?}"
            ),
            Err(err) => panic!("call {i} failed: {err}"),
        }
    }
    let stats = wordfreq.stats();
    assert_eq!((stats.instances, stats.calls), (1, 10_000));
}

/// A thousand 64 KiB messages to one instance: each copy of a message into
/// the instance is a large allocation, where Go checks whether to start a
/// collection. Started there — inside `cabi_realloc`, where a component
/// may not call the host — a collection reads the clock and the call traps;
/// the guest SDK keeps the collector off outside the handler, so every
/// call answers.
#[tokio::test]
async fn large_messages_do_not_start_a_collection_inside_the_hosts_allocation() {
    let echo = agent("echo-go", AgentLimits::default());
    let text = "0123456789abcdef".repeat(4096);
    for i in 0..1_000u32 {
        let payload = format!("<echo>{i:04}{text}</echo>");
        match call(&echo, "one-session", "echo", &payload).await {
            Ok(out) => assert_eq!(out[0].len(), payload.len() + 4, "call {i}"),
            Err(err) => panic!("call {i} failed: {err}"),
        }
    }
    assert_eq!(echo.stats().instances, 1);
}
