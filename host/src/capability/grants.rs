//! What an owner grants one agent beyond computing: outbound HTTP to named
//! hosts (with headers carrying host-held secrets) and key-value storage,
//! each bounded. Grants travel in signed commands as a `<grants>` element
//! and are kept with the agent in the same form:
//!
//! ```xml
//! <grants>
//!   <http max-requests="16" max-response-bytes="4194304" timeout-ms="30000">
//!     <allow host="https://api.openai.com"/>
//!     <header host="https://api.openai.com" name="authorization" value="Bearer {secret:openai}"/>
//!   </http>
//!   <storage>
//!     <bucket name="session" max-keys="100" max-bytes="1048576"/>
//!     <bucket name="agent" max-keys="1000" max-bytes="16777216"/>
//!   </storage>
//! </grants>
//! ```
//!
//! A grant names a secret (`{secret:NAME}`), never its value: values live in
//! the host's secrets file.

use super::hosts::AllowedHost;
use crate::xml::{escape_attribute, Element};
use std::fmt::Write as _;
use thiserror::Error;

/// Why a grant is not acceptable. Safe to show the owner: it never holds a
/// secret's value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GrantError {
    /// A host pattern is malformed.
    #[error(transparent)]
    Host(#[from] super::hosts::BadHostPattern),
    /// Something else is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Outbound HTTP: where, with which secret headers, how much per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The destinations requests may go to.
    pub allow: Vec<AllowedHost>,
    /// Headers the host adds to requests for matching hosts.
    pub headers: Vec<SecretHeader>,
    /// Requests one call may make. Default 16.
    pub max_requests: u32,
    /// Response body bytes one call may receive, all requests together.
    /// Default 4 MiB.
    pub max_response_bytes: u64,
    /// Time one request may take, from sending to the end of its response
    /// body, in milliseconds. Default 30,000.
    pub timeout_ms: u64,
}

impl HttpGrant {
    /// The default `max-requests`.
    pub const DEFAULT_MAX_REQUESTS: u32 = 16;
    /// The default `max-response-bytes`.
    pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;
    /// The default `timeout-ms`.
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

    /// A grant for `allow` with the default limits and no headers.
    pub fn new(allow: Vec<AllowedHost>) -> Self {
        HttpGrant {
            allow,
            headers: Vec::new(),
            max_requests: Self::DEFAULT_MAX_REQUESTS,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
        }
    }
}

/// A header the host sets on requests to `host`, its value a template that
/// may name secrets: `Bearer {secret:openai}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHeader {
    /// The destinations it is sent to.
    pub host: AllowedHost,
    /// The header name, lowercase.
    pub name: String,
    /// The value template.
    pub value: String,
}

impl SecretHeader {
    /// Checks a header grant: a valid header name, a template whose
    /// `{secret:NAME}` references are well formed.
    pub fn new(host: AllowedHost, name: &str, value: &str) -> Result<Self, GrantError> {
        let name = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(GrantError::Invalid(format!(
                "`{name}` is not a header name"
            )));
        }
        super::secrets::secret_names(value).map_err(GrantError::Invalid)?;
        Ok(SecretHeader {
            host,
            name,
            value: value.to_owned(),
        })
    }
}

/// How much one bucket may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketQuota {
    /// Keys at most.
    pub max_keys: u64,
    /// Bytes of keys and values together at most.
    pub max_bytes: u64,
}

/// Key-value storage: which buckets, how large. A bucket without a quota
/// cannot be opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageGrant {
    /// The `session` bucket: one per session, gone when the session ends.
    pub session: Option<BucketQuota>,
    /// The `agent` bucket: one per agent, shared by its sessions, kept
    /// until the agent is removed.
    pub agent: Option<BucketQuota>,
}

/// Everything one agent is granted beyond computing. The default grants
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentGrants {
    /// Outbound HTTP, if granted.
    pub http: Option<HttpGrant>,
    /// Key-value storage, if granted.
    pub storage: Option<StorageGrant>,
}

impl AgentGrants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.storage.is_none()
    }

    /// Every secret the grants name, once each.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for header in self.http.iter().flat_map(|http| &http.headers) {
            for name in super::secrets::secret_names(&header.value).unwrap_or_default() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Reads a `<grants>` element.
    pub fn read(element: &Element) -> Result<AgentGrants, GrantError> {
        let invalid = |text: String| GrantError::Invalid(text);
        for child in &element.children {
            if child.name != "http" && child.name != "storage" {
                return Err(invalid(format!(
                    "<grants> holds <http> and <storage>, not <{}>",
                    child.name
                )));
            }
        }
        let mut grants = AgentGrants::default();
        if let Some(http) = single(element, "http")? {
            let mut grant = HttpGrant::new(Vec::new());
            grant.max_requests = number(http, "max-requests")?.unwrap_or(grant.max_requests);
            grant.max_response_bytes =
                number(http, "max-response-bytes")?.unwrap_or(grant.max_response_bytes);
            grant.timeout_ms = number(http, "timeout-ms")?.unwrap_or(grant.timeout_ms);
            for child in &http.children {
                match child.name.as_str() {
                    "allow" => grant.allow.push(required(child, "host")?.parse()?),
                    "header" => grant.headers.push(SecretHeader::new(
                        required(child, "host")?.parse()?,
                        required(child, "name")?,
                        required(child, "value")?,
                    )?),
                    other => {
                        return Err(invalid(format!(
                            "<http> holds <allow> and <header>, not <{other}>"
                        )))
                    }
                }
            }
            if grant.allow.is_empty() {
                return Err(invalid(
                    "<http> needs at least one <allow host=\"scheme://host[:port]\"/>".into(),
                ));
            }
            grants.http = Some(grant);
        }
        if let Some(storage) = single(element, "storage")? {
            let mut grant = StorageGrant::default();
            for bucket in &storage.children {
                if bucket.name != "bucket" {
                    return Err(invalid(format!(
                        "<storage> holds <bucket> elements, not <{}>",
                        bucket.name
                    )));
                }
                let quota = BucketQuota {
                    max_keys: number(bucket, "max-keys")?
                        .ok_or_else(|| invalid("<bucket> needs `max-keys`".into()))?,
                    max_bytes: number(bucket, "max-bytes")?
                        .ok_or_else(|| invalid("<bucket> needs `max-bytes`".into()))?,
                };
                let slot = match required(bucket, "name")? {
                    "session" => &mut grant.session,
                    "agent" => &mut grant.agent,
                    other => {
                        return Err(invalid(format!(
                            "there is no bucket {other:?}: the buckets are `session` and `agent`"
                        )))
                    }
                };
                if slot.replace(quota).is_some() {
                    return Err(invalid("a bucket is granted twice".into()));
                }
            }
            grants.storage = Some(grant);
        }
        Ok(grants)
    }

    /// The `<grants>` element, on one line, attributes in canonical order.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<grants>");
        if let Some(http) = &self.http {
            let _ = write!(
                out,
                "<http max-requests=\"{}\" max-response-bytes=\"{}\" timeout-ms=\"{}\">",
                http.max_requests, http.max_response_bytes, http.timeout_ms
            );
            for allow in &http.allow {
                out.push_str("<allow host=\"");
                escape_attribute(&mut out, &allow.to_string());
                out.push_str("\"></allow>");
            }
            for header in &http.headers {
                out.push_str("<header host=\"");
                escape_attribute(&mut out, &header.host.to_string());
                out.push_str("\" name=\"");
                escape_attribute(&mut out, &header.name);
                out.push_str("\" value=\"");
                escape_attribute(&mut out, &header.value);
                out.push_str("\"></header>");
            }
            out.push_str("</http>");
        }
        if let Some(storage) = &self.storage {
            out.push_str("<storage>");
            for (name, quota) in [("agent", storage.agent), ("session", storage.session)] {
                if let Some(quota) = quota {
                    let _ = write!(
                        out,
                        "<bucket max-bytes=\"{}\" max-keys=\"{}\" name=\"{name}\"></bucket>",
                        quota.max_bytes, quota.max_keys
                    );
                }
            }
            out.push_str("</storage>");
        }
        out.push_str("</grants>");
        out
    }
}

fn single<'a>(element: &'a Element, name: &'a str) -> Result<Option<&'a Element>, GrantError> {
    let mut found = element.children_named(name);
    let first = found.next();
    if found.next().is_some() {
        return Err(GrantError::Invalid(format!(
            "<{}> holds at most one <{name}>",
            element.name
        )));
    }
    Ok(first)
}

fn required<'a>(element: &'a Element, name: &str) -> Result<&'a str, GrantError> {
    element
        .attribute(name)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| GrantError::Invalid(format!("<{}> needs `{name}`", element.name)))
}

fn number<T: std::str::FromStr>(element: &Element, name: &str) -> Result<Option<T>, GrantError> {
    match element.attribute(name) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            GrantError::Invalid(format!(
                "<{}> `{name}` must be a whole number, not {text:?}",
                element.name
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{canonicalize, Limits};

    fn read(xml: &str) -> Result<AgentGrants, GrantError> {
        let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
        AgentGrants::read(&Element::parse(&canonical).unwrap())
    }

    #[test]
    fn round_trips_through_its_xml() {
        let grants = read(
            r#"<grants><http max-requests="3" timeout-ms="5000">
                 <allow host="https://api.example.com"/><allow host="http://127.0.0.1:18080"/>
                 <header host="https://api.example.com" name="Authorization" value="Bearer {secret:openai}"/>
               </http>
               <storage><bucket name="session" max-keys="10" max-bytes="1000"/></storage></grants>"#,
        )
        .unwrap();
        let http = grants.http.as_ref().unwrap();
        assert_eq!(http.max_requests, 3);
        assert_eq!(
            http.max_response_bytes,
            HttpGrant::DEFAULT_MAX_RESPONSE_BYTES
        );
        assert_eq!(http.headers[0].name, "authorization");
        assert_eq!(grants.secret_names(), ["openai"]);
        assert_eq!(
            grants.storage.as_ref().unwrap().session,
            Some(BucketQuota {
                max_keys: 10,
                max_bytes: 1000
            })
        );
        assert_eq!(read(&grants.to_xml()).unwrap(), grants);
        assert_eq!(read("<grants/>").unwrap(), AgentGrants::default());
    }

    #[test]
    fn says_what_is_wrong() {
        for (xml, expected) in [
            ("<grants><files/></grants>", "not <files>"),
            ("<grants><http/></grants>", "at least one <allow"),
            ("<grants><http><allow host=\"example.com\"/></http></grants>", "scheme is missing"),
            ("<grants><http max-requests=\"x\"><allow host=\"http://a.b\"/></http></grants>", "whole number"),
            (
                "<grants><http><allow host=\"http://a.b\"/><header host=\"http://a.b\" name=\"x\" value=\"{secret:}\"/></http></grants>",
                "secret",
            ),
            ("<grants><storage><bucket name=\"disk\" max-keys=\"1\" max-bytes=\"1\"/></storage></grants>", "no bucket"),
            ("<grants><storage><bucket name=\"agent\" max-keys=\"1\"/></storage></grants>", "max-bytes"),
        ] {
            let error = read(xml).unwrap_err().to_string();
            assert!(error.contains(expected), "{xml}: {error}");
        }
    }
}
