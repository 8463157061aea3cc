//! The organism's Ed25519 identity: making a key pair, writing and reading
//! its files, and the public key's fingerprint.
//!
//! `identity.key` is the private key as PKCS#8 PEM, written with mode 0600
//! and never read by the server; `identity.pub` is the public key as
//! SubjectPublicKeyInfo PEM, the one file the server needs.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey as _, EncodePublicKey as _};
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The private key's file name.
pub const PRIVATE_KEY_FILE: &str = "identity.key";
/// The public key's file name.
pub const PUBLIC_KEY_FILE: &str = "identity.pub";

/// Why an identity file could not be made or read.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The file exists and overwriting was not asked for.
    #[error("{0} exists; pass --force to replace it (the old key stops working)")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: not an Ed25519 {kind} in PEM")]
    NotAKey {
        /// The file.
        path: PathBuf,
        /// "private key (PKCS#8)" or "public key (SubjectPublicKeyInfo)".
        kind: &'static str,
    },
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The organism's public key, as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganismKey(VerifyingKey);

impl OrganismKey {
    /// Reads `identity.pub`.
    pub fn load(path: &Path) -> Result<OrganismKey, IdentityError> {
        let text = read(path)?;
        VerifyingKey::from_public_key_pem(&text)
            .map(OrganismKey)
            .map_err(|_| IdentityError::NotAKey {
                path: path.to_owned(),
                kind: "public key (SubjectPublicKeyInfo)",
            })
    }

    /// The key itself.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// SHA-256 of the 32 raw public-key bytes, hex: how people tell keys apart.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl From<VerifyingKey> for OrganismKey {
    fn from(key: VerifyingKey) -> Self {
        OrganismKey(key)
    }
}

/// Reads a private key file (`identity.key`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, IdentityError> {
    let text = read(path)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|_| IdentityError::NotAKey {
        path: path.to_owned(),
        kind: "private key (PKCS#8)",
    })
}

/// A new key pair from the system's random source.
pub fn new_signing_key() -> Result<SigningKey, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `identity.key` (mode 0600) and `identity.pub` into `dir` and
/// returns the public key. Refuses to replace an existing key unless
/// `force`.
pub fn generate(dir: &Path, force: bool) -> Result<OrganismKey, IdentityError> {
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    if !force {
        for path in [&private_path, &public_path] {
            if path.exists() {
                return Err(IdentityError::Exists(path.clone()));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let key = new_signing_key()?;
    let private_pem = private_key_pem(&key)?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    write_private(&private_path, private_pem.as_bytes())?;
    std::fs::write(&public_path, public_pem).map_err(|source| IdentityError::Io {
        path: public_path.clone(),
        source,
    })?;
    Ok(OrganismKey(key.verifying_key()))
}

/// `key` as the plain PKCS#8 of RFC 8410 (version 1, the private key
/// only), the form `openssl genpkey -algorithm ed25519` writes and every
/// tool reads. The version 2 form, with the public key inside, is not
/// read by OpenSSL 3.0 or Python's `cryptography`; both forms are read
/// here ([`load_signing_key`]).
pub(crate) fn private_key_pem(key: &SigningKey) -> Result<String, IdentityError> {
    let bytes = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| IdentityError::Random(e.to_string()))
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to a fresh file only its owner can read.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write as _;
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_loads_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let public = generate(dir.path(), false).unwrap();
        let private = load_signing_key(&dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        assert_eq!(OrganismKey::from(private.verifying_key()), public);
        assert_eq!(
            OrganismKey::load(&dir.path().join(PUBLIC_KEY_FILE)).unwrap(),
            public
        );
        assert!(matches!(
            generate(dir.path(), false),
            Err(IdentityError::Exists(_))
        ));
        let replaced = generate(dir.path(), true).unwrap();
        assert_ne!(replaced, public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn keys_are_written_in_the_plain_form_and_both_forms_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let public = generate(dir.path(), false).unwrap();
        let written = std::fs::read_to_string(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        let (label, der) =
            ed25519_dalek::pkcs8::spki::der::pem::decode_vec(written.as_bytes()).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        // SEQUENCE { INTEGER 0, AlgorithmIdentifier { 1.3.101.112 },
        // OCTET STRING { OCTET STRING (32) } }: 48 bytes, version 0 (v1).
        assert_eq!(der.len(), 48);
        assert_eq!(&der[..5], &[0x30, 0x2e, 0x02, 0x01, 0x00]);
        // A key written in the version 2 form (as earlier releases did)
        // still loads.
        let key = load_signing_key(&dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(v2.len() > written.len());
        let v2_path = dir.path().join("v2.key");
        std::fs::write(&v2_path, v2.as_bytes()).unwrap();
        let reloaded = load_signing_key(&v2_path).unwrap();
        assert_eq!(OrganismKey::from(reloaded.verifying_key()), public);
    }

    #[test]
    fn a_public_key_is_not_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), false).unwrap();
        assert!(matches!(
            load_signing_key(&dir.path().join(PUBLIC_KEY_FILE)),
            Err(IdentityError::NotAKey { .. })
        ));
        assert!(matches!(
            OrganismKey::load(&dir.path().join(PRIVATE_KEY_FILE)),
            Err(IdentityError::NotAKey { .. })
        ));
    }
}
