//! The `agentserver` binary: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = agentserver::cli::Cli::parse();
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentserver: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
