//! The `agentserver` binary: parses arguments and hands over to the library.

use agentserver::cli::LogFormat;
use clap::Parser;
use std::io::IsTerminal as _;

fn main() -> std::process::ExitCode {
    let cli = agentserver::cli::Cli::parse();
    init_logging(cli.log_format());
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentserver: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Log lines go to standard error, filtered by `RUST_LOG` (default
/// `info`): as text, with colours only when standard error is a terminal
/// (a file or the journal gets no escape codes), or as JSON.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
