//! `agentserver run --config organism.toml`: serve until Ctrl-C or SIGTERM.

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
}

/// Starts the server.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(server::run(config))?;
    Ok(())
}
