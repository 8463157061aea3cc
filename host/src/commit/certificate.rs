//! Node certificates: the owner's signed word that a node key speaks for
//! the organism, for some purposes, until some time.
//!
//! The owner signs an ordinary privileged command whose payload holds
//!
//! ```text
//! <node-certificate key-id="3f1c…" not-after="2026-12-28T00:00:00Z" public-key="BASE64" purpose="audit federation"/>
//! ```
//!
//! The server keeps the signed payload's exact canonical bytes and the
//! signature ([`SignedRecord`]), so that anyone holding the owner's
//! public key can check the certificate later without canonicalising
//! anything. A certificate is valid from its payload's `issued` (less
//! [`CLOCK_SKEW`]) to its `not-after`; certificates are never deleted, so
//! what a key signed while certified stays checkable after it expires.

use super::node_key::key_id;
use crate::privileged::time::{format_instant, parse_instant};
use crate::privileged::{SignedRecord, VerifyingKey, CLOCK_SKEW};
use crate::xml::{canonicalize, Element, Limits};
use base64::Engine as _;
use ed25519_dalek::Signature;
use std::fmt::Write as _;
use thiserror::Error;

/// What a certified key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// Audit checkpoints.
    Audit,
    /// Messages crossing a federation link.
    Federation,
}

impl Purpose {
    /// Every purpose, in the order certificates list them.
    pub const ALL: [Purpose; 2] = [Purpose::Audit, Purpose::Federation];

    /// The purpose's name in a certificate.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Audit => "audit",
            Purpose::Federation => "federation",
        }
    }

    /// The purpose named `name`.
    pub fn from_name(name: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Why a certificate is not one.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CertificateError {
    /// The element is not shaped as a certificate.
    #[error("{0}")]
    Invalid(String),
    /// The owner's signature does not verify.
    #[error("certificate {id}: the owner's signature does not verify")]
    BadSignature {
        /// The certificate's command id.
        id: String,
    },
}

/// The body of a `node-certificate` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    /// The key's id ([`key_id`] of `public_key`).
    pub key_id: String,
    /// The node key certified.
    pub public_key: VerifyingKey,
    /// What it may sign, sorted, without repeats.
    pub purposes: Vec<Purpose>,
    /// The last instant it is valid, Unix seconds.
    pub not_after: u64,
}

impl CertificateRequest {
    /// Reads a `<node-certificate>` element.
    pub fn read(element: &Element) -> Result<CertificateRequest, CertificateError> {
        let invalid = |reason: String| CertificateError::Invalid(reason);
        let attribute = |name: &str| {
            element
                .attribute(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(format!("<node-certificate> needs a `{name}` attribute")))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(attribute("public-key")?)
            .map_err(|_| invalid("`public-key` must be base64".into()))?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| {
            invalid("`public-key` must be the 32 bytes of an Ed25519 public key".into())
        })?;
        let public_key = VerifyingKey::from_bytes(&raw)
            .ok()
            .filter(|key| !key.is_weak())
            .ok_or_else(|| invalid("`public-key` is not a usable Ed25519 public key".into()))?;
        let expected = key_id(&public_key);
        let given = attribute("key-id")?;
        if given != expected {
            return Err(invalid(format!(
                "`key-id` must be {expected}, the start of the key's SHA-256 fingerprint, not {given:?}"
            )));
        }
        let mut purposes = Vec::new();
        for name in attribute("purpose")?.split_ascii_whitespace() {
            let purpose = Purpose::from_name(name).ok_or_else(|| {
                invalid(format!(
                    "purpose {name:?} is unknown; the purposes are audit and federation"
                ))
            })?;
            purposes.push(purpose);
        }
        purposes.sort();
        purposes.dedup();
        if purposes.is_empty() {
            return Err(invalid("`purpose` names no purpose".into()));
        }
        let text = attribute("not-after")?;
        let not_after = parse_instant(text).ok_or_else(|| {
            invalid(format!(
                "`not-after` must be a UTC instant such as 2026-12-28T00:00:00Z, not {text:?}"
            ))
        })?;
        Ok(CertificateRequest {
            key_id: expected,
            public_key,
            purposes,
            not_after,
        })
    }

    /// The command element, attributes in canonical order.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        let purposes: Vec<&str> = self.purposes.iter().map(|p| p.name()).collect();
        let _ = write!(
            out,
            "<node-certificate key-id=\"{}\" not-after=\"{}\" public-key=\"{}\" purpose=\"{}\"/>",
            self.key_id,
            format_instant(self.not_after),
            base64::engine::general_purpose::STANDARD.encode(self.public_key.as_bytes()),
            purposes.join(" ")
        );
        out
    }
}

/// A certificate whose owner signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The command's id.
    pub id: String,
    /// What it certifies.
    pub request: CertificateRequest,
    /// When it was issued (the payload's `issued`), Unix seconds.
    pub issued: u64,
}

impl Certificate {
    /// Checks `record`'s signature with the owner's key and reads it.
    pub fn verify(
        record: &SignedRecord,
        owner: &VerifyingKey,
    ) -> Result<Certificate, CertificateError> {
        let invalid = |reason: &str| {
            CertificateError::Invalid(format!("certificate {}: {reason}", record.id))
        };
        let (element, issued) = verified_command(record, owner, "node-certificate")?;
        let request = CertificateRequest::read(&element).map_err(|e| invalid(&e.to_string()))?;
        Ok(Certificate {
            id: record.id.clone(),
            request,
            issued,
        })
    }

    /// Whether it lets its key sign for `purpose` at `time` (Unix seconds).
    pub fn covers(&self, time: u64, purpose: Purpose) -> bool {
        self.request.purposes.contains(&purpose)
            && time + CLOCK_SKEW.as_secs() >= self.issued
            && time <= self.request.not_after
    }
}

/// Checks `record`'s signature with the owner's key (strictly, over its
/// exact bytes) and returns its one command element, which must be named
/// `name`, with the payload's `issued` (Unix seconds).
pub(super) fn verified_command(
    record: &SignedRecord,
    owner: &VerifyingKey,
    name: &str,
) -> Result<(Element, u64), CertificateError> {
    let bad = || CertificateError::BadSignature {
        id: record.id.clone(),
    };
    let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(record.signature.as_bytes())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(bad)?;
    owner
        .verify_strict(
            record.payload.as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| bad())?;
    command_element(record, name)
}

/// `record`'s one command element, which must be named `name`, with the
/// payload's `issued` (Unix seconds); the signature is not checked.
pub(super) fn command_element(
    record: &SignedRecord,
    name: &str,
) -> Result<(Element, u64), CertificateError> {
    let invalid =
        |reason: &str| CertificateError::Invalid(format!("{name} {}: {reason}", record.id));
    let canonical = canonicalize(record.payload.as_bytes(), &Limits::default(), &[])
        .map_err(|e| invalid(&e.to_string()))?;
    let mut payload = Element::parse(&canonical).map_err(|e| invalid(&e.to_string()))?;
    let issued = payload
        .attribute("issued")
        .and_then(parse_instant)
        .ok_or_else(|| invalid("its payload has no `issued`"))?;
    if payload.attribute("id") != Some(record.id.as_str()) {
        return Err(invalid("its payload has another id"));
    }
    match payload.children.as_slice() {
        [element] if element.name == name => {}
        _ => return Err(invalid(&format!("its payload is not one <{name}>"))),
    }
    let element = payload.children.remove(0);
    Ok((element, issued))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileged::{sign, SigningKey};

    fn request(node: &SigningKey) -> CertificateRequest {
        CertificateRequest {
            key_id: key_id(&node.verifying_key()),
            public_key: node.verifying_key(),
            purposes: vec![Purpose::Audit],
            not_after: 2_000_000_000,
        }
    }

    #[test]
    fn a_request_reads_back_and_its_key_id_must_match() {
        let node = SigningKey::from_bytes(&[7; 32]);
        let xml = request(&node).to_xml();
        let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
        let element = Element::parse(&canonical).unwrap();
        assert_eq!(CertificateRequest::read(&element).unwrap(), request(&node));

        let wrong = xml.replace(&request(&node).key_id, "0000000000000000");
        let canonical = canonicalize(wrong.as_bytes(), &Limits::default(), &[]).unwrap();
        let error = CertificateRequest::read(&Element::parse(&canonical).unwrap()).unwrap_err();
        assert!(error.to_string().contains("start of the key's"), "{error}");
    }

    #[test]
    fn a_signed_certificate_verifies_only_with_its_owner() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let node = SigningKey::from_bytes(&[2; 32]);
        let document = format!(
            "<privileged-command><payload>{}</payload></privileged-command>",
            request(&node).to_xml()
        );
        let now = crate::privileged::time::unix_seconds(std::time::SystemTime::now());
        let signed = sign(
            document.as_bytes(),
            &owner,
            now,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
        let command = crate::privileged::SignedCommand::read(signed.as_bytes(), 1 << 20).unwrap();
        let record = command.to_record().unwrap();
        let certificate = Certificate::verify(&record, &owner.verifying_key()).unwrap();
        assert!(certificate.covers(certificate.issued, Purpose::Audit));
        assert!(!certificate.covers(certificate.issued, Purpose::Federation));
        assert!(!certificate.covers(2_000_000_001, Purpose::Audit));
        let stranger = SigningKey::from_bytes(&[3; 32]);
        assert!(matches!(
            Certificate::verify(&record, &stranger.verifying_key()),
            Err(CertificateError::BadSignature { .. })
        ));
    }
}
