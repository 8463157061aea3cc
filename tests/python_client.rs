//! The Python client library (`clients/python`, imported as
//! `agentserver_client`) against the real server over real TLS, with real
//! components: its tests (`clients/python/tests/test_*.py`) and the Python
//! examples of `docs/clients/python.md`, each file run by `python3` with
//! the server's URL, CA certificate, users and TOTP secrets in its
//! environment; and the package installed with `pip` as a user would.
//!
//! Needs python3 with `websockets` and `pyotp` (`make pydeps`), and the
//! example agents (`make agents`).

use agentserver_tests::clients::{
    self, client_agents, llm_agent, signed_twin, users_json, workspace,
};
use agentserver_tests::{MockLlm, TestServer};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// The Python package's folder.
fn package() -> PathBuf {
    workspace().join("clients/python")
}

/// Runs `python3 ARGS` in `dir` with the package on `PYTHONPATH` and `env`
/// (off the async runtime, which keeps serving meanwhile).
async fn python(dir: PathBuf, args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .current_dir(&dir)
            .env("PYTHONPATH", package())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs (make pydeps installs websockets and pyotp)")
    })
    .await
    .expect("the python3 run")
}

/// Asserts that a unittest run passed every test it ran, skipping none.
fn assert_passed(what: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("skipped"),
        "{what} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{what}:\n{stderr}");
}

/// The environment every run against `server` gets.
fn server_env(server: &TestServer, users: &[&str]) -> Vec<(&'static str, String)> {
    vec![
        ("AGENTSERVER_URL", server.url()),
        ("AGENTSERVER_CA", server.ca_path().display().to_string()),
        ("AGENTSERVER_USERS", users_json(server, users)),
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

/// `python3 -m unittest -v MODULE` in the package's tests folder.
async fn unittest(module: &str, env: Vec<(&'static str, String)>) -> Output {
    python(
        package().join("tests"),
        vec!["-m".into(), "unittest".into(), "-v".into(), module.into()],
        env,
    )
    .await
}

/// The users of `test_client.py`, one or two per test.
const CLIENT_USERS: &[&str] = &[
    "login",
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
async fn the_client_logs_in_asks_streams_and_keeps_within_the_limits() {
    let mock = MockLlm::start(None);
    let extra = client_agents(&mock);
    let users: Vec<(&str, &[&str])> = CLIENT_USERS
        .iter()
        .map(|u| (*u, clients::CLIENT_TAGS))
        .collect();
    let server = TestServer::start_with(&users, clients::CLIENT_AGENTS, &extra).await;
    let commands = tempfile::tempdir().expect("tempdir");
    let env = env_with_llm_and_twin(&server, CLIENT_USERS, &mock, commands.path());
    let output = unittest("test_client", env).await;
    assert_passed("test_client.py", &output);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_after_a_drop_and_logs_in_again_when_it_must() {
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
    let output = unittest("test_resume", server_env(&server, &users)).await;
    assert_passed("test_resume.py", &output);
    server.stop().await;
}

/// The users the documentation's examples log in as, one per example.
const DOC_USERS: &[&str] = &[
    "svc", "doc1", "doc2", "doc3", "doc4", "doc5", "doc6", "doc7", "doc8",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentation_examples_run() {
    let mock = MockLlm::start(None);
    let tags: &[&str] = &["echo", "calculate", "square-sum", "ask", "twin"];
    let users: Vec<(&str, &[&str])> = DOC_USERS.iter().map(|u| (*u, tags)).collect();
    let server = TestServer::start_with(&users, clients::CLIENT_AGENTS, &llm_agent(&mock)).await;
    let commands = tempfile::tempdir().expect("tempdir");
    let env = env_with_llm_and_twin(&server, DOC_USERS, &mock, commands.path());
    let page = workspace().join("docs/clients/python.md");
    let output = python(
        package().join("tests"),
        vec!["run_docs.py".into(), page.display().to_string()],
        env,
    )
    .await;
    assert_passed("docs/clients/python.md", &output);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_with_pip_and_its_parts_pass_their_tests() {
    // Build from a copy, so that the build leaves nothing in the tree.
    let scratch = tempfile::tempdir().expect("tempdir");
    let source = scratch.path().join("source");
    copy_tree(&package(), &source);
    let target = scratch.path().join("site");
    // Offline with the interpreter's own setuptools and wheel when it has
    // them; otherwise pip fetches the build backend, as for any user.
    let has_backend = python(
        scratch.path().to_owned(),
        vec!["-c".into(), "import setuptools, wheel".into()],
        Vec::new(),
    )
    .await
    .status
    .success();
    let mut args: Vec<String> = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    .map(String::from)
    .into();
    if has_backend {
        args.push("--no-build-isolation".into());
    }
    args.extend([
        "--no-deps".into(),
        "--target".into(),
        target.display().to_string(),
        source.display().to_string(),
    ]);
    let install = python(scratch.path().to_owned(), args, Vec::new()).await;
    assert!(
        install.status.success(),
        "pip install failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(target.join("agentserver_client/py.typed").is_file());
    // The installed package, not the tree, answers the import.
    let check = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([
                "-c",
                "import agentserver_client as a, sys; print(a.__file__); print(a.__version__)",
            ])
            .current_dir(scratch.path())
            .env("PYTHONPATH", &target)
            .output()
            .expect("python3")
    })
    .await
    .expect("the python3 run");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && printed.contains("/site/agentserver_client/"),
        "{printed}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let units = python(
        package().join("tests"),
        vec![
            "-m".into(),
            "unittest".into(),
            "-v".into(),
            "test_units".into(),
        ],
        Vec::new(),
    )
    .await;
    assert_passed("test_units.py", &units);
}

/// Copies the files of `from` into `to`, leaving out build leftovers.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text == "build" || name_text == "__pycache__" || name_text.ends_with(".egg-info") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}
