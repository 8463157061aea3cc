//! The JavaScript client library (`clients/js`) against the real server
//! over real TLS, with real components: its tests
//! (`clients/js/tests/*.test.js`, run by `node --test`) and the examples of
//! `docs/clients/js.md`, each file run with the server's URL, users and TOTP
//! secrets in its environment and the server's development certificate
//! trusted through `NODE_EXTRA_CA_CERTS`; and the modules as the server
//! serves them to the web console.
//!
//! Needs node 18 or later (`make test` installs it) and the example agents
//! (`make agents`).

use agentserver_tests::clients::{
    self, client_agents, llm_agent, signed_twin, users_json, workspace,
};
use agentserver_tests::{MockLlm, TestServer};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The library's folder.
fn package() -> PathBuf {
    workspace().join("clients/js")
}

/// The environment every run against `server` gets.
fn server_env(server: &TestServer, users: &[&str]) -> Vec<(&'static str, String)> {
    vec![
        ("AGENTSERVER_URL", server.url()),
        ("AGENTSERVER_USERS", users_json(server, users)),
        (
            "NODE_EXTRA_CA_CERTS",
            server.ca_path().display().to_string(),
        ),
    ]
}

/// [`server_env`], with the mock model server's endpoint and the folder
/// holding the signed registration of `twin` (written there first).
fn env_with_llm_and_twin(
    server: &TestServer,
    users: &[&str],
    mock: &MockLlm,
    commands: &Path,
) -> Vec<(&'static str, String)> {
    signed_twin(server, commands);
    let mut env = server_env(server, users);
    env.push(("AGENTSERVER_LLM_ENDPOINT", mock.endpoint()));
    env.push(("AGENTSERVER_COMMANDS", commands.display().to_string()));
    env
}

/// The node to run: the one `make test` puts in `target/tools/node` when
/// the node on PATH is older than 20, or else that one.
fn node() -> std::path::PathBuf {
    let installed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/node/node");
    if installed.exists() {
        installed
    } else {
        std::path::PathBuf::from("node")
    }
}

/// The flag that gives node its platform `WebSocket`, when it needs one
/// (Node 20 does; Node 22 has it by default). Node 18 has none: the tests
/// need Node 20 or later.
fn websocket_flag() -> Option<&'static str> {
    let has_websocket = |flag: Option<&str>| {
        std::process::Command::new(node())
            .args(flag)
            .args(["-p", "typeof WebSocket"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "function")
            .expect("node runs (make test installs it)")
    };
    if has_websocket(None) {
        return None;
    }
    let flag = "--experimental-websocket";
    assert!(
        has_websocket(Some(flag)),
        "this node has no WebSocket, even with {flag}: the JavaScript client's tests need Node 20 or later"
    );
    Some(flag)
}

/// How long one `node --test` run may take before it is killed (a test
/// that leaves a connection open would otherwise keep node running).
const NODE_DEADLINE: Duration = Duration::from_secs(600);

/// `node --test FILES` in the library's folder with `env` (off the async
/// runtime, which keeps serving meanwhile), killed past [`NODE_DEADLINE`].
async fn node_test(files: &[&str], env: Vec<(&'static str, String)>) -> Output {
    let files: Vec<String> = files.iter().map(|file| file.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(node())
            .args(websocket_flag())
            .args(["--test", "--test-reporter=spec"])
            .args(&files)
            .current_dir(package())
            .env_remove("NODE_OPTIONS")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs (make test installs it)");
        let stdout = drain(child.stdout.take().expect("stdout"));
        let stderr = drain(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + NODE_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                break status;
            }
            if Instant::now() > deadline {
                eprintln!("node ran past {NODE_DEADLINE:?}: killed");
                let _ = child.kill();
                break child.wait().expect("wait for node");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    })
    .await
    .expect("the node run")
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Asserts that a `node --test` run passed every test it ran, at least
/// one, skipping none.
fn assert_passed(what: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let count = |name: &str| -> Option<u64> {
        stdout
            .lines()
            .rev()
            .find_map(|line| line.trim_start_matches(['ℹ', ' ']).strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
    };
    let passed = count("pass ").unwrap_or(0);
    assert!(
        output.status.success()
            && passed > 0
            && count("fail ") == Some(0)
            && count("skipped ") == Some(0)
            && count("todo ") == Some(0),
        "{what} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{what}: {passed} passed\n{stdout}");
}

/// The users of `client.test.js`, one or two per test.
const CLIENT_USERS: &[&str] = &[
    "login",
    "typed",
    "ask",
    "concurrent",
    "delegation",
    "continue",
    "ending",
    "wrong-secret",
    "denied",
    "failure",
    "busy-a",
    "busy-b",
    "limit",
    "stream",
    "burst",
    "burst-unlimited",
    "bad",
    "bad-unlimited",
    "owner",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_logs_in_asks_streams_and_keeps_within_the_limits() {
    let mock = MockLlm::start(None);
    let extra = client_agents(&mock);
    let users: Vec<(&str, &[&str])> = CLIENT_USERS
        .iter()
        .map(|u| (*u, clients::CLIENT_TAGS))
        .collect();
    let server = TestServer::start_with(&users, clients::CLIENT_AGENTS, &extra).await;
    let commands = tempfile::tempdir().expect("tempdir");
    let env = env_with_llm_and_twin(&server, CLIENT_USERS, &mock, commands.path());
    let output = node_test(&["tests/client.test.js"], env).await;
    assert_passed("client.test.js", &output);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_resumes_after_a_drop_and_logs_in_again_when_it_must() {
    let users = ["resumer", "in-flight", "relogin"];
    let tags: &[&str] = &["hold", "count", "echo"];
    let specs: Vec<(&str, &[&str])> = users.iter().map(|u| (*u, tags)).collect();
    // Sessions outlive their socket by 3 s only.
    let server = TestServer::start_with(
        &specs,
        &[
            ("hostile", "hostile", &["hold"]),
            ("counter", "counter", &["count"]),
            ("echo", "echo", &["echo"]),
        ],
        "session_timeout = 3",
    )
    .await;
    let output = node_test(&["tests/resume.test.js"], server_env(&server, &users)).await;
    assert_passed("resume.test.js", &output);
    server.stop().await;
}

/// The users the documentation's examples log in as, one per example.
const DOC_USERS: &[&str] = &[
    "svc", "doc1", "doc2", "doc3", "doc4", "doc5", "doc6", "doc7", "doc8", "doc9",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_documentation_examples_run() {
    let mock = MockLlm::start(None);
    let tags: &[&str] = &["echo", "calculate", "square-sum", "ask", "twin"];
    let users: Vec<(&str, &[&str])> = DOC_USERS.iter().map(|u| (*u, tags)).collect();
    let server = TestServer::start_with(&users, clients::CLIENT_AGENTS, &llm_agent(&mock)).await;
    let commands = tempfile::tempdir().expect("tempdir");
    let mut env = env_with_llm_and_twin(&server, DOC_USERS, &mock, commands.path());
    env.push((
        "AGENTSERVER_DOC",
        workspace().join("docs/clients/js.md").display().to_string(),
    ));
    env.push(("AGENTSERVER_CA", server.ca_path().display().to_string()));
    let output = node_test(&["tests/docs.test.js"], env).await;
    assert_passed("docs/clients/js.md", &output);
    server.stop().await;
}

#[tokio::test]
async fn the_js_client_parts_pass_their_unit_tests() {
    let output = node_test(&["tests/units.test.js"], Vec::new()).await;
    assert_passed("units.test.js", &output);
}

/// The modules the web console imports (`/client/NAME.js`) are the
/// library's files, byte for byte; and nothing else is served from there.
#[tokio::test]
async fn the_server_serves_the_library_to_the_console() {
    let server = TestServer::start(&[("alice", &["echo"])], &[("echo", "echo", &["echo"])]).await;
    let get = |path: String| {
        let url = format!("https://{}{path}", server.address());
        let trust = server.trust();
        async move {
            agentserver::client::get(&url, &trust)
                .await
                .expect("https get")
        }
    };
    let mut served = 0;
    for entry in std::fs::read_dir(package()).expect("clients/js") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("js") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (status, body) = get(format!("/client/{name}")).await;
        assert_eq!(status, 200, "/client/{name}");
        assert_eq!(
            body,
            std::fs::read_to_string(&path).unwrap(),
            "/client/{name}"
        );
        served += 1;
    }
    assert!(served >= 6, "only {served} modules in clients/js");
    assert_eq!(get("/client/package.json".into()).await.0, 404);
    assert_eq!(get("/client/../Cargo.toml".into()).await.0, 404);
    server.stop().await;
}
