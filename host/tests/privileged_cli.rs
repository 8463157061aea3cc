//! Signed structural change as the owner does it from a shell: `identity
//! generate`, `command … | sign - | apply -` against the real binary, a key
//! and a command made by Python's `cryptography` and lxml, and a signed
//! graceful shutdown that lets a slow call finish and exits 0.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

mod support;

use support::{agents_dir, spawn_server, Spawned, BINARY};

fn agentserver(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run agentserver")
}

/// The key `identity generate` writes is read by the tools an owner signs
/// or stores keys with: OpenSSL (`openssl pkey`) and Python's
/// `cryptography` each load it and derive exactly the public key written
/// beside it.
#[test]
fn a_generated_key_is_read_by_openssl_and_by_python_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let output = agentserver(&["identity", "generate", "--out", out]);
    assert!(output.status.success(), "{output:?}");
    let key = dir.path().join("identity.key");
    let public = std::fs::read_to_string(dir.path().join("identity.pub")).unwrap();

    let openssl = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(openssl.status.success(), "{openssl:?}");
    assert_eq!(String::from_utf8(openssl.stdout).unwrap(), public);

    let script = "import sys\n\
from cryptography.hazmat.primitives import serialization as s\n\
key = s.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n\
sys.stdout.write(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode())\n";
    let python = Command::new("python3")
        .args(["-c", script])
        .arg(&key)
        .output()
        .expect("python3");
    assert!(python.status.success(), "{python:?}");
    assert_eq!(String::from_utf8(python.stdout).unwrap(), public);
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
    /// `hostile` agent on `hold`, the identity Python made, storage in
    /// memory.
    fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), "memory")
    }

    /// The same, in `dir`, with the `storage` backend.
    fn start_in(dir: tempfile::TempDir, storage: &str) -> Server {
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
            ("bob", "hold"),
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
             [storage]\nbackend = \"{storage}\"\n\
             [[agent]]\nname = \"hostile\"\ncomponent = {:?}\nlistens = [\"hold\"]\ntimeout_ms = 5000\n",
            agents_dir().join("hostile.wasm").display().to_string()
        );
        std::fs::write(dir.path().join("organism.toml"), config).unwrap();
        Server::run(dir)
    }

    /// Runs the server whose files are in `dir` (again).
    fn run(dir: tempfile::TempDir) -> Server {
        let Spawned {
            child,
            url,
            fingerprint,
        } = spawn_server(&dir.path().join("organism.toml"));
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

/// Logs `user` in (code computed from its secret file) and returns the
/// client and its catalog.
fn login(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    user: &str,
) -> (agentserver::client::Client, String) {
    let text = std::fs::read_to_string(server.dir.path().join(format!("{user}.secret"))).unwrap();
    let secret = agentserver::auth::decode_base32(&text).unwrap();
    runtime.block_on(async {
        let trust = agentserver::client::Trust::Fingerprint(server.fingerprint.clone());
        let mut client = agentserver::client::Client::connect(&server.url, &trust)
            .await
            .unwrap();
        let code = agentserver::auth::totp_code(&secret, SystemTime::now());
        let catalog = client.login(user, &code).await.unwrap();
        (client, catalog)
    })
}

/// Sends `message` and returns the next text frame.
fn ask(
    runtime: &tokio::runtime::Runtime,
    client: &mut agentserver::client::Client,
    message: &str,
) -> String {
    runtime.block_on(async {
        client.send(message).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
            Ok(Ok(agentserver::client::Received::Text(text))) => text,
            other => panic!("expected an answer, got {other:?}"),
        }
    })
}

/// Stops the server with SIGTERM and hands its folder back.
fn stop(mut server: Server) -> tempfile::TempDir {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(server.wait(Duration::from_secs(15)), Some(0));
    server.dir
}

#[test]
fn with_sqlite_structure_and_audit_survive_a_restart() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = Server::start_in(tempfile::tempdir().unwrap(), "sqlite");
    let granted = server.shell(&format!(
        "\"$AGENTSERVER\" apply \"$DIR/grant.xml\" {}",
        apply_args("owner1")
    ));
    assert!(granted.status.success(), "{granted:?}");
    let signed = server.shell(
        "\"$AGENTSERVER\" command register --name twin --wasm \"$AGENTS/echo.wasm\" --listens twin \
         | \"$AGENTSERVER\" sign - --key \"$DIR/identity.key\" --out \"$DIR/register.xml\"",
    );
    assert!(signed.status.success(), "{signed:?}");
    let admitted = server.shell(&format!(
        "\"$AGENTSERVER\" apply \"$DIR/register.xml\" {}",
        apply_args("owner2")
    ));
    assert!(admitted.status.success(), "{admitted:?}");
    let (mut alice, _) = login(&runtime, &server, "alice");
    let answer = ask(&runtime, &mut alice, "<twin>hi</twin>");
    assert!(answer.contains("<echoed>hi</echoed>"), "{answer}");
    let thread = answer
        .split("<thread>")
        .nth(1)
        .and_then(|rest| rest.split("</thread>").next())
        .unwrap()
        .to_owned();
    drop(alice);
    let dir = stop(server);
    let config = &config_path(&dir);

    // The chain verifies, and the thread replays in order.
    let verified = agentserver(&["audit", "verify", "--config", config]);
    assert!(verified.status.success(), "{verified:?}");
    let verified = String::from_utf8(verified.stdout).unwrap();
    assert!(verified.contains("entries verified; head "), "{verified}");
    let replay = agentserver(&["audit", "replay", &thread, "--config", config]);
    assert!(replay.status.success(), "{replay:?}");
    let replay = String::from_utf8(replay.stdout).unwrap();
    let lines: Vec<&str> = replay.lines().collect();
    assert_eq!(lines.len(), 2, "{replay}");
    assert!(
        lines[0].contains("message user:alice depth=0 <twin>hi</twin>"),
        "{replay}"
    );
    assert!(
        lines[1].contains("message twin depth=1 <echoed>hi</echoed>"),
        "{replay}"
    );

    // After a restart the admitted agent is back and its command stays used.
    let server = Server::run(dir);
    let (mut alice, catalog) = login(&runtime, &server, "alice");
    assert!(
        catalog.contains("<capability agent=\"twin\" tag=\"twin\">"),
        "{catalog}"
    );
    let answer = ask(&runtime, &mut alice, "<twin>again</twin>");
    assert!(answer.contains("<echoed>again</echoed>"), "{answer}");
    let replayed = server.shell(&format!(
        "\"$AGENTSERVER\" apply \"$DIR/register.xml\" {}",
        apply_args("owner3")
    ));
    assert_eq!(replayed.status.code(), Some(1), "{replayed:?}");
    assert!(
        String::from_utf8_lossy(&replayed.stdout).contains("already used"),
        "{replayed:?}"
    );
    drop(alice);
    let dir = stop(server);

    // A removal applied to the stopped server's state takes effect on start.
    let removal = Command::new("sh")
        .args([
            "-c",
            "\"$AGENTSERVER\" command remove --name twin | \"$AGENTSERVER\" sign - --key \"$DIR/identity.key\" \
             | \"$AGENTSERVER\" apply - --config \"$DIR/organism.toml\"",
        ])
        .env("AGENTSERVER", BINARY)
        .env("DIR", dir.path())
        .output()
        .unwrap();
    assert!(removal.status.success(), "{removal:?}");
    let server = Server::run(dir);
    let (alice, catalog) = login(&runtime, &server, "alice");
    assert!(!catalog.contains("tag=\"twin\""), "{catalog}");
    drop(alice);
    let dir = stop(server);
    assert!(
        agentserver(&["audit", "verify", "--config", &config_path(&dir)])
            .status
            .success()
    );

    // One flipped byte in one stored entry is found and named.
    let store = rusqlite::Connection::open(dir.path().join("data/agentserver.sqlite3")).unwrap();
    let seq: i64 = store
        .query_row(
            "SELECT seq FROM audit WHERE entry LIKE '%<twin>again</twin>%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    store
        .execute(
            "UPDATE audit SET entry = replace(entry, '<twin>again', '<twin>agaiN') WHERE seq = ?1",
            [seq],
        )
        .unwrap();
    drop(store);
    let tampered = agentserver(&["audit", "verify", "--config", &config_path(&dir)]);
    assert_eq!(tampered.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&tampered.stderr),
        format!("agentserver: audit entry {seq} is broken: its hash does not match its contents and the previous entry\n")
    );
}

fn config_path(dir: &tempfile::TempDir) -> String {
    dir.path().join("organism.toml").display().to_string()
}

#[test]
fn pending_frames_survive_kill_9_with_sqlite() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut server = Server::start_in(tempfile::tempdir().unwrap(), "sqlite");
    // Bob keeps the server busy throughout.
    let (mut bob, _) = login(&runtime, &server, "bob");
    let (mut alice, catalog) = login(&runtime, &server, "alice");
    let attribute = |name: &str| {
        let needle = format!(" {name}=\"");
        let at = catalog.find(&needle).unwrap() + needle.len();
        catalog[at..at + catalog[at..].find('"').unwrap()].to_owned()
    };
    let (id, token) = (attribute("session"), attribute("resume-token"));
    runtime.block_on(async {
        for _ in 0..40 {
            alice.send("<hold ms=\"25\"/>").await.unwrap();
        }
        for _ in 0..20 {
            bob.send("<hold ms=\"10\"/>").await.unwrap();
        }
    });
    // Alice goes away before her first answer; the answers pile up in the
    // store. Once all 40 are there, the server is killed outright.
    drop(alice);
    let store =
        rusqlite::Connection::open(server.dir.path().join("data/agentserver.sqlite3")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = store
            .query_row(
                "SELECT count(*) FROM frames WHERE session = ?1",
                [&id],
                |row| row.get(0),
            )
            .unwrap();
        if pending == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {pending} answers were stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(store);
    server.child.kill().unwrap();
    let _ = server.child.wait();
    drop(bob);

    let server = Server::run(server.dir);
    let frames = runtime.block_on(async {
        let trust = agentserver::client::Trust::Fingerprint(server.fingerprint.clone());
        let mut client = agentserver::client::Client::connect(&server.url, &trust)
            .await
            .unwrap();
        client
            .send(&format!("<resume-session id=\"{id}\" token=\"{token}\"/>"))
            .await
            .unwrap();
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
                Ok(Ok(agentserver::client::Received::Text(text))) => {
                    let catalog = text.starts_with("<catalog");
                    frames.push(text);
                    if catalog {
                        break;
                    }
                }
                other => panic!("expected frames, got {other:?} after {frames:?}"),
            }
        }
        frames
    });
    let held = frames
        .iter()
        .filter(|f| f.contains("<held></held>"))
        .count();
    assert_eq!(
        held, 40,
        "every answer produced while away, once: {frames:#?}"
    );
    assert!(frames.last().unwrap().contains("resumed=\"true\""));
    let dir = stop(server);
    let verified = agentserver(&["audit", "verify", "--config", &config_path(&dir)]);
    assert!(verified.status.success(), "{verified:?}");
}
