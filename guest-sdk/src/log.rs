//! Structured logging through the host: each line is attributed to the agent
//! and the thread by the host and written to its log, bounded per call.

use crate::bindings::agentserver::agent::host;

pub use host::Level;

/// Writes one log line at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Writes one line at `debug` level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes one line at `info` level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes one line at `warn` level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes one line at `error` level.
pub fn error(message: &str) {
    log(Level::Error, message);
}
