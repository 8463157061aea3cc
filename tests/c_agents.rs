//! The C example agents (`example-agents/c`, built by clang-14 and
//! wasi-libc from `wit/agent.wit` with wit-bindgen's C bindings): `checksum`
//! answers the CRC-32 of its text over the real runtime, refuses what it does
//! not understand as malformed, and frees what it allocates.
//!
//! Build them first: `bash example-agents/c/build.sh target/agents`.

use agentserver::runtime::{AgentLimits, CallError, GuestFailure};
use agentserver_tests::{agent, call, crc32};

#[test]
fn the_reference_crc32_matches_known_vectors() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414f_a339
    );
}

#[tokio::test]
async fn checksum_answers_the_crc32_of_its_text() {
    let checksum = agent("checksum", AgentLimits::default());
    for (payload, expected) in [
        ("<checksum></checksum>", "<crc32>00000000</crc32>"),
        ("<checksum>123456789</checksum>", "<crc32>cbf43926</crc32>"),
        (
            "<checksum>The quick brown fox jumps over the lazy dog</checksum>",
            "<crc32>414fa339</crc32>",
        ),
        // The CRC of "a & b": the escape is undone first.
        ("<checksum>a &amp; b</checksum>", "<crc32>c8ba185a</crc32>"),
        // The CRC of "<é\r>\"'" (é in UTF-8), attributes ignored.
        (
            "<checksum id=\"1\">&lt;é&#xD;&gt;\"'</checksum>",
            "<crc32>c6c362a9</crc32>",
        ),
    ] {
        let out = call(&checksum, "s1", "checksum", payload).await;
        assert_eq!(out.unwrap(), [expected], "{payload}");
    }
}

async fn malformed_reason(payload: &str, tag: &str) -> String {
    let checksum = agent("checksum", AgentLimits::default());
    let out = call(&checksum, "s1", tag, payload).await;
    let reason = match out {
        Err(CallError::Guest(GuestFailure::Malformed(reason))) => reason,
        other => panic!("expected malformed for {payload}, got {other:?}"),
    };
    // A failure keeps the instance, which goes on answering.
    let out = call(
        &checksum,
        "s1",
        "checksum",
        "<checksum>123456789</checksum>",
    )
    .await;
    assert_eq!(out.unwrap(), ["<crc32>cbf43926</crc32>"], "after {payload}");
    assert_eq!(checksum.stats().instances, 1);
    reason
}

#[tokio::test]
async fn child_elements_are_malformed() {
    let reason = malformed_reason("<checksum>a <b>bold</b> move</checksum>", "checksum").await;
    assert_eq!(
        reason,
        "<checksum> takes text only, but holds the child element <b>: escape markup as &lt;"
    );
}

#[tokio::test]
async fn another_root_is_malformed() {
    let reason = malformed_reason("<crc>123456789</crc>", "crc").await;
    assert_eq!(reason, "expected a <checksum> element, got <crc>");
    let reason = malformed_reason(
        "<checksum xmlns=\"urn:example\">x</checksum>",
        "{urn:example}checksum",
    )
    .await;
    assert_eq!(
        reason,
        "expected <checksum> in no namespace, got {urn:example}checksum"
    );
}

#[tokio::test]
async fn a_stray_ampersand_is_malformed() {
    // Not what the bus delivers (it escapes a stray '&'), but the agent
    // checks its input all the same.
    let reason = malformed_reason("<checksum>fish & chips</checksum>", "checksum").await;
    assert!(reason.contains("'&' starts no reference"), "{reason}");
}

/// Ten thousand calls with 1 KB payloads in one instance, under the default
/// 16 MiB memory limit: leaking the envelope or the unescaped text (about
/// 2 KB a call) would run out of memory long before the end.
#[tokio::test]
async fn many_calls_in_one_instance_do_not_grow_its_memory() {
    let limits = AgentLimits::default();
    assert_eq!(limits.memory_bytes, 16 << 20);
    let checksum = agent("checksum", limits);
    for i in 0..10_000u32 {
        let mut text = format!("call {i}: fish & chips <3; ");
        while text.len() < 1024 {
            text.push_str("the quick brown fox & the lazy dog; ");
        }
        text.truncate(1024);
        let escaped = text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let payload = format!("<checksum>{escaped}</checksum>");
        let expected = format!("<crc32>{:08x}</crc32>", crc32(text.as_bytes()));
        match call(&checksum, "one-session", "checksum", &payload).await {
            Ok(out) => assert_eq!(out, [expected], "call {i}"),
            Err(err) => panic!("call {i} failed: {err}"),
        }
    }
    let stats = checksum.stats();
    assert_eq!((stats.instances, stats.calls), (1, 10_000));
}
