//! The JavaScript example agents (example-agents/javascript), built with
//! componentize-js: a StarlingMonkey (SpiderMonkey) engine and the agent's
//! script in one ~12 MB component. Build them with
//! `node example-agents/javascript/build.mjs target/agents`.

use agentserver::runtime::{Agent, AgentLimits, CallError, GuestFailure};
use agentserver_tests::{call, component, runtime};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The JS agents run under the default limits, which fit them: an instance
/// starts with 9.1 MiB of linear memory (the engine's pre-initialized
/// snapshot; 9,502,720 bytes is the least that instantiates) and sorting
/// 5,000 words grows it no further, well under the 16 MiB default; a fresh
/// instance's first call of a few words burns about 2.3 million units of
/// fuel (instantiation about 1.1 million of them), 1,000 words about 45
/// million, against the default 50 million.
fn js_limits() -> AgentLimits {
    AgentLimits::default()
}

fn sort_agent() -> Arc<Agent> {
    runtime()
        .agent("sort", component("sort"), js_limits())
        .expect("make agent")
}

/// `input` as the bus delivers it: in exclusive canonical form.
fn canonical(input: &str) -> String {
    agentserver::xml::canonicalize(input.as_bytes(), &Default::default(), &[])
        .expect("canonicalize")
        .into_string()
}

/// Sends `input` (canonicalized first) to `agent` in `session`; checks that
/// every payload returned is itself canonical.
async fn sort(agent: &Agent, session: &str, input: &str) -> Result<Vec<String>, CallError> {
    let out = call(agent, session, "sort", &canonical(input)).await?;
    for payload in &out {
        assert_eq!(&canonical(payload), payload, "answer is canonical");
    }
    Ok(out)
}

// StarlingMonkey, the engine componentize-js embeds, is built without the
// ECMAScript Intl API: the agent sorts by code point and says so.

#[tokio::test]
async fn sort_answers_in_ascending_order_by_default() {
    let agent = sort_agent();
    let out = sort(
        &agent,
        "s1",
        "<sort>pear Apple  banana\n\tapple été Été</sort>",
    )
    .await;
    assert_eq!(
        out.unwrap(),
        [r#"<sorted collation="codepoint">Apple apple banana pear Été été</sorted>"#]
    );
    let out = sort(&agent, "s1", r#"<sort order="asc">b c a</sort>"#).await;
    assert_eq!(
        out.unwrap(),
        [r#"<sorted collation="codepoint">a b c</sorted>"#]
    );
}

#[tokio::test]
async fn sort_answers_in_descending_order_with_escaped_characters() {
    let agent = sort_agent();
    let out = sort(
        &agent,
        "s1",
        r#"<sort order='desc'>fish&amp;chips &lt;tag&gt; zebra "quoted" a&#62;b</sort>"#,
    )
    .await;
    assert_eq!(
        out.unwrap(),
        [
            r#"<sorted collation="codepoint">zebra fish&amp;chips a&gt;b &lt;tag&gt; "quoted"</sorted>"#
        ]
    );
}

#[tokio::test]
async fn sort_answers_an_empty_list() {
    let agent = sort_agent();
    let out = sort(&agent, "s1", "<sort/>").await;
    assert_eq!(out.unwrap(), [r#"<sorted collation="codepoint"></sorted>"#]);
}

#[tokio::test]
async fn sort_with_a_bad_order_is_malformed_and_keeps_its_instance() {
    let agent = sort_agent();
    let out = sort(&agent, "s1", r#"<sort order="sideways">b a</sort>"#).await;
    assert_eq!(
        out,
        Err(CallError::Guest(GuestFailure::Malformed(
            r#"order must be "asc" or "desc", not "sideways""#.into()
        )))
    );
    let out = sort(&agent, "s1", "<sort>b <i>a</i></sort>").await;
    match out {
        Err(CallError::Guest(GuestFailure::Malformed(reason))) => {
            assert!(reason.contains("child element <i>"), "{reason}")
        }
        other => panic!("expected malformed, got {other:?}"),
    }
    assert_eq!(agent.stats().instances, 1);
    let out = sort(&agent, "s1", "<sort>b a</sort>").await;
    assert_eq!(
        out.unwrap(),
        [r#"<sorted collation="codepoint">a b</sorted>"#]
    );
}

/// Runs the spin agent under `limits`, checks how it ended and that its
/// instance is gone, then that the runtime still answers a sort call.
async fn spin_ends(limits: AgentLimits, ended: impl Fn(&CallError) -> bool) {
    let spin = runtime()
        .agent("spin-js", component("spin-js"), limits)
        .expect("make agent");
    let started = Instant::now();
    let out = call(&spin, "victim", "spin-js", "<spin-js></spin-js>").await;
    let took = started.elapsed();
    match &out {
        Err(error) if ended(error) => {}
        other => panic!("unexpected end of the spin agent: {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    assert_eq!(spin.stats().instances, 0, "the spinning instance is gone");

    let agent = sort_agent();
    let out = sort(&agent, "bystander", r#"<sort order="desc">a c b</sort>"#).await;
    assert_eq!(
        out.unwrap(),
        [r#"<sorted collation="codepoint">c b a</sorted>"#]
    );
}

#[tokio::test]
async fn a_js_agent_in_an_endless_loop_is_stopped_and_the_runtime_goes_on() {
    // Whichever limit hits first. (The interpreter burns about 20 billion
    // units of fuel a second here, so with the defaults it is the fuel, in a
    // few milliseconds.)
    let limits = js_limits();
    let (fuel, timeout_ms) = (limits.fuel, limits.timeout_ms);
    spin_ends(limits, |error| {
        *error == CallError::OutOfFuel { fuel } || *error == CallError::Timeout { timeout_ms }
    })
    .await;
}

#[tokio::test]
async fn a_js_agent_in_an_endless_loop_with_fuel_to_spare_is_stopped_by_the_clock() {
    let limits = AgentLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 200,
        ..js_limits()
    };
    spin_ends(limits, |error| {
        *error == CallError::Timeout { timeout_ms: 200 }
    })
    .await;
}
