//! The WebSocket handshake and the pre-authentication read budget.
//!
//! The frame cap tungstenite enforces is fixed when the stream is made, and
//! it must be large enough for a privileged command carrying a component
//! inline (`max_command_bytes`, 64 MiB by default). A peer that has not yet
//! logged in must not be able to make the server buffer that much, so the
//! socket is wrapped in a [`Gated`] reader: until the connection opens the
//! gate (after a successful login), at most [`PRE_AUTH_READ_BUDGET`] bytes
//! are read from it in all, and reading past that fails the connection
//! before anything more is buffered.

use bytes::Bytes;
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::handshake::derive_accept_key;
use hyper_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::WebSocketStream;

/// Bytes a connection may send before it has logged in: the WebSocket
/// frame of one `<auth>` or `<resume-session>` with room to spare.
pub(crate) const PRE_AUTH_READ_BUDGET: u64 = 16 << 10;

/// The message channel of one connection.
pub(crate) type Socket = WebSocketStream<Gated<TokioIo<Upgraded>>>;

/// Why an upgrade request was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    #[error("unsupported Sec-WebSocket-Version (13 is required)")]
    UnsupportedVersion,
}

/// Checks an upgrade request and returns the `101 Switching Protocols`
/// response to send and the pending upgrade.
pub(crate) fn accept<B>(
    request: &mut Request<B>,
) -> Result<(Response<Full<Bytes>>, OnUpgrade), UpgradeError> {
    let key = request
        .headers()
        .get("Sec-WebSocket-Key")
        .ok_or(UpgradeError::MissingKey)?;
    if request
        .headers()
        .get("Sec-WebSocket-Version")
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(UpgradeError::UnsupportedVersion);
    }
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok((response, hyper::upgrade::on(request)))
}

/// Completes a pending upgrade into a gated server-side WebSocket.
pub(crate) async fn open(
    upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> Result<(Socket, GateKey), hyper::Error> {
    let upgraded = upgrade.await?;
    let (gated, key) = Gated::new(TokioIo::new(upgraded), PRE_AUTH_READ_BUDGET);
    let socket = WebSocketStream::from_raw_socket(gated, Role::Server, Some(config)).await;
    Ok((socket, key))
}

/// Opens a [`Gated`] reader: from then on it reads without a budget.
#[derive(Debug, Clone)]
pub(crate) struct GateKey(Arc<AtomicU64>);

impl GateKey {
    /// Lifts the budget; called once the peer has logged in.
    pub(crate) fn open(&self) {
        self.0.store(u64::MAX, Ordering::Release);
    }
}

/// A stream whose reads stop after a budget of bytes, until opened.
#[derive(Debug)]
pub(crate) struct Gated<S> {
    inner: S,
    remaining: Arc<AtomicU64>,
}

impl<S> Gated<S> {
    /// Wraps `inner` with `budget` bytes to read before the gate is opened.
    pub(crate) fn new(inner: S, budget: u64) -> (Self, GateKey) {
        let remaining = Arc::new(AtomicU64::new(budget));
        let key = GateKey(Arc::clone(&remaining));
        (Gated { inner, remaining }, key)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let remaining = self.remaining.load(Ordering::Acquire);
        if remaining == u64::MAX {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if remaining == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read budget before login exhausted",
            )));
        }
        let allowed = usize::try_from(remaining).unwrap_or(usize::MAX);
        let mut limited = buf.take(allowed);
        let result = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let filled = limited.filled().len();
        if let Poll::Ready(Ok(())) = &result {
            // SAFETY: `limited` is a view of `buf`'s unfilled part, and the
            // inner reader initialised and filled its first `filled` bytes.
            unsafe { buf.assume_init(filled) };
            buf.advance(filled);
            // Only this reader decrements, and an open gate is never
            // reached here, so the budget cannot underflow.
            let _ = self
                .remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    (left != u64::MAX).then(|| left.saturating_sub(filled as u64))
                });
        }
        result
    }
}

writes_pass_through!(Gated);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn reads_stop_at_the_budget_until_the_gate_opens() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (mut gated, key) = Gated::new(server, 10);
        client.write_all(&[7u8; 64]).await.unwrap();
        let mut buf = [0u8; 64];
        let mut read = 0;
        while read < 10 {
            read += gated.read(&mut buf[read..]).await.unwrap();
        }
        assert_eq!(read, 10, "never more than the budget");
        let error = gated.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);

        key.open();
        let mut rest = Vec::new();
        drop(client);
        gated.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), 54, "everything else once opened");
    }
}
