//! Agents' key-value buckets on Redis. Per bucket:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:kv:AGENT:agent` / `P:kv:AGENT:session:ID` | hash | the bucket's keys and values |
//! | the same with `:bytes` | string | bytes of its keys and values together |
//! | `P:kv-buckets:AGENT` | set | the agent's bucket keys, to remove them with it |
//!
//! A `set` checks the quota and writes in one server-side script (one round
//! trip, atomic); an `increment` or `delete` reads under `WATCH` and writes
//! in one `MULTI`/`EXEC`, retried if another writer got there first. Either
//! way quotas hold across processes.

use super::redis::RedisStore;
use crate::capability::keyvalue::{
    check_quota, page, too_many_bytes, too_many_keys, Bucket, BucketUsage, KeyValueError,
    KeyValueStore, NewValue,
};
use crate::capability::BucketQuota;
use redis::Commands as _;

/// Sets `ARGV[1]` to `ARGV[2]` in the bucket hash `KEYS[1]` unless that
/// takes it past `ARGV[3]` keys or `ARGV[4]` bytes, keeping its byte count
/// in `KEYS[2]` and the bucket in the agent's set `KEYS[3]`. Returns
/// `{0, bytes}` when written, `{1, keys}` or `{2, bytes}` when refused.
const SET_WITHIN_QUOTA: &str = r"
local hash, bytes_key, buckets = KEYS[1], KEYS[2], KEYS[3]
local key, value = ARGV[1], ARGV[2]
local exists = redis.call('HEXISTS', hash, key) == 1
local keys = redis.call('HLEN', hash)
local used = tonumber(redis.call('GET', bytes_key) or '0')
if exists then
  used = used - redis.call('HSTRLEN', hash, key) - #key
else
  keys = keys + 1
end
local bytes = used + #key + #value
if keys > tonumber(ARGV[3]) then return {1, keys} end
if bytes > tonumber(ARGV[4]) then return {2, bytes} end
redis.call('HSET', hash, key, value)
redis.call('SET', bytes_key, bytes)
redis.call('SADD', buckets, hash)
return {0, bytes}
";

fn failed(error: redis::RedisError) -> KeyValueError {
    KeyValueError::Storage(format!("redis: {error}"))
}

impl RedisStore {
    /// The bucket's hash, and the key of its byte count.
    fn bucket_keys(&self, bucket: &Bucket) -> (String, String) {
        let hash = match &bucket.session {
            Some(session) => self.key(&["kv", &bucket.agent, "session", session]),
            None => self.key(&["kv", &bucket.agent, "agent"]),
        };
        let bytes = format!("{hash}:bytes");
        (hash, bytes)
    }

    fn buckets_key(&self, agent: &str) -> String {
        self.key(&["kv-buckets", agent])
    }
}

impl KeyValueStore for RedisStore {
    fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KeyValueError> {
        let (hash, _) = self.bucket_keys(bucket);
        self.lock().map_err(failed)?.hget(hash, key).map_err(failed)
    }

    /// Reads under `WATCH` and writes in `MULTI`/`EXEC`, retried when
    /// another writer got there first.
    fn update(
        &self,
        bucket: &Bucket,
        key: &str,
        quota: &BucketQuota,
        new: &NewValue<'_>,
    ) -> Result<Vec<u8>, KeyValueError> {
        let (hash, bytes_key) = self.bucket_keys(bucket);
        let buckets = self.buckets_key(&bucket.agent);
        let mut connection = self.lock().map_err(failed)?;
        redis::transaction(
            &mut *connection,
            &[&hash, &bytes_key],
            |connection, pipe| {
                let old: Option<Vec<u8>> = connection.hget(&hash, key)?;
                let keys: u64 = connection.hlen(&hash)?;
                let bytes: Option<u64> = connection.get(&bytes_key)?;
                let usage = BucketUsage {
                    keys,
                    bytes: bytes.unwrap_or(0),
                };
                let value = match new(old.as_deref()) {
                    Ok(value) => value,
                    Err(refused) => return Ok(Some(Err(refused))),
                };
                let old_len = old.as_ref().map(|v| v.len() as u64);
                let after = match check_quota(usage, key, old_len, value.len() as u64, quota) {
                    Ok(after) => after,
                    Err(refused) => return Ok(Some(Err(refused))),
                };
                let done: Option<(u64,)> = pipe
                    .hset(&hash, key, &value)
                    .ignore()
                    .sadd(&buckets, &hash)
                    .ignore()
                    .set(&bytes_key, after.bytes)
                    .ignore()
                    .hlen(&hash)
                    .query(connection)?;
                Ok(done.map(|_| Ok(value.clone())))
            },
        )
        .map_err(failed)?
    }

    fn set(
        &self,
        bucket: &Bucket,
        key: &str,
        value: &[u8],
        quota: &BucketQuota,
    ) -> Result<(), KeyValueError> {
        static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let (hash, bytes_key) = self.bucket_keys(bucket);
        let (code, count): (u64, u64) = SCRIPT
            .get_or_init(|| redis::Script::new(SET_WITHIN_QUOTA))
            .key(&hash)
            .key(bytes_key)
            .key(self.buckets_key(&bucket.agent))
            .arg(key)
            .arg(value)
            .arg(quota.max_keys)
            .arg(quota.max_bytes)
            .invoke(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        match code {
            0 => Ok(()),
            1 => Err(too_many_keys(quota)),
            _ => Err(too_many_bytes(quota, count)),
        }
    }

    fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KeyValueError> {
        let (hash, bytes_key) = self.bucket_keys(bucket);
        let mut connection = self.lock().map_err(failed)?;
        redis::transaction(
            &mut *connection,
            &[&hash, &bytes_key],
            |connection, pipe| {
                let old: Option<Vec<u8>> = connection.hget(&hash, key)?;
                let Some(old) = old else {
                    return Ok(Some(()));
                };
                let freed = (key.len() + old.len()) as i64;
                let done: Option<(i64,)> = pipe
                    .hdel(&hash, key)
                    .ignore()
                    .decr(&bytes_key, freed)
                    .query(connection)?;
                Ok(done.map(drop))
            },
        )
        .map_err(failed)
    }

    fn keys(
        &self,
        bucket: &Bucket,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), KeyValueError> {
        let (hash, _) = self.bucket_keys(bucket);
        let mut keys: Vec<String> = self.lock().map_err(failed)?.hkeys(hash).map_err(failed)?;
        keys.sort();
        Ok(page(keys.iter(), cursor))
    }

    fn clear(&self, bucket: &Bucket) -> Result<(), KeyValueError> {
        let (hash, bytes_key) = self.bucket_keys(bucket);
        redis::pipe()
            .atomic()
            .del(&[&hash, &bytes_key])
            .ignore()
            .srem(self.buckets_key(&bucket.agent), &hash)
            .ignore()
            .exec(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn remove_agent(&self, agent: &str) -> Result<(), KeyValueError> {
        let buckets_key = self.buckets_key(agent);
        let mut connection = self.lock().map_err(failed)?;
        let buckets: Vec<String> = connection.smembers(&buckets_key).map_err(failed)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for hash in &buckets {
            pipe.del(&[hash, &format!("{hash}:bytes")]).ignore();
        }
        pipe.del(&buckets_key)
            .ignore()
            .exec(&mut *connection)
            .map_err(failed)
    }
}
