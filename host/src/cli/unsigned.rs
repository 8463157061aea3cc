//! `agentserver command …`: writes unsigned privileged commands to standard
//! output, for `agentserver sign`:
//!
//! ```text
//! agentserver command register --name calc --wasm calculator.wasm --listens calculate \
//!   | agentserver sign - --key identity.key \
//!   | agentserver apply - --url wss://… --user owner --fingerprint …
//! ```

use crate::privileged::{Command, ComponentSource, LimitChanges, Registration, ShutdownMode};
use crate::runtime::ComponentHash;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Arguments of `agentserver command`.
#[derive(Debug, Args)]
pub struct CommandArgs {
    #[command(subcommand)]
    command: Unsigned,
}

/// Limit options, each optional.
#[derive(Debug, Args, Default)]
struct LimitArgs {
    /// Calls in flight at once, all sessions together.
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Seconds an idle session's instance is kept.
    #[arg(long)]
    session_timeout: Option<u64>,
    /// Fuel per call.
    #[arg(long)]
    fuel: Option<u64>,
    /// Linear memory per instance, bytes.
    #[arg(long)]
    memory_bytes: Option<usize>,
    /// Wall time per call, milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

impl LimitArgs {
    fn changes(&self) -> LimitChanges {
        LimitChanges {
            max_concurrent: self.max_concurrent,
            session_timeout: self.session_timeout,
            fuel: self.fuel,
            memory_bytes: self.memory_bytes,
            timeout_ms: self.timeout_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Graceful,
    Immediate,
}

#[derive(Debug, Subcommand)]
enum Unsigned {
    /// Admit an agent (agent-registration).
    Register {
        /// The agent's name.
        #[arg(long)]
        name: String,
        /// Its component (`.wasm`).
        #[arg(long)]
        wasm: PathBuf,
        /// Tags it listens to (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', required = true)]
        listens: Vec<String>,
        /// One line for users' catalogs.
        #[arg(long, default_value = "")]
        description: String,
        /// Carry the component inside the command (the default).
        #[arg(long, conflicts_with = "src")]
        inline: bool,
        /// Name the file in the server's components directory instead of
        /// carrying it (the file must be there, under the same name).
        #[arg(long)]
        src: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Remove an agent (agent-removal).
    Remove {
        /// The agent's name.
        #[arg(long)]
        name: String,
    },
    /// Change an agent's limits (agent-limits).
    Limits {
        /// The agent's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Let a user send a tag (user-grant).
    Grant {
        /// The user.
        #[arg(long)]
        user: String,
        /// The tag.
        #[arg(long)]
        tag: String,
    },
    /// Stop a user sending a tag (user-revoke).
    Revoke {
        /// The user.
        #[arg(long)]
        user: String,
        /// The tag.
        #[arg(long)]
        tag: String,
    },
    /// Shut the server down.
    Shutdown {
        /// Graceful lets calls in flight finish; immediate does not.
        #[arg(long, value_enum, default_value = "graceful")]
        mode: Mode,
    },
}

/// Prints the unsigned command.
pub fn run(args: &CommandArgs) -> anyhow::Result<()> {
    let command = match &args.command {
        Unsigned::Register {
            name,
            wasm,
            listens,
            description,
            inline: _,
            src,
            limits,
        } => {
            let bytes =
                std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let component = if *src {
                let file = wasm
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the component's file name is not UTF-8")?;
                ComponentSource::File(file.to_owned())
            } else {
                ComponentSource::Inline(bytes.clone())
            };
            Command::Register(Registration {
                name: name.clone(),
                listens: listens.clone(),
                description: description.clone(),
                sha256: ComponentHash::of(&bytes),
                component,
                limits: limits.changes(),
            })
        }
        Unsigned::Remove { name } => Command::Remove { name: name.clone() },
        Unsigned::Limits { name, limits } => Command::Limits {
            name: name.clone(),
            changes: limits.changes(),
        },
        Unsigned::Grant { user, tag } => Command::Grant {
            user: user.clone(),
            tag: tag.clone(),
        },
        Unsigned::Revoke { user, tag } => Command::Revoke {
            user: user.clone(),
            tag: tag.clone(),
        },
        Unsigned::Shutdown { mode } => Command::Shutdown(match mode {
            Mode::Graceful => ShutdownMode::Graceful,
            Mode::Immediate => ShutdownMode::Immediate,
        }),
    };
    super::write_stdout(&command.to_unsigned_document())
}
