//! `agentserver connect wss://… --user NAME`: an interactive client.
//!
//! Asks for the TOTP code (or computes it from `--totp-secret-file`), shows
//! the catalog, then sends one XML payload per line typed (or the file
//! given with `--send`) and prints every frame that arrives, indented.

use super::login::LoginArgs;
use crate::client::{Client, Received, Trust};
use anyhow::{bail, Context as _};
use clap::Args;
use quick_xml::events::Event;
use std::io::BufRead as _;
use std::path::PathBuf;

/// Arguments of `agentserver connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server, `wss://host:port/`.
    url: String,
    #[command(flatten)]
    login: LoginArgs,
    /// Send this file as one message, print the first answer, and exit.
    #[arg(long)]
    send: Option<PathBuf>,
}

/// Runs the client.
pub fn run(args: &ConnectArgs) -> anyhow::Result<()> {
    let trust = args.login.trust()?;
    let code = args.login.code()?;
    let send = match &args.send {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(session(args, &trust, &code, send))
}

async fn session(
    args: &ConnectArgs,
    trust: &Trust,
    code: &str,
    send: Option<String>,
) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.url, trust).await?;
    let catalog = client.login(args.login.user()?, code).await?;
    println!("{}", pretty(&catalog));
    if let Some(message) = send {
        client.send(message.trim()).await?;
        match client.receive().await? {
            Received::Text(frame) => println!("{}", pretty(&frame)),
            Received::Closed(code, reason) => bail!("closed by the server: {code} {reason}"),
        }
        client.send("<end-session/>").await?;
        return Ok(());
    }
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => client.send(line.trim()).await?,
                None => {
                    client.send("<end-session/>").await?;
                }
            },
            frame = client.receive() => match frame? {
                Received::Text(frame) => println!("{}", pretty(&frame)),
                Received::Closed(code, reason) => {
                    println!("closed: {code} {reason}");
                    return Ok(());
                }
            },
        }
    }
}

/// Indents XML for reading; returns the input unchanged if it does not parse.
pub fn pretty(xml: &str) -> String {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut writer = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(event) => {
                if writer.write_event(event).is_err() {
                    return xml.to_owned();
                }
            }
            Err(_) => return xml.to_owned(),
        }
    }
    String::from_utf8(writer.into_inner()).unwrap_or_else(|_| xml.to_owned())
}
