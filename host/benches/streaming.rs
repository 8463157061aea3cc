//! Streaming benchmark: 100 sessions each asking the LLM agent (Python,
//! `example-agents/python/llm`) at once, its answers streamed from the
//! repo's mock model server (`example-agents/mock-llm`, a separate process)
//! as `<partial>` frames and a final `<answer>`, over real TLS WebSockets.
//!
//! It reports the server's CPU time per frame delivered: the server runs on
//! a tokio runtime of its own whose threads (workers and blocking pool) are
//! named `srv`, and their CPU time is read from `/proc/self/task` before and
//! after the measured round; the clients run on another runtime and are not
//! counted. A first round, not measured, instantiates the 100 agents.
//!
//! Needs the example agents (`make agents`) and `python3`. Run with `make
//! bench` or `cargo bench -p agentserver --bench streaming`.

mod support;

use agentserver::client::{Client, Received, Trust};
use std::time::{Duration, Instant, SystemTime};
use support::agent_path;

const SESSIONS: usize = 100;
const ROUNDS: usize = 3;

/// CPU seconds (user + system) of this process's threads named `srv`.
fn server_cpu_seconds() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "srv" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd field of
        // the line; utime and stime are the 14th and 15th.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        total += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    total as f64 / ticks
}

/// The mock model server, killed when dropped.
struct Mock(std::process::Child);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mock() -> (Mock, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../example-agents/mock-llm/server.py"
    );
    let child = std::process::Command::new("python3")
        .args([script, "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs the mock model server");
    let mock = Mock(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the mock model server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (mock, port)
}

/// Asks once and returns how many frames the answer took.
async fn ask(client: &mut Client, endpoint: &str, question: &str) -> usize {
    client
        .send(&format!("<ask endpoint=\"{endpoint}\">{question}</ask>"))
        .await
        .expect("send");
    let mut frames = 0;
    loop {
        let frame = match client.receive().await.expect("a frame") {
            Received::Text(text) => text,
            Received::Closed(code, reason) => panic!("closed: {code} {reason}"),
        };
        frames += 1;
        if frame.contains("<answer") || frame.contains("<error") {
            assert!(
                !frame.contains("<error") && !frame.contains("error="),
                "{frame}"
            );
            return frames;
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // nothing for criterion's listing
    }
    let (_mock, port) = start_mock();
    let endpoint = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let dir = tempfile::tempdir().expect("tempdir");
    let users_path = dir.path().join("users.toml");
    let secrets: Vec<Vec<u8>> = (0..SESSIONS)
        .map(|n| {
            agentserver::auth::add_user(&users_path, &format!("user{n}"), &["ask".to_owned()])
                .expect("add user")
        })
        .collect();
    let config = format!(
        "listen = \"127.0.0.1:0\"\nusers = \"users.toml\"\nmax_instances = 256\n\
         messages_per_second = 1000\nmessage_burst = 1000\n\
         [[agent]]\nname = \"llm\"\ncomponent = {:?}\nlistens = [\"ask\"]\n\
         timeout_ms = 60000\nmemory_bytes = 67108864\nfuel = 5000000000\nmax_concurrent = {SESSIONS}\n\
         [agent.http]\nallow = [\"http://127.0.0.1:{port}\"]\n\
         [agent.storage]\nsession = {{ max_keys = 8, max_bytes = 1048576 }}\n",
        agent_path("llm").display().to_string()
    );
    std::fs::write(dir.path().join("organism.toml"), config).expect("config");
    let config = agentserver::server::Config::load(&dir.path().join("organism.toml"))
        .expect("configuration");

    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("srv")
        .enable_all()
        .build()
        .expect("server runtime");
    let server = server_runtime
        .block_on(agentserver::server::start(config))
        .expect("server starts");
    let url = format!("wss://{}/", server.address());
    let trust = Trust::Fingerprint(server.fingerprint().to_owned());

    let clients_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("client runtime");
    let mut clients: Vec<Client> = clients_runtime.block_on(async {
        let mut clients = Vec::with_capacity(SESSIONS);
        for (n, secret) in secrets.iter().enumerate() {
            let mut client = Client::connect(&url, &trust).await.expect("connect");
            let code = agentserver::auth::totp_code(secret, SystemTime::now());
            client
                .login(&format!("user{n}"), &code)
                .await
                .expect("login");
            clients.push(client);
        }
        clients
    });

    let mut round = |measured: bool, r: usize| {
        let cpu_before = server_cpu_seconds();
        let started = Instant::now();
        let frames: usize = clients_runtime.block_on(async {
            let asks = clients.iter_mut().enumerate().map(|(n, client)| {
                let endpoint = endpoint.clone();
                async move {
                    ask(
                        client,
                        &endpoint,
                        &format!("Question {r} of session {n}: how do components stream"),
                    )
                    .await
                }
            });
            futures::future::join_all(asks).await.into_iter().sum()
        });
        let elapsed = started.elapsed();
        let cpu = server_cpu_seconds() - cpu_before;
        if measured {
            println!(
                "round {r}: {SESSIONS} sessions streaming at once: {frames} frames in {:.0} ms; \
                 server CPU {:.0} ms, {:.1} µs per frame",
                elapsed.as_secs_f64() * 1e3,
                cpu * 1e3,
                cpu * 1e6 / frames as f64
            );
        }
    };
    round(false, 0);
    for r in 1..=ROUNDS {
        round(true, r);
    }
    server_runtime.block_on(server.shutdown_now());
}
