//! AgentServer: one process, one port, many bounded agents.
//!
//! The library holds everything the `agentserver` binary does, so that it can be
//! tested without a shell:
//!
//! - [`xml`] — hardening, repair, exclusive canonical XML and the message envelope.
//! - [`runtime`] — wasm agents as sandboxed components under hard limits.
//! - [`bus`] — routing by root tag, threads, delegation between agents.
//! - [`auth`] — the user directory and TOTP logins.
//! - [`audit`] — the hash-chained audit log.
//! - [`cluster`] — several nodes serving one organism over NATS.
//! - [`commit`] — node keys, certificates, signed audit checkpoints and exports.
//! - [`federation`] — links between organisms: signed traffic for chosen tags.
//! - [`store`] — the storage backends (memory, SQLite).
//! - [`privileged`] — the organism's identity and signed structural change.
//! - [`session`] — sessions that outlive sockets: resume tokens, expiry.
//! - [`server`] — the TLS-only WSS port that carries all of it.
//! - [`client`] — a WSS client for the CLI, tests and tools.
//! - [`cli`] — the command-line subcommands (the binary only parses and dispatches).

pub mod audit;
pub mod auth;
pub mod bus;
pub mod capability;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod commit;
pub mod federation;
pub mod privileged;
pub mod runtime;
pub mod server;
pub mod session;
pub mod stage_timing;
pub mod store;
pub mod xml;
