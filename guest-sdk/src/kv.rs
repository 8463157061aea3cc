//! Key-value storage through the host (`wasi:keyvalue`), as far as the
//! agent's owner granted: the `session` bucket belongs to the current
//! session and goes with it; the `agent` bucket is shared by all sessions
//! and kept until the agent is removed. Each has a quota of keys and bytes;
//! a write past it fails and writes nothing.

use crate::bindings::wasi::keyvalue::{atomics, store};

pub use store::Bucket;

/// Why a storage call failed, as text.
pub type KvError = String;

fn describe(error: store::Error) -> KvError {
    match error {
        store::Error::NoSuchStore => "there is no such bucket".into(),
        store::Error::AccessDenied => "the bucket is not granted".into(),
        store::Error::Other(text) => text,
    }
}

/// Opens `session` or `agent`.
pub fn open(name: &str) -> Result<Bucket, KvError> {
    store::open(name).map_err(describe)
}

/// The value of `key` in `bucket`.
pub fn get(bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
    bucket.get(key).map_err(describe)
}

/// Sets `key` in `bucket`.
pub fn set(bucket: &Bucket, key: &str, value: &[u8]) -> Result<(), KvError> {
    bucket.set(key, value).map_err(describe)
}

/// Removes `key` from `bucket`.
pub fn delete(bucket: &Bucket, key: &str) -> Result<(), KvError> {
    bucket.delete(key).map_err(describe)
}

/// Adds `delta` to the number `key` holds, and returns the new number.
pub fn increment(bucket: &Bucket, key: &str, delta: u64) -> Result<u64, KvError> {
    atomics::increment(bucket, key, delta).map_err(describe)
}
