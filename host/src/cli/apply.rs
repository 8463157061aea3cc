//! `agentserver apply FILE… --url wss://… --user NAME`: carries signed
//! privileged commands to a running server, in order over one login, and
//! prints each `<privileged-result>`; the exit code is 0 only when every
//! one was applied (the rest are still tried after a refusal). With
//! `--config organism.toml` instead, it applies them to a stopped server's
//! persistent state (SQLite storage).

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
    /// The signed commands, applied in order (`-` for standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The running server, `wss://host:port/`.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    url: Option<String>,
    /// Apply to a stopped server's persistent state instead.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    login: LoginArgs,
}

/// Sends the commands and prints the verdicts.
pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let commands = args
        .files
        .iter()
        .map(|file| {
            let command = super::read_input(file)?;
            String::from_utf8(command)
                .with_context(|| format!("{}: the command is not UTF-8 text", file.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let verdicts = match (&args.config, &args.url) {
        (Some(path), _) => {
            let config = Config::load(path)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let mut verdicts = Vec::with_capacity(commands.len());
            for command in &commands {
                let verdict = runtime.block_on(crate::server::apply_offline(
                    config.clone(),
                    command.as_bytes(),
                ))?;
                verdicts.push(verdict.to_xml());
            }
            verdicts
        }
        (None, Some(url)) => apply_online(url, &args.login, &commands)?,
        (None, None) => bail!("give --url (or --config for a stopped server)"),
    };
    let refused = verdicts.iter().filter(|verdict| !report(verdict)).count();
    if refused > 0 {
        bail!("{refused} of {} commands refused", verdicts.len());
    }
    Ok(())
}

/// Logs in once and carries each command in turn, waiting for its verdict.
fn apply_online(url: &str, login: &LoginArgs, commands: &[String]) -> anyhow::Result<Vec<String>> {
    let user = login.user()?;
    let trust = login.trust()?;
    let code = login.code()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut client = Client::connect(url, &trust).await?;
        client.login(user, &code).await?;
        let mut verdicts = Vec::with_capacity(commands.len());
        for command in commands {
            client.send(command.trim()).await?;
            verdicts.push(verdict(&mut client).await?);
        }
        let _ = client.send("<end-session/>").await;
        Ok(verdicts)
    })
}

/// The next `<privileged-result>` on the connection.
async fn verdict(client: &mut Client) -> anyhow::Result<String> {
    tokio::time::timeout(VERDICT_TIMEOUT, async {
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
    .context("no answer from the server within two minutes")?
}

/// Prints the verdict; whether it says applied.
fn report(verdict: &str) -> bool {
    println!("{verdict}");
    verdict.contains("status=\"applied\"")
}
