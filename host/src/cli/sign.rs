//! `agentserver sign FILE --key identity.key [--ttl 10m] [--out FILE]`:
//! signs a privileged command offline.

use crate::privileged::{load_signing_key, sign, time::unix_seconds};
use anyhow::{bail, Context as _};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Arguments of `agentserver sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The unsigned `<privileged-command>` (or bare `<payload>`), or `-`
    /// for standard input.
    file: PathBuf,
    /// The organism's private key (`identity.key`).
    #[arg(long)]
    key: PathBuf,
    /// How long the command stays valid when it names no `expires`:
    /// seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "10m", value_parser = parse_ttl)]
    ttl: Duration,
    /// Write the signed command here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Signs and writes the command.
pub fn run(args: &SignArgs) -> anyhow::Result<()> {
    let input = super::read_input(&args.file)?;
    let key = load_signing_key(&args.key)?;
    let signed = sign(&input, &key, unix_seconds(SystemTime::now()), args.ttl)?;
    match &args.out {
        Some(path) => std::fs::write(path, signed)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => super::write_stdout(&signed)?,
    }
    Ok(())
}

/// `600`, `90s`, `10m`, `2h`, `1d`.
fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration such as 10m"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3_600,
        "d" => number * 86_400,
        _ => bail!("{text:?}: the unit must be s, m, h or d"),
    };
    if seconds == 0 {
        bail!("the ttl must be above zero");
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_ttl("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7_200));
        assert_eq!(parse_ttl("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("10 minutes").is_err());
        assert!(parse_ttl("m").is_err());
    }
}
