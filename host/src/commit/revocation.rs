//! Node-key revocations: the owner's signed word that a node key no longer
//! speaks for the organism, whatever its certificates say.
//!
//! The owner signs an ordinary privileged command whose payload holds
//!
//! ```text
//! <node-revoke key-id="3f1c…" reason="laptop stolen"/>
//! ```
//!
//! (`reason` is optional). It is kept like a certificate, as its exact
//! signed bytes and the signature ([`SignedRecord`]), and never deleted.
//! A key is revoked from its revocation payload's `issued`: what it signed
//! before stays checkable (an audit checkpoint made before that instant
//! still vouches), what it signs from then on vouches for nothing, and a
//! server refuses its federation traffic from the moment it learns of the
//! revocation.

use super::certificate::{command_element, verified_command, CertificateError};
use crate::privileged::{SignedRecord, VerifyingKey};
use crate::xml::{escape_attribute, Element};

/// The longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 256;

/// The body of a `node-revoke` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRequest {
    /// The revoked key's id (16 lowercase hex digits, as certificates name
    /// it); it need not have been certified yet.
    pub key_id: String,
    /// Why, for people reading logs; not interpreted.
    pub reason: Option<String>,
}

impl RevocationRequest {
    /// Reads a `<node-revoke>` element.
    pub fn read(element: &Element) -> Result<RevocationRequest, CertificateError> {
        let invalid = |reason: &str| CertificateError::Invalid(reason.to_owned());
        let key_id = element
            .attribute("key-id")
            .ok_or_else(|| invalid("<node-revoke> needs a `key-id` attribute"))?;
        if key_id.len() != 16
            || !key_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid(
                "`key-id` must be 16 lowercase hex digits (the start of the node key's SHA-256 \
                 fingerprint, as `agentserver identity node` prints it)",
            ));
        }
        let reason = match element.attribute("reason") {
            None | Some("") => None,
            Some(text) if text.chars().count() > MAX_REASON_CHARS => {
                return Err(invalid(&format!(
                    "`reason` is longer than {MAX_REASON_CHARS} characters"
                )))
            }
            Some(text) => Some(text.to_owned()),
        };
        if !element.children.is_empty() || !element.text.trim().is_empty() {
            return Err(invalid("<node-revoke> holds nothing"));
        }
        Ok(RevocationRequest {
            key_id: key_id.to_owned(),
            reason,
        })
    }

    /// The command element, attributes in canonical order.
    pub fn to_xml(&self) -> String {
        let mut out = format!("<node-revoke key-id=\"{}\"", self.key_id);
        if let Some(reason) = &self.reason {
            out.push_str(" reason=\"");
            escape_attribute(&mut out, reason);
            out.push('"');
        }
        out.push_str("/>");
        out
    }
}

/// A revocation whose owner signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The command's id.
    pub id: String,
    /// What it revokes.
    pub request: RevocationRequest,
    /// When it was issued (the payload's `issued`), Unix seconds: the key
    /// is revoked from this instant on.
    pub issued: u64,
}

impl Revocation {
    /// Checks `record`'s signature with the owner's key and reads it.
    pub fn verify(
        record: &SignedRecord,
        owner: &VerifyingKey,
    ) -> Result<Revocation, CertificateError> {
        let (element, issued) = verified_command(record, owner, "node-revoke")?;
        Revocation::from_element(record, &element, issued)
    }

    /// Reads `record` without checking its signature: for the server's own
    /// store only, never for what came from elsewhere.
    pub(super) fn read_unverified(record: &SignedRecord) -> Result<Revocation, CertificateError> {
        let (element, issued) = command_element(record, "node-revoke")?;
        Revocation::from_element(record, &element, issued)
    }

    fn from_element(
        record: &SignedRecord,
        element: &Element,
        issued: u64,
    ) -> Result<Revocation, CertificateError> {
        let request = RevocationRequest::read(element)
            .map_err(|e| CertificateError::Invalid(format!("node-revoke {}: {e}", record.id)))?;
        Ok(Revocation {
            id: record.id.clone(),
            request,
            issued,
        })
    }

    /// Whether it revokes `key_id` for what was signed at `time` (Unix
    /// seconds): what the key signed before `issued` is not affected.
    pub fn revokes(&self, key_id: &str, time: u64) -> bool {
        self.request.key_id == key_id && time >= self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileged::{sign, SignedCommand, SigningKey};
    use crate::xml::{canonicalize, Limits};

    fn element(xml: &str) -> Element {
        let canonical = canonicalize(xml.as_bytes(), &Limits::default(), &[]).unwrap();
        Element::parse(&canonical).unwrap()
    }

    #[test]
    fn a_request_reads_back_and_refuses_what_is_not_one() {
        for request in [
            RevocationRequest {
                key_id: "0123456789abcdef".into(),
                reason: None,
            },
            RevocationRequest {
                key_id: "0123456789abcdef".into(),
                reason: Some("stolen & \"gone\"\tnow".into()),
            },
        ] {
            assert_eq!(
                RevocationRequest::read(&element(&request.to_xml())).unwrap(),
                request
            );
        }
        for (xml, expected) in [
            ("<node-revoke/>", "needs a `key-id`"),
            ("<node-revoke key-id=\"0123\"/>", "16 lowercase hex"),
            (
                "<node-revoke key-id=\"0123456789ABCDEF\"/>",
                "16 lowercase hex",
            ),
            (
                "<node-revoke key-id=\"0123456789abcdef\"><x/></node-revoke>",
                "holds nothing",
            ),
        ] {
            let error = RevocationRequest::read(&element(xml)).unwrap_err();
            assert!(error.to_string().contains(expected), "{xml}: {error}");
        }
        let long = format!(
            "<node-revoke key-id=\"0123456789abcdef\" reason=\"{}\"/>",
            "x".repeat(MAX_REASON_CHARS + 1)
        );
        assert!(RevocationRequest::read(&element(&long)).is_err());
    }

    #[test]
    fn a_signed_revocation_verifies_only_with_its_owner_and_dates_from_issued() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let request = RevocationRequest {
            key_id: "0123456789abcdef".into(),
            reason: Some("leaked".into()),
        };
        let document = format!("<payload>{}</payload>", request.to_xml());
        let signed = sign(
            document.as_bytes(),
            &owner,
            1_800_000_000,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
        let command = SignedCommand::read(signed.as_bytes(), 1 << 20).unwrap();
        let record = command.to_record().unwrap();
        let revocation = Revocation::verify(&record, &owner.verifying_key()).unwrap();
        assert_eq!(revocation.request, request);
        assert_eq!(revocation.issued, 1_800_000_000);
        assert!(!revocation.revokes("0123456789abcdef", 1_799_999_999));
        assert!(revocation.revokes("0123456789abcdef", 1_800_000_000));
        assert!(!revocation.revokes("fedcba9876543210", 1_900_000_000));
        let stranger = SigningKey::from_bytes(&[3; 32]);
        assert!(matches!(
            Revocation::verify(&record, &stranger.verifying_key()),
            Err(CertificateError::BadSignature { .. })
        ));
        // A certificate's record is not a revocation.
        let other = SignedRecord {
            payload: record.payload.replace("node-revoke", "node-certificate"),
            ..record
        };
        assert!(Revocation::verify(&other, &owner.verifying_key()).is_err());
    }
}
