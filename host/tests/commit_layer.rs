//! The commit layer end to end, as an owner and an auditor use it: the real
//! binary makes its node key, the owner certifies it with a signed
//! `node-certificate` carried over WSS, messages flow, the audit writer
//! signs checkpoints into the SQLite log; then `audit export` writes a
//! file that `audit verify --file` and the Python script in `docs/` both
//! accept with nothing but the owner's public key — and both refuse, at
//! the same place, a tampered, truncated, reordered or foreign export.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

mod support;

use support::{agents_dir, spawn_server, workspace, Spawned, BINARY};

fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run agentserver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Both verifiers on `export` against `owner`: (Rust, Python), each `Ok`
/// with its summary or `Err` with its complaint.
fn verify_both(export: &Path, owner: &Path) -> (Result<String, String>, Result<String, String>) {
    let rust = run(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--owner",
        owner.to_str().unwrap(),
    ]);
    let python = Command::new("python3")
        .arg(workspace().join("docs/verify_audit_export.py"))
        .arg(export)
        .arg(owner)
        .output()
        .expect("python3");
    let outcome = |output: Output| {
        if output.status.success() {
            Ok(text(&output.stdout).trim().to_owned())
        } else {
            Err(text(&output.stderr))
        }
    };
    (outcome(rust), outcome(python))
}

/// Both verifiers refuse `export`, for the reason containing `expected`.
fn assert_both_refuse(export: &Path, owner: &Path, expected: &str) {
    let (rust, python) = verify_both(export, owner);
    let rust = rust.expect_err("the Rust verifier accepted a bad export");
    let python = python.expect_err("the Python verifier accepted a bad export");
    assert!(rust.contains(expected), "Rust: {rust}");
    assert!(python.contains(expected), "Python: {python}");
    // The same reason, naming the same place.
    let reason = |complaint: &str| {
        complaint
            .split_once("does not verify: ")
            .map(|(_, reason)| reason.trim().to_owned())
            .unwrap_or_else(|| panic!("no reason in {complaint}"))
    };
    assert_eq!(reason(&rust), reason(&python), "the verifiers disagree");
}

fn write_tampered(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn checkpoints_are_signed_exported_and_verified_offline_by_rust_and_python() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let output = run(&["identity", "generate", "--out", root.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let users = root.join("users.toml");
    for (user, allow) in [("owner", "echo"), ("alice", "echo")] {
        let secret = agentserver::auth::add_user(&users, user, &[allow.into()]).unwrap();
        std::fs::write(
            root.join(format!("{user}.secret")),
            agentserver::auth::encode_base32(&secret),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("organism.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nidentity = \"identity.pub\"\nmax_instances = 8\n\
             [storage]\nbackend = \"sqlite\"\n\
             [audit]\ncheckpoint_entries = 6\ncheckpoint_seconds = 1\n\
             [[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\n",
            agents_dir().join("echo.wasm").display().to_string()
        ),
    )
    .unwrap();

    let Spawned {
        mut child,
        url,
        fingerprint,
    } = spawn_server(&root.join("organism.toml"));
    let node_pub = root.join("data/node.pub");
    assert!(node_pub.exists(), "the server makes its node key at start");

    // The owner certifies the node key: command | sign | apply, over WSS.
    let certify = Command::new("sh")
        .args([
            "-c",
            "\"$AGENTSERVER\" command node-certificate --node-key \"$DIR/data/node.pub\" --days 2 \
             | \"$AGENTSERVER\" sign - --key \"$DIR/identity.key\" \
             | \"$AGENTSERVER\" apply - --url \"$URL\" --fingerprint \"$FP\" --user owner \
               --totp-secret-file \"$DIR/owner.secret\"",
        ])
        .env("AGENTSERVER", BINARY)
        .env("URL", &url)
        .env("FP", &fingerprint)
        .env("DIR", root)
        .output()
        .unwrap();
    assert!(certify.status.success(), "{certify:?}");
    assert!(text(&certify.stdout).contains("applied"), "{certify:?}");

    // Traffic: three rounds of four echoes from alice, each round followed
    // by a pause in which the time trigger signs what the count did not.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let secret = agentserver::auth::decode_base32(
            &std::fs::read_to_string(root.join("alice.secret")).unwrap(),
        )
        .unwrap();
        let trust = agentserver::client::Trust::Fingerprint(fingerprint.clone());
        let mut client = agentserver::client::Client::connect(&url, &trust)
            .await
            .unwrap();
        let code = agentserver::auth::totp_code(&secret, SystemTime::now());
        client.login("alice", &code).await.unwrap();
        for i in 0..12 {
            client
                .send(&format!("<echo>hello {i:02}</echo>"))
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
                Ok(Ok(agentserver::client::Received::Text(answer))) => {
                    assert!(answer.contains(&format!("hello {i:02}")), "{answer}")
                }
                other => panic!("expected an echo, got {other:?}"),
            }
            if i % 4 == 3 {
                tokio::time::sleep(Duration::from_millis(1_300)).await;
            }
        }
    });
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let config = root.join("organism.toml");
    let config = config.to_str().unwrap();
    let listed = run(&["audit", "checkpoints", "--config", config]);
    assert!(listed.status.success(), "{listed:?}");
    let checkpoints: Vec<u64> = text(&listed.stdout)
        .lines()
        .map(|line| line[1..line.find(' ').unwrap()].parse().unwrap())
        .collect();
    assert!(
        checkpoints.len() >= 3,
        "a checkpoint per round of traffic at least: {checkpoints:?}"
    );
    let chain = run(&["audit", "verify", "--config", config]);
    assert!(chain.status.success(), "{chain:?}");

    let owner = root.join("identity.pub");
    let whole = root.join("whole.export");
    let output = run(&[
        "audit",
        "export",
        "--config",
        config,
        "--out",
        whole.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let (rust, python) = verify_both(&whole, &owner);
    let rust = rust.expect("the Rust verifier accepts the export");
    assert_eq!(python.as_deref(), Ok(rust.as_str()), "both verifiers agree");
    let last = checkpoints.last().unwrap();
    assert!(
        rust.starts_with(&format!(
            "entries 1 to {last} verified; {} checkpoint(s)",
            checkpoints.len()
        )),
        "{rust}"
    );

    // From the second checkpoint on.
    let since = root.join("since.export");
    let second = checkpoints[1].to_string();
    let output = run(&[
        "audit",
        "export",
        "--config",
        config,
        "--since",
        &second,
        "--out",
        since.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let (rust, python) = verify_both(&since, &owner);
    let rust = rust.expect("the Rust verifier accepts the partial export");
    assert_eq!(python.as_deref(), Ok(rust.as_str()));
    assert!(
        rust.starts_with(&format!("entries {second} to {last} verified")),
        "{rust}"
    );
    let output = run(&[
        "audit",
        "export",
        "--config",
        config,
        "--since",
        "2",
        "--out",
        root.join("bad.export").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("entry 2 is not a checkpoint"),
        "{output:?}"
    );

    // Tampered, truncated, reordered, foreign.
    let good = std::fs::read(&whole).unwrap();
    let good_text = text(&good);
    let tampered = good_text.replacen("hello 07", "hello 08", 1);
    assert_ne!(tampered, good_text);
    let path = write_tampered(root, "tampered.export", tampered.as_bytes());
    assert_both_refuse(&path, &owner, "is broken");

    let path = write_tampered(root, "truncated.export", &good[..good.len() / 2]);
    assert_both_refuse(&path, &owner, "cut short");

    let mut records: Vec<&str> = good_text.split("\nentry ").collect();
    records.swap(5, 6);
    let path = write_tampered(
        root,
        "reordered.export",
        records.join("\nentry ").as_bytes(),
    );
    assert_both_refuse(&path, &owner, "follows entry");

    let stranger = root.join("stranger");
    let output = run(&["identity", "generate", "--out", stranger.to_str().unwrap()]);
    assert!(output.status.success());
    assert_both_refuse(
        &whole,
        &stranger.join("identity.pub"),
        "not of the owner key given",
    );
}

/// `agentserver command ARGS | sign | apply --config` against the stopped
/// server in `root`; panics unless applied.
fn apply_offline(root: &Path, command: &str) {
    let output = Command::new("sh")
        .args([
            "-c",
            &format!(
                "\"$AGENTSERVER\" command {command} \
                 | \"$AGENTSERVER\" sign - --key \"$DIR/identity.key\" \
                 | \"$AGENTSERVER\" apply - --config \"$DIR/organism.toml\""
            ),
        ])
        .env("AGENTSERVER", BINARY)
        .env("DIR", root)
        .output()
        .unwrap();
    assert!(
        output.status.success() && text(&output.stdout).contains("applied"),
        "{command}: {output:?}"
    );
}

/// Starts the server in `root`, has alice send `count` echoes, waits for
/// the time trigger's checkpoint, and stops it.
fn traffic(root: &Path, count: usize) {
    let Spawned {
        mut child,
        url,
        fingerprint,
    } = spawn_server(&root.join("organism.toml"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let secret = agentserver::auth::decode_base32(
            &std::fs::read_to_string(root.join("alice.secret")).unwrap(),
        )
        .unwrap();
        let trust = agentserver::client::Trust::Fingerprint(fingerprint.clone());
        let mut client = agentserver::client::Client::connect(&url, &trust)
            .await
            .unwrap();
        let code = agentserver::auth::totp_code(&secret, SystemTime::now());
        client.login("alice", &code).await.unwrap();
        for i in 0..count {
            client
                .send(&format!("<echo>echo {i}</echo>"))
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(10), client.receive()).await {
                Ok(Ok(agentserver::client::Received::Text(answer))) => {
                    assert!(answer.contains(&format!("echo {i}")), "{answer}")
                }
                other => panic!("expected an echo, got {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(1_300)).await;
    });
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checkpoint entries `audit checkpoints` lists.
fn checkpoint_entries(config: &str) -> Vec<u64> {
    let listed = run(&["audit", "checkpoints", "--config", config]);
    assert!(listed.status.success(), "{listed:?}");
    text(&listed.stdout)
        .lines()
        .map(|line| line[1..line.find(' ').unwrap()].parse().unwrap())
        .collect()
}

/// Exports the whole log of `config` to `path` and has both verifiers
/// check it; returns their (agreeing) summary.
fn export_and_verify(config: &str, path: &Path, owner: &Path) -> String {
    let output = run(&[
        "audit",
        "export",
        "--config",
        config,
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let (rust, python) = verify_both(path, owner);
    let rust = rust.expect("the Rust verifier accepts the export");
    assert_eq!(python.as_deref(), Ok(rust.as_str()), "both verifiers agree");
    rust
}

#[test]
fn a_revoked_node_key_stops_vouching_while_what_it_signed_before_stays_checkable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let output = run(&["identity", "generate", "--out", root.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let users = root.join("users.toml");
    let secret = agentserver::auth::add_user(&users, "alice", &["echo".into()]).unwrap();
    std::fs::write(
        root.join("alice.secret"),
        agentserver::auth::encode_base32(&secret),
    )
    .unwrap();
    std::fs::write(
        root.join("organism.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nidentity = \"identity.pub\"\nmax_instances = 8\n\
             [storage]\nbackend = \"sqlite\"\n\
             [audit]\ncheckpoint_entries = 6\ncheckpoint_seconds = 1\n\
             [[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\n",
            agents_dir().join("echo.wasm").display().to_string()
        ),
    )
    .unwrap();
    let config = root.join("organism.toml");
    let config = config.to_str().unwrap();
    let owner = root.join("identity.pub");
    let data = root.join("data");
    let node = |args: &str| {
        let output = run(&["identity", "node", "--data-dir", data.to_str().unwrap()]);
        assert!(output.status.success(), "{output:?}");
        apply_offline(root, &format!("{args} --node-key \"$DIR/data/node.pub\""));
    };

    // The first node key, certified; traffic it signs checkpoints for.
    node("node-certificate --days 2");
    traffic(root, 4);
    let before = checkpoint_entries(config);
    let vouched = *before.last().unwrap();
    let summary = export_and_verify(config, &root.join("first.export"), &owner);
    assert!(
        summary.starts_with(&format!("entries 1 to {vouched} verified")),
        "{summary}"
    );

    // The owner revokes it, a second after its last checkpoint (the
    // revocation counts from its whole second).
    std::thread::sleep(Duration::from_millis(1_100));
    node("node-revoke --reason rotated");
    // Started again with the revoked key, the server signs no checkpoint.
    traffic(root, 4);
    let after = checkpoint_entries(config);
    assert!(
        after.len() <= before.len() + 1,
        "at most the offline apply's closing checkpoint, made with the key just revoked: \
         {before:?} then {after:?}"
    );
    // The export carries the revocation and ends at the last checkpoint
    // that vouches; what the key signed before stays checkable.
    let revoked = root.join("revoked.export");
    let summary = export_and_verify(config, &revoked, &owner);
    assert!(
        summary.starts_with(&format!("entries 1 to {vouched} verified")),
        "{summary}"
    );
    assert!(text(&std::fs::read(&revoked).unwrap()).contains("\nrevocation "));

    // A new node key, certified: its checkpoints cover everything since,
    // the revoked key's void ones included.
    std::fs::rename(data.join("node.key"), root.join("revoked-node.key")).unwrap();
    std::fs::rename(data.join("node.pub"), root.join("revoked-node.pub")).unwrap();
    node("node-certificate --days 2");
    traffic(root, 2);
    let last = *checkpoint_entries(config).last().unwrap();
    assert!(last > vouched);
    let summary = export_and_verify(config, &root.join("renewed.export"), &owner);
    assert!(
        summary.starts_with(&format!("entries 1 to {last} verified")),
        "{summary}"
    );
}
