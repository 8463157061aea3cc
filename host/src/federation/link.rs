//! The `federation-link` command: one owner's signed word that the
//! organism may exchange some tags with another, named by its owner's key.
//!
//! ```text
//! <federation-link accept="weather" address="wss://peer.example.com/" peer-key="BASE64" send="calculate" tls-fingerprint="HEX64"/>
//! <federation-link accept="weather" address="wss://peer.example.com/" peer-key="BASE64" send="calculate"><tls-ca>BASE64-DER</tls-ca></federation-link>
//! ```
//!
//! `send` lists the tags this organism's messages may carry to the peer
//! (its gateway listens to them here); `accept` the tags the peer may start
//! threads with here. The peer's TLS certificate is pinned one of two ways
//! ([`PeerTls`]): `tls-fingerprint`, the SHA-256 of its DER (as
//! `agentserver run` prints it), or one to [`MAX_CAS`] `<tls-ca>` children,
//! each the base64 of a CA certificate's DER, that must have issued it for
//! the address's host. A link carries traffic only while the peer's owner
//! has signed a link naming this organism too: each side shows the other
//! its own link at the handshake.

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

/// CA certificates a link pins at most.
pub const MAX_CAS: usize = 4;
/// The DER bytes of a link's CA certificates at most, together: the link
/// travels in the hello, which is at most 16 KiB.
pub const MAX_CA_BYTES: usize = 6 << 10;

/// How the gateway knows the peer's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTls {
    /// Exactly the certificate with this SHA-256 of its DER (64 lowercase
    /// hex digits): a new certificate needs a new link.
    Fingerprint(String),
    /// Any certificate these CA certificates (DER) issued for the host of
    /// the link's address, checked as browsers check (chain, validity,
    /// name), with no other roots: a renewed certificate from the same CA
    /// keeps working.
    Ca(Vec<Vec<u8>>),
}

impl PeerTls {
    /// How the gateway's client trusts the peer.
    pub fn trust(&self) -> crate::client::Trust {
        match self {
            PeerTls::Fingerprint(fingerprint) => {
                crate::client::Trust::Fingerprint(fingerprint.clone())
            }
            PeerTls::Ca(roots) => crate::client::Trust::Ca(
                roots
                    .iter()
                    .map(|der| rustls::pki_types::CertificateDer::from(der.clone()))
                    .collect(),
            ),
        }
    }

    /// Reads `tls-fingerprint` or the `<tls-ca>` children: exactly one of
    /// the two.
    fn read(element: &Element) -> Result<PeerTls, LinkError> {
        if let Some(other) = element.children.iter().find(|c| c.name != "tls-ca") {
            return Err(invalid(format!(
                "<federation-link> holds only <tls-ca> elements, not <{}>",
                other.name
            )));
        }
        let fingerprint = element.attribute("tls-fingerprint");
        match (fingerprint, element.children.is_empty()) {
            (Some(_), false) => Err(invalid(
                "give either `tls-fingerprint` or <tls-ca>, not both: the peer's TLS certificate \
                 is pinned one way",
            )),
            (None, true) => Err(invalid(
                "pin the peer's TLS certificate: `tls-fingerprint` (the SHA-256 that \
                 `agentserver run` prints) or <tls-ca> (the base64 DER of the CA that issues it)",
            )),
            (Some(fingerprint), true) => {
                let fingerprint = fingerprint.to_ascii_lowercase().replace(':', "");
                if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        "`tls-fingerprint` must be the SHA-256 of the peer's TLS certificate, 64 hex \
                         digits (`agentserver run` prints it)",
                    ));
                }
                Ok(PeerTls::Fingerprint(fingerprint))
            }
            (None, false) => {
                if element.children.len() > MAX_CAS {
                    return Err(invalid(format!(
                        "a link pins at most {MAX_CAS} <tls-ca> certificates"
                    )));
                }
                let mut roots: Vec<Vec<u8>> = Vec::new();
                for (n, ca) in element.children.iter().enumerate() {
                    let n = n + 1;
                    let text: String = ca
                        .text
                        .chars()
                        .filter(|c| !c.is_ascii_whitespace())
                        .collect();
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(text.as_bytes())
                        .map_err(|_| {
                            invalid(format!(
                                "<tls-ca> {n} must be the base64 of a certificate's DER bytes"
                            ))
                        })?;
                    rustls::RootCertStore::empty()
                        .add(rustls::pki_types::CertificateDer::from(der.as_slice()))
                        .map_err(|e| {
                            invalid(format!("<tls-ca> {n} is not a usable certificate: {e}"))
                        })?;
                    if !roots.contains(&der) {
                        roots.push(der);
                    }
                }
                if roots.iter().map(Vec::len).sum::<usize>() > MAX_CA_BYTES {
                    return Err(invalid(format!(
                        "the <tls-ca> certificates are more than {} KiB together; the link \
                         travels in the 16 KiB hello",
                        MAX_CA_BYTES >> 10
                    )));
                }
                Ok(PeerTls::Ca(roots))
            }
        }
    }
}

/// The body of a `federation-link` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// The peer owner's public key.
    pub peer_key: VerifyingKey,
    /// `wss://host:port/` of the peer's port.
    pub address: String,
    /// How the peer's TLS certificate is pinned.
    pub tls: PeerTls,
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
        let tls = PeerTls::read(element)?;
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
            tls,
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
        match &self.tls {
            PeerTls::Fingerprint(fingerprint) => {
                let _ = write!(out, "\" tls-fingerprint=\"{fingerprint}\"/>");
            }
            PeerTls::Ca(roots) => {
                out.push_str("\">");
                for der in roots {
                    let _ = write!(
                        out,
                        "<tls-ca>{}</tls-ca>",
                        base64::engine::general_purpose::STANDARD.encode(der)
                    );
                }
                out.push_str("</federation-link>");
            }
        }
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
            tls: PeerTls::Fingerprint("ab".repeat(32)),
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

    /// A CA certificate's DER, made now.
    fn ca_der(name: &str) -> Vec<u8> {
        ca_der_naming(name, Vec::new())
    }

    /// A CA certificate's DER naming `hosts` too (which makes it bigger).
    fn ca_der_naming(name: &str, hosts: Vec<String>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(hosts).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn read_xml(xml: &str) -> Result<LinkRequest, LinkError> {
        let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
        LinkRequest::read(&Element::parse(&canonical).unwrap())
    }

    #[test]
    fn a_link_pins_the_peer_by_fingerprint_or_by_ca_and_exactly_one_of_them() {
        let (first, second) = (ca_der("CA one"), ca_der("CA two"));
        let mut request = LinkRequest {
            peer_key: SigningKey::from_bytes(&[3; 32]).verifying_key(),
            address: "wss://peer.example.net:8765/".into(),
            tls: PeerTls::Ca(vec![first.clone(), second.clone()]),
            send: vec!["calculate".into()],
            accept: Vec::new(),
        };
        let xml = request.to_xml();
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        assert_eq!(
            xml,
            format!(
                "<federation-link accept=\"\" address=\"wss://peer.example.net:8765/\" peer-key=\"{}\" \
                 send=\"calculate\"><tls-ca>{}</tls-ca><tls-ca>{}</tls-ca></federation-link>",
                b64(request.peer_key.as_bytes()),
                b64(&first),
                b64(&second)
            )
        );
        // What is written is already canonical, so it is signed as written.
        let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
        assert_eq!(canonical.as_str(), xml);
        assert_eq!(read_xml(&xml).unwrap(), request);
        // Base64 wrapped over lines, as a person might paste it, and the
        // same CA twice, read as one.
        let wrapped = b64(&first)
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let pasted = xml.replace(
            &format!("<tls-ca>{}</tls-ca>", b64(&second)),
            &format!("<tls-ca>\n{wrapped}\n</tls-ca>"),
        );
        assert_eq!(
            read_xml(&pasted).unwrap().tls,
            PeerTls::Ca(vec![first.clone()])
        );
        assert!(matches!(request.tls.trust(), crate::client::Trust::Ca(roots) if roots.len() == 2));

        let fingerprint_xml = {
            request.tls = PeerTls::Fingerprint("ab".repeat(32));
            request.to_xml()
        };
        let ca = format!("<tls-ca>{}</tls-ca>", b64(&first));
        let both = fingerprint_xml.replace("/>", &format!(">{ca}</federation-link>"));
        let neither =
            fingerprint_xml.replace(&format!(" tls-fingerprint=\"{}\"", "ab".repeat(32)), "");
        let too_many = xml.replace(
            "</federation-link>",
            &format!("{}</federation-link>", ca.repeat(MAX_CAS)),
        );
        let hosts: Vec<String> = (0..40)
            .map(|n| format!("{n}.{}.example", "x".repeat(50)))
            .collect();
        let big: String = (0..3)
            .map(|n| {
                format!(
                    "<tls-ca>{}</tls-ca>",
                    b64(&ca_der_naming(&format!("CA {n}"), hosts.clone()))
                )
            })
            .collect();
        for (xml, expected) in [
            (both, "not both"),
            (neither, "pin the peer's TLS certificate"),
            (
                fingerprint_xml.replace(&"ab".repeat(32), "abc"),
                "64 hex digits",
            ),
            (
                xml.replace(&b64(&first), "not base64!"),
                "<tls-ca> 1 must be the base64",
            ),
            (
                xml.replace(&b64(&second), &b64(b"a certificate, honest")),
                "<tls-ca> 2 is not a usable certificate",
            ),
            (too_many, "at most 4 <tls-ca>"),
            (
                xml.replace("<tls-ca>", "<tls-root>")
                    .replace("</tls-ca>", "</tls-root>"),
                "only <tls-ca>",
            ),
            (xml.replace(&ca, &big), "more than 6 KiB together"),
        ] {
            let error = read_xml(&xml).unwrap_err();
            assert!(error.0.contains(expected), "{xml}: {error}");
        }
    }
}
