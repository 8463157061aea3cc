//! Audit exports: a self-contained file of audit entries between signed
//! checkpoints, with the certificates of the keys that signed them, that
//! anyone holding the owner's public key can check offline.
//!
//! The file is text, one header line per record, each body given by its
//! length so that entries keep their exact bytes:
//!
//! ```text
//! agentserver-audit-export 1
//! owner OWNER-FINGERPRINT
//! certificate ID SIGNATURE-BASE64 LENGTH
//! <the signed payload's canonical bytes>
//! revocation ID SIGNATURE-BASE64 LENGTH
//! <the signed payload's canonical bytes>
//! anchor SEQ HASH
//! entry SEQ HASH LENGTH
//! <the canonical entry>
//! …
//! end ENTRIES LAST-SEQ LAST-HASH
//! ```
//!
//! `anchor` is the chain state the first entry continues: entry 0 and the
//! genesis hash for a log exported from its start, or what the first entry
//! (then a checkpoint) vouches for. The last entry is always a checkpoint,
//! so every entry is covered by a signature. A verifier recomputes the
//! chain, checks each certificate and revocation with the owner's key and
//! each checkpoint with a certified node key, and names the first thing
//! that does not hold. A checkpoint made at or after its key's revocation
//! vouches for nothing: it counts as an ordinary entry, which a later
//! checkpoint by another key must cover.

use super::certificate::{Certificate, CertificateError, Purpose};
use super::checkpoint::{Checkpoint, CheckpointError};
use super::revocation::Revocation;
use crate::audit::{chain, encode_hash, entry_attribute, entry_content, ChainError, StoredEntry};
use crate::privileged::SignedRecord;
use crate::privileged::VerifyingKey;
use sha2::{Digest as _, Sha256};
use std::io::{BufRead, Write};
use thiserror::Error;

/// The first line of an export.
pub const EXPORT_HEADER: &str = "agentserver-audit-export 1";
/// The largest record body a verifier reads, bytes.
const MAX_BODY: usize = 256 << 20;

/// Why an export does not verify.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Reading the file failed.
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not what the format has there.
    #[error("line {line}: {reason}")]
    Format {
        /// 1-based line number.
        line: u64,
        /// What was expected.
        reason: String,
    },
    /// The file stops before its `end` line.
    #[error("the export is cut short after {after}: there is no `end` line")]
    CutShort {
        /// The last complete record.
        after: String,
    },
    /// The export is another organism's.
    #[error("the export is of organism {found}, not of the owner key given ({expected})")]
    OtherOrganism {
        /// The file's.
        found: String,
        /// The key's.
        expected: String,
    },
    /// A certificate fails.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The chain is broken, has a gap or is reordered.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A checkpoint does not hold.
    #[error("checkpoint at entry {seq}: {reason}")]
    Checkpoint {
        /// Its entry.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Entries no checkpoint covers.
    #[error("{0}")]
    Unvouched(String),
    /// The `end` line disagrees with the entries.
    #[error("the `end` line says {said}, but the entries give {found}")]
    EndMismatch {
        /// The line's.
        said: String,
        /// The entries'.
        found: String,
    },
}

/// What a verified export proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The first entry in the file.
    pub first: u64,
    /// The last entry (a checkpoint).
    pub last: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// When the last checkpoint was made, Unix milliseconds.
    pub last_checkpoint_ms: u64,
    /// The certificate that vouched for the last checkpoint's key.
    pub last_certificate: String,
    /// The chain hash of the last entry.
    pub head: String,
}

/// Writes an export to `out`: the header, the certificates and
/// revocations, the anchor, then entries as [`ExportWriter::entry`] gets
/// them. A checkpoint made after its key's revocation is written as an
/// ordinary entry: the file ends at the last checkpoint that vouches.
pub struct ExportWriter<W: Write> {
    out: W,
    /// The revocations written: checkpoints they void end nothing.
    revoked: Vec<Revocation>,
    /// Entries since the last checkpoint, held until one covers them.
    held: Vec<StoredEntry>,
    written: u64,
    last: Option<(u64, String)>,
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export of organism `owner` (its fingerprint), with its
    /// node certificates and revocations, continuing from `anchor` (`(0,
    /// GENESIS)` from the start of the log).
    pub fn new(
        mut out: W,
        owner: &str,
        certificates: &[SignedRecord],
        revocations: &[SignedRecord],
        anchor: (u64, [u8; 32]),
    ) -> std::io::Result<ExportWriter<W>> {
        writeln!(out, "{EXPORT_HEADER}")?;
        writeln!(out, "owner {owner}")?;
        let records = certificates
            .iter()
            .map(|record| ("certificate", record))
            .chain(revocations.iter().map(|record| ("revocation", record)));
        for (keyword, record) in records {
            writeln!(
                out,
                "{keyword} {} {} {}",
                record.id,
                record.signature,
                record.payload.len()
            )?;
            out.write_all(record.payload.as_bytes())?;
            out.write_all(b"\n")?;
        }
        writeln!(out, "anchor {} {}", anchor.0, encode_hash(&anchor.1))?;
        Ok(ExportWriter {
            out,
            revoked: revocations
                .iter()
                .filter_map(|record| Revocation::read_unverified(record).ok())
                .collect(),
            held: Vec::new(),
            written: 0,
            last: None,
        })
    }

    /// Adds the next entry; it reaches the file once a checkpoint follows.
    pub fn entry(&mut self, entry: StoredEntry) -> std::io::Result<()> {
        let checkpoint = is_checkpoint(&entry.entry) && !self.voided(&entry.entry);
        self.held.push(entry);
        if checkpoint {
            for entry in std::mem::take(&mut self.held) {
                writeln!(
                    self.out,
                    "entry {} {} {}",
                    entry.seq,
                    entry.hash,
                    entry.entry.len()
                )?;
                self.out.write_all(entry.entry.as_bytes())?;
                self.out.write_all(b"\n")?;
                self.written += 1;
                self.last = Some((entry.seq, entry.hash));
            }
        }
        Ok(())
    }

    /// Whether a checkpoint entry was made at or after its key's
    /// revocation (or cannot be read), so that it vouches for nothing.
    fn voided(&self, entry: &str) -> bool {
        let Some(Ok((checkpoint, _))) = entry_content(entry).map(Checkpoint::parse) else {
            return true;
        };
        let seconds = checkpoint.time_ms / 1_000;
        self.revoked
            .iter()
            .any(|r| r.revokes(&checkpoint.key_id, seconds))
    }

    /// Writes the `end` line; returns the entries written and the last
    /// one's number, or `None` (and nothing ends the file) when no
    /// checkpoint came.
    pub fn finish(mut self) -> std::io::Result<Option<(u64, u64)>> {
        let Some((seq, hash)) = self.last.take() else {
            return Ok(None);
        };
        writeln!(self.out, "end {} {seq} {hash}", self.written)?;
        self.out.flush()?;
        Ok(Some((self.written, seq)))
    }
}

/// Whether a canonical audit entry is a checkpoint.
pub fn is_checkpoint(entry: &str) -> bool {
    entry_attribute(entry, "kind") == Some("checkpoint")
}

/// Reads the export in `input` and checks it against the owner's key.
pub fn verify_export(input: impl BufRead, owner: &VerifyingKey) -> Result<Verified, ExportError> {
    let owner_fingerprint = hex::encode(Sha256::digest(owner.as_bytes()));
    let mut reader = Records { input, line: 0 };
    let header = reader.line()?.ok_or(ExportError::CutShort {
        after: "the start".into(),
    })?;
    if header != EXPORT_HEADER {
        return Err(reader.format(format!("expected {EXPORT_HEADER:?}")));
    }
    let found = reader.fields("owner", 1)?;
    if found[0] != owner_fingerprint {
        return Err(ExportError::OtherOrganism {
            found: found[0].clone(),
            expected: owner_fingerprint,
        });
    }
    let mut certificates = Vec::new();
    let mut revocations = Vec::new();
    let anchor = loop {
        let line = reader.line()?.ok_or(ExportError::CutShort {
            after: "the certificates".into(),
        })?;
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["certificate", id, signature, length] => {
                let length = reader.length(length)?;
                let payload = reader.body(length, || format!("certificate {id}"))?;
                certificates.push(Certificate::verify(
                    &SignedRecord {
                        id: (*id).to_owned(),
                        payload,
                        signature: (*signature).to_owned(),
                    },
                    owner,
                )?);
            }
            ["revocation", id, signature, length] => {
                let length = reader.length(length)?;
                let payload = reader.body(length, || format!("revocation {id}"))?;
                revocations.push(Revocation::verify(
                    &SignedRecord {
                        id: (*id).to_owned(),
                        payload,
                        signature: (*signature).to_owned(),
                    },
                    owner,
                )?);
            }
            ["anchor", seq, hash] => {
                let seq = reader.number(seq)?;
                let hash = reader.hash(hash)?;
                break (seq, hash);
            }
            _ => {
                return Err(reader.format(
                    "expected `certificate ID SIGNATURE LENGTH`, `revocation ID SIGNATURE \
                     LENGTH` or `anchor SEQ HASH`"
                        .into(),
                ))
            }
        }
    };
    let (mut previous_seq, mut previous) = anchor;
    if previous_seq == 0 && previous != crate::audit::GENESIS {
        return Err(reader.format("an anchor at entry 0 must be the genesis hash".into()));
    }
    let mut first = None;
    let mut checkpoints = 0;
    let mut last_checkpoint: Option<(u64, u64, String)> = None;
    // The newest checkpoint refused for its key's revocation, and why.
    let mut revoked_checkpoint: Option<(u64, String)> = None;
    loop {
        let after = || match first {
            None => "the anchor".to_owned(),
            Some(_) => format!("entry {previous_seq}"),
        };
        let line = reader
            .line()?
            .ok_or_else(|| ExportError::CutShort { after: after() })?;
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["entry", seq, hash, length] => {
                let seq = reader.number(seq)?;
                let stored_hash = (*hash).to_owned();
                let length = reader.length(length)?;
                let entry = reader.body(length, || format!("entry {seq}"))?;
                if seq != previous_seq + 1 {
                    return Err(ChainError::Gap {
                        previous: previous_seq,
                        found: seq,
                    }
                    .into());
                }
                let claimed = entry_attribute(&entry, "n").unwrap_or_default();
                if claimed != seq.to_string() {
                    return Err(ChainError::Renumbered {
                        seq,
                        claimed: claimed.to_owned(),
                    }
                    .into());
                }
                let hash = chain(&previous, &entry);
                if encode_hash(&hash) != stored_hash {
                    return Err(ChainError::Broken { seq }.into());
                }
                let vouch = if is_checkpoint(&entry) {
                    check_checkpoint(
                        seq,
                        &entry,
                        (previous_seq, &previous),
                        &owner_fingerprint,
                        &certificates,
                        &revocations,
                    )?
                } else {
                    Vouch::Entry
                };
                match vouch {
                    Vouch::Checkpoint(time_ms, certificate) => {
                        checkpoints += 1;
                        last_checkpoint = Some((seq, time_ms, certificate));
                    }
                    Vouch::Revoked(why) if first.is_none() && anchor.0 > 0 => {
                        return Err(ExportError::Unvouched(format!(
                            "the anchor (entry {}) is not vouched for: entry {seq}, the first, \
                             is a checkpoint that vouches for nothing ({why})",
                            anchor.0
                        )));
                    }
                    Vouch::Revoked(why) => revoked_checkpoint = Some((seq, why)),
                    Vouch::Entry if first.is_none() && anchor.0 > 0 => {
                        return Err(ExportError::Unvouched(format!(
                            "the anchor (entry {}) is not vouched for: entry {seq}, the first, is not a checkpoint",
                            anchor.0
                        )));
                    }
                    Vouch::Entry => {}
                }
                first.get_or_insert(seq);
                previous_seq = seq;
                previous = hash;
            }
            ["end", count, seq, hash] => {
                let said = format!("{count} entries ending at entry {seq} with hash {hash}");
                let first = first.unwrap_or(previous_seq + 1);
                let count_found = previous_seq + 1 - first;
                let found = format!(
                    "{count_found} entries ending at entry {previous_seq} with hash {}",
                    encode_hash(&previous)
                );
                if said != found {
                    return Err(ExportError::EndMismatch { said, found });
                }
                let refused = match &revoked_checkpoint {
                    Some((seq, why)) => {
                        format!(" (the checkpoint at entry {seq} vouches for nothing: {why})")
                    }
                    None => String::new(),
                };
                let Some((last_seq, time_ms, certificate)) = last_checkpoint else {
                    return Err(ExportError::Unvouched(format!(
                        "the export holds no checkpoint{refused}"
                    )));
                };
                if last_seq != previous_seq {
                    return Err(ExportError::Unvouched(format!(
                        "entries {} to {previous_seq} follow the last checkpoint (entry {last_seq}): no signature covers them{refused}",
                        last_seq + 1
                    )));
                }
                if !reader.at_end()? {
                    return Err(reader.format("nothing may follow the `end` line".into()));
                }
                return Ok(Verified {
                    first,
                    last: previous_seq,
                    checkpoints,
                    last_checkpoint_ms: time_ms,
                    last_certificate: certificate,
                    head: encode_hash(&previous),
                });
            }
            _ => {
                return Err(reader.format(
                    "expected `entry SEQ HASH LENGTH` or `end ENTRIES LAST-SEQ LAST-HASH`".into(),
                ))
            }
        }
    }
}

/// What an entry vouches for.
enum Vouch {
    /// An ordinary entry: nothing.
    Entry,
    /// A checkpoint that holds: its time and the id of the certificate
    /// that vouches for its key.
    Checkpoint(u64, String),
    /// A checkpoint made at or after its key's revocation: nothing, and
    /// why.
    Revoked(String),
}

/// Checks the checkpoint in entry `seq`, which follows `previous`.
fn check_checkpoint(
    seq: u64,
    entry: &str,
    previous: (u64, &[u8; 32]),
    owner_fingerprint: &str,
    certificates: &[Certificate],
    revocations: &[Revocation],
) -> Result<Vouch, ExportError> {
    let fail = |reason: String| ExportError::Checkpoint { seq, reason };
    let content = entry_content(entry).ok_or_else(|| fail("the entry has no content".into()))?;
    let (checkpoint, signature) =
        Checkpoint::parse(content).map_err(|e: CheckpointError| fail(e.to_string()))?;
    if checkpoint.organism != owner_fingerprint {
        return Err(fail(format!(
            "it names organism {}, not this one",
            checkpoint.organism
        )));
    }
    if checkpoint.count != previous.0 || &checkpoint.head != previous.1 {
        return Err(fail(format!(
            "it vouches for entry {} with head {}, but it follows entry {} with head {}",
            checkpoint.count,
            encode_hash(&checkpoint.head),
            previous.0,
            encode_hash(previous.1)
        )));
    }
    let seconds = checkpoint.time_ms / 1_000;
    if let Some(revocation) = revocations
        .iter()
        .find(|r| r.revokes(&checkpoint.key_id, seconds))
    {
        return Ok(Vouch::Revoked(format!(
            "its key {} was revoked as of {} (revocation {}), before it was made at {}",
            checkpoint.key_id,
            crate::privileged::time::format_instant(revocation.issued),
            revocation.id,
            crate::privileged::time::format_instant(seconds)
        )));
    }
    let certificate = certificates
        .iter()
        .find(|c| c.request.key_id == checkpoint.key_id && c.covers(seconds, Purpose::Audit))
        .ok_or_else(|| {
            fail(format!(
                "its key {} has no certificate for `audit` valid at {} in the export",
                checkpoint.key_id,
                crate::privileged::time::format_instant(seconds)
            ))
        })?;
    if !checkpoint.is_signed_by(&signature, &certificate.request.public_key) {
        return Err(fail(format!(
            "the signature does not verify with key {}",
            checkpoint.key_id
        )));
    }
    Ok(Vouch::Checkpoint(
        checkpoint.time_ms,
        certificate.id.clone(),
    ))
}

/// Reads an export's lines and bodies, counting lines.
struct Records<R> {
    input: R,
    line: u64,
}

impl<R: BufRead> Records<R> {
    /// The next line without its newline; `None` at the end of the input
    /// or for a last line without one (the file was cut there).
    fn line(&mut self) -> Result<Option<String>, ExportError> {
        let mut bytes = Vec::new();
        std::io::Read::take(&mut self.input, 4096).read_until(b'\n', &mut bytes)?;
        if bytes.last() != Some(&b'\n') {
            if bytes.len() >= 4096 {
                self.line += 1;
                return Err(self.format("the line is too long".into()));
            }
            return Ok(None);
        }
        bytes.pop();
        self.line += 1;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| self.format("not UTF-8".into()))
    }

    /// Whether the input is used up.
    fn at_end(&mut self) -> Result<bool, ExportError> {
        Ok(self.input.fill_buf()?.is_empty())
    }

    /// A `KEYWORD FIELD…` line with `count` fields.
    fn fields(&mut self, keyword: &str, count: usize) -> Result<Vec<String>, ExportError> {
        let line = self.line()?.ok_or_else(|| ExportError::CutShort {
            after: "the header".into(),
        })?;
        let mut parts = line.split(' ');
        if parts.next() != Some(keyword) {
            return Err(self.format(format!("expected `{keyword}`")));
        }
        let fields: Vec<String> = parts.map(str::to_owned).collect();
        if fields.len() != count {
            return Err(self.format(format!("`{keyword}` takes {count} field(s)")));
        }
        Ok(fields)
    }

    /// `length` bytes and the newline after them.
    fn body(&mut self, length: usize, what: impl Fn() -> String) -> Result<String, ExportError> {
        let mut bytes = vec![0u8; length + 1];
        if let Err(error) = std::io::Read::read_exact(&mut self.input, &mut bytes) {
            return match error.kind() {
                std::io::ErrorKind::UnexpectedEof => Err(ExportError::CutShort {
                    after: format!("the start of {}", what()),
                }),
                _ => Err(error.into()),
            };
        }
        if bytes.pop() != Some(b'\n') {
            return Err(self.format(format!("{} is not {length} bytes long", what())));
        }
        self.line += bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        String::from_utf8(bytes).map_err(|_| self.format(format!("{} is not UTF-8", what())))
    }

    fn number(&self, text: &str) -> Result<u64, ExportError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.format(format!("{text:?} is not a number")));
        }
        text.parse()
            .map_err(|_| self.format(format!("{text:?} is not a number")))
    }

    fn length(&self, text: &str) -> Result<usize, ExportError> {
        let length = self.number(text)?;
        usize::try_from(length)
            .ok()
            .filter(|&n| n <= MAX_BODY)
            .ok_or_else(|| self.format(format!("a body of {length} bytes is too long")))
    }

    fn hash(&self, text: &str) -> Result<[u8; 32], ExportError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(text, &mut hash)
            .map_err(|_| self.format(format!("{text:?} is not a hash")))?;
        Ok(hash)
    }

    fn format(&self, reason: String) -> ExportError {
        ExportError::Format {
            line: self.line,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, AuditStore, MemoryAuditStore};
    use crate::bus::{AuditKind, AuditRecord, AuditSink, SessionId};
    use crate::commit::{CertificateRequest, CheckpointSigner, NodeKey};
    use crate::privileged::SignedRecord;
    use crate::privileged::{sign, SignedCommand, SigningKey};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    struct Fixture {
        owner: SigningKey,
        certificate: SignedRecord,
        entries: Vec<StoredEntry>,
    }

    fn certificate(owner: &SigningKey, node: &NodeKey, not_after: u64) -> SignedRecord {
        let request = CertificateRequest {
            key_id: node.key_id().to_owned(),
            public_key: node.verifying_key(),
            purposes: vec![Purpose::Audit],
            not_after,
        };
        let now = crate::privileged::time::unix_seconds(SystemTime::now());
        let document = format!("<payload>{}</payload>", request.to_xml());
        let signed = sign(document.as_bytes(), owner, now, Duration::from_secs(600)).unwrap();
        let command = SignedCommand::read(signed.as_bytes(), 1 << 20).unwrap();
        command.to_record().unwrap()
    }

    /// Opens a log over `store` whose checkpoints `key` signs every
    /// `every_entries` entries, records `count` messages (`text` gives the
    /// i-th), each stored before the next so that checkpoints fall where
    /// counted, stops checkpoints after message `stop` when given, and
    /// closes the log.
    fn record_signed(
        store: &Arc<MemoryAuditStore>,
        key: &NodeKey,
        organism: &str,
        every_entries: u64,
        count: usize,
        stop: Option<usize>,
        text: impl Fn(usize) -> String,
    ) {
        let log = AuditLog::open(
            store.clone(),
            Some(CheckpointSigner {
                key: key.clone(),
                organism: organism.to_owned(),
                every_entries,
                every: Duration::ZERO,
                stopped: Default::default(),
            }),
        )
        .unwrap();
        let session = SessionId::from_string("s");
        for i in 0..count {
            log.record(AuditRecord {
                kind: AuditKind::Message,
                thread: None,
                session: &session,
                from: "user:alice",
                tag: "echo",
                depth: 0,
                canonical: &text(i),
            });
            assert!(log.flush(Duration::from_secs(5)));
            if stop == Some(i) {
                log.stop_checkpoints();
            }
        }
    }

    /// 20 messages, a checkpoint after every 6 entries and one on closing:
    /// checkpoints at entries 7, 14, 21 and 24.
    fn fixture() -> Fixture {
        fixture_stopping(None)
    }

    /// [`fixture`], with checkpoints stopped (as on a revocation) after
    /// message `stop`, when given.
    fn fixture_stopping(stop: Option<usize>) -> Fixture {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let node = NodeKey::from(SigningKey::from_bytes(&[2; 32]));
        let store = Arc::new(MemoryAuditStore::new(1_000));
        let organism = hex::encode(Sha256::digest(owner.verifying_key().as_bytes()));
        record_signed(&store, &node, &organism, 6, 20, stop, |i| {
            format!("<echo>line {i}\nof text</echo>")
        });
        let entries = store.audit_entries(1, 1_000).unwrap();
        Fixture {
            certificate: certificate(&owner, &node, 4_000_000_000),
            owner,
            entries,
        }
    }

    fn export(fixture: &Fixture, since: u64, certificates: &[SignedRecord]) -> Vec<u8> {
        let anchor = if since == 0 {
            (0, crate::audit::GENESIS)
        } else {
            let previous = &fixture.entries[since as usize - 2];
            (
                previous.seq,
                crate::audit::decode_hash(&previous.hash).unwrap(),
            )
        };
        let mut out = Vec::new();
        let owner = hex::encode(Sha256::digest(fixture.owner.verifying_key().as_bytes()));
        let mut writer = ExportWriter::new(&mut out, &owner, certificates, &[], anchor).unwrap();
        for entry in &fixture.entries[anchor.0 as usize..] {
            writer.entry(entry.clone()).unwrap();
        }
        writer.finish().unwrap().unwrap();
        out
    }

    fn check(fixture: &Fixture, bytes: &[u8]) -> Result<Verified, ExportError> {
        verify_export(bytes, &fixture.owner.verifying_key())
    }

    #[test]
    fn checkpoints_fall_every_n_entries_and_on_closing() {
        let fixture = fixture();
        let checkpoints: Vec<u64> = fixture
            .entries
            .iter()
            .filter(|e| is_checkpoint(&e.entry))
            .map(|e| e.seq)
            .collect();
        assert_eq!(checkpoints, [7, 14, 21, 24]);
        assert_eq!(fixture.entries.len(), 24);
    }

    #[test]
    fn a_stopped_signer_signs_no_more_but_the_chain_goes_on() {
        let fixture = fixture_stopping(Some(9));
        let checkpoints: Vec<u64> = fixture
            .entries
            .iter()
            .filter(|e| is_checkpoint(&e.entry))
            .map(|e| e.seq)
            .collect();
        assert_eq!(checkpoints, [7], "none after the stop, none on closing");
        assert_eq!(fixture.entries.len(), 21, "every message is still written");
    }

    #[test]
    fn a_whole_export_and_one_from_a_checkpoint_verify() {
        let fixture = fixture();
        let whole = check(
            &fixture,
            &export(&fixture, 0, std::slice::from_ref(&fixture.certificate)),
        )
        .unwrap();
        assert_eq!((whole.first, whole.last, whole.checkpoints), (1, 24, 4));
        assert_eq!(whole.head, fixture.entries[23].hash);
        let since = check(
            &fixture,
            &export(&fixture, 14, std::slice::from_ref(&fixture.certificate)),
        )
        .unwrap();
        assert_eq!((since.first, since.last, since.checkpoints), (14, 24, 3));
    }

    #[test]
    fn tampered_truncated_and_reordered_exports_are_refused_naming_where() {
        let fixture = fixture();
        let good = export(&fixture, 0, std::slice::from_ref(&fixture.certificate));
        let text = String::from_utf8(good.clone()).unwrap();
        let refuse = |bytes: &[u8]| check(&fixture, bytes).unwrap_err().to_string();

        // One character of one message changed.
        let tampered = text.replacen("line 9\n", "line 8\n", 1);
        assert!(refuse(tampered.as_bytes()).contains("audit entry 11 is broken"));

        // Cut short, in the middle of an entry and at a record's end.
        assert!(refuse(&good[..good.len() * 2 / 3]).contains("cut short"));
        let without_end = &text[..text.rfind("end ").unwrap()];
        assert!(refuse(without_end.as_bytes()).contains("cut short after entry 24"));

        // Two entries swapped.
        let records: Vec<&str> = text.split("\nentry ").collect();
        let mut swapped = records.clone();
        swapped.swap(3, 4);
        let error = refuse(swapped.join("\nentry ").as_bytes());
        assert!(error.contains("audit entry 4 follows entry 2"), "{error}");

        // Entries after the last checkpoint dropped, the `end` line kept.
        let dropped: String =
            records[..records.len() - 1].join("\nentry ") + &text[text.rfind("\nend ").unwrap()..];
        let error = refuse(dropped.as_bytes());
        assert!(error.contains("`end` line says"), "{error}");

        // A rewritten chain (every hash recomputed after a change) still
        // fails at the next checkpoint.
        let mut rewritten = fixture.entries.clone();
        rewritten[2].entry = rewritten[2].entry.replace("line 2", "line X");
        let mut previous = crate::audit::GENESIS;
        for entry in &mut rewritten {
            previous = chain(&previous, &entry.entry);
            entry.hash = encode_hash(&previous);
        }
        let forged = Fixture {
            owner: fixture.owner.clone(),
            certificate: fixture.certificate.clone(),
            entries: rewritten,
        };
        let error = refuse(&export(
            &forged,
            0,
            std::slice::from_ref(&forged.certificate),
        ));
        assert!(error.contains("checkpoint at entry 7"), "{error}");

        // Another owner's key, no certificate, a tampered certificate.
        let stranger = SigningKey::from_bytes(&[3; 32]);
        assert!(matches!(
            verify_export(good.as_slice(), &stranger.verifying_key()),
            Err(ExportError::OtherOrganism { .. })
        ));
        let error = refuse(&export(&fixture, 0, &[]));
        assert!(error.contains("has no certificate for `audit`"), "{error}");
        let mut bent = fixture.certificate.clone();
        bent.payload = bent
            .payload
            .replace("purpose=\"audit\"", "purpose=\"audit \"");
        let error = refuse(&export(&fixture, 0, &[bent]));
        assert!(
            error.contains("owner's signature does not verify"),
            "{error}"
        );

        // A certificate that ended before the checkpoints were made.
        let node = NodeKey::from(SigningKey::from_bytes(&[2; 32]));
        let lapsed = certificate(&fixture.owner, &node, 1_000_000_000);
        let error = refuse(&export(&fixture, 0, &[lapsed]));
        assert!(
            error.contains("has no certificate for `audit` valid at"),
            "{error}"
        );

        // Starting after a checkpoint that is not there.
        let error = refuse(&export(
            &fixture,
            16,
            std::slice::from_ref(&fixture.certificate),
        ));
        assert!(error.contains("is not vouched for"), "{error}");

        // Bytes after the `end` line.
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"x");
        assert!(refuse(&trailing).contains("nothing may follow"));
    }

    /// The owner's signed `node-revoke` of `node`, issued at `issued`.
    fn revocation(owner: &SigningKey, node: &NodeKey, issued: u64) -> SignedRecord {
        let request = crate::commit::RevocationRequest {
            key_id: node.key_id().to_owned(),
            reason: Some("rotated".into()),
        };
        let document = format!("<payload>{}</payload>", request.to_xml());
        let signed = sign(document.as_bytes(), owner, issued, Duration::from_secs(600)).unwrap();
        let command = SignedCommand::read(signed.as_bytes(), 1 << 20).unwrap();
        command.to_record().unwrap()
    }

    #[test]
    fn checkpoints_made_after_their_keys_revocation_vouch_for_nothing() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let old = NodeKey::from(SigningKey::from_bytes(&[2; 32]));
        let new = NodeKey::from(SigningKey::from_bytes(&[4; 32]));
        let organism = hex::encode(Sha256::digest(owner.verifying_key().as_bytes()));
        let store = Arc::new(MemoryAuditStore::new(1_000));
        // The old key signs the first run's checkpoints, the new key the
        // second run's: checkpoints at 4, 8, 10 (closing), then 14, 18, 20.
        for key in [&old, &new] {
            record_signed(&store, key, &organism, 3, 8, None, |i| {
                format!("<echo>{i}</echo>")
            });
        }
        let entries = store.audit_entries(1, 1_000).unwrap();
        let certificates = [
            certificate(&owner, &old, 4_000_000_000),
            certificate(&owner, &new, 4_000_000_000),
        ];
        let write = |revocations: &[SignedRecord]| -> (Vec<u8>, Option<(u64, u64)>) {
            let mut out = Vec::new();
            let mut writer = ExportWriter::new(
                &mut out,
                &organism,
                &certificates,
                revocations,
                (0, crate::audit::GENESIS),
            )
            .unwrap();
            for entry in &entries {
                writer.entry(entry.clone()).unwrap();
            }
            let ended = writer.finish().unwrap();
            (out, ended)
        };
        let export = |revocations: &[SignedRecord]| write(revocations).0;
        let check = |bytes: &[u8]| verify_export(bytes, &owner.verifying_key());
        let all = check(&export(&[])).unwrap();
        assert_eq!(all.last, entries.len() as u64);

        // Revoked after its checkpoints were made: they stand.
        let now = crate::privileged::time::unix_seconds(SystemTime::now());
        let later = revocation(&owner, &old, now + 3_600);
        assert_eq!(check(&export(std::slice::from_ref(&later))).unwrap(), all);

        // Revoked before: the old key's checkpoints vouch for nothing, and
        // the new key's cover the whole chain.
        let earlier = revocation(&owner, &old, now - 3_600);
        let verified = check(&export(std::slice::from_ref(&earlier))).unwrap();
        assert_eq!(verified.last, all.last);
        assert!(verified.checkpoints < all.checkpoints);
        assert!(verified.checkpoints > 0);

        // Both keys revoked: the writer finds no checkpoint that vouches,
        // and a file claiming one is refused.
        let newer = revocation(&owner, &new, now - 3_600);
        let both = [earlier.clone(), newer.clone()];
        assert_eq!(write(&both).1, None);
        let text = String::from_utf8(export(std::slice::from_ref(&earlier))).unwrap();
        let record = format!(
            "revocation {} {} {}\n{}\n",
            newer.id,
            newer.signature,
            newer.payload.len(),
            newer.payload
        );
        let claimed = text.replacen("anchor ", &format!("{record}anchor "), 1);
        let error = check(claimed.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("vouches for nothing"), "{error}");
        assert!(error.contains("was revoked as of"), "{error}");

        // A revocation the owner did not sign is refused.
        let stranger = SigningKey::from_bytes(&[3; 32]);
        let forged = revocation(&stranger, &new, now - 3_600);
        let error = check(&export(&[forged])).unwrap_err().to_string();
        assert!(
            error.contains("owner's signature does not verify"),
            "{error}"
        );
    }
}
