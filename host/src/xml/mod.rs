//! The XML core: hardening, repair, exclusive canonical XML, and the
//! message envelope. It knows nothing of the network or of agents.
//!
//! Every message is read by one hardened pass before anything else looks at
//! it: input over the size limit, invalid UTF-8, a DOCTYPE or entity
//! declaration, a reference to an undeclared entity, a processing
//! instruction, nesting deeper than 64 or more than 1,024 attributes on an
//! element are refused with a typed [`XmlError`]. Nothing is ever expanded or
//! fetched, and memory stays a small multiple of the input.
//!
//! - [`canonicalize`] puts a whole document in W3C Exclusive XML
//!   Canonicalization 1.0 form (without comments), optionally with an
//!   InclusiveNamespaces PrefixList.
//! - [`canonicalize_subtree`] does the same for one element inside a
//!   document, which is what a signature covers.
//! - [`ingest`] is the bus's entry: it repairs what can safely be repaired
//!   ([`Repair`]), then canonicalizes each top-level element as a payload.
//! - [`Envelope`] reads and writes `<message><meta>…</meta>PAYLOAD</message>`.
//! - [`Element`] is a small tree of a canonical element, for the server's
//!   own reading of structured messages.
//!
//! A [`CanonicalXml`] can only be made here, so code that holds one never
//! checks it again.

mod c14n;
mod envelope;
mod error;
mod fast;
mod limits;
mod repair;
mod tag;
mod text;
mod tree;

pub use envelope::{write_envelope, Envelope};
pub use error::XmlError;
pub use limits::Limits;
pub use repair::Repair;
pub use tag::{Tag, RESERVED_TAGS};
pub use tree::Element;

use c14n::{Options, Shape};
use std::fmt;

/// One element in exclusive canonical form, with its root tag. Only this
/// module makes one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalXml {
    text: String,
    tag: Tag,
}

impl CanonicalXml {
    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The canonical text, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The root element's tag, in Clark notation.
    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// The value of the root element's attribute `qname` (as written, for
    /// example `user` or `p:id`), references resolved.
    pub fn root_attribute(&self, qname: &str) -> Option<String> {
        let mut reader = quick_xml::Reader::from_str(&self.text);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Start(start))
                | Ok(quick_xml::events::Event::Empty(start)) => {
                    return start.attributes().flatten().find_map(|attribute| {
                        (attribute.key.as_ref() == qname.as_bytes())
                            .then(|| std::str::from_utf8(&attribute.value).ok())
                            .flatten()
                            .and_then(|raw| text::attribute_value(raw).ok())
                    });
                }
                Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

impl fmt::Display for CanonicalXml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for CanonicalXml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalXml({})", self.text)
    }
}

/// Refuses input longer than the limit.
fn check_size(size: usize, limits: &Limits) -> Result<(), XmlError> {
    if size > limits.max_input_bytes {
        return Err(XmlError::TooLarge {
            size,
            limit: limits.max_input_bytes,
        });
    }
    Ok(())
}

/// The size and encoding checks that come before any parsing.
fn check_input<'i>(input: &'i [u8], limits: &Limits) -> Result<&'i str, XmlError> {
    check_size(input.len(), limits)?;
    let text = std::str::from_utf8(input).map_err(|_| XmlError::InvalidUtf8)?;
    // A byte order mark is encoding metadata, not content.
    Ok(text.strip_prefix('\u{FEFF}').unwrap_or(text))
}

/// Canonicalizes a whole document (exclusive C14N 1.0, without comments).
///
/// `inclusive_prefixes` is the InclusiveNamespaces PrefixList (`#default`
/// names the default namespace); pass `&[]` for none. Processing
/// instructions are kept as the specification says; everything else the
/// hardening refuses is refused.
pub fn canonicalize(
    input: &[u8],
    limits: &Limits,
    inclusive_prefixes: &[&str],
) -> Result<CanonicalXml, XmlError> {
    let text = check_input(input, limits)?;
    let options = Options {
        shape: Shape::Document,
        refuse_pis: false,
        inclusive_prefixes,
    };
    c14n::canonicalize(text, limits, options)?
        .pop()
        .ok_or_else(|| XmlError::malformed("no root element"))
}

/// Canonicalizes the subtree of the first element for which `select`
/// returns true, given the element's depth (the root is 0) and tag.
///
/// Namespaces declared on the element's ancestors are in scope, and are
/// written on the subtree's elements where they are visibly used, as
/// exclusive canonicalization of a document subset does. The rest of the
/// document must still be well-formed and pass the hardening.
pub fn canonicalize_subtree(
    input: &[u8],
    limits: &Limits,
    inclusive_prefixes: &[&str],
    mut select: impl FnMut(usize, &Tag) -> bool,
) -> Result<CanonicalXml, XmlError> {
    let text = check_input(input, limits)?;
    let options = Options {
        shape: Shape::Subtree(&mut select),
        refuse_pis: true,
        inclusive_prefixes,
    };
    c14n::canonicalize(text, limits, options)?
        .pop()
        .ok_or_else(|| XmlError::malformed("the selected element is not there"))
}

/// The payloads of one ingested message: nearly always one, kept inline.
pub type Payloads = smallvec::SmallVec<[CanonicalXml; 1]>;

/// What [`ingest`] made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Each top-level element, canonicalized on its own.
    pub payloads: Payloads,
    /// What was repaired to get there (empty for clean input).
    pub repairs: Vec<Repair>,
}

/// The bus's entry for one message: size and UTF-8 checks, hardening,
/// repair of what is safe to repair, then exclusive C14N of each top-level
/// element. Processing instructions are refused.
pub fn ingest(input: &[u8], limits: &Limits) -> Result<Ingested, XmlError> {
    let text = check_input(input, limits)?;
    if let Some(root) = fast::simple_root(text, limits) {
        return Ok(Ingested::one(text.to_owned(), root));
    }
    ingest_in_full(text, limits)
}

/// [`ingest`] of text the caller gives up: a message already in canonical
/// form becomes its payload without being copied (what an agent emits
/// usually is).
pub fn ingest_owned(text: String, limits: &Limits) -> Result<Ingested, XmlError> {
    check_size(text.len(), limits)?;
    if let Some(root) = fast::simple_root(&text, limits) {
        return Ok(Ingested::one(text, root));
    }
    ingest_in_full(check_input(text.as_bytes(), limits)?, limits)
}

impl Ingested {
    /// `text`, already canonical, as the one payload, its root element's
    /// name at `root`.
    fn one(text: String, root: std::ops::Range<usize>) -> Ingested {
        let tag = Tag::recent(&text[root]);
        Ingested {
            payloads: smallvec::smallvec![CanonicalXml { text, tag }],
            repairs: Vec::new(),
        }
    }
}

/// [`ingest`] past its fast path: the full canonicalizer, and repair.
fn ingest_in_full(text: &str, limits: &Limits) -> Result<Ingested, XmlError> {
    let strict = |text: &str| {
        c14n::canonicalize(
            text,
            limits,
            Options {
                shape: Shape::Fragments,
                refuse_pis: true,
                inclusive_prefixes: &[],
            },
        )
    };
    let first_error = match strict(text) {
        Ok(payloads) if !payloads.is_empty() => {
            return Ok(Ingested {
                payloads: payloads.into(),
                repairs: Vec::new(),
            })
        }
        Ok(_) => XmlError::malformed("no element"),
        Err(error) => error,
    };
    if !repair::is_repairable(&first_error) {
        return Err(first_error);
    }
    let (repaired, repairs) = repair::repair(text, limits)?;
    if repairs.is_empty() {
        return Err(first_error);
    }
    let payloads = strict(&repaired)?;
    if payloads.is_empty() {
        return Err(XmlError::malformed("no element"));
    }
    Ok(Ingested {
        payloads: payloads.into(),
        repairs,
    })
}

/// Appends `value` to `out` escaped as exclusive C14N writes an attribute
/// value (`&`, `<`, `"`, tab, newline and carriage return as references).
pub fn escape_attribute(out: &mut String, value: &str) {
    let needs = |byte: u8| matches!(byte, b'&' | b'<' | b'"' | b'\t' | b'\n' | b'\r');
    if !text::any_byte(value, needs) {
        out.push_str(value);
        return;
    }
    escape(out, value, |byte| match byte {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#x9;"),
        b'\n' => Some("&#xA;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

/// Appends `text` to `out` escaped as exclusive C14N writes character data
/// (`&`, `<`, `>` and carriage return as references).
pub fn escape_text(out: &mut String, text: &str) {
    let needs = |byte: u8| matches!(byte, b'&' | b'<' | b'>' | b'\r');
    if !text::any_byte(text, needs) {
        out.push_str(text);
        return;
    }
    escape(out, text, |byte| match byte {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

/// Appends `text` to `out` with each byte `reference` names replaced, and
/// the runs between them copied whole. Only ASCII bytes are ever replaced,
/// so every run ends on a character boundary.
fn escape(out: &mut String, text: &str, reference: impl Fn(u8) -> Option<&'static str>) {
    let mut run = 0;
    for (at, byte) in text.bytes().enumerate() {
        if let Some(replacement) = reference(byte) {
            out.push_str(&text[run..at]);
            out.push_str(replacement);
            run = at + 1;
        }
    }
    out.push_str(&text[run..]);
}
