//! Outbound HTTP for one agent, as its grant allows and no further.
//!
//! [`OutboundClient`] is what the host's `wasi:http/outgoing-handler` sends
//! through. For every request it:
//!
//! 1. counts it against the call's `max-requests`;
//! 2. checks scheme, host and port against the grant's allow list (a
//!    request to an IP literal must match an address pattern, to a name a
//!    name pattern);
//! 3. resolves the name itself and connects to a resolved address — never
//!    re-resolving — refusing addresses in private, loopback, link-local,
//!    multicast and other special ranges unless a pattern names them (see
//!    [`is_special_address`]); no proxy from the environment is consulted;
//! 4. adds the grant's secret headers for that host (the guest may not set
//!    them: they are forbidden headers for it, and stripped from responses);
//! 5. bounds the request by the grant's `timeout-ms`, from sending to the
//!    end of the response body, and the call's response bytes by
//!    `max-response-bytes` — past either, the guest's read fails;
//! 6. audits it: method, host, path (never the query), status, bytes each
//!    way, duration, or why it was refused — never bodies or header values.
//!
//! Redirects are not followed: a guest that wants to follow one makes a new
//! request, checked again. Connections are pooled per agent and host
//! (HTTP/1.1 keep-alive), so that a conversation with an API does not pay a
//! TCP and TLS handshake per request.

use super::grants::HttpGrant;
use super::hosts::{is_special_address, Destination, Scheme};
use super::secrets::Secrets;
use super::{Usage, UsageAudit};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per host.
const POOL_PER_HOST: usize = 8;

/// Why an agent's outbound HTTP could not be set up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// A grant names a secret the host does not hold.
    #[error("{0}")]
    MissingSecret(String),
    /// A header value with its secret filled in is not a valid header value.
    #[error("the `{0}` header's value is not a valid header value")]
    BadHeaderValue(String),
    /// TLS could not be set up.
    #[error("outbound TLS: {0}")]
    Tls(String),
}

/// A secret header, ready to add.
struct ReadyHeader {
    host: super::hosts::AllowedHost,
    name: HeaderName,
    value: HeaderValue,
}

/// One call's share of an agent's outbound budget, and whom its uses are
/// attributed to.
#[derive(Debug)]
pub struct CallScope {
    session: Arc<str>,
    thread: Arc<str>,
    requests: AtomicU32,
    received: AtomicU64,
}

impl CallScope {
    /// A fresh budget for a call on `thread` of `session`.
    pub fn new(session: &str, thread: &str) -> Arc<Self> {
        Arc::new(CallScope {
            session: session.into(),
            thread: thread.into(),
            requests: AtomicU32::new(0),
            received: AtomicU64::new(0),
        })
    }

    /// The session the call runs for.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The thread the call runs on.
    pub fn thread(&self) -> &str {
        &self.thread
    }
}

/// The outbound HTTP client of one agent.
pub struct OutboundClient {
    agent: Arc<str>,
    grant: HttpGrant,
    headers: Vec<ReadyHeader>,
    forbidden: Arc<HashSet<HeaderName>>,
    client: Client<Connector, WasiBody>,
    audit: Arc<dyn UsageAudit>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("agent", &self.agent)
            .field("allow", &self.grant.allow)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client for `agent` under `grant`, its secret headers filled in
    /// from `secrets`, auditing into `audit`.
    pub fn new(
        agent: &str,
        grant: &HttpGrant,
        secrets: &Secrets,
        audit: Arc<dyn UsageAudit>,
    ) -> Result<Self, OutboundError> {
        let mut headers = Vec::new();
        for header in &grant.headers {
            let value = secrets
                .expand(&header.value)
                .map_err(OutboundError::MissingSecret)?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| OutboundError::BadHeaderValue(header.name.clone()))?;
            value.set_sensitive(true);
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| OutboundError::BadHeaderValue(header.name.clone()))?;
            headers.push(ReadyHeader {
                host: header.host.clone(),
                name,
                value,
            });
        }
        let forbidden: HashSet<HeaderName> = wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS
            .iter()
            .cloned()
            .chain(headers.iter().map(|h| h.name.clone()))
            .collect();
        let connector = Connector {
            grant: Arc::new(grant.clone()),
            tls: tls_config()?,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_HOST)
            .build(connector);
        Ok(OutboundClient {
            agent: agent.into(),
            grant: grant.clone(),
            headers,
            forbidden: Arc::new(forbidden),
            client,
            audit,
        })
    }

    /// Headers the guest may not set or see: wasi-http's defaults and
    /// every header the grant fills with a secret.
    pub fn forbidden_headers(&self) -> &Arc<HashSet<HeaderName>> {
        &self.forbidden
    }

    /// Sends `request` for the call `scope`, as the module documentation
    /// describes.
    pub async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        scope: Arc<CallScope>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let (mut parts, body) = request.into_parts();
        let mut record = RequestRecord {
            client: Arc::clone(&self),
            scope: Arc::clone(&scope),
            method: parts.method.to_string(),
            destination: String::new(),
            path: parts.uri.path().to_owned(),
            status: None,
            sent: Arc::new(AtomicU64::new(0)),
            received: 0,
            started: Instant::now(),
            outcome: None,
            done: false,
        };
        let Some(destination) = Destination::of(&parts.uri) else {
            record.refuse("the URL has no http or https host");
            return Err(HttpError::HttpRequestUriInvalid);
        };
        record.destination = destination.to_string();
        let made = scope.requests.fetch_add(1, Ordering::AcqRel) + 1;
        if made > self.grant.max_requests {
            let reason = format!(
                "the limit of {} requests per call is reached",
                self.grant.max_requests
            );
            record.refuse(&reason);
            return Err(HttpError::InternalError(Some(reason)));
        }
        if !self
            .grant
            .allow
            .iter()
            .any(|allowed| allowed.matches(&destination))
        {
            record.refuse("the host is not granted");
            return Err(HttpError::HttpRequestDenied);
        }
        for name in self.forbidden.iter() {
            parts.headers.remove(name);
        }
        for header in &self.headers {
            if header.host.matches(&destination) {
                parts
                    .headers
                    .insert(header.name.clone(), header.value.clone());
            }
        }
        let body = CountingBody {
            inner: body,
            sent: Arc::clone(&record.sent),
        }
        .boxed_unsync();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.grant.timeout_ms);
        let sent = tokio::time::timeout_at(
            deadline,
            self.client.request(http::Request::from_parts(parts, body)),
        )
        .await;
        let response = match sent {
            Err(_elapsed) => {
                record.refuse(&format!(
                    "no response within the grant's {} ms",
                    self.grant.timeout_ms
                ));
                return Err(HttpError::HttpResponseTimeout);
            }
            Ok(Err(error)) => {
                let (reason, code) = classify(&error);
                record.refuse(&reason);
                return Err(code);
            }
            Ok(Ok(response)) => response,
        };
        record.status = Some(response.status().as_u16());
        let (mut parts, body) = response.into_parts();
        for name in self.forbidden.iter() {
            parts.headers.remove(name);
        }
        let limited = LimitedBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            limit: self.grant.max_response_bytes,
            timeout_ms: self.grant.timeout_ms,
            record,
        };
        Ok(http::Response::from_parts(parts, limited.boxed_unsync()))
    }
}

/// What is known of one request, audited once when it ends.
struct RequestRecord {
    client: Arc<OutboundClient>,
    scope: Arc<CallScope>,
    method: String,
    destination: String,
    path: String,
    status: Option<u16>,
    sent: Arc<AtomicU64>,
    received: u64,
    started: Instant,
    /// Why it was refused or cut short, if it was.
    outcome: Option<String>,
    done: bool,
}

impl RequestRecord {
    fn refuse(&mut self, reason: &str) {
        self.outcome = Some(reason.to_owned());
        self.finish();
    }

    /// Audits the request (once), and logs it.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let sent = self.sent.load(Ordering::Acquire);
        let mut xml = String::from("<http-request");
        let mut attribute = |name: &str, value: &str| {
            let _ = write!(xml, " {name}=\"");
            crate::xml::escape_attribute(&mut xml, value);
            xml.push('"');
        };
        attribute("duration-ms", &duration_ms.to_string());
        if let Some(outcome) = &self.outcome {
            attribute("error", outcome);
        }
        attribute("host", &self.destination);
        attribute("method", &self.method);
        attribute("path", super::clip(&self.path));
        attribute("received", &self.received.to_string());
        attribute("sent", &sent.to_string());
        if let Some(status) = self.status {
            attribute("status", &status.to_string());
        }
        xml.push_str("></http-request>");
        let client = &self.client;
        tracing::info!(target: "agent::http", agent = &*client.agent, thread = self.scope.thread(),
            method = %self.method, host = %self.destination, path = super::clip(&self.path),
            status = ?self.status, sent, received = self.received, duration_ms,
            error = self.outcome.as_deref().unwrap_or(""), "outbound request");
        client.audit.record(&Usage {
            agent: &client.agent,
            session: self.scope.session(),
            thread: self.scope.thread(),
            tag: "http-request",
            canonical: &xml,
        });
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.done && self.outcome.is_none() && self.status.is_some() {
            // The guest stopped reading before the end: say so.
            self.outcome = Some("the agent did not read the whole response".into());
        }
        self.finish();
    }
}

/// Counts the bytes of a request body as they are sent.
struct CountingBody {
    inner: WasiBody,
    sent: Arc<AtomicU64>,
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent.fetch_add(data.len() as u64, Ordering::AcqRel);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body within the call's byte budget and the request's time.
struct LimitedBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: u64,
    timeout_ms: u64,
    record: RequestRecord,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.record.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let reason = format!(
                "the response took longer than the grant's {} ms",
                this.timeout_ms
            );
            this.record.refuse(&reason);
            return Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.record.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.record
                    .refuse(&format!("the response broke off: {error}"));
                Poll::Ready(Some(Err(HttpError::HttpResponseIncomplete)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame.map_data(|_| Bytes::new()))));
                };
                let len = data.len() as u64;
                this.record.received += len;
                let total = this.record.scope.received.fetch_add(len, Ordering::AcqRel) + len;
                if total > this.limit {
                    let reason = format!(
                        "the responses of one call went past the grant's {} bytes",
                        this.limit
                    );
                    this.record.refuse(&reason);
                    return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                        this.limit,
                    )))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Names what went wrong with a request the client could not complete.
fn classify(error: &hyper_util::client::legacy::Error) -> (String, HttpError) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<ConnectError>() {
            let code = match refused {
                ConnectError::Prohibited(_) => HttpError::DestinationIpProhibited,
                ConnectError::Resolve(_) | ConnectError::NoAddress => {
                    HttpError::DestinationNotFound
                }
                ConnectError::Connect(error)
                    if error.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    HttpError::ConnectionRefused
                }
                ConnectError::Connect(_) => HttpError::DestinationUnavailable,
                ConnectError::Tls(_) => HttpError::TlsProtocolError,
            };
            return (refused.to_string(), code);
        }
        source = cause.source();
    }
    let mut reason = format!("the request failed: {error}");
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let _ = write!(reason, ": {inner}");
        cause = inner.source();
    }
    (reason, HttpError::HttpProtocolError)
}

/// Why a connection was not made.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// Every address the name resolved to is in a special range the grant
    /// does not name.
    #[error("{0} is a private, loopback, link-local or otherwise special address the grant does not name")]
    Prohibited(IpAddr),
    /// The name did not resolve.
    #[error("the name did not resolve: {0}")]
    Resolve(std::io::Error),
    /// The name resolved to nothing.
    #[error("the name resolved to no address")]
    NoAddress,
    /// No connection could be made.
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS failed: {0}")]
    Tls(std::io::Error),
}

/// Makes connections for the pool: resolves, checks, connects, and wraps in
/// TLS for `https`.
#[derive(Clone)]
struct Connector {
    grant: Arc<HttpGrant>,
    tls: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl Connector {
    async fn connect(self, uri: http::Uri) -> Result<Conn, ConnectError> {
        let destination = Destination::of(&uri).ok_or(ConnectError::NoAddress)?;
        let candidates: Vec<IpAddr> = match destination.address() {
            Some(address) => vec![address],
            None => tokio::net::lookup_host((destination.host.as_str(), destination.port))
                .await
                .map_err(ConnectError::Resolve)?
                .map(|address| address.ip())
                .collect(),
        };
        let first = *candidates.first().ok_or(ConnectError::NoAddress)?;
        let allowed = |address: &IpAddr| {
            !is_special_address(*address)
                || self.grant.allow.iter().any(|pattern| {
                    pattern.names_address(destination.scheme, destination.port, *address)
                })
        };
        let addresses: Vec<IpAddr> = candidates.iter().copied().filter(allowed).collect();
        if addresses.is_empty() {
            return Err(ConnectError::Prohibited(first));
        }
        let mut last_error = None;
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect(SocketAddr::new(address, destination.port)).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let stream = match (stream, last_error) {
            (Some(stream), _) => stream,
            (None, Some(error)) => return Err(ConnectError::Connect(error)),
            (None, None) => return Err(ConnectError::NoAddress),
        };
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match destination.scheme {
            Scheme::Http => Box::new(stream),
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(destination.host.clone())
                    .map_err(|e| ConnectError::Tls(std::io::Error::other(e)))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, stream)
                    .await
                    .map_err(ConnectError::Tls)?;
                Box::new(tls)
            }
        };
        Ok(Conn(TokioIo::new(stream)))
    }
}

/// The TLS settings of outbound connections: the web's public roots
/// (webpki-roots).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OutboundError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TCP stream, in TLS or not.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A pooled connection.
struct Conn(TokioIo<Box<dyn Stream>>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
