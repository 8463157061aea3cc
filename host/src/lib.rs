//! AgentServer: one process, one port, many bounded agents.
//!
//! The library holds everything the `agentserver` binary does, so that it can be
//! tested without a shell:
//!
//! - [`xml`] — hardening, repair, exclusive canonical XML and the message envelope.
//! - [`runtime`] — wasm agents as sandboxed components under hard limits.
//! - [`cli`] — the command-line subcommands (the binary only parses and dispatches).

pub mod auth;
pub mod bus;
pub mod cli;
pub mod client;
pub mod runtime;
pub mod server;
pub mod xml;
