//! `agentserver run --config organism.toml [--listen ADDR]`: serve until
//! Ctrl-C or SIGTERM.

use crate::server::{self, Config};
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `agentserver run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The organism's configuration.
    #[arg(long, default_value = "organism.toml")]
    config: PathBuf,
    /// Listen on this address instead of the configuration's `listen`
    /// (`127.0.0.1:0` picks a free port, printed when listening).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// Starts the server.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(server::run(config))?;
    Ok(())
}
