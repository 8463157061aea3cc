//! `agentserver identity generate [--out DIR] [--force]`: makes the
//! organism's Ed25519 key pair.

use crate::privileged::{generate, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Arguments of `agentserver identity`.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Write identity.key (private, PKCS#8 PEM, mode 0600; keep it offline)
    /// and identity.pub (the server's copy), and print the fingerprint.
    Generate {
        /// The folder to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Replace an existing key pair (commands signed with the old key
        /// stop working).
        #[arg(long)]
        force: bool,
    },
}

/// Runs the subcommand.
pub fn run(args: &IdentityArgs) -> anyhow::Result<()> {
    match &args.command {
        IdentityCommand::Generate { out, force } => {
            let key = generate(out, *force)?;
            println!("public key sha256 {}", key.fingerprint());
            eprintln!(
                "wrote {} (keep it offline) and {} (the server's `identity`)",
                out.join(PRIVATE_KEY_FILE).display(),
                out.join(PUBLIC_KEY_FILE).display()
            );
            Ok(())
        }
    }
}
