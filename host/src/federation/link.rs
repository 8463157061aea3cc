//! The `federation-link` command: one owner's signed word that the
//! organism may exchange some tags with another, named by its owner's key.
//!
//! ```text
//! <federation-link accept="weather" address="wss://peer.example.com/" peer-key="BASE64" send="calculate" tls-fingerprint="HEX64"/>
//! ```
//!
//! `send` lists the tags this organism's messages may carry to the peer
//! (its gateway listens to them here); `accept` the tags the peer may start
//! threads with here. `tls-fingerprint` pins the peer's TLS certificate
//! (SHA-256 of its DER, as `agentserver run` prints it). A link carries traffic only while the peer's
//! owner has signed a link naming this organism too: each side shows the
//! other its own link at the handshake.

use crate::privileged::time::parse_instant;
use crate::privileged::{SignedRecord, VerifyingKey};
use crate::xml::{canonicalize, escape_attribute, Element, Limits, Tag};
use base64::Engine as _;
use ed25519_dalek::Signature;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use thiserror::Error;

/// Why a link command or record is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct LinkError(pub String);

fn invalid(reason: impl Into<String>) -> LinkError {
    LinkError(reason.into())
}

/// The SHA-256 fingerprint of an owner key, hex: how organisms name each
/// other.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The body of a `federation-link` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// The peer owner's public key.
    pub peer_key: VerifyingKey,
    /// `wss://host:port/` of the peer's port.
    pub address: String,
    /// The peer's TLS certificate fingerprint (SHA-256 of its DER, hex).
    pub tls_fingerprint: String,
    /// Tags that may go to the peer.
    pub send: Vec<String>,
    /// Tags the peer may start threads with here.
    pub accept: Vec<String>,
}

impl LinkRequest {
    /// The peer's fingerprint.
    pub fn peer(&self) -> String {
        fingerprint(&self.peer_key)
    }

    /// Reads a `<federation-link>` element.
    pub fn read(element: &Element) -> Result<LinkRequest, LinkError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(element.attribute("peer-key").unwrap_or_default())
            .map_err(|_| invalid("`peer-key` must be base64"))?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| invalid("`peer-key` must be the 32 bytes of an Ed25519 public key"))?;
        let peer_key = VerifyingKey::from_bytes(&raw)
            .ok()
            .filter(|key| !key.is_weak())
            .ok_or_else(|| invalid("`peer-key` is not a usable Ed25519 public key"))?;
        let address = element.attribute("address").unwrap_or_default();
        if !address.starts_with("wss://") || address.len() <= "wss://".len() {
            return Err(invalid(
                "`address` must be the peer's wss:// URL (TLS is mandatory)",
            ));
        }
        let tls_fingerprint = element
            .attribute("tls-fingerprint")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .replace(':', "");
        if tls_fingerprint.len() != 64 || !tls_fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "`tls-fingerprint` must be the SHA-256 of the peer's TLS certificate, 64 hex digits \
                 (`agentserver run` prints it)",
            ));
        }
        let tags = |name: &str| -> Result<Vec<String>, LinkError> {
            let mut tags: Vec<String> = Vec::new();
            for text in element
                .attribute(name)
                .unwrap_or_default()
                .split_ascii_whitespace()
            {
                let tag = Tag::parse(text)
                    .ok_or_else(|| invalid(format!("`{name}`: {text:?} is not a tag")))?;
                if tag.is_reserved() {
                    return Err(invalid(format!(
                        "`{name}`: `{text}` is a reserved tag of the protocol"
                    )));
                }
                if !tags.iter().any(|t| t == text) {
                    tags.push(text.to_owned());
                }
            }
            tags.sort();
            Ok(tags)
        };
        let (send, accept) = (tags("send")?, tags("accept")?);
        if send.is_empty() && accept.is_empty() {
            return Err(invalid(
                "a link with neither `send` nor `accept` tags carries nothing",
            ));
        }
        Ok(LinkRequest {
            peer_key,
            address: address.to_owned(),
            tls_fingerprint,
            send,
            accept,
        })
    }

    /// The command element, attributes in canonical order.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<federation-link accept=\"");
        escape_attribute(&mut out, &self.accept.join(" "));
        out.push_str("\" address=\"");
        escape_attribute(&mut out, &self.address);
        let _ = write!(
            out,
            "\" peer-key=\"{}\" send=\"",
            base64::engine::general_purpose::STANDARD.encode(self.peer_key.as_bytes())
        );
        escape_attribute(&mut out, &self.send.join(" "));
        let _ = write!(out, "\" tls-fingerprint=\"{}\"/>", self.tls_fingerprint);
        out
    }
}

/// A link record whose owner signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// What it says.
    pub request: LinkRequest,
    /// The signed record, shown to the peer at the handshake.
    pub record: SignedRecord,
    /// When it was signed (the payload's `issued`), Unix seconds.
    pub issued: u64,
}

impl Link {
    /// Checks `record` with `owner` and reads it.
    pub fn verify(record: &SignedRecord, owner: &VerifyingKey) -> Result<Link, LinkError> {
        let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(record.signature.as_bytes())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| invalid(format!("link {}: the signature is not base64", record.id)))?;
        owner
            .verify_strict(
                record.payload.as_bytes(),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| {
                invalid(format!(
                    "link {}: the owner's signature does not verify",
                    record.id
                ))
            })?;
        let canonical = canonicalize(record.payload.as_bytes(), &Limits::default(), &[])
            .map_err(|e| invalid(format!("link {}: {e}", record.id)))?;
        let payload =
            Element::parse(&canonical).map_err(|e| invalid(format!("link {}: {e}", record.id)))?;
        let issued = payload
            .attribute("issued")
            .and_then(parse_instant)
            .ok_or_else(|| invalid(format!("link {}: no `issued`", record.id)))?;
        let element = match payload.children.as_slice() {
            [element] if element.name == "federation-link" => element,
            _ => {
                return Err(invalid(format!(
                    "link {}: the payload is not one <federation-link>",
                    record.id
                )))
            }
        };
        Ok(Link {
            request: LinkRequest::read(element)?,
            record: record.clone(),
            issued,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileged::SigningKey;

    #[test]
    fn a_link_reads_back_and_refuses_what_it_cannot_carry() {
        let request = LinkRequest {
            peer_key: SigningKey::from_bytes(&[3; 32]).verifying_key(),
            address: "wss://127.0.0.1:9000/".into(),
            tls_fingerprint: "ab".repeat(32),
            send: vec!["calculate".into()],
            accept: vec!["echo".into(), "weather".into()],
        };
        let canonical = canonicalize(request.to_xml().as_bytes(), &Limits::default(), &[]).unwrap();
        assert_eq!(
            LinkRequest::read(&Element::parse(&canonical).unwrap()).unwrap(),
            request
        );
        for (change, expected) in [
            (
                ("wss://127.0.0.1:9000/", "ws://127.0.0.1:9000/"),
                "TLS is mandatory",
            ),
            (("send=\"calculate\"", "send=\"error\""), "reserved"),
            (("send=\"calculate\"", "send=\"\""), ""),
            (("accept=\"echo weather\"", "accept=\"\""), ""),
        ] {
            let xml = request.to_xml().replace(change.0, change.1);
            let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
            let read = LinkRequest::read(&Element::parse(&canonical).unwrap());
            if expected.is_empty() {
                assert!(read.is_ok(), "{xml}");
            } else {
                assert!(read.unwrap_err().0.contains(expected), "{xml}");
            }
        }
        let nothing = request
            .to_xml()
            .replace("send=\"calculate\"", "send=\"\"")
            .replace("accept=\"echo weather\"", "accept=\"\"");
        let canonical = canonicalize(nothing.as_bytes(), &Limits::default(), &[]).unwrap();
        assert!(LinkRequest::read(&Element::parse(&canonical).unwrap()).is_err());
    }
}
