//! The Python example agents (`example-agents/python`, CPython built into
//! components by componentize-py from `wit/agent.wit`): `stats` answers
//! exactly and keeps its state per session; `spin-py`, an interpreter stuck in
//! `while True: pass`, is stopped by its fuel or wall-time limit and leaves
//! the runtime working.
//!
//! Build them first: `bash example-agents/python/build.sh target/agents`.

use agentserver::runtime::{Agent, AgentLimits, CallError, GuestFailure};
use agentserver_tests::{call, component, runtime};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Linear memory a Python agent instance may hold: the default, 16 MiB.
/// A componentize-py component starts with 197 pages (12.3 MiB: CPython and
/// the app, pre-initialized) and `stats` stayed within 200 pages (12.5 MiB)
/// even summarizing 20,000 numbers in one call; below 197 pages an instance
/// cannot start (see the test below).
const PYTHON_MEMORY_BYTES: usize = 16 << 20;

/// Fuel one call of a Python agent may burn: the default, 50,000,000. A
/// fresh instance's first `<stats>` call of three numbers burns about
/// 1,060,000 (instantiating takes its own, smaller, budget), and each further
/// number about 28,000 more (`statistics.mean` and `stdev` compute exactly,
/// with fractions): some 1,700 numbers per call, or per session for
/// `<stats-total/>`, fit in the default. `while True: pass` burns it in about
/// 5 ms.
const PYTHON_FUEL: u64 = 50_000_000;

/// The limits the Python agents run under here (the wall-time limit is the
/// default 1 s; a warm `stats` call takes well under a millisecond).
fn python_limits() -> AgentLimits {
    AgentLimits {
        memory_bytes: PYTHON_MEMORY_BYTES,
        fuel: PYTHON_FUEL,
        ..AgentLimits::default()
    }
}

/// A fresh agent running Python agent `name` under `limits`.
fn python_agent(name: &str, limits: AgentLimits) -> Arc<Agent> {
    runtime()
        .agent(name, component(name), limits)
        .expect("make agent")
}

/// `<stats>NUMBERS</stats>` in `session`.
async fn stats(agent: &Agent, session: &str, numbers: &str) -> Result<Vec<String>, CallError> {
    call(
        agent,
        session,
        "stats",
        &format!("<stats>{numbers}</stats>"),
    )
    .await
}

/// `<stats-total/>` in `session` (in exclusive canonical form, as delivered).
async fn total(agent: &Agent, session: &str) -> Result<Vec<String>, CallError> {
    call(agent, session, "stats-total", "<stats-total></stats-total>").await
}

fn malformed(result: Result<Vec<String>, CallError>) -> String {
    match result {
        Err(CallError::Guest(GuestFailure::Malformed(reason))) => reason,
        other => panic!("expected a malformed failure, got {other:?}"),
    }
}

#[tokio::test]
async fn stats_answers_count_mean_median_and_sample_stdev() {
    let agent = python_agent("stats", python_limits());
    for (numbers, expected) in [
        (
            "1 2 3.5",
            r#"<stats-result count="3" mean="2.1666666666666665" median="2" stdev="1.2583057392117916"/>"#,
        ),
        (
            "1, 2, 3, 4",
            r#"<stats-result count="4" mean="2.5" median="2.5" stdev="1.2909944487358056"/>"#,
        ),
        (
            "2,4 4\n4 5,5 7 9",
            r#"<stats-result count="8" mean="5" median="4.5" stdev="2.138089935299395"/>"#,
        ),
        (
            "1.5 -2.25 1e3 7",
            r#"<stats-result count="4" mean="251.5625" median="4.25" stdev="498.9727938057679"/>"#,
        ),
        (
            "42",
            r#"<stats-result count="1" mean="42" median="42" stdev="0"/>"#,
        ),
    ] {
        let out = stats(&agent, "s1", numbers).await;
        assert_eq!(out.unwrap(), [expected], "{numbers:?}");
    }
}

#[tokio::test]
async fn stats_refuses_bad_numbers_as_malformed_naming_the_token() {
    let agent = python_agent("stats", python_limits());
    for (numbers, expected) in [
        ("1 2 abc 4", "number 3, 'abc', is not a number"),
        ("1,nan", "number 2, 'nan', is not finite"),
        ("-inf", "number 1, '-inf', is not finite"),
        ("1 1e999", "number 2, '1e999', is too large for a double"),
        ("1 &amp; 2", "number 2, '&', is not a number"),
        ("", "no numbers"),
        (" , ", "no numbers"),
        (
            "1 <n>2</n>",
            "<stats> takes its numbers as text, not child elements (found <n>)",
        ),
    ] {
        let reason = malformed(stats(&agent, "s1", numbers).await);
        assert!(reason.contains(expected), "{numbers:?}: {reason}");
    }
    // A failure is the agent's answer, not a crash: the instance stays.
    assert_eq!(agent.stats().instances, 1);
    let out = stats(&agent, "s1", "1 2").await.unwrap();
    assert_eq!(
        out,
        [r#"<stats-result count="2" mean="1.5" median="1.5" stdev="0.7071067811865476"/>"#]
    );
}

#[tokio::test]
async fn stats_totals_are_per_session() {
    let agent = python_agent("stats", python_limits());
    match total(&agent, "carol").await {
        Err(CallError::Guest(GuestFailure::Refused(reason))) => {
            assert!(reason.contains("no numbers yet"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    stats(&agent, "alice", "1 2 3").await.unwrap();
    stats(&agent, "bob", "10, 20").await.unwrap();
    malformed(stats(&agent, "alice", "4 x").await); // accepts nothing
    stats(&agent, "alice", "4").await.unwrap();
    assert_eq!(
        total(&agent, "alice").await.unwrap(),
        [
            r#"<stats-result scope="session" count="4" mean="2.5" median="2.5" stdev="1.2909944487358056"/>"#
        ]
    );
    assert_eq!(
        total(&agent, "bob").await.unwrap(),
        [
            r#"<stats-result scope="session" count="2" mean="15" median="15" stdev="7.0710678118654755"/>"#
        ]
    );
    assert_eq!(agent.stats().instances, 3);
}

/// Waits (at most 10 s) for `agent` to have a spare instance ready.
async fn spare_made(agent: &Agent) -> bool {
    for _ in 0..10_000 {
        if agent.stats().spare_ready {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

#[tokio::test]
async fn a_new_session_takes_a_spare_instance_made_in_the_background() {
    // Instantiating CPython's 14 linked modules takes far longer than the
    // 100 µs past which an agent keeps a spare instance.
    let agent = python_agent("stats", python_limits());
    stats(&agent, "dora", "1 2 3").await.unwrap();
    assert!(
        spare_made(&agent).await,
        "a spare is made after the first session"
    );
    assert_eq!(
        agent.stats().instances,
        1,
        "a spare is no session's instance"
    );

    // The next session takes the spare (fresh: it was never called)...
    assert_eq!(
        stats(&agent, "eve", "5").await.unwrap(),
        [r#"<stats-result count="1" mean="5" median="5" stdev="0"/>"#]
    );
    let after = agent.stats();
    assert!(!after.spare_ready, "the spare was taken");
    assert_eq!(after.instances, 2);
    assert_eq!(
        total(&agent, "eve").await.unwrap(),
        [r#"<stats-result scope="session" count="1" mean="5" median="5" stdev="0"/>"#]
    );
    // ...and another is made behind it.
    assert!(spare_made(&agent).await, "the spare is replaced");
}

#[tokio::test]
async fn a_python_agent_needs_its_initial_memory_to_start() {
    let limits = AgentLimits {
        memory_bytes: 12 << 20,
        ..python_limits()
    };
    let agent = python_agent("stats", limits);
    let out = stats(&agent, "s1", "1").await;
    assert_eq!(
        out,
        Err(CallError::OutOfMemory {
            limit_bytes: 12 << 20
        })
    );
    assert_eq!(agent.stats().instances, 0);
}

#[tokio::test]
async fn a_python_agent_spinning_forever_is_stopped_and_the_runtime_goes_on() {
    let limits = python_limits();
    let spin = python_agent("spin-py", limits.clone());
    for _ in 0..2 {
        let started = Instant::now();
        let out = call(&spin, "victim", "spin-py", "<spin-py></spin-py>").await;
        let took = started.elapsed();
        assert!(
            matches!(
                out,
                Err(CallError::OutOfFuel { fuel: PYTHON_FUEL })
                    | Err(CallError::Timeout { timeout_ms: 1_000 })
            ),
            "expected running out of fuel or time, got {out:?}"
        );
        assert!(
            took < limits.timeout() + Duration::from_secs(1),
            "stopped only after {took:?}"
        );
        assert_eq!(spin.stats().instances, 0, "the stuck instance is dropped");
    }
    let agent = python_agent("stats", python_limits());
    assert_eq!(
        stats(&agent, "bystander", "6 7").await.unwrap(),
        [r#"<stats-result count="2" mean="6.5" median="6.5" stdev="0.7071067811865476"/>"#]
    );
}

#[tokio::test]
async fn a_python_agent_spinning_with_fuel_to_spare_is_stopped_by_its_wall_time() {
    let limits = AgentLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 200,
        ..python_limits()
    };
    let spin = python_agent("spin-py", limits);
    let started = Instant::now();
    let out = call(&spin, "victim", "spin-py", "<spin-py></spin-py>").await;
    assert_eq!(out, Err(CallError::Timeout { timeout_ms: 200 }));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "stopped only after {took:?}");
    assert_eq!(spin.stats().instances, 0, "the stuck instance is dropped");
}
