//! `agentserver audit verify|replay|checkpoints|export --config organism.toml`:
//! checks the hash chain of the stored audit log, prints one thread's
//! messages or the signed checkpoints, and writes a self-contained export
//! that `agentserver audit verify --file EXPORT --owner identity.pub`
//! checks offline.

use crate::audit::{each_entry, entry_attribute, entry_content, StoredEntry, GENESIS};
use crate::commit::{is_checkpoint, verify_export, Checkpoint, ExportWriter};
use crate::privileged::time::format_instant;
use crate::privileged::OrganismKey;
use crate::server::Config;
use crate::store::Stores;
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

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
    /// first broken entry and exit 1. With --file, check an export offline
    /// instead: its certificates, checkpoints and chain, against the
    /// owner's public key alone.
    Verify {
        /// An export written by `agentserver audit export`.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The owner's public key (with --file).
        #[arg(long, default_value = "identity.pub", requires = "file")]
        owner: PathBuf,
    },
    /// Print the messages of one thread, in order.
    Replay {
        /// The thread id.
        thread: String,
    },
    /// List the signed checkpoints: entry, time, node key, entries covered.
    Checkpoints,
    /// Write the entries from a checkpoint (or the start) to the newest
    /// checkpoint, with the node certificates, to a file anyone can check
    /// with the owner's public key.
    Export {
        /// The checkpoint's entry number to start from (see `audit
        /// checkpoints`); without it, the start of the log.
        #[arg(long)]
        since: Option<u64>,
        /// Where to write the export.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs the subcommand.
pub fn run(args: &AuditArgs) -> anyhow::Result<()> {
    if let AuditCommand::Verify {
        file: Some(file),
        owner,
    } = &args.command
    {
        return verify_file(file, owner);
    }
    let config = Config::load(&args.config)?;
    let stores = Stores::open(&config.storage, &config.data_dir)?;
    if !stores.structure.is_persistent() {
        bail!(
            "{}: storage is `memory`, so the audit log lived in the server's memory only",
            args.config.display()
        );
    }
    match &args.command {
        AuditCommand::Verify { .. } => match stores.audit.verify()? {
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
        AuditCommand::Checkpoints => {
            let mut found = 0;
            let first = stores.audit.audit_start()?.0;
            each_entry(stores.audit.as_ref(), first, |stored| {
                if let Some(checkpoint) = checkpoint_of(&stored) {
                    found += 1;
                    println!(
                        "#{} {} key {} covers entries to {}",
                        stored.seq,
                        format_instant(checkpoint.time_ms / 1_000),
                        checkpoint.key_id,
                        checkpoint.count
                    );
                }
                Ok::<_, anyhow::Error>(())
            })?;
            if found == 0 {
                bail!(
                    "the log holds no checkpoint: the server signs them when it has an \
                     organism identity (see [audit] in docs/configuration.md)"
                );
            }
            Ok(())
        }
        AuditCommand::Export { since, out } => export(&config, &stores, *since, out),
    }
}

fn verify_file(file: &Path, owner: &Path) -> anyhow::Result<()> {
    let owner = OrganismKey::load(owner)?;
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let verified = verify_export(std::io::BufReader::new(input), owner.verifying_key())
        .with_context(|| format!("{} does not verify", file.display()))?;
    println!(
        "entries {} to {} verified; {} checkpoint(s), the last at {} (entry {}, certificate {}); head {}",
        verified.first,
        verified.last,
        verified.checkpoints,
        format_instant(verified.last_checkpoint_ms / 1_000),
        verified.last,
        verified.last_certificate,
        verified.head
    );
    Ok(())
}

fn export(config: &Config, stores: &Stores, since: Option<u64>, out: &Path) -> anyhow::Result<()> {
    let owner = OrganismKey::load(&config.identity)
        .context("an export names the organism by its public key (`identity`)")?;
    let anchor = match since {
        None => {
            let start = stores.audit.audit_start()?;
            if start != (1, GENESIS) {
                bail!(
                    "the log no longer starts at entry 1 (it starts at {}): give --since with a checkpoint",
                    start.0
                );
            }
            (0, GENESIS)
        }
        Some(seq) => {
            let stored = stores
                .audit
                .audit_entries(seq, 1)?
                .into_iter()
                .find(|e| e.seq == seq)
                .with_context(|| format!("the log has no entry {seq}"))?;
            let checkpoint = checkpoint_of(&stored).with_context(|| {
                format!("entry {seq} is not a checkpoint (see `agentserver audit checkpoints`)")
            })?;
            (checkpoint.count, checkpoint.head)
        }
    };
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let certificates = stores.structure.certificates()?;
    let revocations = stores
        .structure
        .signed_records(crate::privileged::SignedKind::NodeRevocation)?;
    let mut writer = ExportWriter::new(
        BufWriter::new(file),
        &owner.fingerprint(),
        &certificates,
        &revocations,
        anchor,
    )?;
    each_entry(stores.audit.as_ref(), anchor.0 + 1, |stored| {
        writer.entry(stored)?;
        Ok::<_, anyhow::Error>(())
    })?;
    match writer.finish()? {
        Some((entries, last)) => {
            eprintln!(
                "wrote {} entries ({} to {last}) and {} certificate(s) to {}",
                entries,
                anchor.0 + 1,
                certificates.len(),
                out.display()
            );
            Ok(())
        }
        None => {
            let _ = std::fs::remove_file(out);
            bail!(
                "no checkpoint follows entry {}: nothing to export yet",
                anchor.0
            )
        }
    }
}

fn checkpoint_of(stored: &StoredEntry) -> Option<Checkpoint> {
    if !is_checkpoint(&stored.entry) {
        return None;
    }
    Checkpoint::parse(entry_content(&stored.entry)?)
        .ok()
        .map(|(checkpoint, _)| checkpoint)
}
