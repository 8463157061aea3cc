//! Audit checkpoints: a node's signed statement that the audit log held
//! `count` entries ending in hash `head` at `time`.
//!
//! The statement is a fixed, canonical element, signed as its bytes:
//!
//! ```text
//! <audit-checkpoint count="1200" head="HEX64" key-id="HEX16" organism="HEX64" time="1795521600123"></audit-checkpoint>
//! ```
//!
//! (`organism` is the owner key's fingerprint, so a statement cannot be
//! passed off as another organism's). The log stores it as the content of
//! the next entry, with the signature as one more attribute in canonical
//! place (`… organism="…" signature="BASE64" time="…"`); a verifier reads
//! the fields strictly and rebuilds the signed statement from them.

use super::node_key::NodeKey;
use crate::audit::encode_hash;
use crate::privileged::VerifyingKey;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _};
use std::time::Duration;
use thiserror::Error;

/// The tag of a checkpoint's audit entry.
pub const CHECKPOINT_TAG: &str = "audit-checkpoint";

/// A checkpoint that could not be read.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("not a well-formed audit checkpoint: {0}")]
pub struct CheckpointError(String);

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Entries before it: it follows entry `count`.
    pub count: u64,
    /// The chain hash of entry `count` (the genesis hash when 0).
    pub head: [u8; 32],
    /// The signing node key's id.
    pub key_id: String,
    /// The owner key's fingerprint, hex.
    pub organism: String,
    /// When it was made, Unix milliseconds.
    pub time_ms: u64,
}

impl Checkpoint {
    /// The signed statement's exact bytes.
    pub fn statement(&self) -> String {
        self.element(None)
    }

    /// The element as the log stores it, signed with `key`.
    pub fn signed(&self, key: &NodeKey) -> String {
        let signature = key.signing_key().sign(self.statement().as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
        self.element(Some(&encoded))
    }

    fn element(&self, signature: Option<&str>) -> String {
        let mut out = format!(
            "<{CHECKPOINT_TAG} count=\"{}\" head=\"{}\" key-id=\"{}\" organism=\"{}\"",
            self.count,
            encode_hash(&self.head),
            self.key_id,
            self.organism
        );
        if let Some(signature) = signature {
            out.push_str(" signature=\"");
            out.push_str(signature);
            out.push('"');
        }
        out.push_str(&format!(" time=\"{}\"></{CHECKPOINT_TAG}>", self.time_ms));
        out
    }

    /// Reads a stored checkpoint element, strictly: the fields in their
    /// one order and form, nothing else.
    pub fn parse(stored: &str) -> Result<(Checkpoint, Signature), CheckpointError> {
        let mut cursor = Cursor(stored);
        cursor.expect(&format!("<{CHECKPOINT_TAG} count=\""))?;
        let count = cursor.decimal("count")?;
        cursor.expect("\" head=\"")?;
        let head = cursor.hex("head", 64)?;
        cursor.expect("\" key-id=\"")?;
        let key_id = cursor.hex("key-id", 16)?;
        cursor.expect("\" organism=\"")?;
        let organism = cursor.hex("organism", 64)?;
        cursor.expect("\" signature=\"")?;
        let signature = cursor.until_quote();
        cursor.expect("\" time=\"")?;
        let time_ms = cursor.decimal("time")?;
        cursor.expect(&format!("\"></{CHECKPOINT_TAG}>"))?;
        if !cursor.0.is_empty() {
            return Err(CheckpointError("text after the element".into()));
        }
        let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| CheckpointError("the signature is not 64 bytes of base64".into()))?;
        let mut head_bytes = [0u8; 32];
        hex::decode_to_slice(head, &mut head_bytes)
            .map_err(|_| CheckpointError("`head` is not hex".into()))?;
        Ok((
            Checkpoint {
                count,
                head: head_bytes,
                key_id: key_id.to_owned(),
                organism: organism.to_owned(),
                time_ms,
            },
            Signature::from_bytes(&signature),
        ))
    }

    /// Whether `signature` is `key`'s over this statement (strictly).
    pub fn is_signed_by(&self, signature: &Signature, key: &VerifyingKey) -> bool {
        key.verify_strict(self.statement().as_bytes(), signature)
            .is_ok()
    }
}

/// Reads a checkpoint element from the front.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn expect(&mut self, literal: &str) -> Result<(), CheckpointError> {
        self.0 = self
            .0
            .strip_prefix(literal)
            .ok_or_else(|| CheckpointError(format!("expected {literal:?}")))?;
        Ok(())
    }

    fn until_quote(&mut self) -> &'a str {
        let end = self.0.find('"').unwrap_or(self.0.len());
        let (taken, rest) = self.0.split_at(end);
        self.0 = rest;
        taken
    }

    fn decimal(&mut self, name: &str) -> Result<u64, CheckpointError> {
        let text = self.until_quote();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 19 {
            return Err(CheckpointError(format!("`{name}` is not a number")));
        }
        text.parse()
            .map_err(|_| CheckpointError(format!("`{name}` is not a number")))
    }

    fn hex(&mut self, name: &str, digits: usize) -> Result<&'a str, CheckpointError> {
        let text = self.until_quote();
        if text.len() != digits || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CheckpointError(format!(
                "`{name}` is not {digits} lowercase hex digits"
            )));
        }
        Ok(text)
    }
}

/// When and with what the audit writer signs checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointSigner {
    /// The node key.
    pub key: NodeKey,
    /// The owner key's fingerprint, hex.
    pub organism: String,
    /// A checkpoint after this many entries (0: not by count).
    pub every_entries: u64,
    /// A checkpoint this long after the first entry it does not cover
    /// (zero: not by time).
    pub every: Duration,
    /// Set once the key may no longer vouch for the log (the owner revoked
    /// it): from then on no checkpoint is signed; entries are still
    /// written and chained.
    pub stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileged::SigningKey;

    #[test]
    fn a_signed_checkpoint_reads_back_and_verifies_only_unchanged() {
        let key = NodeKey::from(SigningKey::from_bytes(&[9; 32]));
        let checkpoint = Checkpoint {
            count: 42,
            head: [0xab; 32],
            key_id: key.key_id().to_owned(),
            organism: "0".repeat(64),
            time_ms: 1_795_521_600_123,
        };
        let stored = checkpoint.signed(&key);
        let (read, signature) = Checkpoint::parse(&stored).unwrap();
        assert_eq!(read, checkpoint);
        assert!(read.is_signed_by(&signature, &key.verifying_key()));
        let moved = Checkpoint { count: 43, ..read };
        assert!(!moved.is_signed_by(&signature, &key.verifying_key()));
        for broken in [
            stored.replace("count=\"42\"", "count=\"4x\""),
            stored.replace(" time=", "  time="),
            format!("{stored} "),
            stored.replace("head=\"ab", "head=\"AB"),
        ] {
            assert!(Checkpoint::parse(&broken).is_err(), "{broken}");
        }
    }
}
