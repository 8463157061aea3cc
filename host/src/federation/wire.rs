//! What crosses a federation link, byte for byte: the handshake each side
//! signs, and the signed message that carries one canonical payload.
//!
//! **Handshake.** The side that connects sends a hello, the other answers
//! with a welcome; each is one element whose signed part is a fixed
//! statement (rebuilt by the reader from its checked attributes):
//!
//! ```text
//! <federation-hello destination="FP" key-id="HEX16" nonce="N" origin="FP" role="hello" time="MS"></federation-hello>
//! ```
//!
//! The frame adds the signature, and the two records that make it
//! believable — the sender's node certificate and its owner's
//! `federation-link` naming the receiver — as base64 of their exact signed
//! bytes:
//!
//! ```text
//! <federation-hello destination=… key-id=… nonce=… origin=… role=… signature="B64" time=…><certificate id="…" signature="B64">B64</certificate><link id="…" signature="B64">B64</link></federation-hello>
//! ```
//!
//! The welcome names the hello's nonce as its own, so it cannot be
//! replayed to another connection.
//!
//! **Messages.** Each message is signed over the exclusive canonical form
//! of its `<federated>` element (so any tool with exc-C14N can sign one):
//!
//! ```text
//! <federation-message><federated destination="FP" hops="2" id="ID" key-id="HEX16" origin="FP" sender="calc" thread="T" time="MS"><calculate>2+2</calculate></federated><signature>B64</signature></federation-message>
//! ```
//!
//! `thread` is always the thread on the side that started it; `hops` the
//! agent deliveries behind the message. Nothing the receiver adds is
//! inside what was signed.
//!
//! **Revocations.** Each side also sends its owner's `node-revoke`
//! records, right after the handshake and whenever its owner signs a new
//! one, as they are kept (the owner's signature covers them; no node key
//! signs this frame):
//!
//! ```text
//! <federation-revocations><revocation id="CMD-ID" signature="B64">B64-PAYLOAD</revocation>…</federation-revocations>
//! ```

use crate::privileged::{SignedRecord, SigningKey, VerifyingKey};
use crate::xml::{
    canonicalize, canonicalize_subtree, escape_attribute, CanonicalXml, Element, Limits,
};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _};
use thiserror::Error;

/// The largest hello or welcome frame, bytes.
pub const MAX_HELLO_BYTES: usize = 16 << 10;
/// The most revocations one `<federation-revocations>` frame carries.
pub const MAX_REVOCATIONS: usize = 256;

/// A frame that is not what the link expects.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct WireError(pub String);

fn wire(reason: impl Into<String>) -> WireError {
    WireError(reason.into())
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unbase64(text: &str) -> Result<Vec<u8>, WireError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| wire("not base64"))
}

fn signature(text: &str) -> Result<Signature, WireError> {
    let bytes: [u8; 64] = unbase64(text)?
        .try_into()
        .map_err(|_| wire("a signature is 64 bytes"))?;
    Ok(Signature::from_bytes(&bytes))
}

fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A kept record as it crosses: `<NAME id="…" signature="…">` and the
/// base64 of its exact signed bytes.
fn record_xml(name: &str, record: &SignedRecord) -> String {
    let mut out = format!("<{name} id=\"");
    escape_attribute(&mut out, &record.id);
    out.push_str("\" signature=\"");
    escape_attribute(&mut out, &record.signature);
    out.push_str("\">");
    out.push_str(&base64(record.payload.as_bytes()));
    out.push_str(&format!("</{name}>"));
    out
}

/// Reads a record written by [`record_xml`]; nothing is trusted yet.
fn read_record(element: &Element) -> Result<SignedRecord, WireError> {
    let name = &element.name;
    let id = element.attribute("id").unwrap_or_default();
    if !is_token(id) {
        return Err(wire(format!("<{name}> has no usable `id`")));
    }
    Ok(SignedRecord {
        id: id.to_owned(),
        signature: element
            .attribute("signature")
            .unwrap_or_default()
            .to_owned(),
        payload: String::from_utf8(unbase64(&element.text)?)
            .map_err(|_| wire(format!("<{name}> is not UTF-8")))?,
    })
}

/// The `<federation-revocations>` frame carrying `records` (at most
/// [`MAX_REVOCATIONS`] of them; the caller picks which).
pub fn revocations_frame(records: &[SignedRecord]) -> String {
    let mut out = String::from("<federation-revocations>");
    for record in records {
        out.push_str(&record_xml("revocation", record));
    }
    out.push_str("</federation-revocations>");
    out
}

/// A frame after the handshake, as read; nothing is trusted yet.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A `<federation-message>`: the message, its signature and the exact
    /// bytes that signature covers.
    Message(Box<Federated>, Signature, String),
    /// A `<federation-revocations>`: the records it carries.
    Revocations(Vec<SignedRecord>),
}

impl Frame {
    /// Reads a frame within `limits`.
    pub fn read(frame: &[u8], limits: &Limits) -> Result<Frame, WireError> {
        let document =
            canonicalize(frame, limits, &[]).map_err(|e| wire(format!("not well-formed: {e}")))?;
        let root = Element::parse(&document).map_err(|e| wire(e.to_string()))?;
        match root.name.as_str() {
            "federation-revocations" => {
                if root.children.is_empty() || root.children.len() > MAX_REVOCATIONS {
                    return Err(wire(format!(
                        "a <federation-revocations> holds 1 to {MAX_REVOCATIONS} <revocation>"
                    )));
                }
                root.children
                    .iter()
                    .map(|element| {
                        if element.name != "revocation" || !element.children.is_empty() {
                            return Err(wire(
                                "a <federation-revocations> holds only <revocation> records",
                            ));
                        }
                        read_record(element)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Frame::Revocations)
            }
            _ => {
                let (message, signature, signed) = Federated::read_root(frame, limits, &root)?;
                Ok(Frame::Message(Box::new(message), signature, signed))
            }
        }
    }
}

/// Which end of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// From the side that connects.
    Hello,
    /// The answer.
    Welcome,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Hello => "hello",
            Role::Welcome => "welcome",
        }
    }
}

/// A handshake statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Hello or welcome.
    pub role: Role,
    /// The sender's owner fingerprint.
    pub origin: String,
    /// The receiver's owner fingerprint.
    pub destination: String,
    /// The signing node key's id.
    pub key_id: String,
    /// The hello's random nonce (the welcome repeats it).
    pub nonce: String,
    /// Unix milliseconds.
    pub time_ms: u64,
}

/// A greeting as read: the statement, its signature and the two records.
#[derive(Debug, Clone)]
pub struct ReadGreeting {
    /// What it states.
    pub greeting: Greeting,
    /// The node key's signature over [`Greeting::statement`].
    pub signature: Signature,
    /// The sender's node certificate.
    pub certificate: SignedRecord,
    /// The sender owner's link naming the receiver.
    pub link: SignedRecord,
}

impl Greeting {
    /// The signed statement's exact bytes.
    pub fn statement(&self) -> String {
        format!(
            "<federation-hello destination=\"{}\" key-id=\"{}\" nonce=\"{}\" origin=\"{}\" role=\"{}\" time=\"{}\"></federation-hello>",
            self.destination,
            self.key_id,
            self.nonce,
            self.origin,
            self.role.name(),
            self.time_ms
        )
    }

    /// The frame: the statement signed with `key`, with the records.
    pub fn frame(
        &self,
        key: &SigningKey,
        certificate: &SignedRecord,
        link: &SignedRecord,
    ) -> String {
        let signature = base64(&key.sign(self.statement().as_bytes()).to_bytes());
        format!(
            "<federation-hello destination=\"{}\" key-id=\"{}\" nonce=\"{}\" origin=\"{}\" role=\"{}\" signature=\"{signature}\" time=\"{}\">{}{}</federation-hello>",
            self.destination,
            self.key_id,
            self.nonce,
            self.origin,
            self.role.name(),
            self.time_ms,
            record_xml("certificate", certificate),
            record_xml("link", link)
        )
    }

    /// Reads a hello or welcome frame, strictly.
    pub fn read(frame: &str) -> Result<ReadGreeting, WireError> {
        let limits = Limits {
            max_input_bytes: MAX_HELLO_BYTES,
            ..Limits::default()
        };
        let canonical = canonicalize(frame.as_bytes(), &limits, &[])
            .map_err(|e| wire(format!("not well-formed: {e}")))?;
        let root = Element::parse(&canonical).map_err(|e| wire(e.to_string()))?;
        if root.name != "federation-hello" {
            return Err(wire(format!(
                "expected <federation-hello>, got <{}>",
                root.name
            )));
        }
        let attribute = |name: &str| {
            root.attribute(name)
                .ok_or_else(|| wire(format!("<federation-hello> needs `{name}`")))
        };
        let role = match attribute("role")? {
            "hello" => Role::Hello,
            "welcome" => Role::Welcome,
            other => return Err(wire(format!("unknown role {other:?}"))),
        };
        let greeting = Greeting {
            role,
            origin: attribute("origin")?.to_owned(),
            destination: attribute("destination")?.to_owned(),
            key_id: attribute("key-id")?.to_owned(),
            nonce: attribute("nonce")?.to_owned(),
            time_ms: attribute("time")?
                .parse()
                .map_err(|_| wire("`time` is not a number"))?,
        };
        if !is_hex(&greeting.origin, 64)
            || !is_hex(&greeting.destination, 64)
            || !is_hex(&greeting.key_id, 16)
            || !is_token(&greeting.nonce)
        {
            return Err(wire("a fingerprint, key id or nonce is not well-formed"));
        }
        let record = |name: &str| -> Result<SignedRecord, WireError> {
            let element = root
                .only_child(name)
                .ok_or_else(|| wire(format!("<federation-hello> needs one <{name}>")))?;
            read_record(element)
        };
        Ok(ReadGreeting {
            signature: signature(attribute("signature")?)?,
            certificate: record("certificate")?,
            link: record("link")?,
            greeting,
        })
    }
}

/// One message crossing a link, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federated {
    /// The sending organism's owner fingerprint.
    pub origin: String,
    /// The receiving organism's.
    pub destination: String,
    /// The signing node key's id.
    pub key_id: String,
    /// Unique per message (replays are refused).
    pub id: String,
    /// Unix milliseconds when it was signed.
    pub time_ms: u64,
    /// The thread on the side that started it.
    pub thread: String,
    /// Who sent it on the origin's bus (`user:NAME`, an agent's name).
    pub sender: String,
    /// Agent deliveries behind it.
    pub hops: u32,
    /// The canonical payload.
    pub payload: CanonicalXml,
}

impl Federated {
    /// The frame, signed with `key`.
    pub fn frame(&self, key: &SigningKey) -> Result<String, WireError> {
        let mut element = String::with_capacity(self.payload.as_str().len() + 512);
        element.push_str("<federated destination=\"");
        element.push_str(&self.destination);
        element.push_str(&format!("\" hops=\"{}\" id=\"", self.hops));
        escape_attribute(&mut element, &self.id);
        element.push_str("\" key-id=\"");
        element.push_str(&self.key_id);
        element.push_str("\" origin=\"");
        element.push_str(&self.origin);
        element.push_str("\" sender=\"");
        escape_attribute(&mut element, &self.sender);
        element.push_str("\" thread=\"");
        escape_attribute(&mut element, &self.thread);
        element.push_str(&format!("\" time=\"{}\">", self.time_ms));
        element.push_str(self.payload.as_str());
        element.push_str("</federated>");
        // Canonicalized once more, so that what is signed is exactly what
        // the receiver will compute.
        let limits = Limits {
            max_input_bytes: element.len().max(1),
            ..Limits::default()
        };
        let signed = canonicalize(element.as_bytes(), &limits, &[])
            .map_err(|e| wire(format!("the message does not canonicalize: {e}")))?;
        let signature = base64(&key.sign(signed.as_str().as_bytes()).to_bytes());
        Ok(format!(
            "<federation-message>{}<signature>{signature}</signature></federation-message>",
            signed.as_str()
        ))
    }

    /// Reads a message frame; returns it with its signature and the exact
    /// bytes that signature covers. Nothing is trusted yet.
    pub fn read(
        frame: &[u8],
        limits: &Limits,
    ) -> Result<(Federated, Signature, String), WireError> {
        let document =
            canonicalize(frame, limits, &[]).map_err(|e| wire(format!("not well-formed: {e}")))?;
        let root = Element::parse(&document).map_err(|e| wire(e.to_string()))?;
        Federated::read_root(frame, limits, &root)
    }

    /// [`Federated::read`] once the frame's tree is read.
    fn read_root(
        frame: &[u8],
        limits: &Limits,
        root: &Element,
    ) -> Result<(Federated, Signature, String), WireError> {
        if root.name != "federation-message" {
            return Err(wire(format!(
                "expected <federation-message>, got <{}>",
                root.name
            )));
        }
        // Exactly `<federated>` then `<signature>`, the signature text only:
        // nothing outside the signed element may pass for the payload.
        let (element, signature_element) =
            match root.children.as_slice() {
                [element, signature]
                    if element.name == "federated"
                        && signature.name == "signature"
                        && signature.children.is_empty() =>
                {
                    (element, signature)
                }
                _ => return Err(wire(
                    "a <federation-message> holds one <federated>, then one <signature> of text",
                )),
            };
        if element.children.len() != 1 || !element.text.trim().is_empty() {
            return Err(wire("a <federated> holds exactly one payload element"));
        }
        let signed = canonicalize_subtree(frame, limits, &[], |depth, tag| {
            depth == 1 && tag.as_str() == "federated"
        })
        .map_err(|e| wire(e.to_string()))?;
        // The payload is read from the signed bytes themselves.
        let payload = canonicalize_subtree(signed.as_str().as_bytes(), limits, &[], |depth, _| {
            depth == 1
        })
        .map_err(|e| wire(e.to_string()))?;
        let attribute = |name: &str| {
            element
                .attribute(name)
                .ok_or_else(|| wire(format!("<federated> needs `{name}`")))
        };
        let federated = Federated {
            origin: attribute("origin")?.to_owned(),
            destination: attribute("destination")?.to_owned(),
            key_id: attribute("key-id")?.to_owned(),
            id: attribute("id")?.to_owned(),
            time_ms: attribute("time")?
                .parse()
                .map_err(|_| wire("`time` is not a number"))?,
            thread: attribute("thread")?.to_owned(),
            sender: attribute("sender")?.to_owned(),
            hops: attribute("hops")?
                .parse()
                .map_err(|_| wire("`hops` is not a number"))?,
            payload,
        };
        if !is_token(&federated.id) || !is_token(&federated.thread) || federated.sender.is_empty() {
            return Err(wire("`id`, `thread` or `sender` is not well-formed"));
        }
        Ok((
            federated,
            signature(&signature_element.text)?,
            signed.as_str().to_owned(),
        ))
    }
}

/// Whether `signature` is `key`'s over `bytes`, strictly.
pub fn signed_by(key: &VerifyingKey, bytes: &[u8], signature: &Signature) -> bool {
    key.verify_strict(bytes, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SignedRecord {
        SignedRecord {
            id: id.into(),
            payload: "<payload id=\"x\"></payload>".into(),
            signature: "c2ln".into(),
        }
    }

    #[test]
    fn a_greeting_reads_back_and_its_signature_covers_the_statement() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let greeting = Greeting {
            role: Role::Welcome,
            origin: "a".repeat(64),
            destination: "b".repeat(64),
            key_id: "0123456789abcdef".into(),
            nonce: "n-1".into(),
            time_ms: 1_795_000_000_000,
        };
        let frame = greeting.frame(&key, &record("c1"), &record("l1"));
        let read = Greeting::read(&frame).unwrap();
        assert_eq!(read.greeting, greeting);
        assert_eq!(read.certificate, record("c1"));
        assert_eq!(read.link, record("l1"));
        assert!(signed_by(
            &key.verifying_key(),
            greeting.statement().as_bytes(),
            &read.signature
        ));
        let moved = Greeting {
            role: Role::Hello,
            ..greeting
        };
        assert!(!signed_by(
            &key.verifying_key(),
            moved.statement().as_bytes(),
            &read.signature
        ));
    }

    #[test]
    fn a_message_reads_back_with_the_bytes_its_signature_covers() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let payload = canonicalize(
            b"<calculate xmlns=\"urn:x\" b='1' a=\"&amp;\">2 &lt; 3</calculate>",
            &Limits::default(),
            &[],
        )
        .unwrap();
        let message = Federated {
            origin: "a".repeat(64),
            destination: "b".repeat(64),
            key_id: "0123456789abcdef".into(),
            id: "m-1".into(),
            time_ms: 7,
            thread: "t-1".into(),
            sender: "user:al & \"ice\"".into(),
            hops: 3,
            payload,
        };
        let frame = message.frame(&key).unwrap();
        let (read, signature, signed) =
            Federated::read(frame.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(read, message);
        assert!(signed_by(
            &key.verifying_key(),
            signed.as_bytes(),
            &signature
        ));
        // Whitespace between the envelope's elements is not signed; the
        // payload's content is.
        let spaced = frame.replace("<signature>", "\n  <signature>");
        let (_, signature, signed) =
            Federated::read(spaced.as_bytes(), &Limits::default()).unwrap();
        assert!(signed_by(
            &key.verifying_key(),
            signed.as_bytes(),
            &signature
        ));
        // A payload smuggled outside the signed element is refused, in
        // the signature or before the signed element.
        for smuggled in [
            frame.replace("</signature>", "<evil>rm</evil></signature>"),
            frame.replace(
                "<federation-message>",
                "<federation-message><signature>x</signature>",
            ),
        ] {
            assert!(Federated::read(smuggled.as_bytes(), &Limits::default()).is_err());
        }
        let changed = frame.replace("2 &lt; 3", "2 &lt; 4");
        let (_, signature, signed) =
            Federated::read(changed.as_bytes(), &Limits::default()).unwrap();
        assert!(!signed_by(
            &key.verifying_key(),
            signed.as_bytes(),
            &signature
        ));
    }

    #[test]
    fn revocations_read_back_and_nothing_else_passes_for_them() {
        let records = [record("r1"), record("r2")];
        let frame = revocations_frame(&records);
        match Frame::read(frame.as_bytes(), &Limits::default()).unwrap() {
            Frame::Revocations(read) => assert_eq!(read, records),
            other => panic!("expected revocations, got {other:?}"),
        }
        for bad in [
            "<federation-revocations/>".to_owned(),
            frame
                .replace("<revocation ", "<certificate ")
                .replace("</revocation>", "</certificate>"),
            format!(
                "<federation-revocations>{}</federation-revocations>",
                "<revocation id=\"r\" signature=\"\">AA==</revocation>".repeat(MAX_REVOCATIONS + 1)
            ),
        ] {
            assert!(
                Frame::read(bad.as_bytes(), &Limits::default()).is_err(),
                "{bad}"
            );
        }
    }
}
