//! Command-line subcommands of the `agentserver` binary.
//!
//! `main.rs` parses arguments with [`Cli`] and calls [`Cli::run`]; each
//! subcommand lives in its own module and returns `anyhow::Result`, the one
//! place errors become text for a person.

mod apply;
mod audit;
mod bench;
mod c14n;
mod check;
mod connect;
mod hash;
mod identity;
mod login;
mod run;
mod sign;
mod unsigned;
mod user;

pub use bench::process_cpu_seconds;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::io::{Read as _, Write as _};
use std::path::Path;

/// AgentServer: hosts sandboxed WebAssembly agents on one canonical XML bus.
#[derive(Debug, Parser)]
#[command(name = "agentserver", version, about)]
pub struct Cli {
    /// How log lines (on standard error) are written: `text` for people,
    /// `json` (one object a line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The form of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only on a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the organism: the WSS port with its agents.
    Run(run::RunArgs),
    /// Check a configuration before a start: every problem, one line each.
    Check(check::CheckArgs),
    /// Load-test a server with the echo agent, against a bare echo server.
    Bench(bench::BenchArgs),
    /// The bare echo server `bench` compares with (started by `bench`).
    #[command(hide = true)]
    BenchEcho(bench::BareEchoArgs),
    /// Connect to a server as a user: an interactive client.
    Connect(connect::ConnectArgs),
    /// Manage users (`users.toml`).
    User(user::UserArgs),
    /// Make the organism's Ed25519 identity.
    Identity(identity::IdentityArgs),
    /// Write an unsigned privileged command (register, remove, limits,
    /// grant, revoke, shutdown) for `sign`.
    #[command(name = "command")]
    Unsigned(unsigned::CommandArgs),
    /// Sign a privileged command with the organism's private key, offline.
    Sign(sign::SignArgs),
    /// Send a signed privileged command to a running server, or apply it to
    /// a stopped one's persistent state.
    Apply(apply::ApplyArgs),
    /// Verify the audit log's hash chain, or replay a thread.
    Audit(audit::AuditArgs),
    /// Print the SHA-256 of a component, as the component store keys it.
    Hash(hash::HashArgs),
    /// Print the exclusive canonical form of an XML document.
    C14n(c14n::C14nArgs),
}

impl Cli {
    /// The log format asked for.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run::run(&args),
            Command::Check(args) => check::run(&args),
            Command::User(args) => user::run(&args),
            Command::Identity(args) => identity::run(&args),
            Command::Unsigned(args) => unsigned::run(&args),
            Command::Sign(args) => sign::run(&args),
            Command::Apply(args) => apply::run(&args),
            Command::Audit(args) => audit::run(&args),
            Command::Connect(args) => connect::run(&args),
            Command::Bench(args) => bench::run(&args),
            Command::BenchEcho(args) => bench::serve_bare_echo(&args),
            Command::Hash(args) => hash::run(&args),
            Command::C14n(args) => c14n::run(&args),
        }
    }
}

/// The bytes of `path`, or of standard input when it is `-`.
pub(crate) fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read standard input")?;
        Ok(input)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// Writes `text` to standard output; a closed pipe is an error, not a panic.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
