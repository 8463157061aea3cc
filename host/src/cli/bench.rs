//! `agentserver bench`: the load generator.
//!
//! It starts a real server (this binary, `run`, as a child process) with the
//! `echo` agent and as many users as it needs, then:
//!
//! 1. drives `--connections` authenticated connections, each sending
//!    `--messages` echo messages one after another, and reports round-trip
//!    p50/p99 and messages per second;
//! 2. does the same against a bare echo server (tokio-tungstenite over
//!    rustls, same certificate, same machine, in this process), as the
//!    baseline;
//! 3. opens `--idle` authenticated connections and leaves them idle, and
//!    reports the server's resident memory and what each connection costs.
//!
//! Everything runs on loopback and stops by itself.

use crate::auth::{encode_base32, totp_code, SECRET_BYTES};
use crate::client::{Client, Received, Trust};
use anyhow::{bail, Context as _};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Arguments of `agentserver bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder holding the built example agents (`make agents`).
    #[arg(long, default_value = "target/agents")]
    agents: PathBuf,
    /// Connections driving messages at once.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Messages each connection sends.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Idle authenticated connections to hold for the memory figure (0: skip).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The payload each message carries (an `<echo>` element).
    #[arg(long, default_value = "<echo>hello, agent</echo>")]
    payload: String,
    /// The server's storage backend: memory, sqlite, or redis (with
    /// `--redis-url`). The audit log is on with each.
    #[arg(long, default_value = "memory", value_parser = ["memory", "sqlite", "redis"])]
    storage: String,
    /// The Redis server for `--storage redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

/// Round-trip figures of one run.
struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let echo = args.agents.join("echo.wasm");
    if !echo.is_file() {
        bail!(
            "{} is missing: build the example agents with `make agents`",
            echo.display()
        );
    }
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let users = args.connections + args.idle;
    let secrets = write_users(&dir.path().join("users.toml"), users)?;
    let storage = match args.storage.as_str() {
        "redis" => format!(
            "[storage]\nbackend = \"redis\"\nurl = {:?}\nprefix = \"bench-{}\"\n",
            args.redis_url,
            std::process::id()
        ),
        backend => format!("[storage]\nbackend = \"{backend}\"\n"),
    };
    let config = format!(
        "listen = \"127.0.0.1:0\"\nmessages_per_second = 1000000\nmessage_burst = 1000000\n{storage}[[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\ndescription = \"Echoes.\"\nmax_concurrent = 64\nmax_queued = 4096\n",
        std::fs::canonicalize(&echo)?.display().to_string()
    );
    std::fs::write(dir.path().join("organism.toml"), config)?;
    let mut server = ChildServer::start(&dir.path().join("organism.toml"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let trust = Trust::Fingerprint(server.fingerprint.clone());
        let ours = drive(&server.url, &trust, &secrets[..args.connections], args).await?;
        let bare = bare_echo(dir.path(), args).await?;
        let idle = if args.idle > 0 {
            Some(idle(&server, &trust, &secrets[args.connections..]).await?)
        } else {
            None
        };
        anyhow::Ok((ours, bare, idle))
    });
    server.stop();
    let (ours, bare, idle) = result?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "storage {} (audit log on); {} connections x {} messages, payload {} bytes\n\n| server | p50 µs | p99 µs | messages/s |\n|---|---|---|---|",
        args.storage,
        args.connections,
        args.messages,
        args.payload.len()
    );
    for (name, figures) in [
        ("agentserver (echo agent)", &ours),
        ("bare tokio-tungstenite + rustls echo", &bare),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:.1} | {:.0} |",
            figures.p50_us, figures.p99_us, figures.per_second
        );
    }
    let _ = writeln!(
        out,
        "\nround trip p50 ratio (agentserver / bare): {:.2}",
        ours.p50_us / bare.p50_us
    );
    if let Some((connections, before, after)) = idle {
        let _ = writeln!(
            out,
            "\n{connections} idle authenticated connections: server RSS {:.1} MiB (before: {:.1} MiB), {:.1} KiB per connection",
            after as f64 / 1024.0,
            before as f64 / 1024.0,
            (after.saturating_sub(before)) as f64 / connections as f64
        );
    }
    print!("{out}");
    Ok(())
}

/// Writes `count` users (`bench0`…) with random secrets; returns (name, secret).
fn write_users(path: &Path, count: usize) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut text = String::new();
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let mut secret = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let name = format!("bench{i}");
        let _ = writeln!(
            text,
            "[users.{name}]\ntotp_secret = \"{}\"\nallow = [\"echo\"]\n",
            encode_base32(&secret)
        );
        users.push((name, secret));
    }
    std::fs::write(path, text)?;
    Ok(users)
}

/// The server under test, as a child process.
struct ChildServer {
    child: Child,
    url: String,
    fingerprint: String,
}

impl ChildServer {
    fn start(config: &Path) -> anyhow::Result<ChildServer> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .next()
            .context("the server said nothing")??
            .replace("listening on ", "");
        let fingerprint = lines
            .next()
            .context("the server did not give its fingerprint")??
            .replace("tls certificate sha256 ", "");
        Ok(ChildServer {
            child,
            url,
            fingerprint,
        })
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Runs the closed-loop load on `url`; each connection logs in as its own user.
async fn drive(
    url: &str,
    trust: &Trust,
    users: &[(String, Vec<u8>)],
    args: &BenchArgs,
) -> anyhow::Result<Figures> {
    let mut clients = Vec::new();
    for (name, secret) in users {
        let mut client = Client::connect(url, trust).await?;
        client
            .login(name, &totp_code(secret, SystemTime::now()))
            .await?;
        clients.push(client);
    }
    round_trips(clients, args).await
}

/// Drives every client closed-loop (send, wait for the answer, repeat)
/// `args.messages` times at once, and sums up the round trips.
async fn round_trips(clients: Vec<Client>, args: &BenchArgs) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let payload = args.payload.clone();
        let messages = args.messages;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(messages);
            for _ in 0..messages {
                let start = Instant::now();
                client.send(&payload).await?;
                match client.receive().await? {
                    Received::Text(_) => samples.push(start.elapsed()),
                    Received::Closed(code, reason) => bail!("closed: {code} {reason}"),
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = started.elapsed();
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    Ok(Figures {
        p50_us: at(0.5),
        p99_us: at(0.99),
        per_second: samples.len() as f64 / elapsed.as_secs_f64(),
    })
}

/// The baseline: a bare echo server, same TLS, same load.
async fn bare_echo(dir: &Path, args: &BenchArgs) -> anyhow::Result<Figures> {
    let (identity, _) = crate::server::tls::Identity::development(&dir.join("bare-tls"))?;
    let fingerprint = identity.fingerprint();
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let url = format!("wss://{address}/");
    let trust = Trust::Fingerprint(fingerprint);
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        clients.push(Client::connect(&url, &trust).await?);
    }
    let figures = round_trips(clients, args).await;
    server.abort();
    figures
}

/// Opens one idle authenticated connection per user; returns (count, RSS
/// before, RSS after) of the server, in KiB.
async fn idle(
    server: &ChildServer,
    trust: &Trust,
    users: &[(String, Vec<u8>)],
) -> anyhow::Result<(usize, u64, u64)> {
    let before = server.rss_kib();
    let mut held = Vec::with_capacity(users.len());
    for chunk in users.chunks(256) {
        let mut tasks = Vec::new();
        for (name, secret) in chunk {
            let (name, secret) = (name.clone(), secret.clone());
            let url = server.url.clone();
            let trust = trust.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&url, &trust).await?;
                client
                    .login(&name, &totp_code(&secret, SystemTime::now()))
                    .await?;
                anyhow::Ok(client)
            }));
        }
        for task in tasks {
            held.push(task.await??);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib();
    Ok((held.len(), before, after))
}
