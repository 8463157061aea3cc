//! Agents' key-value buckets in the SQLite file: table `kv`, one row per
//! key, the `agent` bucket under the empty session. Each write reads the
//! bucket's usage and writes in one transaction, so quotas hold under
//! concurrent writers.

use super::sqlite::SqliteStore;
use crate::capability::keyvalue::{
    check_quota, Bucket, BucketUsage, KeyValueError, KeyValueStore, NewValue, KEYS_PER_PAGE,
};
use crate::capability::BucketQuota;
use rusqlite::{params, OptionalExtension as _, Transaction};

fn failed(error: rusqlite::Error) -> KeyValueError {
    KeyValueError::Storage(format!("sqlite: {error}"))
}

fn session(bucket: &Bucket) -> &str {
    bucket.session.as_deref().unwrap_or("")
}

/// The bucket's usage and the current length of `key`'s value.
fn usage(
    transaction: &Transaction<'_>,
    bucket: &Bucket,
    key: &str,
) -> Result<(BucketUsage, Option<Vec<u8>>), KeyValueError> {
    let (keys, bytes): (i64, i64) = transaction
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0)
             FROM kv WHERE agent = ?1 AND session = ?2",
            params![bucket.agent, session(bucket)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(failed)?;
    let old: Option<Vec<u8>> = transaction
        .query_row(
            "SELECT value FROM kv WHERE agent = ?1 AND session = ?2 AND key = ?3",
            params![bucket.agent, session(bucket), key],
            |row| row.get(0),
        )
        .optional()
        .map_err(failed)?;
    let usage = BucketUsage {
        keys: keys as u64,
        bytes: bytes as u64,
    };
    Ok((usage, old))
}

impl KeyValueStore for SqliteStore {
    fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KeyValueError> {
        self.lock()
            .query_row(
                "SELECT value FROM kv WHERE agent = ?1 AND session = ?2 AND key = ?3",
                params![bucket.agent, session(bucket), key],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed)
    }

    fn update(
        &self,
        bucket: &Bucket,
        key: &str,
        quota: &BucketQuota,
        new: &NewValue<'_>,
    ) -> Result<Vec<u8>, KeyValueError> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(failed)?;
        let (usage, old) = usage(&transaction, bucket, key)?;
        let value = new(old.as_deref())?;
        let old_len = old.map(|v| v.len() as u64);
        check_quota(usage, key, old_len, value.len() as u64, quota)?;
        transaction
            .execute(
                "INSERT OR REPLACE INTO kv (agent, session, key, value) VALUES (?1, ?2, ?3, ?4)",
                params![bucket.agent, session(bucket), key, value],
            )
            .map_err(failed)?;
        transaction.commit().map_err(failed)?;
        Ok(value)
    }

    fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KeyValueError> {
        self.lock()
            .execute(
                "DELETE FROM kv WHERE agent = ?1 AND session = ?2 AND key = ?3",
                params![bucket.agent, session(bucket), key],
            )
            .map(drop)
            .map_err(failed)
    }

    fn keys(
        &self,
        bucket: &Bucket,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), KeyValueError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT key FROM kv WHERE agent = ?1 AND session = ?2
                 ORDER BY key LIMIT ?3 OFFSET ?4",
            )
            .map_err(failed)?;
        let mut keys: Vec<String> = statement
            .query_map(
                params![
                    bucket.agent,
                    session(bucket),
                    KEYS_PER_PAGE as i64 + 1,
                    cursor as i64
                ],
                |row| row.get(0),
            )
            .map_err(failed)?
            .collect::<Result<_, _>>()
            .map_err(failed)?;
        let more = keys.len() > KEYS_PER_PAGE;
        keys.truncate(KEYS_PER_PAGE);
        let next = cursor + keys.len() as u64;
        Ok((keys, more.then_some(next)))
    }

    fn clear(&self, bucket: &Bucket) -> Result<(), KeyValueError> {
        self.lock()
            .execute(
                "DELETE FROM kv WHERE agent = ?1 AND session = ?2",
                params![bucket.agent, session(bucket)],
            )
            .map(drop)
            .map_err(failed)
    }

    fn remove_agent(&self, agent: &str) -> Result<(), KeyValueError> {
        self.lock()
            .execute("DELETE FROM kv WHERE agent = ?1", params![agent])
            .map(drop)
            .map_err(failed)
    }
}
