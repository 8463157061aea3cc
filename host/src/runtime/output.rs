//! Where a guest's stdout, stderr and `host.log` lines go: to `tracing`,
//! attributed to the agent and thread, within a byte budget per call.
//!
//! Writes past the budget trap the guest with [`GuestLimit::Output`], which
//! the call reports as [`CallError::OutputLimit`](super::CallError). Lines
//! longer than [`MAX_LINE_BYTES`] are cut.

use super::bindings::Level;
use super::state::GuestLimit;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The longest line written to the log; the rest of a longer line is dropped.
pub const MAX_LINE_BYTES: usize = 1024;

/// The output sink of one instance, shared by its stdout, stderr and log.
#[derive(Debug)]
pub(crate) struct GuestOutput {
    agent: Arc<str>,
    state: Mutex<OutputState>,
}

#[derive(Debug, Default)]
struct OutputState {
    /// Bytes the current call may still write.
    budget: usize,
    /// The thread of the current call, for attribution.
    thread: String,
    /// An incomplete stdout/stderr line, waiting for its newline.
    partial: Vec<u8>,
}

impl GuestOutput {
    pub(crate) fn new(agent: Arc<str>) -> Arc<Self> {
        Arc::new(GuestOutput {
            agent,
            state: Mutex::new(OutputState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A poisoned lock only means a panic elsewhere while logging; the
        // state is still a plain buffer and counter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a call on `thread` with `budget` bytes of output allowed.
    pub(crate) fn begin_call(&self, thread: &str, budget: usize) {
        let mut state = self.lock();
        state.budget = budget;
        state.thread.clear();
        state.thread.push_str(thread);
        state.partial.clear();
    }

    /// Ends the current call, logging any unfinished line.
    pub(crate) fn end_call(&self) {
        let mut state = self.lock();
        if !state.partial.is_empty() {
            let line = std::mem::take(&mut state.partial);
            self.emit_stdio(&state.thread, &line);
        }
    }

    /// Charges `len` bytes to the call's budget.
    fn charge(state: &mut OutputState, len: usize) -> Result<(), GuestLimit> {
        state.budget = state.budget.checked_sub(len).ok_or(GuestLimit::Output)?;
        Ok(())
    }

    /// A `host.log` line.
    pub(crate) fn log(&self, level: Level, message: &str) -> Result<(), GuestLimit> {
        let mut state = self.lock();
        Self::charge(&mut state, message.len())?;
        let message = truncate(message.as_bytes());
        let (agent, thread) = (&*self.agent, state.thread.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "agent", agent, thread, "{message}"),
            Level::Debug => tracing::debug!(target: "agent", agent, thread, "{message}"),
            Level::Info => tracing::info!(target: "agent", agent, thread, "{message}"),
            Level::Warn => tracing::warn!(target: "agent", agent, thread, "{message}"),
            Level::Error => tracing::error!(target: "agent", agent, thread, "{message}"),
        }
        Ok(())
    }

    /// Bytes written to stdout or stderr: logged a line at a time.
    fn write(&self, bytes: &[u8]) -> Result<(), GuestLimit> {
        let mut state = self.lock();
        Self::charge(&mut state, bytes.len())?;
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(newline);
            if state.partial.is_empty() {
                self.emit_stdio(&state.thread, line);
            } else {
                let mut whole = std::mem::take(&mut state.partial);
                whole.extend_from_slice(line);
                self.emit_stdio(&state.thread, &whole);
            }
            rest = &after[1..];
        }
        let room = MAX_LINE_BYTES.saturating_sub(state.partial.len());
        state
            .partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(())
    }

    fn emit_stdio(&self, thread: &str, line: &[u8]) {
        let line = truncate(line);
        tracing::info!(target: "agent::stdio", agent = &*self.agent, thread, "{line}");
    }

    /// A stream for the guest's stdout or stderr.
    pub(crate) fn stream(self: &Arc<Self>) -> GuestStream {
        GuestStream(Arc::clone(self))
    }
}

fn truncate(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE_BYTES)])
}

/// stdout or stderr of one instance.
#[derive(Debug, Clone)]
pub(crate) struct GuestStream(Arc<GuestOutput>);

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0
            .write(&bytes)
            .map_err(|limit| StreamError::Trap(limit.into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready; the budget is enforced on the write itself so that
        // an over-long write traps rather than being silently cut.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(
            self.0
                .write(buf)
                .map(|()| buf.len())
                .map_err(io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
