//! Reloading while serving, on the real binary: SIGHUP (and a change of
//! the files) makes the port present a renewed certificate without
//! dropping the connections already open; a pair that does not belong
//! together is refused with one log line and the current one stays; SIGHUP
//! also reads the users file again.

mod support;

use agentserver::auth::{add_user, totp_code};
use agentserver::client::{Client, Received, Trust};
use agentserver::server::tls::Identity;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::{agents_dir, BINARY};

/// A development certificate made in `dir`: its files and fingerprint.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (identity, _) = Identity::development(dir).unwrap();
    (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        identity.fingerprint(),
    )
}

/// Puts `cert` and `key` where the server reads its pair from.
fn install(dir: &Path, cert: &Path, key: &Path) {
    std::fs::copy(cert, dir.join("live-cert.pem")).unwrap();
    std::fs::copy(key, dir.join("live-key.pem")).unwrap();
}

fn hangup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Connects with the certificate pinned to `fingerprint`, trying until
/// `limit` passes.
async fn connect_pinned(url: &str, fingerprint: &str, limit: Duration) -> Client {
    let started = Instant::now();
    loop {
        let trust = Trust::Fingerprint(fingerprint.to_owned());
        match Client::connect(url, &trust).await {
            Ok(client) => return client,
            Err(error) if started.elapsed() > limit => {
                panic!("the port never presented {fingerprint}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn echo(client: &mut Client) {
    client.send("<echo>still here</echo>").await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.receive())
            .await
            .expect("an answer in time")
            .expect("a frame")
        {
            Received::Text(text) if text.contains("still here") => return,
            Received::Text(_) => continue,
            Received::Closed(code, reason) => panic!("closed: {code} {reason}"),
        }
    }
}

#[tokio::test]
async fn sighup_and_renewed_files_reload_the_certificate_and_users_without_dropping_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1, first) = certificate(&dir.path().join("one"));
    let (cert2, key2, second) = certificate(&dir.path().join("two"));
    install(dir.path(), &cert1, &key1);
    let users = dir.path().join("users.toml");
    let alice = add_user(&users, "alice", &["echo".into()]).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\nusers = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n\
         [[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\n",
        users.display().to_string(),
        dir.path().join("live-cert.pem").display().to_string(),
        dir.path().join("live-key.pem").display().to_string(),
        agents_dir().join("echo.wasm").display().to_string()
    );
    std::fs::write(dir.path().join("organism.toml"), config).unwrap();
    let log_path = dir.path().join("server.log");
    let mut child = Command::new(BINARY)
        .args(["run", "--config"])
        .arg(dir.path().join("organism.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().replace("listening on ", "");
    let printed = lines.next().unwrap().unwrap();
    assert_eq!(printed, format!("tls certificate sha256 {first}"));

    // A session on the first certificate.
    let mut session = connect_pinned(&url, &first, Duration::from_secs(5)).await;
    session
        .login("alice", &totp_code(&alice, SystemTime::now()))
        .await
        .unwrap();
    echo(&mut session).await;

    // Renewed files and SIGHUP: new connections see the new certificate,
    // the open session goes on.
    install(dir.path(), &cert2, &key2);
    hangup(&child);
    connect_pinned(&url, &second, Duration::from_secs(5)).await;
    echo(&mut session).await;

    // A certificate with someone else's key: refused, the current stays.
    install(dir.path(), &cert1, &key2);
    hangup(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    connect_pinned(&url, &second, Duration::from_secs(1)).await;
    echo(&mut session).await;

    // SIGHUP reads the users file again: a user added now can log in.
    install(dir.path(), &cert2, &key2);
    let bob = add_user(&users, "bob", &["echo".into()]).unwrap();
    hangup(&child);
    let started = Instant::now();
    loop {
        let mut client = connect_pinned(&url, &second, Duration::from_secs(1)).await;
        match client
            .login("bob", &totp_code(&bob, SystemTime::now()))
            .await
        {
            Ok(_) => break,
            Err(error) if started.elapsed() > Duration::from_secs(5) => {
                panic!("bob cannot log in after SIGHUP: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    // Without a signal: files that change are picked up within seconds.
    install(dir.path(), &cert1, &key1);
    connect_pinned(&url, &first, Duration::from_secs(15)).await;
    echo(&mut session).await;

    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tls certificate not reloaded"))
        .collect();
    // At least the mismatched pair's (the 5 s check may also catch a pair
    // halfway through being copied, and refuse that too).
    assert!(!refused.is_empty(), "{log}");
    assert!(refused.iter().all(|l| l.contains("WARN")), "{log}");
    assert!(log.contains("users file reloaded"), "{log}");
}
