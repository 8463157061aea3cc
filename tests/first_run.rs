//! The first minutes of a new user: `make run` in a clean copy of the
//! repository, with the toolchains of the Python, JavaScript, C and Go agents
//! absent from `PATH` and `AGENT_TOOLS=no` (so nothing is installed), builds
//! the host and the Rust agents, serves them over WSS, and names each missing
//! toolchain without stopping.
//!
//! The copy builds into `target/first-run` (its own target folder: a build
//! of the copy must not replace the binary the other tests run), so the first
//! `make test` builds the host a second time; later ones only what changed.

use agentserver::auth::{totp_code, Users};
use agentserver::client::{Client, Trust};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Long enough for a build of the host from nothing on a 2-core machine.
const BUILD_WAIT: Duration = Duration::from_secs(40 * 60);
/// From listening to the end of the background step, which only looks for
/// toolchains here.
const JOIN_WAIT: Duration = Duration::from_secs(120);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Copies the files git knows of (tracked, or new and not ignored) into
/// `to`: what a clone of the working tree would hold.
fn copy_working_tree(from: &Path, to: &Path) {
    let listing = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(from)
        .output()
        .expect("git ls-files");
    assert!(listing.status.success(), "git ls-files failed");
    for name in listing.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).expect("a UTF-8 file name");
        let source = from.join(name);
        if !source.is_file() {
            continue; // deleted in the working tree
        }
        let target = to.join(name);
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&source, &target).expect("copy");
    }
}

/// The full path of `program` on this process's `PATH`.
fn which(program: &str) -> PathBuf {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(!path.is_empty(), "{program} is not on the PATH");
    PathBuf::from(path)
}

/// A folder of links to what `make run` needs besides the system's own
/// `/usr/bin` and `/bin`: cargo and rustc (rustup's proxies, which tell the
/// tool by the link's name) and the Python interpreter itself, not the
/// folder around it where pip puts componentize-py.
fn bare_path(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for tool in ["cargo", "rustc", "rustup"] {
        std::os::unix::fs::symlink(which(tool), bin.join(tool)).expect("link");
    }
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let python = String::from_utf8_lossy(&python.stdout).trim().to_owned();
    std::os::unix::fs::symlink(python, bin.join("python3")).expect("link");
    format!("{}:/usr/bin:/bin", bin.display())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `make run` and everything it started, in a process group of its own.
struct MakeRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl MakeRun {
    /// The first line containing `text`, among those already seen or, up to
    /// `within`, the next ones.
    fn wait_for(&mut self, text: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {text:?} within {within:?}; the output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for MakeRun {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn start_make_run(copy: &Path, path: &str, target_dir: &Path, listen: &str) -> MakeRun {
    let mut child = Command::new("setsid")
        .args([
            "make",
            "--no-print-directory",
            "run",
            &format!("LISTEN={listen}"),
            &format!("MOCK_LLM_PORT={}", free_port()),
            "AGENT_TOOLS=no",
        ])
        .current_dir(copy)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("AGENTSERVER_AGENTS_DIR")
        .env_remove("CARGO") // set by `cargo test`; a user's shell has none
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setsid make run");
    let (send, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let send = send.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
    }
    MakeRun {
        child,
        lines,
        seen: Vec::new(),
    }
}

/// Logs in as `demo` with the code from the copy's users file (once: a
/// code is good for one login per time step).
async fn login_as_demo(copy: &Path, listen: &str) -> Client {
    let run = copy.join("run");
    let pem = std::fs::read(run.join("data/tls/cert.pem")).expect("the dev certificate");
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM");
    let users = Users::load(&run.join("users.toml")).expect("users.toml");
    let secret = &users.get("demo").expect("the demo user").secret;
    let mut client = Client::connect(&format!("wss://{listen}/"), &Trust::Ca(certs))
        .await
        .expect("connect");
    let catalog = client
        .login("demo", &totp_code(secret, SystemTime::now()))
        .await
        .expect("login");
    assert!(catalog.starts_with("<catalog"), "{catalog}");
    client
}

/// Sends `payload` and returns the answer's envelope (pushed catalogs are
/// skipped: they arrive whenever agents come and go).
async fn ask(client: &mut Client, payload: &str) -> String {
    client.send(payload).await.expect("send");
    agentserver_tests::recv_until(client, "<message").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_in_a_clean_copy_serves_the_rust_agents_and_names_missing_toolchains() {
    let repository = repository();
    let scratch = tempfile::tempdir().expect("tempdir");
    let copy = scratch.path().join("agentserver");
    copy_working_tree(&repository, &copy);
    let path = bare_path(scratch.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let target_dir = repository.join("target/first-run");

    let mut run = start_make_run(&copy, &path, &target_dir, &listen);
    run.wait_for("Console:  https://", BUILD_WAIT);
    run.wait_for(&format!("listening on wss://{listen}/"), BUILD_WAIT);

    // The Rust agents answer, over TLS, as soon as the server listens.
    let mut client = login_as_demo(&copy, &listen).await;
    let echo = ask(&mut client, "<echo>first minutes</echo>").await;
    assert!(echo.contains("<echoed>first minutes</echoed>"), "{echo}");
    let sum = ask(&mut client, "<calculate>2 + 3 * 4</calculate>").await;
    assert!(sum.contains("<result>14</result>"), "{sum}");

    // Each missing toolchain is named with what installs it, and the
    // background step ends without taking the server down.
    let python = run.wait_for("not serving stats, llm", JOIN_WAIT);
    assert!(python.contains("componentize-py"), "{python}");
    let javascript = run.wait_for("not serving sort", JOIN_WAIT);
    assert!(javascript.contains("componentize-js"), "{javascript}");
    let c = run.wait_for("not serving checksum", JOIN_WAIT);
    assert!(c.contains("wit-bindgen"), "{c}");
    let go = run.wait_for("not serving wordfreq", JOIN_WAIT);
    assert!(go.contains("Go 1.27"), "{go}");
    for line in [&python, &javascript, &c, &go] {
        assert!(line.contains("make agent-tools"), "{line}");
    }
    run.wait_for("agents: done", JOIN_WAIT);
    let echo = ask(&mut client, "<echo>still here</echo>").await;
    assert!(echo.contains("<echoed>still here</echoed>"), "{echo}");
    let _ = client.send("<end-session/>").await;
}
