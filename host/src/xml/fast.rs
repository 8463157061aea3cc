//! The fast path of [`ingest`](super::ingest): a message that already is
//! one element in exclusive canonical form, in its simplest shape, is
//! recognized in one pass over its bytes and kept as it is.
//!
//! The shape: start and end tags with plain names (`<name>`, `</name>`; no
//! attributes, no namespace prefixes, no `<name/>`), and text of printable
//! ASCII, tab and newline without `<`, `>` or `&`, nothing before or after
//! the element, nesting within the depth limit. Such input has no
//! declarations, references, comments or processing instructions to
//! harden against, and its exclusive canonical form is itself — so the
//! answer is exactly what the full canonicalizer gives, for much less work.
//! Anything else (a `>` in text, an attribute, one non-ASCII byte) returns
//! `None` and takes the full path.

use super::Limits;
use std::ops::Range;

/// Elements open at once that this path follows; deeper input takes the
/// full path.
const MAX_OPEN: usize = 64;

/// Where the root element's name is in `text`, if `text` has the simple
/// shape above (and so is its own canonical form).
pub(super) fn simple_root(text: &str, limits: &Limits) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    // The names of the open elements, as ranges of `bytes`.
    let mut open = [(0usize, 0usize); MAX_OPEN];
    let mut depth = 0usize;
    let mut root: Option<(usize, usize)> = None;
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'<' {
            // Text is only allowed inside the element.
            if depth == 0 {
                return None;
            }
            at += plain_text_length(&bytes[at..]);
            if at < bytes.len() && bytes[at] != b'<' {
                return None;
            }
            continue;
        }
        let closing = bytes.get(at + 1) == Some(&b'/');
        let name_start = at + 1 + usize::from(closing);
        let name_end = name_start + name_length(&bytes[name_start..])?;
        if bytes.get(name_end) != Some(&b'>') {
            return None;
        }
        let name = (name_start, name_end);
        if closing {
            depth = depth.checked_sub(1)?;
            let (start, end) = open[depth];
            if bytes[start..end] != bytes[name_start..name_end] {
                return None;
            }
        } else {
            // One root element, within the depth limit.
            if depth == 0 && root.is_some() || depth >= limits.max_depth.min(MAX_OPEN) {
                return None;
            }
            if depth == 0 {
                root = Some(name);
            }
            open[depth] = name;
            depth += 1;
        }
        at = name_end + 1;
    }
    let (start, end) = root?;
    (depth == 0).then_some(start..end)
}

/// How many bytes `bytes` starts with that [`PLAIN_TEXT`] keeps. Whole
/// blocks are checked first without an early exit, which the compiler
/// turns into vector instructions; text is mostly plain.
fn plain_text_length(bytes: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let plain = |byte: u8| {
        (byte.wrapping_sub(b' ') < (b'~' - b' ' + 1) && !matches!(byte, b'<' | b'>' | b'&'))
            || byte == b'\t'
            || byte == b'\n'
    };
    let mut length = 0;
    for block in bytes.chunks_exact(BLOCK) {
        if !block.iter().fold(true, |all, &byte| all & plain(byte)) {
            break;
        }
        length += BLOCK;
    }
    length
        + bytes[length..]
            .iter()
            .position(|&byte| !PLAIN_TEXT[usize::from(byte)])
            .unwrap_or(bytes.len() - length)
}

/// The bytes canonical text keeps as they are, in the ASCII this path
/// takes: printable ASCII, tab and newline, but not `<`, `>` or `&`.
const PLAIN_TEXT: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = b' ';
    while byte <= b'~' {
        table[byte as usize] = !matches!(byte, b'<' | b'>' | b'&');
        byte += 1;
    }
    table[b'\t' as usize] = true;
    table[b'\n' as usize] = true;
    table
};

/// The length of the plain name `bytes` starts with: an ASCII letter or
/// `_`, then letters, digits, `_`, `-` and `.`; `None` if there is none.
fn name_length(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let length = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
        .unwrap_or(bytes.len());
    Some(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{ingest, ingest_owned, CanonicalXml, Ingested};

    /// `text` as its own payload, if it takes this path.
    fn already_canonical(text: &str, limits: &Limits) -> Option<CanonicalXml> {
        let root = simple_root(text, limits)?;
        Some(Ingested::one(text.to_owned(), root).payloads.remove(0))
    }

    #[test]
    fn owned_text_is_ingested_as_borrowed_text_is() {
        let limits = Limits {
            max_input_bytes: 64,
            ..Limits::default()
        };
        for text in [
            "<echo>hello, agent</echo>",
            "\u{FEFF}<echo>after a byte order mark</echo>",
            "<a x='1'>fish &amp; chips</a>",
            "<a>unclosed",
            "<a></a><b></b>",
            "<?pi?><a></a>",
            "",
            "<a>far too long for the limit set here, which is sixty-four bytes</a>",
        ] {
            let borrowed = ingest(text.as_bytes(), &limits);
            let owned = ingest_owned(text.to_owned(), &limits);
            match (borrowed, owned) {
                (Ok(borrowed), Ok(owned)) => {
                    assert_eq!(borrowed.payloads, owned.payloads, "{text:?}");
                    assert_eq!(borrowed.repairs, owned.repairs, "{text:?}");
                }
                (Err(borrowed), Err(owned)) => {
                    assert_eq!(borrowed.to_string(), owned.to_string(), "{text:?}")
                }
                (borrowed, owned) => panic!("{text:?}: {borrowed:?} but {owned:?}"),
            }
        }
    }

    /// What the full path makes of `text`: its one payload, if it is clean
    /// and has exactly one.
    fn full_path(text: &str, limits: &Limits) -> Option<CanonicalXml> {
        let options = super::super::c14n::Options {
            shape: super::super::c14n::Shape::Fragments,
            refuse_pis: true,
            inclusive_prefixes: &[],
        };
        let mut payloads = super::super::c14n::canonicalize(text, limits, options).ok()?;
        (payloads.len() == 1).then(|| payloads.remove(0))
    }

    #[test]
    fn simple_canonical_messages_take_the_fast_path() {
        let limits = Limits::default();
        for text in [
            "<echo>hello, agent</echo>",
            "<a></a>",
            "<square-sum><n>1</n><n>2</n></square-sum>",
            "<message><meta><thread>3f2a</thread></meta><calculate>2 + 3 * 4</calculate></message>",
            "<x.y_z-1>\ttabs\nand \"quotes\" 'too'</x.y_z-1>",
        ] {
            let fast = already_canonical(text, &limits).expect(text);
            assert_eq!(Some(&fast), full_path(text, &limits).as_ref(), "{text}");
            assert_eq!(
                &ingest(text.as_bytes(), &limits).unwrap().payloads[..],
                [fast]
            );
        }
    }

    #[test]
    fn plain_text_ends_where_the_table_says_at_any_position() {
        let by_table = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&byte| !PLAIN_TEXT[usize::from(byte)])
                .unwrap_or(bytes.len())
        };
        for length in [0, 1, 31, 32, 33, 64, 100] {
            let plain = "ab\tc\nd e".repeat(20)[..length].to_owned();
            assert_eq!(plain_text_length(plain.as_bytes()), length);
            for stop in ["<", ">", "&", "\r", "\u{7f}", "\u{e9}", "\0"] {
                for at in 0..=length {
                    let text = format!("{}{stop}{}", &plain[..at], &plain[at..]);
                    assert_eq!(
                        plain_text_length(text.as_bytes()),
                        by_table(text.as_bytes()),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn deep_nesting_past_what_this_path_follows_is_left_to_the_full_path() {
        let limits = Limits {
            max_depth: MAX_OPEN + 10,
            ..Limits::default()
        };
        let nested = |depth: usize| format!("{}x{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert!(already_canonical(&nested(MAX_OPEN), &limits).is_some());
        let deeper = nested(MAX_OPEN + 1);
        assert!(already_canonical(&deeper, &limits).is_none());
        assert_eq!(
            &ingest(deeper.as_bytes(), &limits).unwrap().payloads[..],
            [full_path(&deeper, &limits).unwrap()]
        );
    }

    #[test]
    fn anything_else_takes_the_full_path() {
        let limits = Limits::default();
        for text in [
            "",
            " <a></a>",
            "<a></a> ",
            "<a></a><b></b>",
            "<a/>",
            "<a x=\"1\"></a>",
            "<a >x</a>",
            "<p:a xmlns:p=\"urn:p\"></p:a>",
            "<a>1 > 0</a>",
            "<a>fish &amp; chips</a>",
            "<a>carriage\rreturn</a>",
            "<a>caf\u{e9}</a>",
            "<a><!-- c --></a>",
            "<a><![CDATA[x]]></a>",
            "<a><?pi x?></a>",
            "<a></b>",
            "<a><b></a></b>",
            "<a>",
            "</a>",
            "text",
            "<1a></1a>",
            "<a>\u{1}</a>",
        ] {
            assert_eq!(already_canonical(text, &limits), None, "{text:?}");
        }
    }

    #[test]
    fn the_depth_limit_is_left_to_the_full_path() {
        let limits = Limits::default();
        let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert!(already_canonical(&nested(limits.max_depth), &limits).is_some());
        assert_eq!(
            already_canonical(&nested(limits.max_depth + 1), &limits),
            None
        );
        assert!(ingest(nested(limits.max_depth + 1).as_bytes(), &limits).is_err());
    }

    /// Random documents and near misses: whenever the fast path answers,
    /// the full path gives exactly the same payload.
    #[test]
    fn the_fast_path_agrees_with_the_full_path() {
        let limits = Limits {
            max_depth: 6,
            ..Limits::default()
        };
        let seed = std::cell::Cell::new(0x2545_f491_4f6c_dd1d_u64);
        let next = |n: usize| {
            let mut x = seed.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seed.set(x);
            (x % n as u64) as usize
        };
        const NAMES: &[&str] = &["a", "b", "n", "x-1", "_y.z", "message"];
        const PLAIN: &[&str] = &["", "hi", " 2 + 3 ", "\t\n", "\"'"];
        const ODD: &[&str] = &[">", "&", "&amp;", "\r", "é", "]]>", "\u{1}"];
        const JUNK: &[&str] = &["<", ">", "/", " ", "<a/>", "<a x='1'>", "<!--c-->", "</a>"];
        let (mut fast, mut total) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::new();
            let depth = 1 + next(8);
            let some_text = || match next(20) {
                0 => ODD[next(ODD.len())],
                _ => PLAIN[next(PLAIN.len())],
            };
            let mut stack = Vec::new();
            for _ in 0..depth {
                let name = NAMES[next(NAMES.len())];
                text.push_str(&format!("<{name}>{}", some_text()));
                stack.push(name);
            }
            while let Some(name) = stack.pop() {
                text.push_str(&format!("{}</{name}>", some_text()));
            }
            if next(4) == 0 {
                let at = next(text.len() + 1);
                if text.is_char_boundary(at) {
                    text.insert_str(at, JUNK[next(JUNK.len())]);
                }
            }
            total += 1;
            if let Some(payload) = already_canonical(&text, &limits) {
                fast += 1;
                assert_eq!(Some(payload), full_path(&text, &limits), "{text:?}");
            }
        }
        // Both paths were exercised.
        assert!(fast > total / 10 && fast < total, "{fast} of {total}");
    }
}
