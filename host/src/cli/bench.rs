//! `agentserver bench`: the load generator.
//!
//! It starts two child processes of this binary on loopback: the real
//! server (`run`) with the `echo` agent and as many users as it needs, and
//! a bare echo server (`bench-echo`: tokio-tungstenite over rustls, same
//! certificate kind, same runtime, nothing else). Then it:
//!
//! 1. logs `--connections` connections in to each, warms both up, and
//!    alternates runs — agentserver, bare, agentserver, bare… `--rounds`
//!    times — in which every connection sends `--messages` messages one
//!    after another (closed loop); it reports each run's round-trip p50,
//!    p99 and messages per second, and the median of the runs' ratios,
//!    since single runs on a shared machine swing;
//! 2. opens `--idle` authenticated connections and leaves them idle, and
//!    reports the server's resident memory and what each connection costs.
//!
//! Both servers are separate processes, so each round trip crosses the
//! same process boundaries whichever server answers it. Everything stops by
//! itself.

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
    /// Messages each connection sends in each run.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Runs against each server, alternating (the ratio reported is the
    /// median of the runs').
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Idle authenticated connections to hold for the memory figure (0: skip).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The payload each message carries (an `<echo>` element).
    #[arg(long, default_value = "<echo>hello, agent</echo>")]
    payload: String,
    /// Instead of `--payload`, an `<echo>` of exactly this many bytes.
    #[arg(long)]
    payload_bytes: Option<usize>,
    /// The server's storage backend: memory, sqlite, or redis (with
    /// `--redis-url`). The audit log is on with each.
    #[arg(long, default_value = "memory", value_parser = ["memory", "sqlite", "redis"])]
    storage: String,
    /// The Redis server for `--storage redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

/// Arguments of `agentserver bench-echo` (started by `bench`).
#[derive(Debug, Args)]
pub struct BareEchoArgs {
    /// A folder for the development certificate.
    #[arg(long)]
    dir: PathBuf,
}

/// Round-trip figures of one run.
struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
    /// The server process's CPU time (user and system) per message.
    server_cpu_us: f64,
}

/// The message every connection sends.
fn payload(args: &BenchArgs) -> anyhow::Result<String> {
    let Some(size) = args.payload_bytes else {
        return Ok(args.payload.clone());
    };
    let (open, close) = ("<echo>", "</echo>");
    let Some(text) = size.checked_sub(open.len() + close.len()) else {
        bail!(
            "--payload-bytes must be at least {}",
            open.len() + close.len()
        );
    };
    let filler: String = "hello, agent ".chars().cycle().take(text).collect();
    Ok(format!("{open}{filler}{close}"))
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
    let payload = payload(args)?;
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
    // Every client comes from one loopback address, so the caps on
    // connections per address and in all are lifted with the flood limits.
    let config = format!(
        "listen = \"127.0.0.1:0\"\nmessages_per_second = 1000000\nmessage_burst = 1000000\nmax_connections = 1000000\nmax_unauthenticated_per_address = 1000000\n{storage}[[agent]]\nname = \"echo\"\ncomponent = {:?}\nlistens = [\"echo\"]\ndescription = \"Echoes.\"\nmax_concurrent = 64\nmax_queued = 4096\n",
        std::fs::canonicalize(&echo)?.display().to_string()
    );
    std::fs::write(dir.path().join("organism.toml"), config)?;
    let config_path = dir.path().join("organism.toml");
    let mut server = ChildServer::start(&["run", "--config", path_arg(&config_path)?])?;
    let bare_dir = dir.path().join("bare");
    let mut bare = ChildServer::start(&["bench-echo", "--dir", path_arg(&bare_dir)?])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let ours = login_all(&server, &secrets[..args.connections]).await?;
        let theirs = connect_all(&bare, args.connections).await?;
        let runs = alternate((&server, ours), (&bare, theirs), &payload, args).await?;
        let idle = if args.idle > 0 {
            Some(idle(&server, &secrets[args.connections..]).await?)
        } else {
            None
        };
        anyhow::Ok((runs, idle))
    });
    server.stop();
    bare.stop();
    let (runs, idle) = result?;
    print!("{}", report(args, payload.len(), &runs, idle));
    Ok(())
}

/// Serves the bare echo until killed: the baseline `bench` compares with.
pub fn serve_bare_echo(args: &BareEchoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(bare_echo(&args.dir))
}

fn path_arg(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// One agentserver run and the bare run after it.
struct Round {
    ours: Figures,
    bare: Figures,
}

/// Warms both servers up, then alternates runs `args.rounds` times.
async fn alternate(
    (server, mut ours): (&ChildServer, Vec<Client>),
    (bare, mut theirs): (&ChildServer, Vec<Client>),
    payload: &str,
    args: &BenchArgs,
) -> anyhow::Result<Vec<Round>> {
    let warm_up = (args.messages / 10).max(10);
    (ours, _) = round_trips(ours, server, payload, warm_up).await?;
    (theirs, _) = round_trips(theirs, bare, payload, warm_up).await?;
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        let (back, ours_figures) = round_trips(ours, server, payload, args.messages).await?;
        ours = back;
        let (back, bare_figures) = round_trips(theirs, bare, payload, args.messages).await?;
        theirs = back;
        rounds.push(Round {
            ours: ours_figures,
            bare: bare_figures,
        });
    }
    Ok(rounds)
}

/// The Markdown report: every run, then the median ratios.
fn report(
    args: &BenchArgs,
    payload_len: usize,
    runs: &[Round],
    idle: Option<(usize, u64, u64)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "storage {} (audit log on); {} connections x {} messages, payload {payload_len} bytes, {} alternating runs\n\n| run | agentserver p50 µs | p99 µs | messages/s | server CPU µs/msg | bare echo p50 µs | p99 µs | messages/s | server CPU µs/msg | p50 ratio | throughput ratio |\n|---|---|---|---|---|---|---|---|---|---|---|",
        args.storage, args.connections, args.messages, runs.len()
    );
    for (n, Round { ours, bare }) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.2} | {:.2} |",
            n + 1,
            ours.p50_us,
            ours.p99_us,
            ours.per_second,
            ours.server_cpu_us,
            bare.p50_us,
            bare.p99_us,
            bare.per_second,
            bare.server_cpu_us,
            ours.p50_us / bare.p50_us,
            ours.per_second / bare.per_second,
        );
    }
    let p50 = median(runs.iter().map(|r| r.ours.p50_us / r.bare.p50_us));
    let throughput = median(runs.iter().map(|r| r.ours.per_second / r.bare.per_second));
    let cpu = median(
        runs.iter()
            .map(|r| r.ours.server_cpu_us / r.bare.server_cpu_us),
    );
    let _ = writeln!(
        out,
        "\nmedian p50 ratio (agentserver / bare): {p50:.2}\nmedian throughput ratio (agentserver / bare): {throughput:.2}\nmedian server CPU per message ratio (agentserver / bare): {cpu:.2}"
    );
    let _ = writeln!(
        out,
        "median of the runs: agentserver p50 {:.1} µs, {:.0} messages/s, {:.1} µs server CPU per message; bare echo p50 {:.1} µs, {:.0} messages/s, {:.1} µs server CPU per message",
        median(runs.iter().map(|r| r.ours.p50_us)),
        median(runs.iter().map(|r| r.ours.per_second)),
        median(runs.iter().map(|r| r.ours.server_cpu_us)),
        median(runs.iter().map(|r| r.bare.p50_us)),
        median(runs.iter().map(|r| r.bare.per_second)),
        median(runs.iter().map(|r| r.bare.server_cpu_us)),
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
    out
}

/// The median of some ratios (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
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

/// The CPU time (user and system) process `pid` has used, in seconds,
/// from `/proc/PID/stat` (`pid` may be `self`); 0 where there is none.
/// Linux counts it in ticks of 1/100 s.
pub fn process_cpu_seconds(pid: &str) -> f64 {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |at: usize| fields.get(at).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / TICKS_PER_SECOND,
        _ => 0.0,
    }
}

/// The server under test, as a child process.
struct ChildServer {
    child: Child,
    url: String,
    fingerprint: String,
}

impl ChildServer {
    /// Starts this binary with `args`; it must print its URL and its
    /// certificate's fingerprint first, as `run` does.
    fn start(args: &[&str]) -> anyhow::Result<ChildServer> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{}`", args.join(" ")))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .next()
            .with_context(|| format!("`{}` said nothing", args.join(" ")))??
            .replace("listening on ", "");
        let fingerprint = lines
            .next()
            .with_context(|| format!("`{}` did not give its fingerprint", args.join(" ")))??
            .replace("tls certificate sha256 ", "");
        Ok(ChildServer {
            child,
            url,
            fingerprint,
        })
    }

    fn trust(&self) -> Trust {
        Trust::Fingerprint(self.fingerprint.clone())
    }

    /// The CPU time the process has used, in seconds.
    fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(&self.child.id().to_string())
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

/// Logs one connection in to `server` per user.
async fn login_all(
    server: &ChildServer,
    users: &[(String, Vec<u8>)],
) -> anyhow::Result<Vec<Client>> {
    let trust = server.trust();
    let mut clients = Vec::new();
    for (name, secret) in users {
        let mut client = Client::connect(&server.url, &trust).await?;
        client
            .login(name, &totp_code(secret, SystemTime::now()))
            .await?;
        clients.push(client);
    }
    Ok(clients)
}

/// Opens `count` connections to the bare echo server.
async fn connect_all(server: &ChildServer, count: usize) -> anyhow::Result<Vec<Client>> {
    let trust = server.trust();
    let mut clients = Vec::new();
    for _ in 0..count {
        clients.push(Client::connect(&server.url, &trust).await?);
    }
    Ok(clients)
}

/// Drives every client closed-loop (send, wait for the answer, repeat)
/// `messages` times at once, sums up the round trips, and gives the clients
/// back.
async fn round_trips(
    clients: Vec<Client>,
    server: &ChildServer,
    payload: &str,
    messages: usize,
) -> anyhow::Result<(Vec<Client>, Figures)> {
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let payload = payload.to_owned();
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
            anyhow::Ok((client, samples))
        }));
    }
    let mut clients = Vec::new();
    let mut samples = Vec::new();
    for task in tasks {
        let (client, own) = task.await??;
        clients.push(client);
        samples.extend(own);
    }
    let elapsed = started.elapsed();
    let server_cpu = server.cpu_seconds() - cpu_before;
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let figures = Figures {
        p50_us: at(0.5),
        p99_us: at(0.99),
        per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        server_cpu_us: server_cpu * 1e6 / samples.len() as f64,
    };
    Ok((clients, figures))
}

/// The baseline: a bare echo server with a development certificate made in
/// `dir`; prints its URL and fingerprint as `run` does, then echoes every
/// text frame on every connection until the process is killed.
async fn bare_echo(dir: &Path) -> anyhow::Result<()> {
    let (identity, _) = crate::server::tls::Identity::development(dir)?;
    let fingerprint = identity.fingerprint();
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on wss://{}/", listener.local_addr()?);
    println!("tls certificate sha256 {fingerprint}");
    loop {
        let (tcp, _) = listener.accept().await?;
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
}

/// Opens one idle authenticated connection per user; returns (count, RSS
/// before, RSS after) of the server, in KiB.
async fn idle(
    server: &ChildServer,
    users: &[(String, Vec<u8>)],
) -> anyhow::Result<(usize, u64, u64)> {
    let trust = server.trust();
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
