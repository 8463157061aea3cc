//! Command-line subcommands of the `agentserver` binary.
//!
//! `main.rs` parses arguments with [`Cli`] and calls [`Cli::run`]; each
//! subcommand lives in its own module and returns `anyhow::Result`, the one
//! place errors become text for a person.

mod bench;
mod c14n;
mod connect;
mod hash;
mod run;
mod user;

use clap::{Parser, Subcommand};

/// AgentServer: hosts sandboxed WebAssembly agents on one canonical XML bus.
#[derive(Debug, Parser)]
#[command(name = "agentserver", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the organism: the WSS port with its agents.
    Run(run::RunArgs),
    /// Load-test a server with the echo agent, against a bare echo server.
    Bench(bench::BenchArgs),
    /// Connect to a server as a user: an interactive client.
    Connect(connect::ConnectArgs),
    /// Manage users (`users.toml`).
    User(user::UserArgs),
    /// Print the SHA-256 of a component, as the component store keys it.
    Hash(hash::HashArgs),
    /// Print the exclusive canonical form of an XML document.
    C14n(c14n::C14nArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run::run(&args),
            Command::User(args) => user::run(&args),
            Command::Connect(args) => connect::run(&args),
            Command::Bench(args) => bench::run(&args),
            Command::Hash(args) => hash::run(&args),
            Command::C14n(args) => c14n::run(&args),
        }
    }
}
