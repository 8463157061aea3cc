//! The node key: the Ed25519 key a running server signs with, kept in its
//! data directory, so that the owner's key can stay offline.
//!
//! `node.key` is the private key (RFC 8410 PKCS#8 PEM, mode 0600), made at
//! the first start; `node.pub` is its public key (SubjectPublicKeyInfo
//! PEM), for the owner to certify with a signed `node-certificate`
//! command. A node key speaks for the organism only as far as a
//! certificate says.

use crate::privileged::{
    load_signing_key, new_signing_key, private_key_pem, write_private, IdentityError, SigningKey,
    VerifyingKey,
};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey as _, EncodePublicKey as _};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// The node's private key file in the data directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// The node's public key file in the data directory.
pub const NODE_PUBLIC_KEY_FILE: &str = "node.pub";

/// A node's signing key and the id certificates know it by.
#[derive(Clone)]
pub struct NodeKey {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// The key in `data_dir`, made (with `node.pub` beside it) when there
    /// is none yet. Returns the key and whether it was made now.
    pub fn load_or_create(data_dir: &Path) -> Result<(NodeKey, bool), IdentityError> {
        let private_path = data_dir.join(NODE_KEY_FILE);
        let public_path = data_dir.join(NODE_PUBLIC_KEY_FILE);
        if private_path.exists() {
            let key = NodeKey::from(load_signing_key(&private_path)?);
            if !public_path.exists() {
                write_public(&public_path, &key.verifying_key())?;
            }
            return Ok((key, false));
        }
        std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let key = new_signing_key()?;
        write_private(&private_path, private_key_pem(&key)?.as_bytes())?;
        write_public(&public_path, &key.verifying_key())?;
        Ok((NodeKey::from(key), true))
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The id certificates and signatures name this key by: see [`key_id`].
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl From<SigningKey> for NodeKey {
    fn from(key: SigningKey) -> Self {
        let key_id = key_id(&key.verifying_key());
        NodeKey { key, key_id }
    }
}

/// A node key's id: the first 16 hex digits of the SHA-256 of its 32 raw
/// public-key bytes (the start of its fingerprint).
pub fn key_id(key: &VerifyingKey) -> String {
    let mut id = hex::encode(Sha256::digest(key.as_bytes()));
    id.truncate(16);
    id
}

/// Reads a public key file (`node.pub`, SubjectPublicKeyInfo PEM).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&text).map_err(|_| IdentityError::NotAKey {
        path: PathBuf::from(path),
        kind: "public key (SubjectPublicKeyInfo)",
    })
}

fn write_public(path: &Path, key: &VerifyingKey) -> Result<(), IdentityError> {
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    std::fs::write(path, pem).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded_with_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let (made, fresh) = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(fresh);
        let (loaded, fresh) = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(!fresh);
        assert_eq!(made.verifying_key(), loaded.verifying_key());
        assert_eq!(made.key_id().len(), 16);
        assert_eq!(
            load_public_key(&dir.path().join(NODE_PUBLIC_KEY_FILE)).unwrap(),
            made.verifying_key()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(NODE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
