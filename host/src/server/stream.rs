//! The byte stream of one client connection, under TLS: the bytes read
//! before TLS began (while looking for a PROXY header) are yielded first,
//! and the connection's place under `max_connections` is held for as long
//! as the stream lives, an upgraded WebSocket's included.

use super::pressure::OpenSlot;

/// `impl AsyncWrite for $wrapper<S>`, every call passed to its `inner`
/// stream: for wrappers that change only how a stream reads.
macro_rules! writes_pass_through {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                data: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// A client's stream; see the module.
#[derive(Debug)]
pub(crate) struct ClientStream<S> {
    inner: S,
    replay: Vec<u8>,
    offset: usize,
    _open: OpenSlot,
}

impl<S> ClientStream<S> {
    /// `inner`, yielding `replay` first.
    pub(crate) fn new(inner: S, replay: Vec<u8>, open: OpenSlot) -> Self {
        ClientStream {
            inner,
            replay,
            offset: 0,
            _open: open,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.replay.len() {
            let n = buf.remaining().min(self.replay.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.replay[start..start + n]);
            self.offset += n;
            if self.offset == self.replay.len() {
                self.replay = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

writes_pass_through!(ClientStream);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pressure::ConnectionLimits;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn replayed_bytes_come_first_and_the_slot_is_held_until_the_end() {
        let limits = ConnectionLimits::new(1, 1);
        let open = limits.try_open().unwrap();
        let rest: &[u8] = b" world";
        let mut stream = ClientStream::new(rest, b"hello".to_vec(), open);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
        assert_eq!(limits.open(), 1);
        drop(stream);
        assert_eq!(limits.open(), 0);
    }
}
