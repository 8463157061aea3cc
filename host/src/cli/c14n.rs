//! `agentserver c14n FILE [--prefixes a,b]`: prints the exclusive canonical
//! form of a document, exactly, for debugging signatures (as
//! `xmllint --exc-c14n` does).

use crate::xml::{canonicalize, Limits};
use clap::Args;
use std::io::Write as _;
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
    let input = super::read_input(&args.file)?;
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
