//! A full disk under the SQLite backend: the real binary keeps its data
//! folder on a small tmpfs, which a filler file then fills. Meanwhile the
//! server goes on serving what needs no storage, says what it cannot do
//! (an agent's write fails with the reason, a signed command is refused,
//! the audit backlog shows in `/metrics`), never acknowledges what it did
//! not store, and recovers by itself once the filler is gone: the audit
//! entries it held are stored, and the chain verifies with every message.
//!
//! Mounting a tmpfs needs root (as `make test` runs here, installing system
//! packages); without it the test says so and does nothing else.

mod support;

use agentserver::auth::{add_user, totp_code};
use agentserver::client::{Client, Received, Trust};
use agentserver::server::StorageConfig;
use agentserver::store::Stores;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use support::{agents_dir, spawn_server_logging_to, workspace};

/// A tmpfs of `megabytes` at `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, megabytes: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with one file, to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for size in [64 << 10, 4 << 10, 1] {
        let block = vec![0u8; size];
        loop {
            if let Err(error) = file.write_all(&block).and_then(|()| file.sync_all()) {
                assert_eq!(
                    error.raw_os_error(),
                    Some(28),
                    "filling stopped for another reason than ENOSPC: {error}"
                );
                break;
            }
        }
    }
    path
}

async fn ask(client: &mut Client, message: &str) -> String {
    client.send(message).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.receive())
            .await
            .expect("an answer within 10 s")
            .expect("a frame")
        {
            Received::Text(text) if text.starts_with("<catalog") => continue,
            Received::Text(text) => return text,
            Received::Closed(code, reason) => panic!("closed: {code} {reason}"),
        }
    }
}

async fn audit_held(url: &str, trust: &Trust) -> u64 {
    let metrics_url = url.replace("wss://", "https://") + "metrics";
    let (_, text) = agentserver::client::get(&metrics_url, trust).await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("agentserver_audit_held ")?.parse().ok())
        .unwrap_or_else(|| panic!("no agentserver_audit_held in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, 4) else {
        eprintln!("NOTE: cannot mount a tmpfs here (not root?): the full-disk test did not run");
        return;
    };
    let secret = add_user(&dir.path().join("users.toml"), "alice", &["*".into()]).unwrap();
    agentserver::privileged::generate(dir.path(), false).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\nidentity = \"identity.pub\"\ncompile_cache = {:?}\n\
         [storage]\nbackend = \"sqlite\"\n\
         [[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\n\
         [[agent]]\nname = \"memo\"\ncomponent = {:?}\nlistens = [\"remember\", \"recall\", \"tally\"]\n\
         [agent.storage]\nsession = {{ max_keys = 10, max_bytes = 1000 }}\n",
        workspace().join("target/agent-cache").display().to_string(),
        agents_dir().join("echo.wasm").display().to_string(),
        agents_dir().join("memo.wasm").display().to_string(),
    );
    std::fs::write(dir.path().join("organism.toml"), config).unwrap();
    let log = dir.path().join("server.log");
    let mut server = spawn_server_logging_to(&dir.path().join("organism.toml"), &log);
    let trust = Trust::Fingerprint(server.fingerprint.clone());
    let mut alice = Client::connect(&server.url, &trust).await.unwrap();
    alice
        .login("alice", &totp_code(&secret, SystemTime::now()))
        .await
        .unwrap();
    assert!(ask(&mut alice, "<echo>before</echo>")
        .await
        .ends_with("<echoed>before</echoed></message>"));
    let stored = ask(&mut alice, "<remember key=\"k\">one</remember>").await;
    assert!(stored.contains("<remembered key=\"k\">"), "{stored}");

    let filler = fill(&data);

    // A write is not acknowledged: the agent hears the store's reason.
    let refused = ask(&mut alice, "<remember key=\"k\">two</remember>").await;
    assert!(
        refused.contains("<memo-failed>") && !refused.contains("<remembered"),
        "{refused}"
    );
    // What needs no storage is served; the audit entries wait in memory
    // (SQLite may find room again in what its failed writes allocated; the
    // log says when the store failed and when it took them).
    for n in 0..20 {
        let answer = ask(&mut alice, &format!("<echo>during {n}</echo>")).await;
        assert!(
            answer.ends_with(&format!("<echoed>during {n}</echoed></message>")),
            "{answer}"
        );
    }

    std::fs::remove_file(filler).unwrap();

    let started = Instant::now();
    while audit_held(&server.url, &trust).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the held audit entries were never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recalled = ask(&mut alice, "<recall key=\"k\"/>").await;
    assert!(recalled.contains(">one</recalled>"), "{recalled}");
    let stored = ask(&mut alice, "<remember key=\"k\">three</remember>").await;
    assert!(stored.contains("<remembered key=\"k\">"), "{stored}");
    let _ = server.child.kill();
    let _ = server.child.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    let failed = log
        .lines()
        .filter(|l| l.contains("audit entries could not be stored"))
        .collect::<Vec<_>>();
    assert_eq!(
        failed.len(),
        1,
        "one line when storing starts failing:\n{log}"
    );
    assert!(failed[0].contains("database or disk is full"), "{log}");
    assert!(log.contains("audit store writable again"), "{log}");

    let stores = Stores::open(&StorageConfig::Sqlite, &data).unwrap();
    let verified = stores.audit.verify().unwrap().expect("an intact chain");
    let entries = stores.audit.audit_entries(1, 10_000).unwrap();
    assert_eq!(verified.count, entries.len() as u64);
    for n in 0..20 {
        let payload = format!("<echo>during {n}</echo>");
        let found = entries
            .iter()
            .filter(|e| e.entry.contains(&payload))
            .count();
        assert_eq!(found, 1, "{payload} audited {found} times");
    }
}
