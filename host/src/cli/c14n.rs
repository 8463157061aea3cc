//! `agentserver c14n FILE [--prefixes a,b]`: prints the exclusive canonical
//! form of a document, exactly, for debugging signatures (as
//! `xmllint --exc-c14n` does).

use crate::xml::{canonicalize, Limits};
use anyhow::Context as _;
use clap::Args;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;

/// Arguments of `agentserver c14n`.
#[derive(Debug, Args)]
pub struct C14nArgs {
    /// The XML file, or `-` for standard input.
    file: PathBuf,
    /// The InclusiveNamespaces PrefixList (`#default` for the default namespace).
    #[arg(long, value_delimiter = ',')]
    prefixes: Vec<String>,
}

/// The largest document the tool reads; the bus's 1 MiB limit does not apply.
const MAX_TOOL_INPUT_BYTES: usize = 1 << 30;

/// Prints the canonical bytes to stdout, with no newline added.
pub fn run(args: &C14nArgs) -> anyhow::Result<()> {
    let input = if args.file.as_os_str() == "-" {
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read standard input")?;
        input
    } else {
        std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let limits = Limits {
        max_input_bytes: MAX_TOOL_INPUT_BYTES,
        ..Limits::default()
    };
    let prefixes: Vec<&str> = args.prefixes.iter().map(String::as_str).collect();
    let canonical = canonicalize(&input, &limits, &prefixes)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(canonical.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
