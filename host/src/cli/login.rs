//! How the command-line clients (`connect`, `apply`) reach a server: which
//! certificate to trust, who to log in as, and the TOTP code.

use crate::client::Trust;
use anyhow::{bail, Context as _};
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

/// Login options shared by the clients.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Who to log in as.
    #[arg(long)]
    pub user: Option<String>,
    /// Read the base32 TOTP secret from this file instead of asking for a code.
    #[arg(long)]
    pub totp_secret_file: Option<PathBuf>,
    /// Trust the server certificate with this SHA-256 fingerprint (hex).
    #[arg(long, conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// Trust server certificates issued by this CA certificate (PEM); a
    /// development certificate is its own CA.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

impl LoginArgs {
    /// The user to log in as.
    pub fn user(&self) -> anyhow::Result<&str> {
        self.user
            .as_deref()
            .context("say who to log in as: --user NAME")
    }

    /// How to trust the server.
    pub fn trust(&self) -> anyhow::Result<Trust> {
        match (&self.fingerprint, &self.ca) {
            (Some(fingerprint), _) => Ok(Trust::Fingerprint(fingerprint.clone())),
            (None, Some(ca)) => {
                let pem =
                    std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
                if certs.is_empty() {
                    bail!("{}: no certificate found", ca.display());
                }
                Ok(Trust::Ca(certs))
            }
            (None, None) => bail!("say how to trust the server: --fingerprint SHA256 or --ca FILE"),
        }
    }

    /// The TOTP code: computed from `--totp-secret-file`, or asked for on
    /// the terminal.
    pub fn code(&self) -> anyhow::Result<String> {
        match &self.totp_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let secret = crate::auth::decode_base32(text.trim())
                    .context("the TOTP secret is not base32")?;
                Ok(crate::auth::totp_code(&secret, SystemTime::now()))
            }
            None => ask_terminal(&format!("TOTP code for {}: ", self.user()?)),
        }
    }
}

/// Asks `prompt` on the terminal and reads one line. When standard input is
/// not the terminal (it may carry the command, as in `sign … | apply -`),
/// the question goes to the controlling terminal, `/dev/tty`.
fn ask_terminal(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _};
    let mut line = String::new();
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        std::io::stdin().read_line(&mut line)?;
    } else {
        let mut tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .context("no terminal to ask for the TOTP code on: use --totp-secret-file")?;
        tty.write_all(prompt.as_bytes())?;
        tty.flush()?;
        std::io::BufReader::new(tty).read_line(&mut line)?;
    }
    Ok(line.trim().to_owned())
}
