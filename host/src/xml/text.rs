//! Character-level rules: which characters and names XML allows, how
//! references resolve, and how canonical XML escapes text and attributes.

use super::error::XmlError;

/// Checks that `input` holds only characters XML 1.0 allows (no control
/// characters but tab, newline and carriage return; no U+FFFE or U+FFFF).
pub(crate) fn check_chars(input: &str) -> Result<(), XmlError> {
    let bytes = input.as_bytes();
    // Fast path: one pass over the bytes; U+FFFE/U+FFFF are EF BF BE/BF.
    for (i, &b) in bytes.iter().enumerate() {
        if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
            return Err(XmlError::malformed(format!(
                "character U+{b:04X} is not allowed in XML"
            )));
        }
        if b == 0xEF
            && bytes.get(i + 1) == Some(&0xBF)
            && matches!(bytes.get(i + 2), Some(0xBE | 0xBF))
        {
            return Err(XmlError::malformed(
                "characters U+FFFE and U+FFFF are not allowed in XML",
            ));
        }
    }
    Ok(())
}

/// Whether `c` is an XML 1.0 `Char`.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z' | '_' | ':'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Whether `name` is an XML `Name`.
pub(crate) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// Whether `name` is a namespace-well-formed qualified name (`local` or
/// `prefix:local`, neither part empty nor holding another colon).
pub(crate) fn is_qname(name: &str) -> bool {
    if !is_name(name) {
        return false;
    }
    match name.split_once(':') {
        None => true,
        Some((prefix, local)) => !prefix.is_empty() && !local.is_empty() && !local.contains(':'),
    }
}

/// The character a reference body (`amp`, `#38`, `#x26`) stands for.
pub(crate) fn resolve_reference(body: &str) -> Result<char, XmlError> {
    let code = if let Some(hex) = body.strip_prefix("#x") {
        u32::from_str_radix(hex, 16)
            .ok()
            .filter(|_| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    } else if let Some(dec) = body.strip_prefix('#') {
        dec.parse::<u32>()
            .ok()
            .filter(|_| dec.bytes().all(|b| b.is_ascii_digit()))
    } else {
        return match body {
            "amp" => Ok('&'),
            "lt" => Ok('<'),
            "gt" => Ok('>'),
            "quot" => Ok('"'),
            "apos" => Ok('\''),
            _ if is_name(body) => Err(XmlError::UndeclaredEntity(body.to_owned())),
            _ => Err(XmlError::malformed("malformed reference")),
        };
    };
    code.and_then(char::from_u32)
        .filter(|&c| is_xml_char(c))
        .ok_or_else(|| XmlError::malformed("character reference to a character XML does not allow"))
}

/// Whether any byte of `text` is one `needs` picks, looked for a block of
/// bytes at a time without an early exit, so that the compiler checks each
/// block with vector instructions. Most values need no escaping, and this
/// is then the whole cost of writing them.
pub(crate) fn any_byte(text: &str, needs: impl Fn(u8) -> bool) -> bool {
    const BLOCK: usize = 32;
    let mut blocks = text.as_bytes().chunks_exact(BLOCK);
    for block in blocks.by_ref() {
        if block.iter().fold(false, |found, &byte| found | needs(byte)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&byte| needs(byte))
}

/// Appends `text` (already free of references) with line ends normalized
/// (`\r\n` and lone `\r` become `\n`), escaped as canonical character data.
pub(crate) fn push_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if !any_byte(text, |byte| matches!(byte, b'&' | b'<' | b'>' | b'\r')) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let replacement: &[u8] = match bytes[i] {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => {
                out.extend_from_slice(&bytes[start..i]);
                out.push(b'\n');
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(replacement);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends one character that came from a reference, escaped as canonical
/// character data (a `\r` from `&#xD;` stays a `\r`, written `&#xD;`).
pub(crate) fn push_text_char(out: &mut Vec<u8>, c: char) {
    match c {
        '&' => out.extend_from_slice(b"&amp;"),
        '<' => out.extend_from_slice(b"&lt;"),
        '>' => out.extend_from_slice(b"&gt;"),
        '\r' => out.extend_from_slice(b"&#xD;"),
        c => {
            let mut buffer = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
        }
    }
}

/// Appends a raw attribute value (as between its quotes in the input),
/// normalized as a conforming parser does (references resolved, literal
/// whitespace turned into spaces) and escaped as canonical XML writes it.
pub(crate) fn push_attribute_value(out: &mut Vec<u8>, raw: &str) -> Result<(), XmlError> {
    let bytes = raw.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'&' => {
                out.extend_from_slice(&bytes[start..i]);
                let end = raw[i..]
                    .find(';')
                    .ok_or_else(|| XmlError::malformed("unterminated reference in an attribute"))?;
                let c = resolve_reference(&raw[i + 1..i + end])?;
                push_attribute_char(out, c);
                i += end + 1;
                start = i;
            }
            b'<' => return Err(XmlError::malformed("`<` in an attribute value")),
            b'\r' => {
                out.extend_from_slice(&bytes[start..i]);
                out.push(b' ');
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            b'\t' | b'\n' => {
                out.extend_from_slice(&bytes[start..i]);
                out.push(b' ');
                i += 1;
                start = i;
            }
            b'"' => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"&quot;");
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.extend_from_slice(&bytes[start..]);
    Ok(())
}

fn push_attribute_char(out: &mut Vec<u8>, c: char) {
    match c {
        '&' => out.extend_from_slice(b"&amp;"),
        '<' => out.extend_from_slice(b"&lt;"),
        '"' => out.extend_from_slice(b"&quot;"),
        '\t' => out.extend_from_slice(b"&#x9;"),
        '\n' => out.extend_from_slice(b"&#xA;"),
        '\r' => out.extend_from_slice(b"&#xD;"),
        c => {
            let mut buffer = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
        }
    }
}

/// The normalized value of a raw attribute value, unescaped (for namespace
/// URIs and for reading attributes).
pub(crate) fn attribute_value(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\r', '\t', '\n']) {
        out.push_str(&rest[..i]);
        match rest.as_bytes()[i] {
            b'&' => {
                let end = rest[i..]
                    .find(';')
                    .ok_or_else(|| XmlError::malformed("unterminated reference in an attribute"))?;
                out.push(resolve_reference(&rest[i + 1..i + end])?);
                rest = &rest[i + end + 1..];
            }
            b'<' => return Err(XmlError::malformed("`<` in an attribute value")),
            b'\r' => {
                out.push(' ');
                rest = rest[i + 1..].strip_prefix('\n').unwrap_or(&rest[i + 1..]);
            }
            _ => {
                out.push(' ');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Appends an attribute value that is already normalized text, escaped.
pub(crate) fn push_escaped_attribute(out: &mut Vec<u8>, value: &str) {
    for c in value.chars() {
        push_attribute_char(out, c);
    }
}

#[cfg(test)]
mod tests {
    use super::any_byte;
    use crate::xml::{escape_attribute, escape_text};

    /// What escaping must give: every byte looked at one by one.
    fn escaped_by_hand(text: &str, attribute: bool) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' if !attribute => out.push_str("&gt;"),
                '"' if attribute => out.push_str("&quot;"),
                '\t' if attribute => out.push_str("&#x9;"),
                '\n' if attribute => out.push_str("&#xA;"),
                '\r' => out.push_str("&#xD;"),
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn a_byte_to_escape_is_found_wherever_it_is() {
        for length in [0, 1, 15, 16, 17, 31, 32, 33, 70] {
            let plain: String = "abc é-1 ".chars().cycle().take(length).collect();
            let needs = |byte: u8| byte == b'&';
            assert!(!any_byte(&plain, needs), "{plain:?}");
            let chars: Vec<char> = plain.chars().collect();
            for at in 0..=chars.len() {
                for special in ['&', '<', '>', '"', '\t', '\n', '\r'] {
                    let mut text: String = chars[..at].iter().collect();
                    text.push(special);
                    text.extend(&chars[at..]);
                    assert_eq!(any_byte(&text, needs), special == '&', "{text:?}");
                    for attribute in [false, true] {
                        let mut out = String::from("x");
                        if attribute {
                            escape_attribute(&mut out, &text);
                        } else {
                            escape_text(&mut out, &text);
                        }
                        assert_eq!(out, format!("x{}", escaped_by_hand(&text, attribute)));
                    }
                }
            }
        }
    }
}
