//! The message bus with real example agents: delegation, fan-out, removal
//! under traffic, thread bounds, thread ownership and the audit hook.

use agentserver::bus::{AgentName, AuditKind, Grants, RefusalKind};
use agentserver::runtime::AgentLimits;
use agentserver_tests::{bus_with, next_frame, register};
use std::collections::HashSet;

fn message(from: &str, thread: &str, payload: &str) -> String {
    format!("<message><meta><from>{from}</from><thread>{thread}</thread></meta>{payload}</message>")
}

#[tokio::test]
async fn square_sum_is_delegated_to_the_calculator_and_answered_on_the_same_thread() {
    let (bus, audit) = bus_with(&[
        ("delegator", "delegator", &["square-sum"]),
        ("calc", "calculator", &["calculate"]),
    ]);
    let session = bus.open_session("alice", Grants::All);
    let thread = session
        .submit(b"<square-sum><n>3</n><n>4</n></square-sum>")
        .expect("accepted");
    let frame = next_frame(&session).await;
    assert_eq!(
        frame,
        message("calc", thread.as_str(), "<result>25</result>")
    );

    let records = audit.thread(&thread);
    let seen: Vec<(&str, &str, u32)> = records
        .iter()
        .map(|r| (r.from.as_str(), r.canonical.as_str(), r.depth))
        .collect();
    assert_eq!(
        seen,
        [
            ("user:alice", "<square-sum><n>3</n><n>4</n></square-sum>", 0),
            ("delegator", "<calculate>3*3+4*4</calculate>", 1),
            ("calc", "<result>25</result>", 2),
        ]
    );
    assert!(records.iter().all(|r| r.kind == AuditKind::Message));
}

#[tokio::test]
async fn every_listener_of_a_tag_answers() {
    let (bus, _) = bus_with(&[("echo-a", "echo", &["echo"]), ("echo-b", "echo", &["echo"])]);
    let session = bus.open_session("alice", Grants::All);
    let thread = session.submit(b"<echo>hi</echo>").unwrap();
    let mut froms = HashSet::new();
    for _ in 0..2 {
        let frame = next_frame(&session).await;
        let from = if frame == message("echo-a", thread.as_str(), "<echoed>hi</echoed>") {
            "echo-a"
        } else if frame == message("echo-b", thread.as_str(), "<echoed>hi</echoed>") {
            "echo-b"
        } else {
            panic!("unexpected frame {frame}")
        };
        froms.insert(from);
    }
    assert_eq!(froms.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_listener_under_traffic_loses_nothing_and_it_hears_nothing_after() {
    let (bus, _) = bus_with(&[]);
    let roomy = AgentLimits {
        max_queued: 1_000,
        ..AgentLimits::default()
    };
    register(&bus, "echo-a", "echo", &["echo"], roomy.clone());
    register(&bus, "echo-b", "echo", &["echo"], roomy);
    let session = bus.open_session("alice", Grants::All);
    let mut threads = Vec::new();
    for i in 0..100 {
        threads.push(
            session
                .submit(format!("<echo>{i}</echo>").as_bytes())
                .unwrap(),
        );
    }
    bus.remove(&AgentName::new("echo-b").unwrap()).unwrap();
    let mut after = Vec::new();
    for i in 100..200 {
        after.push(
            session
                .submit(format!("<echo>{i}</echo>").as_bytes())
                .unwrap(),
        );
    }
    let before: HashSet<_> = threads.iter().map(|t| t.to_string()).collect();
    let after: HashSet<_> = after.iter().map(|t| t.to_string()).collect();
    let mut answered_by_a = HashSet::new();
    let mut b_after_removal = 0;
    // Every message is answered by echo-a; echo-b answers some of the first
    // hundred (those routed before the removal) and none of the rest.
    while answered_by_a.len() < 200 {
        let frame = next_frame(&session).await;
        let thread = frame
            .split("<thread>")
            .nth(1)
            .and_then(|rest| rest.split("</thread>").next())
            .unwrap_or_else(|| panic!("a message with a thread, not {frame}"))
            .to_owned();
        if frame.contains("<from>echo-a</from>") {
            answered_by_a.insert(thread);
        } else if frame.contains("<from>echo-b</from>") {
            assert!(before.contains(&thread), "echo-b answered after removal");
            if after.contains(&thread) {
                b_after_removal += 1;
            }
        } else {
            panic!("unexpected frame {frame}");
        }
    }
    assert_eq!(b_after_removal, 0);
    assert!(bus
        .table()
        .agent(&AgentName::new("echo-b").unwrap())
        .is_none());
}

#[tokio::test]
async fn agents_emitting_each_others_tags_forever_are_stopped_by_the_hop_limit() {
    let (bus, _) = bus_with(&[
        ("pinger", "hostile", &["ping"]),
        ("ponger", "hostile", &["pong"]),
        ("calc", "calculator", &["calculate"]),
    ]);
    let looping = bus.open_session("mallory", Grants::All);
    let bystander = bus.open_session("alice", Grants::All);
    let thread = looping.submit(b"<ping/>").unwrap();
    let mut answers = Vec::new();
    for i in 0..20 {
        let t = bystander
            .submit(format!("<calculate>{i}*2</calculate>").as_bytes())
            .unwrap();
        answers.push((t, i * 2));
    }
    let frame = next_frame(&looping).await;
    assert_eq!(
        frame,
        format!(
            r#"<error code="thread-limit" thread="{thread}">the thread went 65 agent deliveries deep; the limit is 64</error>"#
        )
    );
    for (thread, expected) in answers {
        let frame = next_frame(&bystander).await;
        let expected = format!("<result>{expected}</result>");
        assert!(
            frame.contains(thread.as_str()) || frame.contains(&expected),
            "{frame}"
        );
        assert!(frame.contains("<from>calc</from>"), "{frame}");
    }
    assert_eq!(
        bus.metrics()
            .snapshot()
            .refusals_of(RefusalKind::ThreadLimit),
        1
    );
}

#[tokio::test]
async fn an_emission_storm_is_stopped_by_the_thread_message_bound() {
    let (bus, audit) = bus_with(&[("sprayer", "hostile", &["spray"])]);
    let session = bus.open_session("mallory", Grants::All);
    let thread = session.submit(b"<spray/>").unwrap();
    let frame = next_frame(&session).await;
    assert_eq!(
        frame,
        format!(
            r#"<error code="thread-limit" thread="{thread}">the thread carried more than 1024 messages</error>"#
        )
    );
    let messages = audit
        .thread(&thread)
        .iter()
        .filter(|r| r.kind == AuditKind::Message)
        .count();
    assert!(messages <= 1025, "{messages} messages audited");
}

#[tokio::test]
async fn an_agent_returning_ten_thousand_payloads_fails_without_harming_others() {
    let (bus, _) = bus_with(&[
        ("flooder", "hostile", &["flood"]),
        ("calc", "calculator", &["calculate"]),
    ]);
    let mallory = bus.open_session("mallory", Grants::All);
    let alice = bus.open_session("alice", Grants::All);
    let flood = mallory.submit(b"<flood/>").unwrap();
    let calc = alice.submit(b"<calculate>6*7</calculate>").unwrap();
    assert_eq!(
        next_frame(&mallory).await,
        format!(
            r#"<error agent="flooder" code="agent-failed" thread="{flood}">invalid output: returned 10000 payloads; the limit is 256 per call</error>"#
        )
    );
    assert_eq!(
        next_frame(&alice).await,
        message("calc", calc.as_str(), "<result>42</result>")
    );
}

#[tokio::test]
async fn a_session_continues_its_thread_and_no_other_session_can() {
    let (bus, _) = bus_with(&[("counter", "counter", &["count"])]);
    let alice = bus.open_session("alice", Grants::All);
    let bob = bus.open_session("bob", Grants::All);
    let thread = alice.submit(b"<count/>").unwrap();
    assert_eq!(
        next_frame(&alice).await,
        message("counter", thread.as_str(), "<count-is>1</count-is>")
    );
    let continued = format!("<message><meta><thread>{thread}</thread></meta><count/></message>");
    assert_eq!(alice.submit(continued.as_bytes()).unwrap(), thread);
    assert_eq!(
        next_frame(&alice).await,
        message("counter", thread.as_str(), "<count-is>2</count-is>")
    );

    let refusal = bob.submit(continued.as_bytes()).unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::UnknownThread);
    let expected = format!(r#"<error code="unknown-thread" thread="{thread}"></error>"#);
    assert_eq!(next_frame(&bob).await, expected);
    let made_up = b"<message><meta><thread>no-such-thread</thread></meta><count/></message>";
    assert_eq!(
        alice.submit(made_up).unwrap_err().kind,
        RefusalKind::UnknownThread
    );
}

#[tokio::test]
async fn tags_outside_the_grants_are_denied_and_unheard_tags_have_no_listener() {
    let (bus, audit) = bus_with(&[("calc", "calculator", &["calculate"])]);
    let grants = Grants::Tags(
        [
            agentserver_tests::tag("calculate"),
            agentserver_tests::tag("echo"),
        ]
        .into(),
    );
    let session = bus.open_session("alice", grants);
    assert_eq!(
        session.submit(b"<count/>").unwrap_err().kind,
        RefusalKind::AccessDenied
    );
    assert_eq!(
        next_frame(&session).await,
        r#"<access-denied tag="count"></access-denied>"#
    );
    assert_eq!(
        session.submit(b"<echo>x</echo>").unwrap_err().kind,
        RefusalKind::NoListener
    );
    assert_eq!(
        next_frame(&session).await,
        r#"<error code="no-listener" tag="echo"></error>"#
    );
    assert_eq!(
        session.submit(b"<catalog/>").unwrap_err().kind,
        RefusalKind::AccessDenied
    );
    next_frame(&session).await;
    let refusal = session
        .submit(b"<!DOCTYPE x><calculate>1</calculate>")
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::Malformed);
    let frame = next_frame(&session).await;
    assert!(frame.starts_with(r#"<error code="malformed">"#), "{frame}");
    let refusals = audit
        .records()
        .iter()
        .filter(|r| r.kind == AuditKind::Refusal)
        .count();
    assert_eq!(refusals, 4);
}

#[tokio::test]
async fn the_answer_to_a_repaired_message_carries_huh() {
    let (bus, _) = bus_with(&[("echo", "echo", &["echo"])]);
    let session = bus.open_session("alice", Grants::All);
    let thread = session.submit(b"<echo>fish & chips").unwrap();
    let frame = next_frame(&session).await;
    assert!(
        frame.contains(&format!("<thread>{thread}</thread>")),
        "{frame}"
    );
    assert!(
        frame.contains("<echoed>fish &amp; chips</echoed>"),
        "{frame}"
    );
    assert!(frame.contains("<huh>"), "{frame}");
    let clean = session.submit(b"<echo>fish &amp; chips</echo>").unwrap();
    let frame = next_frame(&session).await;
    assert!(
        frame.contains(clean.as_str()) && !frame.contains("<huh>"),
        "{frame}"
    );
}

#[tokio::test]
async fn an_agent_failure_reaches_the_session_and_other_threads_go_on() {
    let (bus, _) = bus_with(&[("calc", "calculator", &["calculate"])]);
    let session = bus.open_session("alice", Grants::All);
    let bad = session.submit(b"<calculate>1/0</calculate>").unwrap();
    assert_eq!(
        next_frame(&session).await,
        format!(
            r#"<error agent="calc" code="agent-failed" thread="{bad}">malformed: cannot calculate: division by zero</error>"#
        )
    );
    let good = session.submit(b"<calculate>1/8</calculate>").unwrap();
    assert_eq!(
        next_frame(&session).await,
        message("calc", good.as_str(), "<result>0.125</result>")
    );
}

#[tokio::test]
async fn a_busy_agent_is_reported_as_busy() {
    let (bus, _) = bus_with(&[]);
    register(
        &bus,
        "holder",
        "hostile",
        &["hold"],
        AgentLimits {
            max_concurrent: 1,
            max_queued: 0,
            ..AgentLimits::default()
        },
    );
    let session = bus.open_session("alice", Grants::All);
    let first = session.submit(br#"<hold ms="300"/>"#).unwrap();
    let second = session.submit(br#"<hold ms="300"/>"#).unwrap();
    let frames = [next_frame(&session).await, next_frame(&session).await];
    let busy = |t: &agentserver::bus::ThreadId| {
        format!(r#"<error agent="holder" code="busy" thread="{t}"></error>"#)
    };
    let held = |t: &agentserver::bus::ThreadId| message("holder", t.as_str(), "<held></held>");
    assert!(
        frames == [busy(&second), held(&first)] || frames == [busy(&first), held(&second)],
        "{frames:?}"
    );
}
