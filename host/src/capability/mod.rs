//! Capabilities: what an agent may do beyond computing, exactly as far as
//! its owner granted and no further.
//!
//! - [`grants`]: what is granted ([`AgentGrants`]), as signed commands and
//!   the configuration carry it.
//! - [`hosts`]: outbound host patterns and the address ranges no grant
//!   reaches by accident.
//! - [`secrets`]: the values grants name but no guest sees.
//! - [`outbound`]: the HTTP client a granted agent's requests go through.
//! - [`keyvalue`]: the storage behind the `session` and `agent` buckets.
//!
//! Every use is reported to a [`UsageAudit`] as a canonical element
//! (`<http-request …>`, `<kv-write …>`), which the server writes to the
//! audit log with the agent, session and thread.

pub mod grants;
pub mod hosts;
pub mod keyvalue;
pub mod outbound;
pub mod secrets;

pub use grants::{AgentGrants, BucketQuota, GrantError, HttpGrant, SecretHeader, StorageGrant};
pub use hosts::{AllowedHost, BadHostPattern};
pub use keyvalue::{Bucket, KeyValueError, KeyValueStore, MemoryKeyValueStore};
pub use outbound::{CallScope, OutboundClient, OutboundError};
pub use secrets::{Secrets, SecretsError};

/// The longest text an audit entry takes from a guest (a storage key, a
/// URL path); the rest is cut, so that a hostile agent cannot make an audit
/// entry as large as its memory.
pub const MAX_AUDITED_TEXT: usize = 256;

/// `text` cut to at most [`MAX_AUDITED_TEXT`] bytes, on a character
/// boundary.
pub fn clip(text: &str) -> &str {
    let mut end = text.len().min(MAX_AUDITED_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One use of a capability, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Usage<'a> {
    /// The agent that used it.
    pub agent: &'a str,
    /// The session its call ran for.
    pub session: &'a str,
    /// The thread its call ran on.
    pub thread: &'a str,
    /// What kind of use: `http-request` or `kv-write`.
    pub tag: &'a str,
    /// The canonical element describing it (no bodies, no header values).
    pub canonical: &'a str,
}

/// Receives every use of a capability. Called on the agent's call path:
/// hand the record off quickly.
pub trait UsageAudit: Send + Sync {
    /// Records one use.
    fn record(&self, usage: &Usage<'_>);
}

/// Records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUsageAudit;

impl UsageAudit for NoUsageAudit {
    fn record(&self, _usage: &Usage<'_>) {}
}
