//! Repairing dirty XML, the kind language models and hurried scripts write.
//!
//! Repaired, and each repair recorded for the `<huh>` note:
//!
//! - text before the first element or after the last one ("Sure! Here it
//!   is: `<calculate>…</calculate>` Hope this helps");
//! - a bare `&` (not starting a reference) and a bare `<` (followed by
//!   whitespace, a digit or `=`), which are escaped;
//! - unquoted attribute values (`<a b=c>`), which are quoted;
//! - elements still open at the end, which are closed;
//! - end tags that do not match: the open elements inside the one named
//!   are closed first, and an end tag matching no open element is dropped.
//!
//! Never repaired, always refused: DOCTYPE and entity declarations,
//! processing instructions, unterminated quotes, comments or CDATA
//! sections, attributes without a value, and whatever else would need a
//! guess. The repaired text goes through the same hardened canonicalizer
//! as clean input, so a repair can never smuggle in what it refuses.

use super::error::XmlError;
use super::limits::Limits;
use std::fmt;

/// One kind of repair, with how often it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Text before the first element was removed.
    JunkBeforeRoot,
    /// Text after or between top-level elements was removed.
    JunkAfterRoot,
    /// Bare `&` characters were escaped.
    BareAmpersand(usize),
    /// Bare `<` characters were escaped.
    BareLessThan(usize),
    /// An unquoted attribute value was quoted.
    UnquotedAttribute(String),
    /// An element still open at the end was closed.
    UnclosedElement(String),
    /// An element was closed because an end tag for its parent came first.
    MismatchedEndTag {
        /// The element that was closed.
        closed: String,
        /// The end tag that was found.
        found: String,
    },
    /// An end tag matching no open element was removed.
    StrayEndTag(String),
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::JunkBeforeRoot => write!(f, "removed text before the root element"),
            Repair::JunkAfterRoot => write!(f, "removed text after the root element"),
            Repair::BareAmpersand(1) => write!(f, "escaped a bare &"),
            Repair::BareAmpersand(n) => write!(f, "escaped {n} bare &"),
            Repair::BareLessThan(1) => write!(f, "escaped a bare <"),
            Repair::BareLessThan(n) => write!(f, "escaped {n} bare <"),
            Repair::UnquotedAttribute(name) => write!(f, "quoted the value of attribute {name}"),
            Repair::UnclosedElement(name) => write!(f, "closed unclosed element {name}"),
            Repair::MismatchedEndTag { closed, found } => {
                write!(f, "closed element {closed} before end tag {found}")
            }
            Repair::StrayEndTag(name) => write!(f, "removed end tag {name} that closed nothing"),
        }
    }
}

/// Whether an error from the strict pass is worth a repair attempt.
pub(crate) fn is_repairable(error: &XmlError) -> bool {
    matches!(error, XmlError::Malformed(_))
}

/// Most distinct repair notes kept; further ones of a new kind are dropped.
const MAX_NOTES: usize = 32;

struct Notes {
    list: Vec<Repair>,
    ampersands: usize,
    less_thans: usize,
}

impl Notes {
    fn add(&mut self, repair: Repair) {
        if self.list.len() < MAX_NOTES && !self.list.contains(&repair) {
            self.list.push(repair);
        }
    }

    fn finish(mut self) -> Vec<Repair> {
        if self.ampersands > 0 {
            self.list.insert(0, Repair::BareAmpersand(self.ampersands));
        }
        if self.less_thans > 0 {
            self.list.insert(0, Repair::BareLessThan(self.less_thans));
        }
        self.list
    }
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_alphanumeric() || matches!(c, '-' | '.' | '\u{B7}')
}

/// The length of the name at the start of `s` (0 when none).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if is_name_start(c) => {}
        _ => return 0,
    }
    chars
        .find(|&(_, c)| !is_name_char(c))
        .map_or(s.len(), |(i, _)| i)
}

/// Whether `s` (just after a `&`) starts a well-formed reference.
fn starts_reference(s: &str) -> bool {
    let body_end = match s.find(';') {
        Some(end) if end > 0 => end,
        _ => return false,
    };
    let body = &s[..body_end];
    if let Some(hex) = body.strip_prefix("#x") {
        !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
    } else if let Some(dec) = body.strip_prefix('#') {
        !dec.is_empty() && dec.bytes().all(|b| b.is_ascii_digit())
    } else {
        name_len(body) == body.len()
    }
}

/// Repairs `input`; returns the repaired text and what was repaired.
pub(crate) fn repair(input: &str, limits: &Limits) -> Result<(String, Vec<Repair>), XmlError> {
    let mut out = String::with_capacity(input.len() + 64);
    let mut notes = Notes {
        list: Vec::new(),
        ampersands: 0,
        less_thans: 0,
    };
    let mut stack: Vec<&str> = Vec::new();
    let mut seen_element = false;
    let mut rest = input;
    while !rest.is_empty() {
        if stack.is_empty() {
            // Outside any element: markup is kept, text is junk.
            let lt = rest.find('<').unwrap_or(rest.len());
            if !rest[..lt].trim().is_empty() {
                notes.add(if seen_element {
                    Repair::JunkAfterRoot
                } else {
                    Repair::JunkBeforeRoot
                });
            }
            rest = &rest[lt..];
            if rest.is_empty() {
                break;
            }
            if let Some(after) = copy_special(rest, &mut out)? {
                rest = after;
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').map_or(after.len(), |i| i + 1);
                notes.add(Repair::StrayEndTag(
                    after[..end].trim_end_matches('>').trim().to_owned(),
                ));
                rest = &after[end..];
            } else if name_len(&rest[1..]) > 0 {
                seen_element = true;
                rest = start_tag(rest, &mut out, &mut stack, &mut notes, limits)?;
            } else {
                notes.add(if seen_element {
                    Repair::JunkAfterRoot
                } else {
                    Repair::JunkBeforeRoot
                });
                rest = &rest[1..];
            }
            continue;
        }
        // Inside an element.
        let special = rest.find(['<', '&']).unwrap_or(rest.len());
        out.push_str(&rest[..special]);
        rest = &rest[special..];
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix('&') {
            if starts_reference(after) {
                out.push('&');
            } else {
                out.push_str("&amp;");
                notes.ampersands += 1;
            }
            rest = after;
        } else if let Some(after) = copy_special(rest, &mut out)? {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("</") {
            let close = after
                .find('>')
                .ok_or_else(|| XmlError::malformed("unterminated end tag"))?;
            let name = after[..close].trim();
            rest = &after[close + 1..];
            match stack.iter().rposition(|open| *open == name) {
                Some(index) => {
                    while stack.len() > index + 1 {
                        let closed = stack.pop().unwrap_or_default();
                        notes.add(Repair::MismatchedEndTag {
                            closed: closed.to_owned(),
                            found: name.to_owned(),
                        });
                        out.push_str("</");
                        out.push_str(closed);
                        out.push('>');
                    }
                    stack.pop();
                    out.push_str("</");
                    out.push_str(name);
                    out.push('>');
                }
                None => notes.add(Repair::StrayEndTag(name.to_owned())),
            }
        } else if name_len(&rest[1..]) > 0 {
            rest = start_tag(rest, &mut out, &mut stack, &mut notes, limits)?;
        } else if rest[1..]
            .starts_with(|c: char| c.is_whitespace() || c.is_ascii_digit() || c == '=')
        {
            out.push_str("&lt;");
            notes.less_thans += 1;
            rest = &rest[1..];
        } else {
            return Err(XmlError::malformed("a `<` that starts no markup"));
        }
    }
    while let Some(open) = stack.pop() {
        notes.add(Repair::UnclosedElement(open.to_owned()));
        out.push_str("</");
        out.push_str(open);
        out.push('>');
    }
    Ok((out, notes.finish()))
}

/// Copies a comment, CDATA section or processing instruction at the start
/// of `rest` unchanged (the strict pass judges it); refuses DOCTYPE and
/// declarations. Returns what follows, or `None` if `rest` starts none.
fn copy_special<'a>(rest: &'a str, out: &mut String) -> Result<Option<&'a str>, XmlError> {
    let (close, what) = if rest.starts_with("<!--") {
        ("-->", "comment")
    } else if rest.starts_with("<![CDATA[") {
        ("]]>", "CDATA section")
    } else if rest.starts_with("<?") {
        ("?>", "processing instruction")
    } else if rest.starts_with("<!DOCTYPE") || rest.starts_with("<!doctype") {
        return Err(XmlError::Doctype);
    } else if rest.starts_with("<!ENTITY") {
        return Err(XmlError::EntityDeclaration);
    } else if rest.starts_with("<!") {
        return Err(XmlError::malformed("markup declarations are not allowed"));
    } else {
        return Ok(None);
    };
    let end = rest[2..]
        .find(close)
        .map(|i| i + 2 + close.len())
        .ok_or_else(|| XmlError::malformed(format!("unterminated {what}")))?;
    out.push_str(&rest[..end]);
    Ok(Some(&rest[end..]))
}

/// Copies the start tag at the start of `rest`, quoting unquoted attribute
/// values. Returns what follows it.
fn start_tag<'a>(
    rest: &'a str,
    out: &mut String,
    stack: &mut Vec<&'a str>,
    notes: &mut Notes,
    limits: &Limits,
) -> Result<&'a str, XmlError> {
    let name_end = 1 + name_len(&rest[1..]);
    let name = &rest[1..name_end];
    out.push('<');
    out.push_str(name);
    let mut rest = &rest[name_end..];
    loop {
        let trimmed = rest.trim_start();
        let had_space = trimmed.len() < rest.len();
        rest = trimmed;
        if let Some(after) = rest.strip_prefix("/>") {
            out.push_str("/>");
            return Ok(after);
        }
        if let Some(after) = rest.strip_prefix('>') {
            out.push('>');
            if stack.len() > limits.max_depth {
                return Err(XmlError::TooDeep {
                    limit: limits.max_depth,
                });
            }
            stack.push(name);
            return Ok(after);
        }
        if rest.is_empty() {
            return Err(XmlError::malformed(format!(
                "start tag {name} is not closed"
            )));
        }
        let attribute_len = name_len(rest);
        if attribute_len == 0 || !had_space {
            return Err(XmlError::malformed(format!("malformed start tag {name}")));
        }
        let attribute = &rest[..attribute_len];
        rest = rest[attribute_len..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| XmlError::malformed(format!("attribute {attribute} has no value")))?
            .trim_start();
        out.push(' ');
        out.push_str(attribute);
        out.push('=');
        match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let end = rest[1..].find(quote).ok_or_else(|| {
                    XmlError::malformed(format!("unterminated value of {attribute}"))
                })?;
                out.push_str(&rest[..end + 2]);
                rest = &rest[end + 2..];
            }
            Some(_) => {
                let end = rest
                    .char_indices()
                    .find(|&(i, c)| c.is_whitespace() || c == '>' || rest[i..].starts_with("/>"))
                    .map_or(rest.len(), |(i, _)| i);
                let value = &rest[..end];
                if value.is_empty() {
                    return Err(XmlError::malformed(format!(
                        "attribute {attribute} has no value"
                    )));
                }
                out.push('"');
                for (i, c) in value.char_indices() {
                    match c {
                        '"' => out.push_str("&quot;"),
                        '<' => out.push_str("&lt;"),
                        '&' if !starts_reference(&value[i + 1..]) => out.push_str("&amp;"),
                        c => out.push(c),
                    }
                }
                out.push('"');
                notes.add(Repair::UnquotedAttribute(attribute.to_owned()));
                rest = &rest[end..];
            }
            None => {
                return Err(XmlError::malformed(format!(
                    "attribute {attribute} has no value"
                )))
            }
        }
    }
}
