//! The price of a federation link: the round trip of a 1 KiB `<echo>`
//! from a client to an echo agent in its own organism, next to the same
//! round trip from a client of organism A to the echo agent of organism B
//! over a loopback link (A's gateway signs and canonicalizes it, B checks
//! and answers, A checks the answer), in one run, interleaved in blocks so
//! that both see the same machine.
//!
//! Two real servers in this process, over real TLS. Needs the example
//! agents (`make agents`). Run with `make bench` or `cargo bench -p
//! agentserver-tests --bench federation_link`; it prints a Markdown table
//! for `docs/benchmarks.md`.

use agentserver::commit::Purpose;
use agentserver_tests::organisms::{apply, certificate, link};
use agentserver_tests::TestServer;

/// Round trips timed per path.
const ROUNDS: usize = 4_000;
/// Round trips per block before switching paths.
const BLOCK: usize = 200;
/// Untimed round trips per path first.
const WARMUP: usize = 200;
/// No flood limit gets in the way of a benchmark.
const UNLIMITED: &str = "messages_per_second = 1000000\nmessage_burst = 1000000\n";

fn main() {
    let runtime = agentserver_tests::timing::runtime();
    runtime.block_on(async {
        let a = TestServer::start_with(
            &[("owner", &["echo"]), ("alice", &["echo"])],
            &[],
            UNLIMITED,
        )
        .await;
        let b = TestServer::start_with(
            &[("owner", &["echo"]), ("bob", &["echo"])],
            &[("echo", "echo", &["echo"])],
            UNLIMITED,
        )
        .await;
        let (mut owner_a, _) = a.login("owner").await;
        let (mut owner_b, _) = b.login("owner").await;
        for (server, owner, commands) in [
            (
                &b,
                &mut owner_b,
                [
                    certificate(&b, vec![Purpose::Federation], 1),
                    link(&a, &[], &["echo"]),
                ],
            ),
            (
                &a,
                &mut owner_a,
                [
                    certificate(&a, vec![Purpose::Federation], 1),
                    link(&b, &["echo"], &[]),
                ],
            ),
        ] {
            for command in commands {
                let verdict = apply(server, owner, &command).await;
                assert!(verdict.contains("applied"), "{verdict}");
            }
        }
        let (mut across, _) = a.login("alice").await;
        let (mut inside, _) = b.login("bob").await;
        let message = format!("<echo>{}</echo>", "x".repeat(1_024));
        agentserver_tests::timing::compare(
            ("inside one organism", &mut inside),
            ("across a loopback federation link", &mut across),
            &message,
            (WARMUP, ROUNDS, BLOCK),
        )
        .await;
    });
}
