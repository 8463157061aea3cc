//! How loading a component or calling an agent can fail.
//!
//! Every message is short and safe to show a client: no paths, no host
//! backtraces, no guest memory.

use thiserror::Error;

/// Why a component was not accepted.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// A core module where a component was expected.
    #[error(
        "a core WebAssembly module, not a component: build for wasm32-wasip2 \
         or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// The component does not decode or validate (truncated, corrupt).
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not implement the `agent` world.
    #[error("component does not implement the agentserver:agent world: {0}")]
    WorldMismatch(String),
    /// Reading the file failed.
    #[error("cannot read component: {0}")]
    Io(String),
}

/// Why an agent call did not produce payloads.
///
/// Every variant but [`CallError::Guest`], [`CallError::Busy`] and
/// [`CallError::InvalidOutput`] means the instance was discarded; the
/// session's next call gets a fresh one.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The call burned all the fuel it was given.
    #[error("ran out of fuel ({fuel} units per call)")]
    OutOfFuel {
        /// The fuel limit.
        fuel: u64,
    },
    /// The instance tried to grow its memory past its limit.
    #[error("exceeded its memory limit of {limit_bytes} bytes")]
    OutOfMemory {
        /// The memory limit.
        limit_bytes: usize,
    },
    /// The call ran past its wall-time limit.
    #[error("exceeded its time limit of {timeout_ms} ms")]
    Timeout {
        /// The wall-time limit.
        timeout_ms: u64,
    },
    /// The call overflowed the wasm stack.
    #[error("overflowed its stack")]
    StackOverflow,
    /// The call wrote more to stdout, stderr and the log than allowed.
    #[error("wrote more than {limit_bytes} bytes of output in one call")]
    OutputLimit {
        /// The output limit.
        limit_bytes: usize,
    },
    /// The call emitted more with `host.emit` than its output limits allow.
    #[error("emitted past its limit: {0}")]
    EmitLimit(String),
    /// A listener outside this process could not take the message.
    #[error("{0}")]
    Remote(String),
    /// The call trapped for another reason (`unreachable`, a bad memory
    /// access, a panic in the guest).
    #[error("trapped: {0}")]
    Trap(String),
    /// The agent has `max_concurrent` calls in flight and its queue is full.
    #[error("busy: {max_concurrent} calls in flight and {max_queued} queued")]
    Busy {
        /// The agent's `max_concurrent`.
        max_concurrent: usize,
        /// The agent's `max_queued`.
        max_queued: usize,
    },
    /// No instance could be created: the pool is full or instantiation failed.
    #[error("could not start an instance: {0}")]
    Instantiate(String),
    /// The agent returned a failure of its own.
    #[error("{0}")]
    Guest(GuestFailure),
    /// The agent returned more than it may.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
}

impl CallError {
    /// Whether the call's instance was thrown away (the guest trapped, hit a
    /// limit or could not start), so that the session's next call starts
    /// from a fresh instance with fresh state.
    pub fn discarded_instance(&self) -> bool {
        !matches!(
            self,
            CallError::Guest(_) | CallError::Busy { .. } | CallError::InvalidOutput(_)
        )
    }
}

/// A failure the agent itself returned (`failure` in the WIT world).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    /// The payload was not what the agent understands.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The agent declines.
    #[error("refused: {0}")]
    Refused(String),
    /// Something went wrong inside the agent.
    #[error("internal: {0}")]
    Internal(String),
}
