//! `agentserver user add|list|remove`: the user directory (`users.toml`).
//!
//! `user add` makes a random 160-bit TOTP secret; the first line it prints
//! is the `otpauth://` URI, then a QR code an authenticator app can scan.

use crate::auth::{add_user, otpauth_uri, remove_user, totp_code, Allow, Users};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use qrcode::render::unicode;
use qrcode::QrCode;
use std::path::{Path, PathBuf};

/// Arguments of `agentserver user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user with a fresh TOTP secret.
    Add {
        /// The user's name.
        name: String,
        /// Root tags the user may send, comma-separated (`*` for all).
        #[arg(long, value_delimiter = ',', required = true)]
        allow: Vec<String>,
        /// The user directory.
        #[arg(long, default_value = "users.toml")]
        users: PathBuf,
        /// Also write the QR code as a PNG image.
        #[arg(long)]
        qr_png: Option<PathBuf>,
        /// Also write the base32 secret to this file (mode 0600), for a
        /// script's `--totp-secret-file`.
        #[arg(long)]
        secret_out: Option<PathBuf>,
    },
    /// Print a user's current TOTP code (for development and scripts).
    Code {
        /// The user's name.
        name: String,
        /// The user directory.
        #[arg(long, default_value = "users.toml")]
        users: PathBuf,
    },
    /// List users and what they may send.
    List {
        /// The user directory.
        #[arg(long, default_value = "users.toml")]
        users: PathBuf,
    },
    /// Remove a user.
    Remove {
        /// The user's name.
        name: String,
        /// The user directory.
        #[arg(long, default_value = "users.toml")]
        users: PathBuf,
    },
}

/// Runs `agentserver user …`.
pub fn run(args: &UserArgs) -> anyhow::Result<()> {
    match &args.command {
        UserCommand::Add {
            name,
            allow,
            users,
            qr_png,
            secret_out,
        } => {
            let secret = add_user(users, name, allow)?;
            if let Some(path) = secret_out {
                write_secret(path, &crate::auth::encode_base32(&secret))?;
            }
            let uri = otpauth_uri(name, &secret);
            println!("{uri}");
            let code = QrCode::new(uri.as_bytes()).context("cannot make a QR code")?;
            let art = code.render::<unicode::Dense1x2>().quiet_zone(true).build();
            println!("{art}");
            if let Some(path) = qr_png {
                write_png(&code, path)?;
                println!("QR code written to {}", path.display());
            }
            Ok(())
        }
        UserCommand::Code { name, users } => {
            let directory = Users::load(users)?;
            let entry = directory
                .get(name)
                .with_context(|| format!("no user named `{name}` in {}", users.display()))?;
            println!("{}", totp_code(&entry.secret, std::time::SystemTime::now()));
            Ok(())
        }
        UserCommand::List { users } => {
            for (name, entry) in Users::load(users)?.iter() {
                let allow = match &entry.allow {
                    Allow::All => "*".to_owned(),
                    Allow::Tags(tags) => tags.join(","),
                };
                println!("{name}\t{allow}");
            }
            Ok(())
        }
        UserCommand::Remove { name, users } => {
            remove_user(users, name)?;
            println!("removed {name}");
            Ok(())
        }
    }
}

/// Writes a TOTP secret where only its owner can read it.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `code` as a black-on-white PNG, 8 pixels a module, with a quiet zone.
fn write_png(code: &QrCode, path: &Path) -> anyhow::Result<()> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (i % width + QUIET, i / width + QUIET);
            for dy in 0..SCALE {
                let row = (y * SCALE + dy) * side;
                pixels[row + x * SCALE..row + (x + 1) * SCALE].fill(0);
            }
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let side = u32::try_from(side).context("QR code too large")?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
