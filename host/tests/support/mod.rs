//! What the binary's end-to-end tests share: the built example agents, and
//! the server run as a child process.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `agentserver` binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_agentserver");

/// The workspace's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `make agents` puts the example agents.
pub fn agents_dir() -> PathBuf {
    workspace().join("target/agents")
}

/// `agentserver run --config CONFIG` as a child process, and what it
/// printed on its first two lines: the URL it listens on and its
/// certificate's fingerprint.
pub struct Spawned {
    pub child: Child,
    pub url: String,
    pub fingerprint: String,
}

/// Starts the server of `config` and waits until it listens.
pub fn spawn_server(config: &Path) -> Spawned {
    spawn(config, Stdio::inherit())
}

/// [`spawn_server`], its log (standard error) going to `log`.
#[allow(dead_code)]
pub fn spawn_server_logging_to(config: &Path, log: &Path) -> Spawned {
    spawn(
        config,
        Stdio::from(std::fs::File::create(log).expect("log file")),
    )
}

fn spawn(config: &Path, stderr: Stdio) -> Spawned {
    let mut child = Command::new(BINARY)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("run agentserver");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut line = || {
        lines
            .next()
            .expect("the server prints its address and fingerprint")
            .expect("read stdout")
    };
    let url = line().replace("listening on ", "");
    let fingerprint = line().replace("tls certificate sha256 ", "");
    Spawned {
        child,
        url,
        fingerprint,
    }
}
