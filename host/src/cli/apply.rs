//! `agentserver apply FILE --url wss://… --user NAME`: carries a signed
//! privileged command to a running server and prints its
//! `<privileged-result>`; the exit code is 0 only when it was applied.
//! With `--config organism.toml` instead, it applies the command to a
//! stopped server's persistent state (SQLite storage).

use super::login::LoginArgs;
use crate::client::{Client, Received};
use crate::server::Config;
use anyhow::{bail, Context as _};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// How long to wait for the verdict (compiling a large component takes a
/// while on a small machine).
const VERDICT_TIMEOUT: Duration = Duration::from_secs(120);

/// Arguments of `agentserver apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The signed command, or `-` for standard input.
    file: PathBuf,
    /// The running server, `wss://host:port/`.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    url: Option<String>,
    /// Apply to a stopped server's persistent state instead.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    login: LoginArgs,
}

/// Sends the command and prints the verdict.
pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let command = super::read_input(&args.file)?;
    let command = String::from_utf8(command).context("the command is not UTF-8 text")?;
    if let Some(path) = &args.config {
        let config = Config::load(path)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let verdict = runtime.block_on(crate::server::apply_offline(config, command.as_bytes()))?;
        return report(&verdict.to_xml());
    }
    let Some(url) = &args.url else {
        bail!("give --url (or --config for a stopped server)");
    };
    let login = &args.login;
    let user = login.user()?;
    let trust = login.trust()?;
    let code = login.code()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let verdict = runtime.block_on(async {
        let mut client = Client::connect(url, &trust).await?;
        client.login(user, &code).await?;
        client.send(command.trim()).await?;
        let verdict = tokio::time::timeout(VERDICT_TIMEOUT, async {
            loop {
                match client.receive().await? {
                    Received::Text(frame) if frame.starts_with("<privileged-result") => {
                        return anyhow::Ok(frame);
                    }
                    Received::Text(_) => {}
                    Received::Closed(code, reason) => {
                        bail!("closed by the server: {code} {reason}")
                    }
                }
            }
        })
        .await
        .context("no answer from the server within two minutes")??;
        let _ = client.send("<end-session/>").await;
        anyhow::Ok(verdict)
    })?;
    report(&verdict)
}

/// Prints the verdict; an error unless it says applied.
fn report(verdict: &str) -> anyhow::Result<()> {
    println!("{verdict}");
    if !verdict.contains("status=\"applied\"") {
        bail!("the command was refused");
    }
    Ok(())
}
