//! Secrets the host holds for agents: API keys and tokens that grants name
//! (`{secret:openai}`) but that no guest, client, log line or audit entry
//! ever sees.
//!
//! They live in a TOML file beside the configuration, one `name = "value"`
//! per secret, readable by the server's user alone (mode 0600 or 0400; the
//! server refuses a file that group or others may read).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the secrets file was refused. Never carries a value.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error("{path}: mode {mode:o} lets others read it; make it readable by the server's user alone (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not `name = "value"` lines.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (no value is quoted).
        reason: String,
    },
}

/// The secrets, by name. Its `Debug` shows names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: HashMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("Secrets").field("names", &names).finish()
    }
}

impl Secrets {
    /// No secrets.
    pub fn none() -> Self {
        Secrets::default()
    }

    /// Secrets given directly (for tests and embedding).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Secrets {
            values: pairs
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        }
    }

    /// Reads the secrets file at `path`, refusing it if others may read it.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let io = |source| SecretsError::Io {
            path: path.to_owned(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretsError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = std::fs::read_to_string(path).map_err(io)?;
        let format = |reason: String| SecretsError::Format {
            path: path.to_owned(),
            reason,
        };
        let document = text
            .parse::<toml_edit::DocumentMut>()
            .map_err(|e| format(format!("not valid TOML: {}", e.message())))?;
        let mut values = HashMap::new();
        for (name, item) in document.iter() {
            check_name(name).map_err(format)?;
            let value = item
                .as_str()
                .ok_or_else(|| format(format!("`{name}` must be a string")))?;
            values.insert(name.to_owned(), value.to_owned());
        }
        Ok(Secrets { values })
    }

    /// Whether a secret named `name` is held.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// `template` with every `{secret:NAME}` replaced by its value, or an
    /// error naming the first secret that is missing (never a value).
    pub fn expand(&self, template: &str) -> Result<String, String> {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(start) = rest.find("{secret:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{secret:".len()..];
            let end = after
                .find('}')
                .ok_or_else(|| "an unclosed {secret:…}".to_owned())?;
            let name = &after[..end];
            let value = self
                .values
                .get(name)
                .ok_or_else(|| format!("the secret `{name}` is not in the secrets file"))?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The secret names `template` refers to, or what is malformed about it.
pub fn secret_names(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{secret:") {
        let after = &rest[start + "{secret:".len()..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{template:?} has an unclosed {{secret:…}}"))?;
        let name = &after[..end];
        check_name(name)?;
        names.push(name.to_owned());
        rest = &after[end + 1..];
    }
    Ok(names)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret names are 1 to 64 letters, digits, '_' and '-', not {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn expands_templates_and_names_what_is_missing() {
        let secrets = Secrets::from_pairs([("openai", "sk-123")]);
        assert_eq!(
            secrets.expand("Bearer {secret:openai}").unwrap(),
            "Bearer sk-123"
        );
        assert_eq!(secrets.expand("plain").unwrap(), "plain");
        let missing = secrets.expand("{secret:other}").unwrap_err();
        assert!(missing.contains("`other`"), "{missing}");
        assert!(!format!("{secrets:?}").contains("sk-123"));
        assert_eq!(
            secret_names("a {secret:x} {secret:y-2}").unwrap(),
            ["x", "y-2"]
        );
        assert!(secret_names("{secret:bad name}").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"openai = \"sk-123\"\n")
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Secrets::load(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        assert!(!error.contains("sk-123"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secrets::load(&path).unwrap().contains("openai"));
    }
}
