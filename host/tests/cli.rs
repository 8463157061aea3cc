//! The `agentserver` binary as a user runs it: `user add`, `user code`,
//! `hash`, and `run` with a graceful shutdown on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

mod support;

use support::{spawn_server, Spawned, BINARY};

fn agentserver(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .expect("run agentserver")
}

#[test]
fn user_add_prints_the_uri_first_and_keeps_the_file_private() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let users_arg = users.to_str().unwrap();
    let png = dir.path().join("qr.png");
    let output = agentserver(&[
        "user",
        "add",
        "alice",
        "--allow",
        "calculate,echo",
        "--users",
        users_arg,
        "--qr-png",
        png.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    let secret = first
        .strip_prefix("otpauth://totp/AgentServer:alice?secret=")
        .and_then(|rest| rest.strip_suffix("&issuer=AgentServer"))
        .unwrap_or_else(|| panic!("first line: {first}"));
    assert_eq!(
        agentserver::auth::decode_base32(secret).unwrap().len(),
        20,
        "160-bit secret"
    );
    assert!(
        stdout.contains('█') || stdout.contains('▀'),
        "a QR code is drawn"
    );
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let output = agentserver(&["user", "add", "bob", "--allow", "*", "--users", users_arg]);
    assert!(output.status.success());
    let output = agentserver(&[
        "user", "add", "bob", "--allow", "echo", "--users", users_arg,
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "agentserver: user `bob` already exists\n"
    );
    let listed =
        String::from_utf8(agentserver(&["user", "list", "--users", users_arg]).stdout).unwrap();
    assert_eq!(listed, "alice\tcalculate,echo\nbob\t*\n");

    let code =
        String::from_utf8(agentserver(&["user", "code", "alice", "--users", users_arg]).stdout)
            .unwrap();
    let expected = agentserver::auth::totp_code(
        &agentserver::auth::decode_base32(secret).unwrap(),
        std::time::SystemTime::now(),
    );
    assert_eq!(code.trim().len(), 6);
    // The step may have turned between the two computations; either is fine.
    let previous = agentserver::auth::totp_code(
        &agentserver::auth::decode_base32(secret).unwrap(),
        std::time::SystemTime::now() - std::time::Duration::from_secs(30),
    );
    assert!(code.trim() == expected || code.trim() == previous);
}

#[test]
fn hash_prints_the_sha256_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.wasm");
    std::fs::write(&file, b"abc").unwrap();
    let output = agentserver(&["hash", file.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    );
}

#[cfg(unix)]
#[test]
fn run_serves_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("organism.toml"),
        "listen = \"127.0.0.1:0\"\nmax_instances = 16\n",
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .args([
            "run",
            "--config",
            dir.path().join("organism.toml").to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    assert!(
        listening.starts_with("listening on wss://127.0.0.1:"),
        "{listening}"
    );
    let fingerprint = lines.next().unwrap().unwrap();
    assert!(
        fingerprint.starts_with("tls certificate sha256 "),
        "{fingerprint}"
    );
    assert!(dir.path().join("data/tls/cert.pem").is_file());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_bad_config_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("organism.toml");
    std::fs::write(&config, "listen = \"nowhere\"\n").unwrap();
    let output = agentserver(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.ends_with("`listen`: must be an address such as 127.0.0.1:8765\n"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[cfg(unix)]
#[test]
fn connect_sends_a_file_and_prints_the_answer() {
    let agents = support::agents_dir();
    let echo = agents.join("echo.wasm");
    assert!(
        echo.is_file(),
        "build the example agents with `make agents`"
    );
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let secret = agentserver::auth::add_user(&users, "alice", &["echo".into()]).unwrap();
    let secret_file = dir.path().join("alice.secret");
    std::fs::write(&secret_file, agentserver::auth::encode_base32(&secret)).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\nmax_instances = 16\n[[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\ndescription = \"Echoes.\"\n",
        echo.display().to_string()
    );
    std::fs::write(dir.path().join("organism.toml"), config).unwrap();
    let Spawned {
        child: mut server,
        url,
        ..
    } = spawn_server(&dir.path().join("organism.toml"));
    let message = dir.path().join("message.xml");
    std::fs::write(&message, "<echo>over the wire</echo>\n").unwrap();
    let output = Command::new(BINARY)
        .args(["connect", &url, "--user", "alice", "--ca"])
        .arg(dir.path().join("data/tls/cert.pem"))
        .arg("--totp-secret-file")
        .arg(&secret_file)
        .arg("--send")
        .arg(&message)
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("<catalog"), "{stdout}");
    assert!(
        stdout.contains("<capability agent=\"echo\" tag=\"echo\">Echoes.</capability>"),
        "{stdout}"
    );
    assert!(stdout.contains("<from>echo</from>"), "{stdout}");
    assert!(
        stdout.contains("<echoed>over the wire</echoed>"),
        "{stdout}"
    );
}

/// `check` passes a good configuration, and names every problem of a
/// broken one on its own line (not only the first), with exit status 1.
#[test]
fn check_passes_a_good_configuration_and_names_every_problem_of_a_broken_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let agents = support::agents_dir();
    let echo = agents.join("echo.wasm");
    let fetch = agents.join("fetch.wasm");
    let users = dir.path().join("users.toml");
    assert!(agentserver(&[
        "user",
        "add",
        "alice",
        "--allow",
        "echo",
        "--users",
        users.to_str().unwrap()
    ])
    .status
    .success());
    let good = format!(
        "listen = \"127.0.0.1:0\"\nusers = {users:?}\n\
         [[agent]]\nname = \"echo\"\ncomponent = {echo:?}\nlistens = [\"echo\"]\n"
    );
    std::fs::write(dir.path().join("good.toml"), good).unwrap();
    let output = agentserver(&[
        "check",
        "--config",
        dir.path().join("good.toml").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).ends_with("good.toml: ok\n"));

    // Broken in nine ways at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("node.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "[secrets]\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dir.path().join("identity.pub"), "not a key\n").unwrap();
    let broken = format!(
        "listen = \"{}\"\nusers = \"missing-users.toml\"\nidentity = \"identity.pub\"\n\
         secrets = {secrets:?}\n\
         [storage]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n\
         [[agent]]\nname = \"gone\"\ncomponent = \"nowhere.wasm\"\nlistens = [\"gone\"]\n\
         [[agent]]\nname = \"pinned\"\ncomponent = {echo:?}\nlistens = [\"pinned\"]\nsha256 = \"{}\"\n\
         [[agent]]\nname = \"fetcher\"\ncomponent = {fetch:?}\nlistens = [\"fetch\"]\n",
        taken.local_addr().unwrap(),
        "0".repeat(64)
    );
    std::fs::write(dir.path().join("broken.toml"), broken).unwrap();
    let output = agentserver(&[
        "check",
        "--config",
        dir.path().join("broken.toml").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = |starts: &str, mentions: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(starts) && l.contains(mentions)),
            "no line {starts:?} mentioning {mentions:?} in:\n{stdout}"
        );
    };
    expect("users:", "missing-users.toml");
    expect("identity:", "identity.pub");
    expect("secrets:", "secrets.toml");
    expect("listen ", "Address already in use");
    expect("agent `gone`", "nowhere.wasm");
    expect("agent `pinned`", "sha256");
    expect("agent `fetcher`", "wasi:http");
    expect("storage:", "redis");
    expect("node key:", "node.key");
    assert_eq!(lines.len(), 9, "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("9 problems"));
}
