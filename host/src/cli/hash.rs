//! `agentserver hash FILE.wasm`: the SHA-256 the component store keys a
//! component by, as pinned in a signed `agent-registration`.

use crate::runtime::ComponentHash;
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `agentserver hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// The component file.
    file: PathBuf,
}

/// Prints the lowercase hex SHA-256 of the file's bytes.
pub fn run(args: &HashArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    println!("{}", ComponentHash::of(&bytes));
    Ok(())
}
