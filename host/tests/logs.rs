//! What the server's log tells an operator, read from the real binary's
//! standard error: a connection closed for flooding and a burst of failed
//! logins each leave one warning with the user and the address, an agent
//! whose calls fail one after another one warning; a log written to a file
//! carries no terminal colour codes; `--log-format json` writes one JSON
//! object a line; a port out of file descriptors backs off, says so once,
//! and serves again when descriptors are free; one address holding
//! thousands of connections is capped, and the total too, each said once,
//! while logged-in users go on.

mod support;

use agentserver::auth::{add_user, totp_code};
use agentserver::client::{Client, Received, Trust};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};
use support::{agents_dir, BINARY};

/// The server of the organism in `dir`, its standard error going to
/// `dir/server.log`.
struct Logged {
    child: Child,
    url: String,
    trust: Trust,
}

impl Logged {
    fn start(dir: &Path, extra_args: &[&str]) -> Logged {
        Self::start_limited(dir, extra_args, None)
    }

    /// [`start`](Self::start), with at most `open_files` file descriptors.
    fn start_limited(dir: &Path, extra_args: &[&str], open_files: Option<u32>) -> Logged {
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let limit = open_files.map_or_else(|| "$(ulimit -n)".to_owned(), |n| n.to_string());
        let mut child = Command::new("sh")
            .args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")])
            .arg(BINARY)
            .args(extra_args)
            .args(["run", "--config"])
            .arg(dir.join("organism.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run agentserver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines.next().unwrap().unwrap().replace("listening on ", "");
        let fingerprint = lines
            .next()
            .unwrap()
            .unwrap()
            .replace("tls certificate sha256 ", "");
        Logged {
            child,
            url,
            trust: Trust::Fingerprint(fingerprint),
        }
    }

    /// A connection logged in as `user`.
    async fn login(&self, user: &str, secret: &[u8]) -> Client {
        let mut client = Client::connect(&self.url, &self.trust).await.unwrap();
        client
            .login(user, &totp_code(secret, SystemTime::now()))
            .await
            .unwrap();
        client
    }

    /// Stops the server and returns what it logged.
    fn stop(mut self, dir: &Path) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(dir.join("server.log")).unwrap()
    }
}

/// An organism with the echo agent, low flood limits and user `alice`
/// (whose secret is returned).
fn organism(dir: &Path) -> Vec<u8> {
    let secret = add_user(&dir.join("users.toml"), "alice", &["echo".into()]).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\nmessages_per_second = 5\nmessage_burst = 5\n\
         [[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\n",
        agents_dir().join("echo.wasm").display().to_string()
    );
    std::fs::write(dir.join("organism.toml"), config).unwrap();
    secret
}

async fn receive(client: &mut Client) -> Received {
    tokio::time::timeout(Duration::from_secs(10), client.receive())
        .await
        .expect("an answer in time")
        .expect("a frame")
}

#[tokio::test]
async fn flooding_and_a_login_burst_leave_warnings_without_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = organism(dir.path());
    let server = Logged::start(dir.path(), &[]);

    // Flooding: far more messages than the burst allows.
    let mut alice = server.login("alice", &secret).await;
    for _ in 0..100 {
        if alice.send("<echo>x</echo>").await.is_err() {
            break;
        }
    }
    loop {
        if let Received::Closed(code, reason) = receive(&mut alice).await {
            assert_eq!((code, reason.as_str()), (1008, "flooding"));
            break;
        }
    }

    // A burst of wrong codes for a user nobody has, from one address.
    for _ in 0..6 {
        let mut mallory = Client::connect(&server.url, &server.trust).await.unwrap();
        assert!(mallory.login("mallory", "000000").await.is_err());
    }

    let log = server.stop(dir.path());
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    let flooding: Vec<&str> = log.lines().filter(|l| l.contains("flooding")).collect();
    assert_eq!(flooding.len(), 1, "{log}");
    assert!(flooding[0].contains("WARN"), "{log}");
    assert!(flooding[0].contains("user=alice"), "{log}");
    assert!(flooding[0].contains("peer=127.0.0.1:"), "{log}");
    let bursts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failures"))
        .collect();
    // Once for the user name, once for the address: each when its limit
    // is reached, not for every failure after it.
    assert_eq!(bursts.len(), 2, "{log}");
    assert!(bursts.iter().all(|l| l.contains("WARN")
        && l.contains("user=\"mallory\"")
        && l.contains("peer=127.0.0.1")));
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    organism(dir.path());
    // No identity is configured: the server warns about it at start.
    let server = Logged::start(dir.path(), &["--log-format", "json"]);
    let log = server.stop(dir.path());
    assert!(!log.trim().is_empty(), "nothing logged");
    let checked = Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             for line in sys.stdin.read().splitlines():\n\
             \x20   entry = json.loads(line)\n\
             \x20   assert entry['level'] in ('WARN', 'ERROR', 'INFO'), entry\n\
             \x20   assert 'message' in entry['fields'], entry\n\
             print('ok')",
        ])
        .stdin(std::fs::File::open(dir.path().join("server.log")).unwrap())
        .output()
        .expect("python3");
    assert!(checked.status.success(), "{checked:?}\n{log}");
    assert!(log.contains("no organism identity"), "{log}");
}

#[tokio::test]
async fn an_agent_failing_call_after_call_leaves_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let secret = add_user(
        &dir.path().join("users.toml"),
        "alice",
        &["trap".into(), "refuse".into()],
    )
    .unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n\
         [[agent]]\nname = \"hostile\"\ncomponent = {:?}\nlistens = [\"trap\", \"refuse\"]\n",
        agents_dir().join("hostile.wasm").display().to_string()
    );
    std::fs::write(dir.path().join("organism.toml"), config).unwrap();
    let server = Logged::start(dir.path(), &[]);
    let mut alice = server.login("alice", &secret).await;
    // Refusing its input is an agent's answer, not a failure.
    for _ in 0..6 {
        alice.send("<refuse/>").await.unwrap();
        match receive(&mut alice).await {
            Received::Text(text) => assert!(text.contains("agent-failed"), "{text}"),
            Received::Closed(code, reason) => panic!("closed: {code} {reason}"),
        }
    }
    for _ in 0..8 {
        alice.send("<trap/>").await.unwrap();
        match receive(&mut alice).await {
            Received::Text(text) => assert!(text.contains("agent-failed"), "{text}"),
            Received::Closed(code, reason) => panic!("closed: {code} {reason}"),
        }
    }
    let log = server.stop(dir.path());
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("agent failing repeatedly"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("agent=\"hostile\""));
    assert!(warnings[0].contains("failed=5"), "{log}");
    assert!(!warnings[0].contains("refused"), "{log}");
}

#[tokio::test]
async fn out_of_file_descriptors_the_port_backs_off_says_so_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let secret = organism(dir.path());
    // The per-address cap would close this flood long before the
    // descriptors run out (the next test): lift it, as if the connections
    // came from many addresses.
    let config = std::fs::read_to_string(dir.path().join("organism.toml")).unwrap();
    std::fs::write(
        dir.path().join("organism.toml"),
        format!("max_unauthenticated_per_address = 100000\n{config}"),
    )
    .unwrap();
    let server = Logged::start_limited(dir.path(), &[], Some(128));
    let address = server
        .url
        .trim_start_matches("wss://")
        .trim_end_matches('/');
    // More connections than the server has descriptors, held open.
    let held: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(address).ok())
        .collect();
    assert!(held.len() > 128, "only {} connections", held.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    // Served again once they are gone.
    let started = std::time::Instant::now();
    let mut alice = loop {
        match Client::connect(&server.url, &server.trust).await {
            Ok(client) => break client,
            Err(error) if started.elapsed() > Duration::from_secs(15) => {
                panic!("never served again: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    alice
        .login("alice", &totp_code(&secret, SystemTime::now()))
        .await
        .unwrap();
    let log = server.stop(dir.path());
    // One line when a streak of failures starts and one when it ends (the
    // descriptors come free one by one, so there may be a few streaks),
    // never one per retry.
    let streaks: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("cannot accept connections") || l.contains("accepting connections again")
        })
        .collect();
    assert!(!streaks.is_empty(), "{log}");
    assert!(streaks.len() <= 10, "{log}");
    for (n, line) in streaks.iter().enumerate() {
        let starts = line.contains("cannot accept connections");
        assert_eq!(starts, n % 2 == 0, "streak lines do not alternate:\n{log}");
        assert!(line.contains("WARN"), "{log}");
    }
    assert!(streaks[0].contains("Too many open files"), "{log}");
    assert!(
        streaks.len().is_multiple_of(2),
        "the last streak never ended:\n{log}"
    );
}

/// A TCP connection to `to` from `from` (any 127.x address is loopback).
async fn connect_from(from: &str, to: &str) -> std::io::Result<std::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let stream = socket.connect(to.parse().unwrap()).await?.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Whether the server has closed `stream` (it reads end of file or a reset
/// within a moment, where a connection it keeps reads nothing).
fn closed_by_server(mut stream: &std::net::TcpStream) -> bool {
    use std::io::Read as _;
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_thousands_of_connections_does_not_crowd_out_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let secret = organism(dir.path());
    let bob_secret = add_user(&dir.path().join("users.toml"), "bob", &["echo".into()]).unwrap();
    let config = std::fs::read_to_string(dir.path().join("organism.toml")).unwrap();
    std::fs::write(
        dir.path().join("organism.toml"),
        format!("max_connections = 100\nmax_unauthenticated_per_address = 20\n{config}"),
    )
    .unwrap();
    // Fewer descriptors than the flood has connections.
    let server = Logged::start_limited(dir.path(), &[], Some(256));
    let address = server
        .url
        .trim_start_matches("wss://")
        .trim_end_matches('/')
        .to_owned();
    let mut alice = server.login("alice", &secret).await;

    // 127.0.0.2 opens 1,000 connections and leaves them idle, some with half
    // a TLS handshake sent.
    let mut held = Vec::new();
    for n in 0..1_000 {
        let Ok(mut stream) = connect_from("127.0.0.2", &address).await else {
            continue;
        };
        if n % 2 == 0 {
            use std::io::Write as _;
            let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        }
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = held
        .iter()
        .filter(|stream| !closed_by_server(stream))
        .count();
    assert!(
        kept <= 20,
        "the server kept {kept} of one address's connections"
    );

    // Meanwhile: alice is served, and bob logs in from another address.
    alice.send("<echo>still served</echo>").await.unwrap();
    match receive(&mut alice).await {
        Received::Text(text) => assert!(text.contains("<echoed>still served</echoed>"), "{text}"),
        Received::Closed(code, reason) => panic!("alice closed: {code} {reason}"),
    }
    let mut bob = server.login("bob", &bob_secret).await;
    bob.send("<echo>bob too</echo>").await.unwrap();
    match receive(&mut bob).await {
        Received::Text(text) => assert!(text.contains("<echoed>bob too</echoed>"), "{text}"),
        Received::Closed(code, reason) => panic!("bob closed: {code} {reason}"),
    }

    // Four more addresses, twenty each: past max_connections, new
    // connections are closed at once, and the logged-in ones go on.
    let mut crowd = Vec::new();
    for from in [
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
        "127.0.0.7",
    ] {
        for _ in 0..20 {
            if let Ok(stream) = connect_from(from, &address).await {
                crowd.push(stream);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let crowd_kept = crowd
        .iter()
        .filter(|stream| !closed_by_server(stream))
        .count();
    assert!(crowd_kept < 100, "the server kept all {crowd_kept}");
    alice.send("<echo>at capacity</echo>").await.unwrap();
    match receive(&mut alice).await {
        Received::Text(text) => assert!(text.contains("<echoed>at capacity</echoed>"), "{text}"),
        Received::Closed(code, reason) => panic!("alice closed: {code} {reason}"),
    }
    drop(held);
    drop(crowd);

    let log = server.stop(dir.path());
    let per_address: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("too many that have not logged in"))
        .collect();
    assert!(!per_address.is_empty(), "{log}");
    assert!(per_address[0].contains("address=127.0.0.2"), "{log}");
    assert!(
        per_address.len() <= 5,
        "one line per streak, not one per connection:\n{log}"
    );
    let capacity: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("max_connections are open"))
        .collect();
    assert!(!capacity.is_empty(), "{log}");
    assert!(capacity.len() <= 5, "{log}");
}

/// Under systemd, whose journal reads standard error (`JOURNAL_STREAM`),
/// each line starts with its syslog priority, so that `journalctl -p
/// warning` finds the warnings; without it, lines start with their time.
#[test]
fn under_the_journal_each_line_carries_its_priority() {
    let dir = tempfile::tempdir().unwrap();
    organism(dir.path());
    let mut child = Command::new(BINARY)
        .args(["run", "--config"])
        .arg(dir.path().join("organism.toml"))
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", "8:12345")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut warning = None;
    let mut info = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("no organism identity") {
            warning = Some(line);
        } else if line.contains("agent loaded") {
            info = Some(line);
        }
        if warning.is_some() && info.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.expect("the missing identity is warned of");
    assert!(warning.starts_with("<4>"), "{warning}");
    assert!(!warning.contains('\u{1b}'), "{warning}");
    let info = info.expect("the agent's loading is logged");
    assert!(info.starts_with("<6>"), "{info}");
}
