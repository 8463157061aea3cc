//! The frames the bus sends to a session: messages in their envelope, and
//! refusals. All canonical: attributes in canonical order, values escaped.

use super::ids::ThreadId;
use super::metrics::RefusalKind;
use super::outbox::Frame;
use crate::xml::{escape_attribute, escape_text};
use std::fmt::Write as _;

/// A refusal or error frame, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// The frame, canonical.
    pub frame: Frame,
}

/// Builds a refusal frame. `attributes` must be given in ascending name
/// order (canonical order for unprefixed attributes); `None` values are
/// left out.
pub(crate) fn refusal(
    kind: RefusalKind,
    attributes: &[(&str, Option<&str>)],
    reason: Option<&str>,
) -> Refusal {
    debug_assert!(attributes.windows(2).all(|w| w[0].0 < w[1].0));
    let element = match kind {
        RefusalKind::AccessDenied => "access-denied",
        _ => "error",
    };
    let mut out = String::with_capacity(96);
    let _ = write!(out, "<{element}");
    for (name, value) in attributes {
        if let Some(value) = value {
            let _ = write!(out, " {name}=\"");
            escape_attribute(&mut out, value);
            out.push('"');
        }
    }
    out.push('>');
    if let Some(reason) = reason {
        escape_text(&mut out, reason);
    }
    let _ = write!(out, "</{element}>");
    Refusal {
        kind,
        frame: out.into(),
    }
}

pub(crate) fn access_denied(tag: &str, thread: Option<&ThreadId>) -> Refusal {
    refusal(
        RefusalKind::AccessDenied,
        &[("tag", Some(tag)), ("thread", thread.map(ThreadId::as_str))],
        None,
    )
}

pub(crate) fn no_listener(tag: &str, thread: Option<&ThreadId>) -> Refusal {
    refusal(
        RefusalKind::NoListener,
        &[
            ("code", Some("no-listener")),
            ("tag", Some(tag)),
            ("thread", thread.map(ThreadId::as_str)),
        ],
        None,
    )
}

pub(crate) fn malformed(reason: &str) -> Refusal {
    refusal(
        RefusalKind::Malformed,
        &[("code", Some("malformed"))],
        Some(reason),
    )
}

pub(crate) fn unknown_thread(thread: &str) -> Refusal {
    refusal(
        RefusalKind::UnknownThread,
        &[("code", Some("unknown-thread")), ("thread", Some(thread))],
        None,
    )
}

pub(crate) fn agent_failed(agent: &str, thread: &ThreadId, reason: &str) -> Refusal {
    refusal(
        RefusalKind::AgentFailed,
        &[
            ("agent", Some(agent)),
            ("code", Some("agent-failed")),
            ("thread", Some(thread.as_str())),
        ],
        Some(reason),
    )
}

pub(crate) fn busy(agent: &str, thread: &ThreadId) -> Refusal {
    refusal(
        RefusalKind::Busy,
        &[
            ("agent", Some(agent)),
            ("code", Some("busy")),
            ("thread", Some(thread.as_str())),
        ],
        None,
    )
}

pub(crate) fn thread_limit(thread: &ThreadId, reason: &str) -> Refusal {
    refusal(
        RefusalKind::ThreadLimit,
        &[
            ("code", Some("thread-limit")),
            ("thread", Some(thread.as_str())),
        ],
        Some(reason),
    )
}
