//! What a signed payload asks for: reading the command element inside
//! `<payload>` into a [`Command`], and writing unsigned commands (for the
//! `agentserver command …` helpers).

use super::{Placement, Refused};
use crate::capability::AgentGrants;
use crate::commit::{CertificateRequest, RevocationRequest};
use crate::federation::LinkRequest;
use crate::runtime::{AgentLimits, ComponentHash};
use crate::xml::Element;
use base64::Engine as _;
use std::fmt::Write as _;
use std::time::Duration;

/// Where a registration's component bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// Inline, decoded from base64.
    Inline(Vec<u8>),
    /// A file name in the server's components directory.
    File(String),
}

/// Limit attributes a command may set; `None` keeps the current (or
/// default) value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitChanges {
    /// `max-concurrent`.
    pub max_concurrent: Option<usize>,
    /// `session-timeout`, seconds.
    pub session_timeout: Option<u64>,
    /// `fuel`.
    pub fuel: Option<u64>,
    /// `memory-bytes`.
    pub memory_bytes: Option<usize>,
    /// `timeout-ms`.
    pub timeout_ms: Option<u64>,
    /// A `<grants>` child: replaces every grant (an empty one removes them).
    pub grants: Option<AgentGrants>,
}

impl LimitChanges {
    /// The limit attributes, in the order commands write them.
    const ATTRIBUTES: [&'static str; 5] = [
        "max-concurrent",
        "session-timeout",
        "fuel",
        "memory-bytes",
        "timeout-ms",
    ];

    /// `base` with these changes.
    pub fn applied_to(&self, base: &AgentLimits) -> AgentLimits {
        let mut limits = base.clone();
        if let Some(value) = self.max_concurrent {
            limits.max_concurrent = value;
        }
        if let Some(value) = self.session_timeout {
            limits.session_timeout = Duration::from_secs(value);
        }
        if let Some(value) = self.fuel {
            limits.fuel = value;
        }
        if let Some(value) = self.memory_bytes {
            limits.memory_bytes = value;
        }
        if let Some(value) = self.timeout_ms {
            limits.timeout_ms = value;
        }
        if let Some(grants) = &self.grants {
            limits.grants = grants.clone();
        }
        limits
    }

    /// Whether nothing is changed.
    pub fn is_empty(&self) -> bool {
        *self == LimitChanges::default()
    }

    fn read(element: &Element) -> Result<LimitChanges, Refused> {
        fn number<T: std::str::FromStr>(
            element: &Element,
            name: &str,
        ) -> Result<Option<T>, Refused> {
            match element.attribute(name) {
                None => Ok(None),
                Some(text) => match text.parse::<T>() {
                    Ok(value) => Ok(Some(value)),
                    Err(_) => Err(Refused::Invalid(format!(
                        "`{name}` must be a whole number, not {text:?}"
                    ))),
                },
            }
        }
        let changes = LimitChanges {
            max_concurrent: number(element, "max-concurrent")?,
            session_timeout: number(element, "session-timeout")?,
            fuel: number(element, "fuel")?,
            memory_bytes: number(element, "memory-bytes")?,
            timeout_ms: number(element, "timeout-ms")?,
            grants: match element.children_named("grants").count() {
                0 => None,
                1 => element
                    .only_child("grants")
                    .map(AgentGrants::read)
                    .transpose()
                    .map_err(|e| Refused::Invalid(format!("<grants>: {e}")))?,
                _ => {
                    return Err(Refused::Invalid(
                        "a command holds at most one <grants>".into(),
                    ))
                }
            },
        };
        for (name, zero) in [
            ("max-concurrent", changes.max_concurrent == Some(0)),
            ("session-timeout", changes.session_timeout == Some(0)),
            ("fuel", changes.fuel == Some(0)),
            ("memory-bytes", changes.memory_bytes == Some(0)),
            ("timeout-ms", changes.timeout_ms == Some(0)),
        ] {
            if zero {
                return Err(Refused::Invalid(format!("`{name}` must be above zero")));
            }
        }
        Ok(changes)
    }

    fn write(&self, out: &mut String) {
        let values = [
            self.max_concurrent.map(|v| v as u64),
            self.session_timeout,
            self.fuel,
            self.memory_bytes.map(|v| v as u64),
            self.timeout_ms,
        ];
        for (name, value) in Self::ATTRIBUTES.iter().zip(values) {
            if let Some(value) = value {
                let _ = write!(out, " {name}=\"{value}\"");
            }
        }
    }
}

/// An agent to admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Its name.
    pub name: String,
    /// The tags it listens to.
    pub listens: Vec<String>,
    /// One line for the catalog.
    pub description: String,
    /// The SHA-256 the component bytes must have.
    pub sha256: ComponentHash,
    /// Where the bytes are.
    pub component: ComponentSource,
    /// Limits beyond the defaults.
    pub limits: LimitChanges,
    /// The nodes of a cluster that run it.
    pub nodes: Placement,
}

/// How to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Stop taking messages, let calls in flight finish (bounded), exit 0.
    Graceful,
    /// Close everything now.
    Immediate,
}

/// One structural change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `agent-registration`.
    Register(Registration),
    /// `agent-removal name="…"`.
    Remove {
        /// The agent.
        name: String,
    },
    /// `agent-limits name="…" …`.
    Limits {
        /// The agent.
        name: String,
        /// What changes.
        changes: LimitChanges,
    },
    /// `user-grant user="…" tag="…"`.
    Grant {
        /// The user.
        user: String,
        /// The tag.
        tag: String,
    },
    /// `user-revoke user="…" tag="…"`.
    Revoke {
        /// The user.
        user: String,
        /// The tag.
        tag: String,
    },
    /// `shutdown mode="graceful|immediate"`.
    Shutdown(ShutdownMode),
    /// `node-certificate key-id="…" public-key="…" purpose="…" not-after="…"`.
    NodeCertificate(CertificateRequest),
    /// `node-revoke key-id="…" reason="…"`.
    NodeRevoke(RevocationRequest),
    /// `federation-link peer-key="…" address="…" tls-fingerprint="…" send="…" accept="…"`,
    /// or with `<tls-ca>BASE64-DER</tls-ca>` children instead of `tls-fingerprint`.
    Link(LinkRequest),
    /// `federation-unlink peer="FINGERPRINT"`.
    Unlink {
        /// The peer organism's owner fingerprint.
        peer: String,
    },
}

impl Command {
    /// Reads the one command element inside `payload`.
    pub fn read(payload: &Element) -> Result<Command, Refused> {
        let [element] = payload.children.as_slice() else {
            return Err(Refused::Invalid(
                "a <payload> holds exactly one command element".into(),
            ));
        };
        let required = |name: &str| -> Result<String, Refused> {
            match element.attribute(name) {
                Some(value) if !value.is_empty() => Ok(value.to_owned()),
                _ => Err(Refused::Invalid(format!(
                    "<{}> needs a `{name}` attribute",
                    element.name
                ))),
            }
        };
        Ok(match element.name.as_str() {
            "agent-registration" => {
                Command::Register(read_registration(element, &required("name")?)?)
            }
            "agent-removal" => Command::Remove {
                name: required("name")?,
            },
            "agent-limits" => {
                let changes = LimitChanges::read(element)?;
                if changes.is_empty() {
                    return Err(Refused::Invalid(format!(
                        "<agent-limits> changes nothing: give one of {} or <grants>",
                        LimitChanges::ATTRIBUTES.join(", ")
                    )));
                }
                Command::Limits {
                    name: required("name")?,
                    changes,
                }
            }
            "user-grant" => Command::Grant {
                user: required("user")?,
                tag: required("tag")?,
            },
            "user-revoke" => Command::Revoke {
                user: required("user")?,
                tag: required("tag")?,
            },
            "shutdown" => Command::Shutdown(match element.attribute("mode") {
                None | Some("graceful") => ShutdownMode::Graceful,
                Some("immediate") => ShutdownMode::Immediate,
                Some(other) => {
                    return Err(Refused::Invalid(format!(
                        "shutdown mode must be graceful or immediate, not {other:?}"
                    )))
                }
            }),
            "node-certificate" => Command::NodeCertificate(
                CertificateRequest::read(element).map_err(|e| Refused::Invalid(e.to_string()))?,
            ),
            "node-revoke" => Command::NodeRevoke(
                RevocationRequest::read(element).map_err(|e| Refused::Invalid(e.to_string()))?,
            ),
            "federation-link" => Command::Link(
                LinkRequest::read(element).map_err(|e| Refused::Invalid(e.to_string()))?,
            ),
            "federation-unlink" => Command::Unlink {
                peer: required("peer")?,
            },
            other => {
                return Err(Refused::Invalid(format!(
                    "<{other}> is not a command; the commands are agent-registration, \
                     agent-removal, agent-limits, user-grant, user-revoke, shutdown, \
                     node-certificate, node-revoke, federation-link and federation-unlink"
                )))
            }
        })
    }

    /// The command element, unsigned, as XML.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        match self {
            Command::Register(registration) => {
                let _ = write!(
                    out,
                    "<agent-registration name=\"{}\"",
                    escape(&registration.name)
                );
                if let Placement::Nodes(_) = &registration.nodes {
                    let _ = write!(out, " node=\"{}\"", escape(&registration.nodes.to_string()));
                }
                registration.limits.write(&mut out);
                out.push('>');
                for tag in &registration.listens {
                    let _ = write!(out, "<listens tag=\"{}\"/>", escape(tag));
                }
                let _ = write!(
                    out,
                    "<description>{}</description>",
                    escape(&registration.description)
                );
                if let Some(grants) = &registration.limits.grants {
                    out.push_str(&grants.to_xml());
                }
                match &registration.component {
                    ComponentSource::Inline(bytes) => {
                        let _ = write!(
                            out,
                            "<component sha256=\"{}\">{}</component>",
                            registration.sha256,
                            base64::engine::general_purpose::STANDARD.encode(bytes)
                        );
                    }
                    ComponentSource::File(name) => {
                        let _ = write!(
                            out,
                            "<component sha256=\"{}\" src=\"{}\"/>",
                            registration.sha256,
                            escape(name)
                        );
                    }
                }
                out.push_str("</agent-registration>");
            }
            Command::Remove { name } => {
                let _ = write!(out, "<agent-removal name=\"{}\"/>", escape(name));
            }
            Command::Limits { name, changes } => {
                let _ = write!(out, "<agent-limits name=\"{}\"", escape(name));
                changes.write(&mut out);
                match &changes.grants {
                    Some(grants) => {
                        out.push('>');
                        out.push_str(&grants.to_xml());
                        out.push_str("</agent-limits>");
                    }
                    None => out.push_str("/>"),
                }
            }
            Command::Grant { user, tag } => {
                let _ = write!(
                    out,
                    "<user-grant user=\"{}\" tag=\"{}\"/>",
                    escape(user),
                    escape(tag)
                );
            }
            Command::Revoke { user, tag } => {
                let _ = write!(
                    out,
                    "<user-revoke user=\"{}\" tag=\"{}\"/>",
                    escape(user),
                    escape(tag)
                );
            }
            Command::Shutdown(mode) => {
                let mode = match mode {
                    ShutdownMode::Graceful => "graceful",
                    ShutdownMode::Immediate => "immediate",
                };
                let _ = write!(out, "<shutdown mode=\"{mode}\"/>");
            }
            Command::NodeCertificate(request) => out.push_str(&request.to_xml()),
            Command::NodeRevoke(request) => out.push_str(&request.to_xml()),
            Command::Link(request) => out.push_str(&request.to_xml()),
            Command::Unlink { peer } => {
                let _ = write!(out, "<federation-unlink peer=\"{}\"/>", escape(peer));
            }
        }
        out
    }

    /// The whole unsigned `<privileged-command>`, ready for `agentserver sign`.
    pub fn to_unsigned_document(&self) -> String {
        format!(
            "<privileged-command>\n  <payload>{}</payload>\n</privileged-command>\n",
            self.to_xml()
        )
    }
}

fn read_registration(element: &Element, name: &str) -> Result<Registration, Refused> {
    let listens: Vec<String> = element
        .children_named("listens")
        .map(|listens| listens.attribute("tag").unwrap_or_default().to_owned())
        .collect();
    if listens.is_empty() || listens.iter().any(String::is_empty) {
        return Err(Refused::Invalid(
            "<agent-registration> needs one or more <listens tag=\"…\"/>".into(),
        ));
    }
    let description = element
        .only_child("description")
        .map(|d| d.text.trim().to_owned())
        .unwrap_or_default();
    let component = element.only_child("component").ok_or_else(|| {
        Refused::Invalid("<agent-registration> needs exactly one <component>".into())
    })?;
    let sha256: ComponentHash = component
        .attribute("sha256")
        .ok_or_else(|| Refused::Invalid("<component> needs a `sha256` attribute".into()))?
        .parse()
        .map_err(|_| Refused::Invalid("`sha256` must be 64 hexadecimal digits".into()))?;
    let inline: String = component
        .text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let source = match (component.attribute("src"), inline.is_empty()) {
        (Some(_), false) => {
            return Err(Refused::Invalid(
                "<component> has both `src` and inline bytes; give one".into(),
            ))
        }
        (Some(file), true) => ComponentSource::File(file.to_owned()),
        (None, false) => ComponentSource::Inline(
            base64::engine::general_purpose::STANDARD
                .decode(inline.as_bytes())
                .map_err(|e| {
                    Refused::Invalid(format!("the inline component is not base64: {e}"))
                })?,
        ),
        (None, true) => {
            return Err(Refused::Invalid(
                "<component> is empty: give the bytes as base64 or a `src` file".into(),
            ))
        }
    };
    Ok(Registration {
        name: name.to_owned(),
        listens,
        description,
        sha256,
        component: source,
        limits: LimitChanges::read(element)?,
        nodes: match element.attribute("node") {
            Some(text) => Placement::parse(text)?,
            None => Placement::All,
        },
    })
}

/// `text` escaped for an attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    crate::xml::escape_attribute(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{canonicalize, Limits};

    fn round_trip(command: &Command) -> Command {
        let xml = format!("<payload>{}</payload>", command.to_xml());
        let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
        Command::read(&Element::parse(&canonical).unwrap()).unwrap()
    }

    #[test]
    fn every_command_reads_back_what_it_writes() {
        let bytes = b"\0asm fake".to_vec();
        let commands = [
            Command::Register(Registration {
                name: "calc & co".into(),
                listens: vec!["calculate".into(), "{urn:x}sum".into()],
                description: "Adds <things>.".into(),
                sha256: ComponentHash::of(&bytes),
                component: ComponentSource::Inline(bytes.clone()),
                limits: LimitChanges {
                    fuel: Some(5),
                    timeout_ms: Some(20),
                    ..LimitChanges::default()
                },
                nodes: Placement::Nodes(vec!["b".into(), "c-2".into()]),
            }),
            Command::Register(Registration {
                name: "calc".into(),
                listens: vec!["calculate".into()],
                description: String::new(),
                sha256: ComponentHash::of(&bytes),
                component: ComponentSource::File("calc.wasm".into()),
                limits: LimitChanges::default(),
                nodes: Placement::All,
            }),
            Command::Remove {
                name: "calc".into(),
            },
            Command::Limits {
                name: "calc".into(),
                changes: LimitChanges {
                    max_concurrent: Some(2),
                    session_timeout: Some(60),
                    memory_bytes: Some(1 << 20),
                    ..LimitChanges::default()
                },
            },
            Command::Grant {
                user: "alice".into(),
                tag: "calculate".into(),
            },
            Command::Revoke {
                user: "alice".into(),
                tag: "calculate".into(),
            },
            Command::Shutdown(ShutdownMode::Graceful),
            Command::Shutdown(ShutdownMode::Immediate),
            Command::NodeCertificate(CertificateRequest {
                key_id: crate::commit::key_id(
                    &crate::privileged::SigningKey::from_bytes(&[5; 32]).verifying_key(),
                ),
                public_key: crate::privileged::SigningKey::from_bytes(&[5; 32]).verifying_key(),
                purposes: vec![
                    crate::commit::Purpose::Audit,
                    crate::commit::Purpose::Federation,
                ],
                not_after: 1_900_000_000,
            }),
            Command::NodeRevoke(RevocationRequest {
                key_id: "0123456789abcdef".into(),
                reason: None,
            }),
            Command::NodeRevoke(RevocationRequest {
                key_id: "0123456789abcdef".into(),
                reason: Some("the laptop <was> stolen".into()),
            }),
            Command::Link(LinkRequest {
                peer_key: crate::privileged::SigningKey::from_bytes(&[6; 32]).verifying_key(),
                address: "wss://peer.example.net:8765/".into(),
                tls: crate::federation::PeerTls::Fingerprint("ab".repeat(32)),
                send: vec!["calculate".into()],
                accept: vec!["echo".into()],
            }),
            Command::Link(LinkRequest {
                peer_key: crate::privileged::SigningKey::from_bytes(&[6; 32]).verifying_key(),
                address: "wss://peer.example.net:8765/".into(),
                tls: crate::federation::PeerTls::Ca(vec![rcgen::generate_simple_self_signed(
                    vec!["peer.example.net".to_owned()],
                )
                .unwrap()
                .cert
                .der()
                .to_vec()]),
                send: Vec::new(),
                accept: vec!["echo".into()],
            }),
            Command::Unlink {
                peer: "ab".repeat(32),
            },
        ];
        for command in commands {
            assert_eq!(round_trip(&command), command);
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        for (xml, expected) in [
            ("<payload/>", "exactly one command"),
            ("<payload><reboot/></payload>", "not a command"),
            ("<payload><agent-removal/></payload>", "`name`"),
            ("<payload><agent-limits name=\"a\"/></payload>", "changes nothing"),
            ("<payload><agent-limits name=\"a\" fuel=\"-1\"/></payload>", "whole number"),
            ("<payload><agent-limits name=\"a\" fuel=\"0\"/></payload>", "above zero"),
            ("<payload><shutdown mode=\"now\"/></payload>", "graceful or immediate"),
            ("<payload><node-revoke key-id=\"xyz\"/></payload>", "16 lowercase hex"),
            (
                "<payload><federation-link address=\"wss://p/\" peer-key=\"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\" send=\"t\"/></payload>",
                "pin the peer's TLS certificate",
            ),
            (
                "<payload><agent-registration name=\"a\"><component sha256=\"00\"/></agent-registration></payload>",
                "<listens",
            ),
            (
                "<payload><agent-registration name=\"a\"><listens tag=\"t\"/><component sha256=\"00\">AA==</component></agent-registration></payload>",
                "64 hexadecimal",
            ),
            (
                "<payload><agent-registration name=\"a\"><listens tag=\"t\"/><component sha256=\"0000000000000000000000000000000000000000000000000000000000000000\">!!</component></agent-registration></payload>",
                "not base64",
            ),
        ] {
            let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
            let error = Command::read(&Element::parse(&canonical).unwrap()).unwrap_err();
            assert!(error.to_string().contains(expected), "{xml}: {error}");
        }
    }
}
