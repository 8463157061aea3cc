//! The storage behind `wasi:keyvalue`: buckets `session` (one per agent and
//! session, gone when the session ends) and `agent` (one per agent, shared by
//! its sessions), each within the quota its grant sets.
//!
//! [`KeyValueStore`] is the backend trait; [`MemoryKeyValueStore`] keeps
//! everything in memory. Quotas count keys and the bytes of keys and values
//! together, and are checked by the backend in the same step as the write,
//! so that concurrent writers cannot pass them together.

use super::grants::BucketQuota;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use thiserror::Error;

/// Keys one `list-keys` page holds at most.
pub const KEYS_PER_PAGE: usize = 256;

/// One bucket: an agent's, or an agent's for one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    /// The agent.
    pub agent: String,
    /// The session, for a `session` bucket.
    pub session: Option<String>,
}

impl Bucket {
    /// The `agent` bucket of `agent`.
    pub fn agent(agent: &str) -> Self {
        Bucket {
            agent: agent.to_owned(),
            session: None,
        }
    }

    /// The `session` bucket of `agent` for `session`.
    pub fn session(agent: &str, session: &str) -> Self {
        Bucket {
            agent: agent.to_owned(),
            session: Some(session.to_owned()),
        }
    }

    /// `agent` or `session`: the name the guest opened it by.
    pub fn kind(&self) -> &'static str {
        if self.session.is_some() {
            "session"
        } else {
            "agent"
        }
    }
}

/// Why a storage operation failed. The text is safe to show the guest.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyValueError {
    /// The write would take the bucket past its quota; nothing was written.
    #[error("{0}")]
    Quota(String),
    /// The backend failed.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// What a bucket holds: keys, and bytes of keys and values together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketUsage {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// Checks that a bucket using `usage` may replace `old` (the key's current
/// value length, if any) with a value of `new` bytes under `key`, and
/// returns what it will use then.
pub fn check_quota(
    usage: BucketUsage,
    key: &str,
    old: Option<u64>,
    new: u64,
    quota: &BucketQuota,
) -> Result<BucketUsage, KeyValueError> {
    let key_bytes = key.len() as u64;
    let keys = usage.keys + u64::from(old.is_none());
    let bytes = usage
        .bytes
        .saturating_sub(old.map_or(0, |old| old + key_bytes))
        + key_bytes
        + new;
    if keys > quota.max_keys {
        return Err(too_many_keys(quota));
    }
    if bytes > quota.max_bytes {
        return Err(too_many_bytes(quota, bytes));
    }
    Ok(BucketUsage { keys, bytes })
}

/// The refusal of a write that would pass the quota's keys.
pub fn too_many_keys(quota: &BucketQuota) -> KeyValueError {
    KeyValueError::Quota(format!("the bucket holds at most {} keys", quota.max_keys))
}

/// The refusal of a write that would make the bucket `bytes` large.
pub fn too_many_bytes(quota: &BucketQuota, bytes: u64) -> KeyValueError {
    KeyValueError::Quota(format!(
        "the bucket holds at most {} bytes of keys and values; this write would make it {bytes}",
        quota.max_bytes
    ))
}

/// What [`KeyValueStore::update`] writes, made from the key's current value.
pub type NewValue<'a> = dyn Fn(Option<&[u8]>) -> Result<Vec<u8>, KeyValueError> + 'a;

/// Where buckets are kept.
pub trait KeyValueStore: Send + Sync {
    /// The value of `key`, if set.
    fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KeyValueError>;

    /// Sets `key` to `new(its current value)`, unless that takes the bucket
    /// past `quota`, and returns what was written: read, check and write
    /// as one step, so that concurrent writers cannot pass the quota
    /// together. An error from `new` writes nothing.
    fn update(
        &self,
        bucket: &Bucket,
        key: &str,
        quota: &BucketQuota,
        new: &NewValue<'_>,
    ) -> Result<Vec<u8>, KeyValueError>;

    /// Sets `key` to `value`, unless that takes the bucket past `quota`.
    fn set(
        &self,
        bucket: &Bucket,
        key: &str,
        value: &[u8],
        quota: &BucketQuota,
    ) -> Result<(), KeyValueError> {
        self.update(bucket, key, quota, &|_| Ok(value.to_vec()))
            .map(drop)
    }

    /// Removes `key`; nothing happens if it is not set.
    fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KeyValueError>;

    /// Adds `delta` to the number `key` holds (a missing key holds 0; the
    /// value is its decimal digits) and returns the new number.
    fn increment(
        &self,
        bucket: &Bucket,
        key: &str,
        delta: u64,
        quota: &BucketQuota,
    ) -> Result<u64, KeyValueError> {
        let written = self.update(bucket, key, quota, &|old| {
            Ok(counter_value(counter_of(old)?.saturating_add(delta)))
        })?;
        counter_of(Some(&written))
    }

    /// Up to [`KEYS_PER_PAGE`] keys in order from position `cursor`, and the
    /// cursor of the next page if there is one.
    fn keys(
        &self,
        bucket: &Bucket,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), KeyValueError>;

    /// Forgets everything in `bucket` (its session ended).
    fn clear(&self, bucket: &Bucket) -> Result<(), KeyValueError>;

    /// Forgets every bucket of `agent` (it was removed).
    fn remove_agent(&self, agent: &str) -> Result<(), KeyValueError>;
}

/// The value `increment` stores for `number`.
pub fn counter_value(number: u64) -> Vec<u8> {
    number.to_string().into_bytes()
}

/// The number an `increment` finds in `value`.
pub fn counter_of(value: Option<&[u8]>) -> Result<u64, KeyValueError> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| KeyValueError::Quota("the key does not hold a decimal number".into())),
    }
}

/// Keeps buckets in memory.
#[derive(Debug, Default)]
pub struct MemoryKeyValueStore {
    buckets: Mutex<HashMap<Bucket, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKeyValueStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Bucket, BTreeMap<String, Vec<u8>>>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn usage_of(entries: &BTreeMap<String, Vec<u8>>) -> BucketUsage {
    BucketUsage {
        keys: entries.len() as u64,
        bytes: entries
            .iter()
            .map(|(key, value)| (key.len() + value.len()) as u64)
            .sum(),
    }
}

impl KeyValueStore for MemoryKeyValueStore {
    fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KeyValueError> {
        Ok(self.lock().get(bucket).and_then(|b| b.get(key)).cloned())
    }

    fn update(
        &self,
        bucket: &Bucket,
        key: &str,
        quota: &BucketQuota,
        new: &NewValue<'_>,
    ) -> Result<Vec<u8>, KeyValueError> {
        let mut buckets = self.lock();
        let entries = buckets.entry(bucket.clone()).or_default();
        let current = entries.get(key);
        let value = new(current.map(Vec::as_slice))?;
        let old = current.map(|v| v.len() as u64);
        check_quota(usage_of(entries), key, old, value.len() as u64, quota)?;
        entries.insert(key.to_owned(), value.clone());
        Ok(value)
    }

    fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KeyValueError> {
        if let Some(entries) = self.lock().get_mut(bucket) {
            entries.remove(key);
        }
        Ok(())
    }

    fn keys(
        &self,
        bucket: &Bucket,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), KeyValueError> {
        Ok(match self.lock().get(bucket) {
            Some(entries) => page(entries.keys(), cursor),
            None => (Vec::new(), None),
        })
    }

    fn clear(&self, bucket: &Bucket) -> Result<(), KeyValueError> {
        self.lock().remove(bucket);
        Ok(())
    }

    fn remove_agent(&self, agent: &str) -> Result<(), KeyValueError> {
        self.lock().retain(|bucket, _| bucket.agent != agent);
        Ok(())
    }
}

/// The page of `sorted` keys that starts at position `cursor` (at most
/// [`KEYS_PER_PAGE`]), and the cursor of the next page if there is one.
pub fn page<'a>(
    sorted: impl ExactSizeIterator<Item = &'a String>,
    cursor: u64,
) -> (Vec<String>, Option<u64>) {
    let total = sorted.len();
    let start = usize::try_from(cursor).unwrap_or(usize::MAX);
    let keys: Vec<String> = sorted.skip(start).take(KEYS_PER_PAGE).cloned().collect();
    let next = start.saturating_add(keys.len());
    (keys, (next < total).then_some(next as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_count_keys_and_bytes() {
        let store = MemoryKeyValueStore::new();
        let quota = BucketQuota {
            max_keys: 2,
            max_bytes: 10,
        };
        let bucket = Bucket::session("llm", "s1");
        store.set(&bucket, "a", b"1234", &quota).unwrap();
        store.set(&bucket, "a", b"12345678", &quota).unwrap();
        let error = store.set(&bucket, "a", b"123456789x", &quota).unwrap_err();
        assert!(matches!(error, KeyValueError::Quota(_)), "{error}");
        store.set(&bucket, "b", b"", &quota).unwrap();
        let error = store.set(&bucket, "c", b"", &quota).unwrap_err();
        assert!(error.to_string().contains("2 keys"), "{error}");
        assert_eq!(store.get(&bucket, "a").unwrap().unwrap(), b"12345678");
        assert_eq!(
            store.increment(&bucket, "b", 5, &quota),
            Err(KeyValueError::Quota(
                "the key does not hold a decimal number".into()
            ))
        );
    }

    #[test]
    fn sessions_are_apart_and_ended_sessions_leave_nothing() {
        let store = MemoryKeyValueStore::new();
        let quota = BucketQuota {
            max_keys: 10,
            max_bytes: 100,
        };
        store
            .set(&Bucket::session("a", "s1"), "k", b"one", &quota)
            .unwrap();
        store
            .set(&Bucket::session("a", "s2"), "k", b"two", &quota)
            .unwrap();
        store
            .set(&Bucket::agent("a"), "k", b"shared", &quota)
            .unwrap();
        assert_eq!(
            store
                .get(&Bucket::session("a", "s2"), "k")
                .unwrap()
                .unwrap(),
            b"two"
        );
        store.clear(&Bucket::session("a", "s1")).unwrap();
        assert_eq!(store.get(&Bucket::session("a", "s1"), "k").unwrap(), None);
        assert_eq!(
            store.get(&Bucket::agent("a"), "k").unwrap().unwrap(),
            b"shared"
        );
        assert_eq!(
            store
                .increment(&Bucket::agent("a"), "n", 2, &quota)
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .increment(&Bucket::agent("a"), "n", 3, &quota)
                .unwrap(),
            5
        );
        assert_eq!(
            store.keys(&Bucket::agent("a"), 0).unwrap(),
            (vec!["k".into(), "n".into()], None)
        );
    }
}
