//! `agentserver identity generate [--out DIR] [--force]`: makes the
//! organism's Ed25519 key pair; `agentserver identity node --data-dir DIR`
//! makes (or shows) a node's own key, for the owner to certify.

use crate::commit::{NodeKey, NODE_KEY_FILE, NODE_PUBLIC_KEY_FILE};
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
    /// Make the node key in a data directory if there is none (the server
    /// also makes it at its first start) and print its id and public key
    /// file, to certify with `agentserver command node-certificate`.
    Node {
        /// The server's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
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
        IdentityCommand::Node { data_dir } => {
            let (key, made) = NodeKey::load_or_create(data_dir)?;
            println!("node key id {}", key.key_id());
            eprintln!(
                "{} {} (private, mode 0600) and {}; certify it with (`federation` lets it sign for links to other organisms):\n  agentserver command node-certificate --node-key {} --purpose audit,federation | agentserver sign - --key identity.key",
                if made { "wrote" } else { "found" },
                data_dir.join(NODE_KEY_FILE).display(),
                data_dir.join(NODE_PUBLIC_KEY_FILE).display(),
                data_dir.join(NODE_PUBLIC_KEY_FILE).display(),
            );
            Ok(())
        }
    }
}
