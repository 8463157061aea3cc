//! `agentserver audit verify|replay --config organism.toml`: checks the
//! hash chain of the stored audit log, or prints one thread's messages.

use crate::audit::{entry_attribute, entry_content};
use crate::server::Config;
use crate::store::Stores;
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Arguments of `agentserver audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// The organism's configuration (its `[storage]` holds the log).
    #[arg(long, global = true, default_value = "organism.toml")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain: print the count and head hash, or name the
    /// first broken entry and exit 1.
    Verify,
    /// Print the messages of one thread, in order.
    Replay {
        /// The thread id.
        thread: String,
    },
}

/// Runs the subcommand.
pub fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let stores = Stores::open(&config.storage, &config.data_dir)?;
    if !stores.structure.is_persistent() {
        bail!(
            "{}: storage is `memory`, so the audit log lived in the server's memory only",
            args.config.display()
        );
    }
    match &args.command {
        AuditCommand::Verify => match stores.audit.verify()? {
            Ok(verified) => {
                println!(
                    "{} entries verified; head {}",
                    verified.count, verified.head
                );
                Ok(())
            }
            Err(broken) => bail!("{broken}"),
        },
        AuditCommand::Replay { thread } => {
            let entries = stores.audit.thread_entries(thread)?;
            if entries.is_empty() {
                bail!("no audit entries for thread {thread}");
            }
            for stored in entries {
                let field = |name| entry_attribute(&stored.entry, name).unwrap_or("");
                let content =
                    entry_content(&stored.entry).context("a stored entry is cut short")?;
                println!(
                    "#{} {} {} depth={} {}",
                    stored.seq,
                    field("kind"),
                    field("from"),
                    field("depth"),
                    content
                );
            }
            Ok(())
        }
    }
}
