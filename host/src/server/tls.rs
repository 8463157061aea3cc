//! TLS for the one port: the configured certificate, or a self-signed
//! development certificate made on first start and reused afterwards.
//!
//! The development certificate names `localhost`, `127.0.0.1` and `::1`,
//! lives at `DATA_DIR/tls/cert.pem` with its key at `DATA_DIR/tls/key.pem`
//! (mode 0600), and is identified by the SHA-256 of its DER bytes, which the
//! server logs so that a client can pin it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use thiserror::Error;

/// Why TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or no usable key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The development certificate could not be generated.
    #[error("cannot generate a development certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not work together: {0}")]
    Config(String),
}

/// A certificate chain and its key, ready for rustls.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The SHA-256 of the leaf certificate's DER bytes, as colon-free hex.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|leaf| hex::encode(Sha256::digest(leaf.as_ref())))
            .unwrap_or_default()
    }

    /// Reads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let pem = |path: &Path, reason: &str| TlsError::Pem {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let cert_pem = read(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(cert, &e.to_string()))?;
        if chain.is_empty() {
            return Err(pem(cert, "no certificate found"));
        }
        let key_pem = read(key)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem(key, &e.to_string()))?;
        Ok(Identity {
            chain,
            key: key_der,
        })
    }

    /// The development certificate in `dir` (`cert.pem`, `key.pem`),
    /// generated first if it does not exist. Returns it and whether it was
    /// made now.
    pub fn development(dir: &Path) -> Result<(Identity, bool), TlsError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        if cert_path.is_file() && key_path.is_file() {
            return Ok((Identity::load(&cert_path, &key_path)?, false));
        }
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        std::fs::write(&cert_path, generated.cert.pem()).map_err(io(&cert_path))?;
        Ok((Identity::load(&cert_path, &key_path)?, true))
    }

    /// A rustls server configuration serving this identity over HTTP/1.1.
    /// A server configuration whose certificate can be replaced while it
    /// serves ([`LiveCertificate`]), reloaded from `source` (certificate
    /// and key files) when asked.
    pub fn live_config(
        self,
        source: (PathBuf, PathBuf),
    ) -> Result<(Arc<rustls::ServerConfig>, Arc<LiveCertificate>), TlsError> {
        let stamp = modified(&source);
        let live = Arc::new(LiveCertificate {
            current: RwLock::new(self.certified()?),
            source,
            stamp: Mutex::new(stamp),
        });
        let resolver: Arc<dyn ResolvesServerCert> = live.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Arc::new(config), live))
    }

    /// The chain with its signing key, checked to belong together.
    fn certified(self) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = provider()
            .key_provider
            .load_private_key(self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let certified = CertifiedKey::new(self.chain, key);
        certified
            .keys_match()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(certified))
    }

    pub fn server_config(self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate the port presents, replaceable while connections run:
/// a handshake takes whatever is current, and connections already open keep
/// the certificate they were made with. A new pair that does not load, or
/// whose key does not match its certificate, is refused and the current one
/// stays.
#[derive(Debug)]
pub struct LiveCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    /// The certificate and key files.
    source: (PathBuf, PathBuf),
    /// Their modification times when last loaded.
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl LiveCertificate {
    /// The SHA-256 of the current leaf certificate, hex.
    pub fn fingerprint(&self) -> String {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .cert
            .first()
            .map(|leaf| hex::encode(Sha256::digest(leaf.as_ref())))
            .unwrap_or_default()
    }

    /// Loads the files again and, if they make a working pair, presents
    /// them from now on; returns the new fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let stamp = modified(&self.source);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        let certified = Identity::load(&self.source.0, &self.source.1)?.certified()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = certified;
        Ok(self.fingerprint())
    }

    /// [`reload`](Self::reload) if either file changed since the last
    /// load; `None` when neither did.
    pub fn reload_if_changed(&self) -> Option<Result<String, TlsError>> {
        let stamp = modified(&self.source);
        if stamp.is_none() || *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) == stamp {
            return None;
        }
        Some(self.reload())
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The modification times of both files, if both can be read.
fn modified((cert, key): &(PathBuf, PathBuf)) -> Option<(SystemTime, SystemTime)> {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some((time(cert)?, time(key)?))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_certificate_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, made) = Identity::development(dir.path()).unwrap();
        assert!(made);
        let (second, made) = Identity::development(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        second.server_config().unwrap();
    }
}
