//! The user directory the nodes of a cluster share: the text of
//! `users.toml`, kept in the shared store. Each node's file is a copy: a
//! node adopts the shared text at start (or seeds it with its own file
//! when there is none yet), every grant and every reload publishes the
//! file's new text, and the other nodes adopt it when told.

use super::users::{io_error, write_private};
use super::{Users, UsersError};
use crate::privileged::StoreError;
use std::path::Path;

/// Where the nodes of a cluster keep the user directory's text.
pub trait SharedUsers: Send + Sync + std::fmt::Debug {
    /// The shared text, if any node published one.
    fn load_users(&self) -> Result<Option<String>, StoreError>;
    /// Replaces the shared text.
    fn save_users(&self, text: &str) -> Result<(), StoreError>;
}

/// Makes the file at `path` a copy of the shared directory, or seeds the
/// shared directory with the file when it has none. The shared text is
/// checked before it replaces the file; returns whether the file changed.
pub fn adopt_shared_users(path: &Path, shared: &dyn SharedUsers) -> Result<bool, UsersError> {
    let shared_text = shared
        .load_users()
        .map_err(|e| UsersError::Shared(e.to_string()))?;
    let Some(text) = shared_text else {
        publish_users(path, shared)?;
        return Ok(false);
    };
    let local = std::fs::read_to_string(path).ok();
    if local.as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    // Checked as a file of its own first, so that a bad shared text never
    // replaces a good local one.
    let dir = tempfile::tempdir().map_err(|e| io_error(path, e))?;
    let candidate = dir.path().join("users.toml");
    write_private(&candidate, text.as_bytes())?;
    Users::load(&candidate)?;
    write_private(path, text.as_bytes())?;
    Ok(true)
}

/// Publishes the file at `path` as the shared directory.
pub fn publish_users(path: &Path, shared: &dyn SharedUsers) -> Result<(), UsersError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    shared
        .save_users(&text)
        .map_err(|e| UsersError::Shared(e.to_string()))
}
