//! The commit layer: proof, to someone who trusts only the owner's public
//! key, of what the organism's audit log held up to a point in time.
//!
//! - [`NodeKey`]: each server's own Ed25519 key, made in its data
//!   directory, so that the owner's key stays offline.
//! - [`CertificateRequest`], [`Certificate`]: the owner's signed
//!   `node-certificate` command, which lets a node key sign for the
//!   organism — for some purposes, until some time.
//! - [`RevocationRequest`], [`Revocation`]: the owner's signed
//!   `node-revoke` command, which ends a node key's say from an instant
//!   on, whatever its certificates say.
//! - [`Checkpoint`]: the audit writer's signed statement of the log's
//!   count and head hash, written into the log itself every N entries or
//!   T seconds ([`CheckpointSigner`]).
//! - [`ExportWriter`], [`verify_export`]: a self-contained file of entries
//!   between checkpoints with the certificates that vouch for them, and
//!   its offline check (`agentserver audit export` / `audit verify --file`;
//!   `docs/verify_audit_export.py` does the same in Python).

mod certificate;
mod checkpoint;
mod export;
mod node_key;
mod revocation;

pub use certificate::{Certificate, CertificateError, CertificateRequest, Purpose};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointSigner, CHECKPOINT_TAG};
pub use export::{
    is_checkpoint, verify_export, ExportError, ExportWriter, Verified, EXPORT_HEADER,
};
pub use node_key::{key_id, load_public_key, NodeKey, NODE_KEY_FILE, NODE_PUBLIC_KEY_FILE};
pub use revocation::{Revocation, RevocationRequest, MAX_REASON_CHARS};
