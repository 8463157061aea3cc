//! The `<privileged-command>` document: reading its `<payload>` and
//! `<signature>`, checking the signature over the payload's exclusive
//! canonical form, and signing (for `agentserver sign`).

use super::time::{format_instant, parse_instant};
use super::Refused;
use crate::xml::{canonicalize, canonicalize_subtree, CanonicalXml, Element, Limits, XmlError};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// The longest command id accepted.
pub const MAX_ID_CHARS: usize = 128;

/// A command as read from the wire, signature not yet checked.
#[derive(Debug, Clone)]
pub struct SignedCommand {
    /// The payload's `id`.
    pub id: String,
    /// `issued`, Unix seconds.
    pub issued: u64,
    /// `expires`, Unix seconds.
    pub expires: u64,
    /// The payload in exclusive canonical form: the signed bytes.
    pub payload: CanonicalXml,
    /// The payload's tree.
    pub payload_tree: Element,
    /// The signature, when there is one.
    pub signature: Option<Signature>,
}

impl SignedCommand {
    /// Reads a `<privileged-command>` of at most `max_bytes` bytes.
    ///
    /// On failure, the id is returned with the reason when it could be read,
    /// so that the answer can name the command.
    pub fn read(
        input: &[u8],
        max_bytes: usize,
    ) -> Result<SignedCommand, (Option<String>, Refused)> {
        if input.len() > max_bytes {
            return Err((
                None,
                Refused::TooLarge {
                    size: input.len(),
                    limit: max_bytes,
                },
            ));
        }
        let limits = Limits {
            max_input_bytes: max_bytes,
            ..Limits::default()
        };
        let malformed = |error: XmlError| (None, Refused::Malformed(error.to_string()));
        let document = canonicalize(input, &limits, &[]).map_err(malformed)?;
        let root = Element::parse(&document).map_err(malformed)?;
        if root.name != "privileged-command" {
            return Err((
                None,
                Refused::Malformed(format!(
                    "the root is <{}>, not <privileged-command>",
                    root.name
                )),
            ));
        }
        let payload_tree = root
            .only_child("payload")
            .ok_or_else(|| {
                (
                    None,
                    Refused::Malformed("a <privileged-command> holds exactly one <payload>".into()),
                )
            })?
            .clone();
        let id = payload_tree.attribute("id").map(str::to_owned);
        let refuse = |reason: Refused| (id.clone(), reason);
        let id_text = match &id {
            Some(id) if valid_id(id) => id.clone(),
            Some(_) => {
                return Err(refuse(Refused::Invalid(format!(
                    "`id` must be 1 to {MAX_ID_CHARS} letters, digits, `-`, `_`, `.` or `:`"
                ))))
            }
            None => return Err(refuse(Refused::Invalid("<payload> needs an `id`".into()))),
        };
        let instant = |name: &str| -> Result<u64, (Option<String>, Refused)> {
            let text = payload_tree
                .attribute(name)
                .ok_or_else(|| refuse(Refused::Invalid(format!("<payload> needs `{name}`"))))?;
            parse_instant(text).ok_or_else(|| {
                refuse(Refused::Invalid(format!(
                    "`{name}` must be a UTC instant such as 2026-11-24T12:00:00Z, not {text:?}"
                )))
            })
        };
        let (issued, expires) = (instant("issued")?, instant("expires")?);
        if expires <= issued {
            return Err(refuse(Refused::Invalid(
                "`expires` is not after `issued`".into(),
            )));
        }
        let signature = match root.only_child("signature") {
            None if root.children_named("signature").next().is_none() => None,
            None => {
                return Err(refuse(Refused::Malformed(
                    "a <privileged-command> holds at most one <signature>".into(),
                )))
            }
            Some(element) => {
                if let Some(algorithm) = element.attribute("algorithm") {
                    if algorithm != "ed25519" {
                        return Err(refuse(Refused::BadSignature(format!(
                            "algorithm {algorithm:?} is not supported; use ed25519"
                        ))));
                    }
                }
                Some(decode_signature(&element.text).map_err(&refuse)?)
            }
        };
        if root.children.len() != 1 + usize::from(signature.is_some()) {
            return Err(refuse(Refused::Malformed(
                "a <privileged-command> holds only <payload> and <signature>".into(),
            )));
        }
        let payload = canonicalize_subtree(input, &limits, &[], |depth, tag| {
            depth == 1 && tag.as_str() == "payload"
        })
        .map_err(|e| refuse(Refused::Malformed(e.to_string())))?;
        Ok(SignedCommand {
            id: id_text,
            issued,
            expires,
            payload,
            payload_tree,
            signature,
        })
    }

    /// SHA-256 of the canonical payload, hex.
    pub fn payload_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.payload.as_bytes()))
    }

    /// The command as kept: its canonical payload and signature (`None`
    /// for an unsigned one).
    pub fn to_record(&self) -> Option<super::SignedRecord> {
        let signature = self.signature.as_ref()?;
        Some(super::SignedRecord {
            id: self.id.clone(),
            payload: self.payload.as_str().to_owned(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        })
    }

    /// Checks the signature with `key`: strict Ed25519 (no small-order keys,
    /// no non-canonical signatures) over the canonical payload.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Refused> {
        let signature = self.signature.as_ref().ok_or(Refused::Unsigned)?;
        verify_bytes(key, self.payload.as_bytes(), signature)
    }
}

/// Strict Ed25519 verification of `message`, the one check every command
/// goes through.
pub fn verify_bytes(
    key: &VerifyingKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), Refused> {
    key.verify_strict(message, signature).map_err(|_| {
        Refused::BadSignature("the signature does not verify with this organism's key".into())
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn decode_signature(text: &str) -> Result<Signature, Refused> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(Refused::Unsigned);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| Refused::BadSignature("the signature is not base64".into()))?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|bytes: Vec<u8>| {
        Refused::BadSignature(format!(
            "an Ed25519 signature is 64 bytes, not {}",
            bytes.len()
        ))
    })?;
    Ok(Signature::from_bytes(&bytes))
}

/// Why a document could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The input is not XML the XML core accepts.
    #[error("not well-formed XML: {0}")]
    Xml(#[from] XmlError),
    /// The input is not a command document.
    #[error("{0}")]
    Shape(String),
    /// No randomness for the id.
    #[error("no randomness for the command id: {0}")]
    Random(String),
}

/// Signs `input` (a `<privileged-command>` or a bare `<payload>`) with `key`
/// at `now` (Unix seconds): fills in `id` (random), `issued` (now) and
/// `expires` (now + `ttl`) when absent, and returns the signed document.
/// An existing signature is replaced.
pub fn sign(input: &[u8], key: &SigningKey, now: u64, ttl: Duration) -> Result<String, SignError> {
    let limits = Limits {
        max_input_bytes: input.len().max(1),
        ..Limits::default()
    };
    let document = canonicalize(input, &limits, &[])?;
    let root = Element::parse(&document)?;
    let payload = match root.name.as_str() {
        "payload" => document,
        "privileged-command" => {
            if root.only_child("payload").is_none() {
                return Err(SignError::Shape(
                    "a <privileged-command> holds exactly one <payload>".into(),
                ));
            }
            canonicalize_subtree(input, &limits, &[], |depth, tag| {
                depth == 1 && tag.as_str() == "payload"
            })?
        }
        other => {
            return Err(SignError::Shape(format!(
                "expected <privileged-command> or <payload>, found <{other}>"
            )))
        }
    };
    let tree = Element::parse(&payload)?;
    let mut added = String::new();
    if tree.attribute("id").is_none() {
        added.push_str(&format!(" id=\"{}\"", new_id()?));
    }
    if tree.attribute("issued").is_none() {
        added.push_str(&format!(" issued=\"{}\"", format_instant(now)));
    }
    if tree.attribute("expires").is_none() {
        let issued = tree
            .attribute("issued")
            .and_then(parse_instant)
            .unwrap_or(now);
        added.push_str(&format!(
            " expires=\"{}\"",
            format_instant(issued + ttl.as_secs())
        ));
    }
    let text = payload.as_str();
    let filled = format!("{}{added}{}", &text[..8], &text[8..]);
    let limits = Limits {
        max_input_bytes: filled.len(),
        ..Limits::default()
    };
    let canonical = canonicalize(filled.as_bytes(), &limits, &[])?;
    let signature = key.sign(canonical.as_bytes());
    Ok(format!(
        "<privileged-command>{}<signature algorithm=\"ed25519\">{}</signature></privileged-command>\n",
        canonical.as_str(),
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    ))
}

/// A fresh random command id: 16 random bytes, hex.
fn new_id() -> Result<String, SignError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| SignError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_521_600;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn signed(body: &str) -> String {
        let unsigned =
            format!("<privileged-command><payload>{body}</payload></privileged-command>");
        sign(unsigned.as_bytes(), &key(1), NOW, Duration::from_secs(600)).unwrap()
    }

    /// RFC 8032 section 7.1, tests 1 to 3: (secret, public, message, signature).
    const RFC_8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn the_check_agrees_with_rfc_8032() {
        for (secret, public, message, signature) in RFC_8032 {
            let hex32 = |text: &str| -> [u8; 32] { hex::decode(text).unwrap().try_into().unwrap() };
            let signing = SigningKey::from_bytes(&hex32(secret));
            let key = VerifyingKey::from_bytes(&hex32(public)).unwrap();
            assert_eq!(signing.verifying_key(), key);
            let message = hex::decode(message).unwrap();
            let signature: [u8; 64] = hex::decode(signature).unwrap().try_into().unwrap();
            let signature = Signature::from_bytes(&signature);
            assert_eq!(signing.sign(&message), signature, "deterministic signing");
            verify_bytes(&key, &message, &signature).unwrap();
            // Any flipped bit of the message or the signature fails.
            let mut longer = message.clone();
            longer.push(0);
            assert!(verify_bytes(&key, &longer, &signature).is_err());
            let mut bad = signature.to_bytes();
            bad[63] ^= 0x10;
            assert!(verify_bytes(&key, &message, &Signature::from_bytes(&bad)).is_err());
        }
    }

    #[test]
    fn a_non_canonical_signature_is_refused() {
        // S + L (the group order) verifies under lax rules; strict refuses it.
        let (secret, public, message, signature) = RFC_8032[0];
        let _ = secret;
        let key =
            VerifyingKey::from_bytes(&hex::decode(public).unwrap().try_into().unwrap()).unwrap();
        let mut bytes: [u8; 64] = hex::decode(signature).unwrap().try_into().unwrap();
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(bytes[32 + i]) + u16::from(L[i]) + carry;
            bytes[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        let message = hex::decode(message).unwrap();
        assert!(verify_bytes(&key, &message, &Signature::from_bytes(&bytes)).is_err());
    }

    #[test]
    fn signing_fills_in_and_verifies() {
        let document = signed("<agent-removal name=\"calc\"/>");
        let command = SignedCommand::read(document.as_bytes(), 1 << 20).unwrap();
        assert_eq!(command.issued, NOW);
        assert_eq!(command.expires, NOW + 600);
        assert_eq!(command.id.len(), 32);
        command.verify(&key(1).verifying_key()).unwrap();
        assert!(matches!(
            command.verify(&key(2).verifying_key()),
            Err(Refused::BadSignature(_))
        ));
    }

    #[test]
    fn kept_attributes_are_not_replaced() {
        let unsigned = "<payload id=\"x1\" issued=\"2026-11-24T12:00:00Z\"><shutdown/></payload>";
        let document = sign(
            unsigned.as_bytes(),
            &key(1),
            NOW + 5,
            Duration::from_secs(60),
        )
        .unwrap();
        let command = SignedCommand::read(document.as_bytes(), 1 << 20).unwrap();
        assert_eq!(
            (command.id.as_str(), command.issued, command.expires),
            ("x1", NOW, NOW + 60)
        );
    }

    #[test]
    fn whitespace_outside_the_payload_does_not_matter_but_inside_it_does() {
        let document = signed("<agent-removal name=\"calc\"/>");
        let spaced = document
            .replace("<payload", "\n  <payload")
            .replace("<signature", "\n  <signature");
        SignedCommand::read(spaced.as_bytes(), 1 << 20)
            .unwrap()
            .verify(&key(1).verifying_key())
            .unwrap();
        let changed = document.replace("name=\"calc\"", "name=\"calc \"");
        assert!(SignedCommand::read(changed.as_bytes(), 1 << 20)
            .unwrap()
            .verify(&key(1).verifying_key())
            .is_err());
    }

    #[test]
    fn unsigned_and_bad_shapes_are_refused_with_reasons() {
        let unsigned = "<privileged-command><payload id=\"a\" issued=\"2026-11-24T12:00:00Z\" expires=\"2026-11-24T12:10:00Z\"><shutdown/></payload></privileged-command>";
        let command = SignedCommand::read(unsigned.as_bytes(), 1 << 20).unwrap();
        assert!(matches!(
            command.verify(&key(1).verifying_key()),
            Err(Refused::Unsigned)
        ));
        for (input, expected) in [
            ("<other/>", "not <privileged-command>"),
            ("<privileged-command/>", "exactly one <payload>"),
            ("<privileged-command><payload><shutdown/></payload></privileged-command>", "needs an `id`"),
            (
                "<privileged-command><payload id=\"a b\" issued=\"2026-11-24T12:00:00Z\" expires=\"2026-11-24T12:10:00Z\"/></privileged-command>",
                "`id` must be",
            ),
            (
                "<privileged-command><payload id=\"a\" issued=\"yesterday\" expires=\"2026-11-24T12:10:00Z\"/></privileged-command>",
                "UTC instant",
            ),
            (
                "<privileged-command><payload id=\"a\" issued=\"2026-11-24T12:10:00Z\" expires=\"2026-11-24T12:00:00Z\"/></privileged-command>",
                "not after",
            ),
            (
                "<privileged-command><payload id=\"a\" issued=\"2026-11-24T12:00:00Z\" expires=\"2026-11-24T12:10:00Z\"/><signature>AAAA</signature></privileged-command>",
                "64 bytes",
            ),
            (
                "<privileged-command><payload id=\"a\" issued=\"2026-11-24T12:00:00Z\" expires=\"2026-11-24T12:10:00Z\"/><signature algorithm=\"rsa\">AAAA</signature></privileged-command>",
                "not supported",
            ),
            ("<privileged-command><payload", "malformed"),
        ] {
            let (_, reason) = SignedCommand::read(input.as_bytes(), 1 << 20).unwrap_err();
            assert!(reason.to_string().contains(expected), "{input}: {reason}");
        }
        let (_, reason) = SignedCommand::read(&[b' '; 100], 10).unwrap_err();
        assert!(matches!(
            reason,
            Refused::TooLarge {
                size: 100,
                limit: 10
            }
        ));
    }
}
