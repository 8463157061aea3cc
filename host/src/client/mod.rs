//! A WSS client for AgentServer: TLS with a pinned or CA-verified server
//! certificate, then the WebSocket channel. Used by `agentserver connect`,
//! the load generator and the end-to-end tests.

use futures::{SinkExt as _, StreamExt as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `wss://host:port/`.
    #[error("not a wss:// URL: {0}")]
    BadUrl(String),
    /// TCP, TLS or WebSocket failed.
    #[error("{0}")]
    Connection(String),
    /// The server closed the connection.
    #[error("closed by the server: {code} {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// How the server's certificate is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256 (hex) of its DER bytes.
    Fingerprint(String),
    /// Certificates issued by these roots (PEM), checked as browsers do.
    Ca(Vec<CertificateDer<'static>>),
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text frame.
    Text(String),
    /// The close frame: code and reason.
    Closed(u16, String),
}

/// A connected client.
pub struct Client {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if hex::encode(Sha256::digest(end_entity.as_ref())) == self.fingerprint.to_ascii_lowercase()
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate fingerprint does not match".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn connection(error: impl std::fmt::Display) -> ClientError {
    ClientError::Connection(error.to_string())
}

/// The host of `url` (`wss://` or `https://`) and its `host:port`.
fn host_and_address(url: &str) -> Result<(&str, String), ClientError> {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    Ok((host, address))
}

/// Opens a TLS connection to the host of `url` (`wss://` or `https://`).
async fn tls_connect(url: &str, trust: &Trust) -> Result<TlsStream<TcpStream>, ClientError> {
    let (_, address) = host_and_address(url)?;
    let tcp = TcpStream::connect(&address).await.map_err(connection)?;
    tls_over(url, trust, tcp).await
}

/// Runs TLS for the host of `url` over `tcp`.
async fn tls_over(
    url: &str,
    trust: &Trust,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let (host, _) = host_and_address(url)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(connection)?;
    let config = match trust {
        Trust::Fingerprint(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                fingerprint: fingerprint.clone(),
                provider,
            }))
            .with_no_client_auth(),
        Trust::Ca(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root.clone()).map_err(connection)?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(connection)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(connection)
}

/// A plain HTTPS GET of `url` (`https://host:port/path`): the status code
/// and the body. For `/healthz` and `/metrics`.
pub async fn get(url: &str, trust: &Trust) -> Result<(u16, String), ClientError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = tls_connect(url, trust).await?;
    let path = url
        .strip_prefix("https://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let request = format!("GET {path} HTTP/1.1\r\nHost: agentserver\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(connection)?;
    let mut response = Vec::new();
    // The server closes after answering; a TLS close without close_notify
    // is fine here, since the response is complete by then.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| connection("incomplete HTTP response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| connection("no HTTP status"))?;
    Ok((status, body.to_owned()))
}

impl Client {
    /// Connects to `url` (`wss://host:port/`), trusting the server as `trust` says.
    pub async fn connect(url: &str, trust: &Trust) -> Result<Client, ClientError> {
        let tls = tls_connect(url, trust).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .map_err(connection)?;
        Ok(Client { ws })
    }

    /// Like [`Client::connect`], over a TCP connection already open to the
    /// server: one bound to a chosen local address, say, or one on which
    /// a PROXY protocol header was sent first.
    pub async fn connect_over(
        url: &str,
        trust: &Trust,
        tcp: TcpStream,
    ) -> Result<Client, ClientError> {
        let tls = tls_over(url, trust, tcp).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .map_err(connection)?;
        Ok(Client { ws })
    }

    /// Sends one text frame.
    pub async fn send(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .map_err(connection)
    }

    /// Sends one binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws
            .send(Message::binary(bytes))
            .await
            .map_err(connection)
    }

    /// Closes the connection with a normal close frame.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.ws.close(None).await.map_err(connection)
    }

    /// The next text frame or close frame (pings are answered on the way).
    pub async fn receive(&mut self) -> Result<Received, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(Received::Text(text.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Ok(Received::Closed(code, reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(connection(error)),
                None => return Err(connection("connection ended")),
            }
        }
    }

    /// Logs in as `user` with TOTP `code`; returns the catalog frame.
    pub async fn login(&mut self, user: &str, code: &str) -> Result<String, ClientError> {
        let escape = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('"', "&quot;")
        };
        self.send(&format!(
            r#"<authenticate user="{}" totp="{}"/>"#,
            escape(user),
            escape(code)
        ))
        .await?;
        match self.receive().await? {
            Received::Text(catalog) => Ok(catalog),
            Received::Closed(code, reason) => Err(ClientError::Closed { code, reason }),
        }
    }
}
