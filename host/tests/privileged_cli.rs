//! Signed structural change as the owner does it from a shell: `identity
//! generate`, `command … | sign - | apply -` against the real binary, a key
//! and a command made by Python's `cryptography` and lxml, and a signed
//! graceful shutdown that lets a slow call finish and exits 0.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BINARY: &str = env!("CARGO_BIN_EXE_agentserver");

fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
}

fn agentserver(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run agentserver")
}

#[test]
fn identity_generate_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let output = agentserver(&["identity", "generate", "--out", out]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let fingerprint = stdout.trim().strip_prefix("public key sha256 ").unwrap();
    assert_eq!(fingerprint.len(), 64);
    let key = agentserver::privileged::OrganismKey::load(&dir.path().join("identity.pub")).unwrap();
    assert_eq!(key.fingerprint(), fingerprint);
    let private = std::fs::read_to_string(dir.path().join("identity.key")).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = agentserver(&["identity", "generate", "--out", out]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("identity.key")).unwrap(),
        private,
        "the old key is untouched"
    );
    assert!(
        agentserver(&["identity", "generate", "--out", out, "--force"])
            .status
            .success()
    );
}

/// A server run as a child process, with its URL and certificate fingerprint.
struct Server {
    child: Child,
    url: String,
    fingerprint: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Users `owner1..3` (allowed `echo`) and `alice` (allowed `hold`), the
    /// `hostile` agent on `hold`, the identity Python made.
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let python = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/ed25519_interop.py"))
            .arg(dir.path())
            .args(["alice", "twin"])
            .output()
            .expect("python3");
        assert!(python.status.success(), "{python:?}");
        let users = dir.path().join("users.toml");
        for (user, allow) in [
            ("owner1", "echo"),
            ("owner2", "echo"),
            ("owner3", "echo"),
            ("alice", "hold"),
        ] {
            let secret = agentserver::auth::add_user(&users, user, &[allow.into()]).unwrap();
            std::fs::write(
                dir.path().join(format!("{user}.secret")),
                agentserver::auth::encode_base32(&secret),
            )
            .unwrap();
        }
        let config = format!(
            "listen = \"127.0.0.1:0\"\nidentity = \"identity.pub\"\nmax_instances = 16\n\
             [[agent]]\nname = \"hostile\"\ncomponent = {:?}\nlistens = [\"hold\"]\ntimeout_ms = 5000\n",
            agents_dir().join("hostile.wasm").display().to_string()
        );
        std::fs::write(dir.path().join("organism.toml"), config).unwrap();
        let mut child = Command::new(BINARY)
            .args(["run", "--config"])
            .arg(dir.path().join("organism.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines.next().unwrap().unwrap().replace("listening on ", "");
        let fingerprint = lines
            .next()
            .unwrap()
            .unwrap()
            .replace("tls certificate sha256 ", "");
        Server {
            child,
            url,
            fingerprint,
            dir,
        }
    }

    /// Runs `pipeline` in a shell, with `$AGENTSERVER` the binary and the
    /// server's URL, fingerprint and folder in `$URL`, `$FP` and `$DIR`.
    fn shell(&self, pipeline: &str) -> std::process::Output {
        Command::new("sh")
            .args(["-c", pipeline])
            .env("AGENTSERVER", BINARY)
            .env("URL", &self.url)
            .env("FP", &self.fingerprint)
            .env("DIR", self.dir.path())
            .env("AGENTS", agents_dir())
            .output()
            .unwrap()
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

fn apply_args(user: &str) -> String {
    format!("--url \"$URL\" --fingerprint \"$FP\" --user {user} --totp-secret-file \"$DIR/{user}.secret\"")
}

#[test]
fn the_owner_admits_an_agent_and_shuts_down_from_a_shell() {
    let mut server = Server::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trust = agentserver::client::Trust::Fingerprint(server.fingerprint.clone());
    let secret = |user: &str| {
        let text =
            std::fs::read_to_string(server.dir.path().join(format!("{user}.secret"))).unwrap();
        agentserver::auth::decode_base32(&text).unwrap()
    };

    // A command signed by Python over lxml's canonical bytes is accepted.
    let applied = server.shell(&format!(
        "\"$AGENTSERVER\" apply \"$DIR/grant.xml\" {}",
        apply_args("owner1")
    ));
    assert!(applied.status.success(), "{applied:?}");
    let stdout = String::from_utf8(applied.stdout).unwrap();
    assert!(stdout.contains("status=\"applied\""), "{stdout}");
    assert!(stdout.contains("id=\"py-"), "{stdout}");

    // command | sign | apply, with the private key Python wrote.
    let admitted = server.shell(&format!(
        "\"$AGENTSERVER\" command register --name twin --wasm \"$AGENTS/echo.wasm\" --listens twin \
           --description 'Echo, admitted by signature.' --fuel 10000000 \
         | \"$AGENTSERVER\" sign - --key \"$DIR/identity.key\" --ttl 5m \
         | \"$AGENTSERVER\" apply - {}",
        apply_args("owner2")
    ));
    assert!(admitted.status.success(), "{admitted:?}");

    // Alice now sees `twin` (granted above) and `hold`; a slow call is in
    // flight when the signed graceful shutdown arrives.
    let (mut alice, catalog) = runtime.block_on(async {
        let mut client = agentserver::client::Client::connect(&server.url, &trust)
            .await
            .unwrap();
        let code = agentserver::auth::totp_code(&secret("alice"), SystemTime::now());
        let catalog = client.login("alice", &code).await.unwrap();
        client.send("<twin>hi</twin>").await.unwrap();
        (client, catalog)
    });
    assert!(
        catalog.contains(
            "<capability agent=\"twin\" tag=\"twin\">Echo, admitted by signature.</capability>"
        ),
        "{catalog}"
    );
    let echoed = runtime.block_on(alice.receive()).unwrap();
    assert!(
        format!("{echoed:?}").contains("<echoed>hi</echoed>"),
        "{echoed:?}"
    );
    runtime.block_on(alice.send("<hold ms=\"1500\"/>")).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let mut shutdown = Command::new("sh")
        .args([
            "-c",
            &format!(
                "\"$AGENTSERVER\" sign - --key \"$DIR/identity.key\" | \"$AGENTSERVER\" apply - {}",
                apply_args("owner3")
            ),
        ])
        .env("AGENTSERVER", BINARY)
        .env("URL", &server.url)
        .env("FP", &server.fingerprint)
        .env("DIR", server.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let unsigned = agentserver(&["command", "shutdown", "--mode", "graceful"]).stdout;
    shutdown.stdin.take().unwrap().write_all(&unsigned).unwrap();
    let verdict = shutdown.wait_with_output().unwrap();
    assert!(verdict.status.success(), "{verdict:?}");

    // The slow call's answer still arrives, then the server closes and exits 0.
    let frames = runtime.block_on(async {
        let mut frames = Vec::new();
        while let Ok(Ok(frame)) =
            tokio::time::timeout(Duration::from_secs(10), alice.receive()).await
        {
            let closed = matches!(frame, agentserver::client::Received::Closed(..));
            frames.push(format!("{frame:?}"));
            if closed {
                break;
            }
        }
        frames
    });
    assert!(
        frames.iter().any(|f| f.contains("<held></held>")),
        "the call in flight finished: {frames:?}"
    );
    assert!(
        frames.last().is_some_and(|f| f.contains("1001")),
        "closed as going away: {frames:?}"
    );
    assert_eq!(server.wait(Duration::from_secs(15)), Some(0));
}
