//! `agentserver check --config organism.toml`: every problem a start would
//! run into, one line each, before the start; exit status 1 if any.

use anyhow::bail;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `agentserver check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The organism's configuration.
    #[arg(long, default_value = "organism.toml")]
    config: PathBuf,
    /// Check this address instead of the configuration's `listen` (as
    /// `run --listen` would use it).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

/// Prints each problem on its own line (standard output), or one line
/// saying the configuration is fit to start.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let problems = crate::server::check(&args.config, args.listen);
    for problem in &problems {
        println!("{problem}");
    }
    match problems.len() {
        0 => {
            println!("{}: ok", args.config.display());
            Ok(())
        }
        1 => bail!("{}: 1 problem", args.config.display()),
        n => bail!("{}: {n} problems", args.config.display()),
    }
}
