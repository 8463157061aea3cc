//! The agent runtime with the real example components: answers, limits,
//! sessions, concurrency, refusals and the compile cache.

use agentserver::runtime::{
    AgentLimits, CallError, ComponentHash, ComponentOrigin, GuestFailure, LoadError, Runtime,
    RuntimeConfig,
};
use agentserver_tests::{agent, agent_bytes, agent_wasm, call, runtime, small_runtime_config};
use std::time::Duration;

#[tokio::test]
async fn echo_answers_with_the_same_content() {
    let echo = agent("echo", AgentLimits::default());
    let out = call(
        &echo,
        "s1",
        "echo",
        "<echo>hello <b>world</b> &amp; more</echo>",
    )
    .await;
    assert_eq!(
        out.unwrap(),
        ["<echoed>hello <b>world</b> &amp; more</echoed>"]
    );
}

#[tokio::test]
async fn calculator_evaluates_expressions() {
    let calc = agent("calculator", AgentLimits::default());
    for (expression, expected) in [
        ("2 + 3 * 4", "14"),
        ("(1 + 2) * 3", "9"),
        ("-(2.5 + .5) / 2", "-1.5"),
        ("3*3+4*4", "25"),
    ] {
        let payload = format!("<calculate>{expression}</calculate>");
        let out = call(&calc, "s1", "calculate", &payload).await.unwrap();
        assert_eq!(
            out,
            [format!("<result>{expected}</result>")],
            "{expression}"
        );
    }
}

#[tokio::test]
async fn calculator_refuses_a_bad_expression_as_malformed_and_keeps_going() {
    let calc = agent("calculator", AgentLimits::default());
    let out = call(&calc, "s1", "calculate", "<calculate>2 + * 3</calculate>").await;
    match out {
        Err(CallError::Guest(GuestFailure::Malformed(reason))) => {
            assert!(reason.contains("unexpected '*' at position 5"), "{reason}")
        }
        other => panic!("expected malformed, got {other:?}"),
    }
    let out = call(&calc, "s1", "calculate", "<calculate>1/4</calculate>").await;
    assert_eq!(out.unwrap(), ["<result>0.25</result>"]);
}

#[tokio::test]
async fn delegator_emits_the_calculation_for_the_calculator() {
    let delegator = agent("delegator", AgentLimits::default());
    let out = call(
        &delegator,
        "s1",
        "square-sum",
        "<square-sum><n>3</n><n>4</n></square-sum>",
    )
    .await;
    assert_eq!(out.unwrap(), ["<calculate>3*3+4*4</calculate>"]);
}

#[tokio::test]
async fn counter_state_is_per_session() {
    let counter = agent("counter", AgentLimits::default());
    for expected in 1..=3 {
        let out = call(&counter, "alice", "count", "<count/>").await.unwrap();
        assert_eq!(out, [format!("<count-is>{expected}</count-is>")]);
    }
    let out = call(&counter, "bob", "count", "<count/>").await.unwrap();
    assert_eq!(out, ["<count-is>1</count-is>"]);
    let out = call(&counter, "alice", "count", "<count/>").await.unwrap();
    assert_eq!(out, ["<count-is>4</count-is>"]);
    assert_eq!(counter.stats().instances, 2);
}

#[tokio::test]
async fn counter_restarts_after_session_timeout_idle() {
    let counter = agent(
        "counter",
        AgentLimits {
            session_timeout: Duration::from_millis(100),
            ..AgentLimits::default()
        },
    );
    call(&counter, "alice", "count", "<count/>").await.unwrap();
    let out = call(&counter, "alice", "count", "<count/>").await.unwrap();
    assert_eq!(out, ["<count-is>2</count-is>"]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(counter.evict_idle(), 1);
    assert_eq!(counter.stats().instances, 0);
    let out = call(&counter, "alice", "count", "<count/>").await.unwrap();
    assert_eq!(out, ["<count-is>1</count-is>"]);
}

#[tokio::test]
async fn ending_a_session_drops_its_state() {
    let counter = agent("counter", AgentLimits::default());
    call(&counter, "alice", "count", "<count/>").await.unwrap();
    counter.end_session(&"alice".into());
    let out = call(&counter, "alice", "count", "<count/>").await.unwrap();
    assert_eq!(out, ["<count-is>1</count-is>"]);
}

/// Runs one hostile behaviour, checks its error, then checks that a fresh
/// instance of the same agent, in the same session, and another agent still
/// answer correctly.
async fn hostile_call_ends_with(tag: &str, limits: AgentLimits, expected: CallError) {
    let hostile = agent("hostile", limits);
    let payload = format!("<{tag}/>");
    let got = call(&hostile, "victim", tag, &payload).await;
    assert_eq!(got, Err(expected.clone()), "hostile <{tag}/>");
    let kept = usize::from(!expected.discarded_instance());
    assert_eq!(hostile.stats().instances, kept, "instance after <{tag}/>");
    let again = call(&hostile, "victim", "ok", "<ok/>").await;
    assert_eq!(again.unwrap(), ["<ok/>"], "fresh instance after <{tag}/>");
    let calc = agent("calculator", AgentLimits::default());
    let out = call(
        &calc,
        "bystander",
        "calculate",
        "<calculate>6*7</calculate>",
    )
    .await;
    assert_eq!(
        out.unwrap(),
        ["<result>42</result>"],
        "bystander after <{tag}/>"
    );
}

#[tokio::test]
async fn agent_in_endless_loop_runs_out_of_fuel() {
    let limits = AgentLimits {
        fuel: 20_000_000,
        ..AgentLimits::default()
    };
    hostile_call_ends_with("loop", limits, CallError::OutOfFuel { fuel: 20_000_000 }).await;
}

#[tokio::test]
async fn agent_spinning_past_its_wall_time_is_stopped() {
    let limits = AgentLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 200,
        ..AgentLimits::default()
    };
    hostile_call_ends_with("spin", limits, CallError::Timeout { timeout_ms: 200 }).await;
}

/// The epoch ticker sleeps while no guest runs; a guest that spins right
/// after a long quiet spell must still be interrupted at its wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_spinning_after_an_idle_spell_is_stopped() {
    let runtime = std::sync::Arc::new(Runtime::new(small_runtime_config()).expect("runtime"));
    let hostile = runtime
        .agent(
            "hostile",
            runtime
                .load_component_file(&agent_wasm("hostile"))
                .expect("load"),
            AgentLimits {
                fuel: u64::MAX / 2,
                timeout_ms: 200,
                ..AgentLimits::default()
            },
        )
        .expect("agent");
    assert_eq!(
        call(&hostile, "quiet", "ok", "<ok/>").await.unwrap(),
        ["<ok/>"]
    );
    // Long enough for the ticker to park (100 ticks of 1 ms without a guest).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spinning = tokio::spawn(async move { call(&hostile, "quiet", "spin", "<spin/>").await });
    let ended = tokio::time::timeout(Duration::from_secs(30), spinning)
        .await
        .expect("the spinning guest was interrupted");
    assert_eq!(ended.unwrap(), Err(CallError::Timeout { timeout_ms: 200 }));
}

#[tokio::test]
async fn agent_sleeping_past_its_wall_time_is_stopped() {
    let limits = AgentLimits {
        timeout_ms: 200,
        ..AgentLimits::default()
    };
    hostile_call_ends_with("sleep", limits, CallError::Timeout { timeout_ms: 200 }).await;
}

#[tokio::test]
async fn agent_growing_memory_without_bound_hits_its_memory_limit() {
    let limits = AgentLimits {
        memory_bytes: 8 << 20,
        fuel: u64::MAX / 2,
        ..AgentLimits::default()
    };
    let expected = CallError::OutOfMemory {
        limit_bytes: 8 << 20,
    };
    hostile_call_ends_with("grow", limits, expected).await;
}

#[tokio::test]
async fn agent_recursing_without_bound_overflows_its_stack() {
    let limits = AgentLimits {
        fuel: u64::MAX / 2,
        ..AgentLimits::default()
    };
    hostile_call_ends_with("recurse", limits, CallError::StackOverflow).await;
}

#[tokio::test]
async fn agent_executing_unreachable_traps() {
    let expected = CallError::Trap("wasm `unreachable` instruction executed".into());
    hostile_call_ends_with("trap", AgentLimits::default(), expected).await;
}

#[tokio::test]
async fn agent_returning_ten_thousand_payloads_is_refused() {
    let expected =
        CallError::InvalidOutput("returned 10000 payloads; the limit is 256 per call".into());
    hostile_call_ends_with("flood", AgentLimits::default(), expected).await;
}

#[tokio::test]
async fn agent_writing_megabytes_to_stdout_hits_its_output_limit() {
    let expected = CallError::OutputLimit {
        limit_bytes: 64 << 10,
    };
    hostile_call_ends_with("shout", AgentLimits::default(), expected).await;
}

#[tokio::test]
async fn agent_failure_reaches_the_caller_and_keeps_the_instance() {
    let hostile = agent("hostile", AgentLimits::default());
    let out = call(&hostile, "s1", "refuse", "<refuse/>").await;
    assert_eq!(
        out,
        Err(CallError::Guest(GuestFailure::Refused(
            "this agent declines".into()
        )))
    );
    let out = call(&hostile, "s1", "log", "<log/>").await;
    assert_eq!(out.unwrap(), ["<logged/>"]);
    assert_eq!(hostile.stats().instances, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_is_honoured_and_a_full_queue_is_busy() {
    let hostile = agent(
        "hostile",
        AgentLimits {
            max_concurrent: 2,
            max_queued: 3,
            ..AgentLimits::default()
        },
    );
    let calls = (0..10).map(|i| {
        let hostile = &hostile;
        async move {
            let session = format!("session-{i}");
            call(hostile, &session, "hold", r#"<hold ms="100"/>"#).await
        }
    });
    let results = futures_join_all(calls).await;
    let answered = results.iter().filter(|r| r.is_ok()).count();
    let busy = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(CallError::Busy {
                    max_concurrent: 2,
                    max_queued: 3
                })
            )
        })
        .count();
    assert_eq!((answered, busy), (5, 5), "{results:?}");
    let stats = hostile.stats();
    assert_eq!(stats.peak_in_flight, 2);
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
}

/// Polls all futures concurrently on the current task and collects their
/// outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let err = runtime()
        .load_component(b"#!/bin/sh\necho hi\n")
        .unwrap_err();
    assert!(matches!(err, LoadError::NotWasm), "{err}");
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let err = runtime().load_component(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, LoadError::CoreModule), "{err}");
}

#[test]
fn a_truncated_component_is_refused_as_invalid() {
    let bytes = agent_bytes("echo");
    let err = runtime()
        .load_component(&bytes[..bytes.len() / 2])
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[test]
fn a_component_not_implementing_the_world_is_refused() {
    // The smallest valid component: no imports, no exports.
    let err = runtime().load_component(b"\0asm\x0d\0\x01\0").unwrap_err();
    match err {
        LoadError::WorldMismatch(reason) => assert!(reason.contains("handle"), "{reason}"),
        other => panic!("expected a world mismatch, got {other}"),
    }
}

#[test]
fn component_hash_is_the_sha256_of_the_bytes() {
    let bytes = agent_bytes("echo");
    let loaded = runtime().load_component(&bytes).unwrap();
    assert_eq!(loaded.hash(), ComponentHash::of(&bytes));
    let hex = loaded.hash().to_string();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex.parse::<ComponentHash>().unwrap(), loaded.hash());
}

fn cached_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_owned()),
        ..small_runtime_config()
    })
    .expect("start runtime")
}

#[tokio::test]
async fn compiled_code_is_cached_and_a_truncated_cache_file_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let path = agent_wasm("counter");
    let first = cached_runtime(cache.path())
        .load_component_file(&path)
        .unwrap();
    assert_eq!(first.origin(), ComponentOrigin::Compiled);
    let cache_file = cache.path().join(format!("{}.cwasm", first.hash()));
    assert!(cache_file.is_file());

    drop(first);
    {
        let restarted = cached_runtime(cache.path());
        let second = restarted.load_component_file(&path).unwrap();
        assert_eq!(second.origin(), ComponentOrigin::Cached);
        let counter = restarted
            .agent("counter", second, AgentLimits::default())
            .unwrap();
        assert_eq!(
            call(&counter, "s", "count", "<count/>").await.unwrap(),
            ["<count-is>1</count-is>"]
        );
        // The agent makes its spare instance in the background; once it is
        // there, that work is done and holds nothing more.
        for _ in 0..10_000 {
            if counter.stats().spare_ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(counter.stats().spare_ready, "a spare instance is made");
        // Everything mapping the file is dropped here, as at a restart:
        // a cache file changed in place under a running server would pull
        // the code out from under it, which is why the store only ever
        // renames new files into place.
    }

    // What a full disk or a copy cut short leaves behind.
    let mut code = std::fs::read(&cache_file).unwrap();
    code.truncate(code.len() / 2);
    std::fs::write(&cache_file, &code).unwrap();
    let third = cached_runtime(cache.path())
        .load_component_file(&path)
        .unwrap();
    assert_eq!(third.origin(), ComponentOrigin::Compiled);
    assert_ne!(
        std::fs::read(&cache_file).unwrap(),
        code,
        "cache file rewritten"
    );
    assert_eq!(
        cached_runtime(cache.path())
            .load_component_file(&path)
            .unwrap()
            .origin(),
        ComponentOrigin::Cached
    );
}
