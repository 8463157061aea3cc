//! One audit entry, its canonical bytes, and the hash chain over them.
//!
//! An entry's canonical form is an XML element with its metadata as
//! attributes in canonical (sorted) order and the message's canonical bytes
//! as its content:
//!
//! ```text
//! <audit-entry depth="0" from="user:alice" kind="message" n="7" session="…" tag="echo" thread="…" time="1795521600123"><echo>hi</echo></audit-entry>
//! ```
//!
//! and `hash_n = SHA-256(hash_{n-1} || canonical entry n)`, with
//! `hash_0` = 32 zero bytes before the first entry.

use crate::bus::{AuditKind, AuditRecord};
use crate::xml::escape_attribute;
use sha2::{Digest as _, Sha256};

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// An entry as stored: its number, canonical bytes and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The canonical entry.
    pub entry: String,
    /// `hash_seq`, hex.
    pub hash: String,
}

/// A stored hex hash back to its 32 bytes.
pub fn decode_hash(hash: &str) -> Result<[u8; 32], crate::privileged::StoreError> {
    hex::decode(hash)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            crate::privileged::StoreError(format!("stored hash {hash:?} is not 32 bytes of hex"))
        })
}

/// A hash as stored: 64 lowercase hex digits.
pub fn encode_hash(hash: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(hash) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Hex digits are ASCII.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// The name an audit kind has in the log.
pub fn kind_name(kind: AuditKind) -> &'static str {
    match kind {
        AuditKind::Message => "message",
        AuditKind::Refusal => "refusal",
        AuditKind::Privileged => "privileged",
        AuditKind::Auth => "auth",
        AuditKind::Capability => "capability",
        AuditKind::Checkpoint => "checkpoint",
    }
}

/// The canonical entry number `seq` for `record`, made at `time_ms`.
pub fn canonical_entry(seq: u64, time_ms: u64, record: &AuditRecord<'_>) -> String {
    let mut out = String::with_capacity(record.canonical.len() + 256);
    // Numbers need no escaping.
    out.push_str("<audit-entry depth=\"");
    push_decimal(&mut out, u64::from(record.depth));
    out.push_str("\" from=\"");
    escape_attribute(&mut out, record.from);
    out.push_str("\" kind=\"");
    out.push_str(kind_name(record.kind));
    out.push_str("\" n=\"");
    push_decimal(&mut out, seq);
    out.push_str("\" session=\"");
    escape_attribute(&mut out, record.session.as_str());
    out.push_str("\" tag=\"");
    escape_attribute(&mut out, record.tag);
    if let Some(thread) = record.thread {
        out.push_str("\" thread=\"");
        escape_attribute(&mut out, thread.as_str());
    }
    out.push_str("\" time=\"");
    push_decimal(&mut out, time_ms);
    out.push_str("\">");
    out.push_str(record.canonical);
    out.push_str("</audit-entry>");
    out
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Decimal digits are ASCII.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// `SHA-256(previous || entry)`.
pub fn chain(previous: &[u8; 32], entry: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(entry.as_bytes());
    hasher.finalize().into()
}

/// The value of attribute `name` on the entry's start tag, as written
/// (still escaped).
pub fn entry_attribute<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    let start_tag = &entry[..entry.find('>')?];
    let needle = format!(" {name}=\"");
    let at = start_tag.find(&needle)? + needle.len();
    let rest = &start_tag[at..];
    Some(&rest[..rest.find('"')?])
}

/// The message inside an entry.
pub fn entry_content(entry: &str) -> Option<&str> {
    let start = entry.find('>')? + 1;
    let end = entry.rfind("</audit-entry>")?;
    entry.get(start..end)
}

/// Why the chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry's hash is not what its bytes and the previous hash give.
    #[error(
        "audit entry {seq} is broken: its hash does not match its contents and the previous entry"
    )]
    Broken {
        /// The first broken entry.
        seq: u64,
    },
    /// Entries are missing or out of order.
    #[error("audit entry {found} follows entry {previous}: entries are missing or out of order")]
    Gap {
        /// The entry before.
        previous: u64,
        /// The entry found.
        found: u64,
    },
    /// An entry's number inside its bytes is not its position.
    #[error("audit entry {seq} says it is entry {claimed}")]
    Renumbered {
        /// Its position.
        seq: u64,
        /// What its bytes say.
        claimed: String,
    },
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked.
    pub count: u64,
    /// The last entry's hash, hex (the genesis hash when empty).
    pub head: String,
}

/// Checks `entries` (in order, starting at `first_previous` as the hash
/// before the first of them) and returns the count and head.
pub fn verify(
    entries: impl IntoIterator<Item = StoredEntry>,
    first_previous: [u8; 32],
) -> Result<Verified, ChainError> {
    let mut previous = first_previous;
    let mut last_seq: Option<u64> = None;
    let mut count = 0;
    for stored in entries {
        if let Some(last) = last_seq {
            if stored.seq != last + 1 {
                return Err(ChainError::Gap {
                    previous: last,
                    found: stored.seq,
                });
            }
        }
        let claimed = entry_attribute(&stored.entry, "n").unwrap_or_default();
        if claimed != stored.seq.to_string() {
            return Err(ChainError::Renumbered {
                seq: stored.seq,
                claimed: claimed.to_owned(),
            });
        }
        let hash = chain(&previous, &stored.entry);
        if encode_hash(&hash) != stored.hash {
            return Err(ChainError::Broken { seq: stored.seq });
        }
        previous = hash;
        last_seq = Some(stored.seq);
        count += 1;
    }
    Ok(Verified {
        count,
        head: encode_hash(&previous),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{SessionId, ThreadId};

    fn entries(n: u64) -> Vec<StoredEntry> {
        let session = SessionId::from_string("s1");
        let thread = ThreadId::from_client("t1");
        let mut previous = GENESIS;
        (1..=n)
            .map(|seq| {
                let record = AuditRecord {
                    kind: AuditKind::Message,
                    thread: Some(&thread),
                    session: &session,
                    from: "user:a&b",
                    tag: "echo",
                    depth: 0,
                    canonical: "<echo>hi</echo>",
                };
                let entry = canonical_entry(seq, 1_000 + seq, &record);
                previous = chain(&previous, &entry);
                StoredEntry {
                    seq,
                    entry,
                    hash: hex::encode(previous),
                }
            })
            .collect()
    }

    #[test]
    fn numbers_and_hashes_are_written_as_std_and_hex_write_them() {
        for n in [0, 7, 10, 1_795_521_600_123, u64::MAX] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let hash = chain(&GENESIS, "<x></x>");
        assert_eq!(encode_hash(&hash), hex::encode(hash));
        assert_eq!(decode_hash(&encode_hash(&hash)).unwrap(), hash);
    }

    #[test]
    fn an_entry_reads_back() {
        let entry = &entries(1)[0].entry;
        assert_eq!(
            entry,
            "<audit-entry depth=\"0\" from=\"user:a&amp;b\" kind=\"message\" n=\"1\" session=\"s1\" tag=\"echo\" thread=\"t1\" time=\"1001\"><echo>hi</echo></audit-entry>"
        );
        assert_eq!(entry_attribute(entry, "thread"), Some("t1"));
        assert_eq!(entry_attribute(entry, "kind"), Some("message"));
        assert_eq!(entry_content(entry), Some("<echo>hi</echo>"));
    }

    #[test]
    fn a_chain_verifies_and_names_the_first_broken_entry() {
        let good = entries(5);
        let verified = verify(good.clone(), GENESIS).unwrap();
        assert_eq!(verified.count, 5);
        assert_eq!(verified.head, good[4].hash);

        let mut tampered = good.clone();
        tampered[2].entry = tampered[2].entry.replace("<echo>hi", "<echo>hI");
        assert_eq!(
            verify(tampered, GENESIS),
            Err(ChainError::Broken { seq: 3 })
        );

        let mut missing = good.clone();
        missing.remove(1);
        assert!(matches!(
            verify(missing, GENESIS),
            Err(ChainError::Gap {
                previous: 1,
                found: 3
            })
        ));

        let mut rehashed = good;
        rehashed[4].hash = hex::encode([7u8; 32]);
        assert_eq!(
            verify(rehashed, GENESIS),
            Err(ChainError::Broken { seq: 5 })
        );
        assert_eq!(
            verify(Vec::new(), GENESIS).unwrap().head,
            hex::encode(GENESIS)
        );
    }
}
