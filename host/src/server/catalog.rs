//! The personal catalog: the tags a user may send that some agent listens
//! to, sorted by tag, as a canonical `<catalog>` frame.

use crate::bus::{Capability, Grants, RoutingTable};
use std::fmt::Write as _;

fn escape(out: &mut String, value: &str, attribute: bool) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' if !attribute => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#x9;"),
            '\n' if attribute => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

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
}

/// The `<catalog>` frame, canonical (attributes in canonical order).
pub fn catalog_frame(header: CatalogHeader<'_>, capabilities: &[Capability]) -> String {
    let mut out = String::with_capacity(64 + capabilities.len() * 96);
    out.push_str("<catalog session=\"");
    escape(&mut out, header.session, true);
    out.push('"');
    if let Some(timeout) = header.session_timeout {
        let _ = write!(out, " session-timeout=\"{timeout}\"");
    }
    out.push_str(" user=\"");
    escape(&mut out, header.user, true);
    out.push_str("\">");
    for capability in capabilities {
        out.push_str("<capability agent=\"");
        escape(&mut out, capability.agent.as_str(), true);
        out.push_str("\" tag=\"");
        escape(&mut out, capability.tag.as_str(), true);
        out.push_str("\">");
        escape(&mut out, &capability.description, false);
        out.push_str("</capability>");
    }
    out.push_str("</catalog>");
    out
}
