//! The message envelope: `<message><meta>…</meta>PAYLOAD</message>`.
//!
//! The server writes every frame it delivers in this envelope, and a client
//! uses it to continue a thread. Building escapes every field, so no value
//! can turn into markup; parsing takes the payload out as its own canonical
//! document, carrying in the namespace declarations it uses from
//! `<message>`.

use super::c14n::split_qname;
use super::error::XmlError;
use super::limits::Limits;
use super::tag::Tag;
use super::text;
use super::{canonicalize_subtree, CanonicalXml};
use quick_xml::events::Event;
use quick_xml::Reader;

/// A message and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Who sent it (`user:NAME` or an agent's name); set by the server.
    pub from: Option<String>,
    /// Informational addressee; the server ignores what clients write here.
    pub to: Option<String>,
    /// The thread it belongs to.
    pub thread: Option<String>,
    /// What was repaired on the way, one note per entry.
    pub huh: Vec<String>,
    /// The payload.
    pub payload: CanonicalXml,
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
    text::push_text(out, value);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

/// The canonical text of an envelope with these fields, written straight
/// from borrowed parts (what [`Envelope::to_xml`] gives, without making an
/// [`Envelope`] first).
pub fn write_envelope(
    from: Option<&str>,
    to: Option<&str>,
    thread: Option<&str>,
    huh: &[String],
    payload: &CanonicalXml,
) -> String {
    let mut out = Vec::with_capacity(payload.as_str().len() + 128);
    out.extend_from_slice(b"<message><meta>");
    for (name, value) in [("from", from), ("to", to), ("thread", thread)] {
        if let Some(value) = value {
            push_field(&mut out, name, value);
        }
    }
    for note in huh {
        push_field(&mut out, "huh", note);
    }
    out.extend_from_slice(b"</meta>");
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"</message>");
    // Every piece is valid UTF-8 and the escaping keeps it so.
    String::from_utf8(out).unwrap_or_default()
}

impl Envelope {
    /// The envelope in canonical form.
    pub fn to_xml(&self) -> CanonicalXml {
        CanonicalXml {
            text: write_envelope(
                self.from.as_deref(),
                self.to.as_deref(),
                self.thread.as_deref(),
                &self.huh,
                &self.payload,
            ),
            tag: Tag::new("message"),
        }
    }

    /// Reads a `<message>`: its `<meta>` fields and its one payload element.
    pub fn parse(message: &CanonicalXml) -> Result<Envelope, XmlError> {
        if message.tag().as_str() != "message" {
            return Err(XmlError::malformed("not a <message>"));
        }
        let mut fields = Fields::default();
        let mut reader = Reader::from_str(message.as_str());
        let mut depth = 0usize;
        let mut in_meta = false;
        let mut field: Option<String> = None;
        let mut value = String::new();
        let mut payloads = 0usize;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| XmlError::malformed(e.to_string()))?;
            match event {
                Event::Start(start) => {
                    depth += 1;
                    let qname = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    match depth {
                        2 if qname == "meta" => in_meta = true,
                        2 => payloads += 1,
                        3 if in_meta => {
                            field = Some(split_qname(&qname).1.to_owned());
                            value.clear();
                        }
                        _ => {}
                    }
                }
                Event::Empty(start) => {
                    let qname = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    match depth + 1 {
                        2 if qname == "meta" => {}
                        2 => payloads += 1,
                        3 if in_meta => fields.store(split_qname(&qname).1, String::new()),
                        _ => {}
                    }
                }
                Event::End(_) => {
                    match depth {
                        3 if in_meta => {
                            if let Some(name) = field.take() {
                                fields.store(&name, std::mem::take(&mut value));
                            }
                        }
                        2 => in_meta = false,
                        _ => {}
                    }
                    depth = depth.saturating_sub(1);
                }
                Event::Text(t) if depth == 3 && field.is_some() => {
                    value.push_str(&String::from_utf8_lossy(t.as_ref()));
                }
                Event::GeneralRef(r) if depth == 3 && field.is_some() => {
                    value.push(text::resolve_reference(&String::from_utf8_lossy(
                        r.as_ref(),
                    ))?);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if payloads != 1 {
            return Err(XmlError::malformed(
                "a <message> holds exactly one payload element besides <meta>",
            ));
        }
        let limits = Limits {
            max_input_bytes: message.as_bytes().len(),
            ..Limits::default()
        };
        let payload = canonicalize_subtree(message.as_bytes(), &limits, &[], |depth, tag| {
            depth == 1 && tag.as_str() != "meta"
        })?;
        Ok(Envelope {
            from: fields.from,
            to: fields.to,
            thread: fields.thread,
            huh: fields.huh,
            payload,
        })
    }
}

#[derive(Default)]
struct Fields {
    from: Option<String>,
    to: Option<String>,
    thread: Option<String>,
    huh: Vec<String>,
}

impl Fields {
    fn store(&mut self, name: &str, value: String) {
        match name {
            "from" => self.from = Some(value),
            "to" => self.to = Some(value),
            "thread" => self.thread = Some(value),
            "huh" => self.huh.push(value),
            _ => {}
        }
    }
}
