//! The personal catalog: the tags a user may send that some agent listens
//! to, sorted by tag, as a canonical `<catalog>` frame.

use crate::bus::{Capability, Grants, RoutingTable};
use crate::xml::{escape_attribute, escape_text};
use std::fmt::Write as _;

/// The capabilities of `table` that `grants` allow.
pub fn capabilities(table: &RoutingTable, grants: &Grants) -> Vec<Capability> {
    table
        .capabilities()
        .into_iter()
        .filter(|capability| grants.allows(&capability.tag))
        .collect()
}

/// What goes in the catalog's start tag besides the capabilities.
#[derive(Debug, Clone, Copy)]
pub struct CatalogHeader<'a> {
    /// The user.
    pub user: &'a str,
    /// The session id.
    pub session: &'a str,
    /// Seconds a disconnected session lives; `None` in a pushed update.
    pub session_timeout: Option<u64>,
    /// The resume token, in the first catalog of a connection only.
    pub resume_token: Option<&'a str>,
    /// Whether this connection resumed the session.
    pub resumed: bool,
}

/// The `<catalog>` frame, canonical (attributes in canonical order).
pub fn catalog_frame(header: CatalogHeader<'_>, capabilities: &[Capability]) -> String {
    let mut out = String::with_capacity(128 + capabilities.len() * 96);
    out.push_str("<catalog");
    if let Some(token) = header.resume_token {
        out.push_str(" resume-token=\"");
        escape_attribute(&mut out, token);
        out.push('"');
    }
    if header.resumed {
        out.push_str(" resumed=\"true\"");
    }
    out.push_str(" session=\"");
    escape_attribute(&mut out, header.session);
    out.push('"');
    if let Some(timeout) = header.session_timeout {
        let _ = write!(out, " session-timeout=\"{timeout}\"");
    }
    out.push_str(" user=\"");
    escape_attribute(&mut out, header.user);
    out.push_str("\">");
    for capability in capabilities {
        out.push_str("<capability agent=\"");
        escape_attribute(&mut out, capability.agent.as_str());
        out.push_str("\" tag=\"");
        escape_attribute(&mut out, capability.tag.as_str());
        out.push_str("\">");
        escape_text(&mut out, &capability.description);
        out.push_str("</capability>");
    }
    out.push_str("</catalog>");
    out
}
