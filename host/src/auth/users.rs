//! The user directory: `users.toml`, each user's TOTP secret and the root
//! tags they may send.
//!
//! ```toml
//! [users.alice]
//! totp_secret = "BASE32SECRET"
//! allow = ["calculate", "echo"]   # or ["*"]
//! ```
//!
//! Reading validates every entry; writing (`user add`, `user remove`) edits
//! the file in place, keeping other users and comments, and leaves it
//! readable by its owner only.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use thiserror::Error;
use toml_edit::{value, Array, DocumentMut, Item, Table};

/// Bytes of a generated TOTP secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// Why the user directory could not be read or written.
#[derive(Debug, Error)]
pub enum UsersError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// An entry is missing a field or has a wrong one.
    #[error("{path}: user `{user}`: {reason}")]
    BadEntry {
        /// The file.
        path: String,
        /// The user.
        user: String,
        /// What is wrong.
        reason: String,
    },
    /// `user add` for a name that exists.
    #[error("user `{0}` already exists")]
    Exists(String),
    /// `user remove` for a name that does not exist.
    #[error("no user named `{0}`")]
    Unknown(String),
    /// A user name that is not allowed.
    #[error("user names are 1 to 64 characters of a-z, A-Z, 0-9, '-', '_' and '.'")]
    BadName,
    /// The directory the nodes of a cluster share could not be reached.
    #[error("the shared user directory: {0}")]
    Shared(String),
}

/// What a user may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// Every tag (`["*"]`).
    All,
    /// These tags, in Clark notation.
    Tags(Vec<String>),
}

/// One user's entry.
#[derive(Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The TOTP secret's bytes (decoded from base32).
    pub secret: Vec<u8>,
    /// The tags the user may send.
    pub allow: Allow,
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("UserEntry")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// All users, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    entries: BTreeMap<String, UserEntry>,
}

/// Whether `name` may be a user name.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn io_error(path: &Path, source: std::io::Error) -> UsersError {
    UsersError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_document(path: &Path) -> Result<DocumentMut, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_error(path, e)),
    };
    text.parse::<DocumentMut>().map_err(|e| UsersError::Syntax {
        path: path.display().to_string(),
        reason: e.message().to_owned(),
    })
}

impl Users {
    /// Reads `path`; a missing file is an empty directory.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let document = read_document(path)?;
        let bad = |user: &str, reason: &str| UsersError::BadEntry {
            path: path.display().to_string(),
            user: user.to_owned(),
            reason: reason.to_owned(),
        };
        let mut entries = BTreeMap::new();
        let Some(users) = document.get("users") else {
            return Ok(Users { entries });
        };
        let users = users
            .as_table_like()
            .ok_or_else(|| bad("*", "`users` must be a table"))?;
        for (name, entry) in users.iter() {
            if !valid_user_name(name) {
                return Err(bad(name, "not a valid user name"));
            }
            let entry = entry
                .as_table_like()
                .ok_or_else(|| bad(name, "must be a table"))?;
            let secret = entry
                .get("totp_secret")
                .and_then(Item::as_str)
                .ok_or_else(|| bad(name, "needs `totp_secret`, a base32 string"))?;
            let secret = decode_base32(secret)
                .ok_or_else(|| bad(name, "`totp_secret` is not valid base32"))?;
            if secret.len() < 16 {
                return Err(bad(name, "`totp_secret` must be at least 128 bits"));
            }
            let allow = entry
                .get("allow")
                .and_then(Item::as_array)
                .ok_or_else(|| bad(name, "needs `allow`, a list of tags"))?;
            let mut tags = Vec::new();
            for tag in allow.iter() {
                let tag = tag
                    .as_str()
                    .ok_or_else(|| bad(name, "`allow` must hold strings"))?;
                tags.push(tag.to_owned());
            }
            let allow = if tags.iter().any(|t| t == "*") {
                Allow::All
            } else {
                Allow::Tags(tags)
            };
            entries.insert(name.to_owned(), UserEntry { secret, allow });
        }
        Ok(Users { entries })
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&UserEntry> {
        self.entries.get(name)
    }

    /// All users, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &UserEntry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Adds user `name` with a fresh random secret to the file at `path`
/// (created if missing), keeping everything else in it. Returns the secret.
pub fn add_user(path: &Path, name: &str, allow: &[String]) -> Result<Vec<u8>, UsersError> {
    if !valid_user_name(name) {
        return Err(UsersError::BadName);
    }
    let mut document = read_document(path)?;
    // Validate what is there before touching it.
    Users::load(path)?;
    let users = document
        .entry("users")
        .or_insert_with(|| Item::Table(Table::new()));
    let Some(users) = users.as_table_mut() else {
        return Err(UsersError::BadEntry {
            path: path.display().to_string(),
            user: "*".into(),
            reason: "`users` must be a table".into(),
        });
    };
    users.set_implicit(true);
    if users.contains_key(name) {
        return Err(UsersError::Exists(name.to_owned()));
    }
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| io_error(path, std::io::Error::other(e)))?;
    let mut entry = Table::new();
    entry.insert("totp_secret", value(encode_base32(&secret)));
    let mut tags = Array::new();
    for tag in allow {
        tags.push(tag.as_str());
    }
    entry.insert("allow", value(tags));
    users.insert(name, Item::Table(entry));
    write_private(path, document.to_string().as_bytes())?;
    Ok(secret)
}

/// Removes user `name` from the file at `path`.
pub fn remove_user(path: &Path, name: &str) -> Result<(), UsersError> {
    let mut document = read_document(path)?;
    let removed = document
        .get_mut("users")
        .and_then(Item::as_table_like_mut)
        .and_then(|users| users.remove(name));
    if removed.is_none() {
        return Err(UsersError::Unknown(name.to_owned()));
    }
    write_private(path, document.to_string().as_bytes())
}

/// Sets what user `name` may send, in the file at `path`, keeping
/// everything else in it.
pub fn set_allow(path: &Path, name: &str, allow: &[String]) -> Result<(), UsersError> {
    let mut document = read_document(path)?;
    let entry = document
        .get_mut("users")
        .and_then(Item::as_table_like_mut)
        .and_then(|users| users.get_mut(name))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| UsersError::Unknown(name.to_owned()))?;
    let mut tags = Array::new();
    for tag in allow {
        tags.push(tag.as_str());
    }
    entry.insert("allow", value(tags));
    write_private(path, document.to_string().as_bytes())
}

/// Writes `bytes` to `path` through a temporary file readable by the owner
/// only, then renames it into place.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), UsersError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| io_error(path, e))
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps expect.
pub fn encode_base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buffer = [0u8; 5];
        buffer[..chunk.len()].copy_from_slice(chunk);
        let bits = buffer
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            let index = (bits >> (35 - i * 5)) & 31;
            out.push(char::from(BASE32_ALPHABET[index as usize]));
        }
    }
    out
}

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut bits, mut count) = (0u32, 0u32);
    for c in text.chars() {
        if c == '=' || c == ' ' {
            continue;
        }
        let c = c.to_ascii_uppercase() as u8;
        let index = BASE32_ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 5) | index;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        assert_eq!(encode_base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(decode_base32("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(decode_base32("mzxw6ytboi").unwrap(), b"foobar");
        let secret: Vec<u8> = (0..20).collect();
        assert_eq!(decode_base32(&encode_base32(&secret)).unwrap(), secret);
        assert_eq!(decode_base32("not base32!"), None);
    }

    #[test]
    fn adding_users_keeps_the_others_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let carol = "# carol keeps her own secret\n[users.carol]\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\nallow = [\"echo\"]\n";
        std::fs::write(&path, carol).unwrap();
        add_user(&path, "alice", &["calculate".into(), "echo".into()]).unwrap();
        add_user(&path, "bob", &["*".into()]).unwrap();
        assert!(matches!(
            add_user(&path, "bob", &[]),
            Err(UsersError::Exists(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(carol), "{text}");
        let users = Users::load(&path).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(
            users.get("alice").unwrap().allow,
            Allow::Tags(vec!["calculate".into(), "echo".into()])
        );
        assert_eq!(users.get("bob").unwrap().allow, Allow::All);
        assert_eq!(users.get("bob").unwrap().secret.len(), SECRET_BYTES);
        remove_user(&path, "alice").unwrap();
        assert!(Users::load(&path).unwrap().get("alice").is_none());
        assert!(matches!(
            remove_user(&path, "alice"),
            Err(UsersError::Unknown(_))
        ));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "[users.eve]\ntotp_secret = \"!!\"\nallow = []\n").unwrap();
        let err = Users::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("user `eve`") && err.contains("base32"),
            "{err}"
        );
    }
}
