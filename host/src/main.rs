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
/// (a file or the journal gets no escape codes), or as JSON. When systemd
/// connects standard error to the journal (`JOURNAL_STREAM`), each text
/// line starts with its syslog priority (`<4>` for a warning), so that the
/// journal files it at that level (`journalctl -p warning`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => builder
            .with_ansi(false)
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().with_ansi(false),
            ))
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A text line prefixed with its level's syslog priority, as the journal
/// reads a service's standard error.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(context, writer, event)
    }
}
