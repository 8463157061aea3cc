//! The Redis backend, for several processes sharing one store. Every key
//! starts with a prefix (default `agentserver`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:command:ID` | string, expiring with the command | a used command id (`SET NX EX`) |
//! | `P:agents` | set | names of admitted agents |
//! | `P:agent:NAME` | hash | `listens`, `description`, `limits`, `sha256`, `component` |
//! | `P:audit` | list | `SEQ TAB HASH TAB ENTRY`, entry *n* at index *n − 1* |
//! | `P:sessions` | set | ids of stored sessions |
//! | `P:session:ID` | hash | `user`, `token_hash`, `timeout` |
//! | `P:frames:ID` | sorted set | pending frames `SEQ TAB FRAME`, scored by `SEQ` |
//! | `P:kv:…`, `P:kv-buckets:AGENT` | hash, string, set | agents' key-value buckets (see `redis_kv`) |
//!
//! A write is done when Redis acknowledged it; multi-key changes go in
//! one `MULTI`/`EXEC` transaction.

use super::{admitted_from_stored, write_limits};
use crate::audit::{decode_hash, AuditStore, StoredEntry, GENESIS};
use crate::privileged::{AdmittedAgent, SignedKind, SignedRecord, StoreError, StructureStore};
use crate::runtime::ComponentHash;
use crate::session::{Rotation, SessionRecord, SessionStore, SharedSessions, StoredSession};
use redis::{Commands as _, Connection, ConnectionLike as _};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long to wait for the server when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reconnection may take while serving: a call waiting on it
/// holds up whoever made it.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for Redis to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed reconnection, calls fail at once for this long rather
/// than each waiting on a connection attempt of its own.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// An agent's hash fields as read: listens, description, limits, sha256,
/// component.
type AgentFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
);

/// A store on a Redis server.
pub struct RedisStore {
    client: redis::Client,
    connection: Mutex<Link>,
    prefix: String,
}

/// The connection, and since when it has been lost.
struct Link {
    connection: Option<Connection>,
    /// Since when Redis has been unreachable, and when to try it again.
    lost: Option<(Instant, Instant)>,
}

/// The connection, held for one call.
pub(super) struct Live<'a>(MutexGuard<'a, Link>);

impl std::ops::Deref for Live<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // `lock` hands out a `Live` only with a connection in place.
        self.0.connection.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Live<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.0.connection.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A connection with timeouts on every command, so that a Redis that stops
/// answering fails calls instead of holding them forever.
fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<Connection> {
    let connection = client.get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(connection)
}

fn failed(error: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {error}"))
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`); keys start with `prefix`.
    pub fn open(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(failed)?;
        let mut connection = connect(&client, CONNECT_TIMEOUT).map_err(failed)?;
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(failed)?;
        Ok(RedisStore {
            client,
            connection: Mutex::new(Link {
                connection: Some(connection),
                lost: None,
            }),
            prefix: prefix.to_owned(),
        })
    }

    /// The connection, for one call: reconnected first if it was lost (a
    /// Redis restart breaks it), or an error at once while Redis stays
    /// unreachable. Losing it and getting it back are logged once each.
    pub(super) fn lock(&self) -> redis::RedisResult<Live<'_>> {
        let mut link = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if link.connection.as_ref().is_some_and(|c| c.is_open()) {
            return Ok(Live(link));
        }
        let now = Instant::now();
        if let Some((_, retry_at)) = link.lost {
            if now < retry_at {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "unreachable; reconnecting",
                )
                .into());
            }
        }
        match connect(&self.client, RECONNECT_TIMEOUT) {
            Ok(connection) => {
                if let Some((since, _)) = link.lost.take() {
                    tracing::warn!(
                        after_ms = since.elapsed().as_millis() as u64,
                        "redis reachable again"
                    );
                }
                link.connection = Some(connection);
                Ok(Live(link))
            }
            Err(error) => {
                link.connection = None;
                let since = match link.lost {
                    Some((since, _)) => since,
                    None => {
                        tracing::warn!(
                            %error,
                            "redis unreachable; reconnecting, and serving what needs no storage meanwhile"
                        );
                        now
                    }
                };
                link.lost = Some((since, now + RECONNECT_BACKOFF));
                Err(error)
            }
        }
    }

    pub(super) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }
}

/// Appends the audit entries (`SEQ\tHASH\tENTRY`) whose number is past
/// the last one stored, in order: entries already there are skipped.
const APPEND_AUDIT: &str = r"
local last = redis.call('LINDEX', KEYS[1], -1)
local last_seq = 0
if last then last_seq = tonumber(string.match(last, '^(%d+)\t')) end
for _, element in ipairs(ARGV) do
  local seq = tonumber(string.match(element, '^(%d+)\t'))
  if seq > last_seq then
    redis.call('RPUSH', KEYS[1], element)
    last_seq = seq
  end
end
return 1
";

/// Sets the user's last used time step to `ARGV[1]` unless it is already
/// there or later: 1 when set, 0 when not. Kept an hour, far past the
/// codes' window.
const CLAIM_STEP: &str = r"
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 3600)
return 1
";

impl crate::auth::StepMemory for RedisStore {
    fn claim_step(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let set: i64 = redis::Script::new(CLAIM_STEP)
            .key(self.key(&["totp-step", user]))
            .arg(step)
            .invoke(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        Ok(set == 1)
    }
}

impl crate::auth::SharedFailures for RedisStore {
    fn record_failure(&self, key: &str, window: u64) -> Result<u64, StoreError> {
        let key = self.key(&["auth-failures", key]);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window)
            .arg("NX")
            .ignore()
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        Ok(count)
    }

    fn failures(&self, key: &str) -> Result<u64, StoreError> {
        let count: Option<u64> = redis::cmd("GET")
            .arg(self.key(&["auth-failures", key]))
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        Ok(count.unwrap_or(0))
    }
}

impl crate::auth::SharedUsers for RedisStore {
    fn load_users(&self) -> Result<Option<String>, StoreError> {
        redis::cmd("GET")
            .arg(self.key(&["users"]))
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn save_users(&self, text: &str) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.key(&["users"]))
            .arg(text)
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }
}

impl StructureStore for RedisStore {
    fn claim_command_id(&self, id: &str, expires: u64, now: u64) -> Result<bool, StoreError> {
        // Kept for as long as the caller's clock says it is valid (at
        // least a second; the time check refuses it after that anyway).
        let seconds = expires.saturating_sub(now).max(1);
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&["command", id]))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(seconds)
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        Ok(set.is_some())
    }

    fn mark_applied(&self, id: &str) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.key(&["command", id]))
            .arg("applied")
            .arg("XX")
            .arg("KEEPTTL")
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn was_applied(&self, id: &str) -> Result<bool, StoreError> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.key(&["command", id]))
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        Ok(value.as_deref() == Some("applied"))
    }

    fn admitted_agents(&self) -> Result<Vec<AdmittedAgent>, StoreError> {
        let mut connection = self.lock().map_err(failed)?;
        let mut names: Vec<String> = connection.smembers(self.key(&["agents"])).map_err(failed)?;
        names.sort();
        let mut agents = Vec::with_capacity(names.len());
        for name in names {
            let key = self.key(&["agent", &name]);
            let (listens, description, limits, sha256, component, nodes): AgentFields =
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&[
                        "listens",
                        "description",
                        "limits",
                        "sha256",
                        "component",
                        "nodes",
                    ])
                    .query(&mut *connection)
                    .map_err(failed)?;
            let (Some(listens), Some(limits), Some(sha256), Some(component)) =
                (listens, limits, sha256, component)
            else {
                return Err(StoreError(format!(
                    "the stored record of agent `{name}` is incomplete"
                )));
            };
            agents.push(admitted_from_stored(
                name,
                &listens,
                description.unwrap_or_default(),
                &limits,
                &sha256,
                component,
                nodes.as_deref(),
            )?);
        }
        Ok(agents)
    }

    fn save_agent(&self, agent: &AdmittedAgent) -> Result<(), StoreError> {
        let key = self.key(&["agent", &agent.name]);
        redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("listens", agent.listens.join("\n").into_bytes()),
                    ("description", agent.description.clone().into_bytes()),
                    ("limits", write_limits(&agent.limits).into_bytes()),
                    (
                        "sha256",
                        ComponentHash::of(&agent.component).to_string().into_bytes(),
                    ),
                    ("component", agent.component.clone()),
                    ("nodes", agent.nodes.to_string().into_bytes()),
                ],
            )
            .sadd(self.key(&["agents"]), &agent.name)
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn forget_agent(&self, name: &str) -> Result<(), StoreError> {
        redis::pipe()
            .atomic()
            .del(self.key(&["agent", name]))
            .srem(self.key(&["agents"]), name)
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn save_signed(
        &self,
        kind: SignedKind,
        key: &str,
        record: &SignedRecord,
    ) -> Result<(), StoreError> {
        redis::cmd("HSET")
            .arg(self.key(&["signed", kind.name()]))
            .arg(key)
            .arg(format!(
                "{}\n{}\n{}",
                record.id, record.signature, record.payload
            ))
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn signed_records(&self, kind: SignedKind) -> Result<Vec<SignedRecord>, StoreError> {
        let stored: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&["signed", kind.name()]))
            .query(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        stored
            .into_iter()
            .map(|(key, value)| {
                let mut parts = value.splitn(3, '\n');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(id), Some(signature), Some(payload)) => Ok(SignedRecord {
                        id: id.to_owned(),
                        signature: signature.to_owned(),
                        payload: payload.to_owned(),
                    }),
                    _ => Err(StoreError(format!(
                        "the stored {} `{key}` is incomplete",
                        kind.name()
                    ))),
                }
            })
            .collect()
    }

    fn forget_signed(&self, kind: SignedKind, key: &str) -> Result<(), StoreError> {
        redis::cmd("HDEL")
            .arg(self.key(&["signed", kind.name()]))
            .arg(key)
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn is_persistent(&self) -> bool {
        true
    }
}

/// Splits a stored `SEQ TAB HASH TAB ENTRY` element.
fn parse_element(element: &str) -> Result<StoredEntry, StoreError> {
    let mut parts = element.splitn(3, '\t');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(seq), Some(hash), Some(entry)) => Ok(StoredEntry {
            seq: seq.parse().map_err(|_| {
                StoreError(format!("stored audit element has a bad number {seq:?}"))
            })?,
            entry: entry.to_owned(),
            hash: hash.to_owned(),
        }),
        _ => Err(StoreError("a stored audit element is cut short".into())),
    }
}

impl AuditStore for RedisStore {
    fn audit_start(&self) -> Result<(u64, [u8; 32]), StoreError> {
        Ok((1, GENESIS))
    }

    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let last: Option<String> = self
            .lock()
            .map_err(failed)?
            .lindex(self.key(&["audit"]), -1)
            .map_err(failed)?;
        let Some(last) = last else { return Ok(None) };
        let entry = parse_element(&last)?;
        let hash = decode_hash(&entry.hash)?;
        Ok(Some((entry.seq, hash)))
    }

    fn append_audit(&self, entries: &[StoredEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let elements: Vec<String> = entries
            .iter()
            .map(|e| format!("{}\t{}\t{}", e.seq, e.hash, e.entry))
            .collect();
        // Idempotent: a batch retried after its reply was lost (Redis
        // stopped between storing it and answering) is not stored twice.
        redis::Script::new(APPEND_AUDIT)
            .key(self.key(&["audit"]))
            .arg(elements)
            .invoke::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = from.saturating_sub(1) as isize;
        let elements: Vec<String> = self
            .lock()
            .map_err(failed)?
            .lrange(self.key(&["audit"]), start, start + limit as isize - 1)
            .map_err(failed)?;
        elements.iter().map(|e| parse_element(e)).collect()
    }
}

impl SessionStore for RedisStore {
    fn save_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let key = self.key(&["session", &record.id]);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("user", record.user.clone()),
                    ("token_hash", hex::encode(record.token_hash)),
                    ("timeout", record.timeout_secs.to_string()),
                ],
            )
            .sadd(self.key(&["sessions"]), &record.id)
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        redis::pipe()
            .atomic()
            .del(self.key(&["session", id]))
            .del(self.key(&["frames", id]))
            .srem(self.key(&["sessions"]), id)
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn append_frame(&self, id: &str, seq: u64, frame: &str) -> Result<(), StoreError> {
        self.lock()
            .map_err(failed)?
            .zadd::<_, _, _, ()>(self.key(&["frames", id]), format!("{seq}\t{frame}"), seq)
            .map_err(failed)
    }

    fn remove_frames_through(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        self.lock()
            .map_err(failed)?
            .zrembyscore::<_, _, _, ()>(self.key(&["frames", id]), "-inf", seq)
            .map_err(failed)
    }

    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        let mut connection = self.lock().map_err(failed)?;
        let mut ids: Vec<String> = connection
            .smembers(self.key(&["sessions"]))
            .map_err(failed)?;
        ids.sort();
        let mut loaded = Vec::with_capacity(ids.len());
        for id in ids {
            loaded.push(self.stored_session(&mut connection, id)?.1);
        }
        Ok(loaded)
    }
}

/// In one step: if the session's token hash is ARGV[1], makes it ARGV[2]
/// and the holder ARGV[3]. 2: done; 1: another token; 0: no session.
const ROTATE_TOKEN: &str = r"
local current = redis.call('HGET', KEYS[1], 'token_hash')
if not current then return 0 end
if current ~= ARGV[1] then return 1 end
redis.call('HSET', KEYS[1], 'token_hash', ARGV[2], 'node', ARGV[3])
return 2
";

/// Deletes the session's record (KEYS[1]) and frames (KEYS[2]) and takes
/// it out of the set (KEYS[3]) if node ARGV[2] holds session ARGV[1].
const FORGET_IF_HELD: &str = r"
local holder = redis.call('HGET', KEYS[1], 'node')
if holder and holder ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
";

impl RedisStore {
    /// Session `id` as stored, with the node holding it (if any).
    fn stored_session(
        &self,
        connection: &mut Connection,
        id: String,
    ) -> Result<(Option<String>, StoredSession), StoreError> {
        let (user, token_hash, timeout, node): (
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(self.key(&["session", &id]))
            .arg(&["user", "token_hash", "timeout", "node"])
            .query(connection)
            .map_err(failed)?;
        let (Some(user), Some(token_hash), Some(timeout)) = (user, token_hash, timeout) else {
            return Err(StoreError(format!(
                "the stored record of session {id} is incomplete"
            )));
        };
        let token_hash = decode_hash(&token_hash)?;
        let members: Vec<String> = connection
            .zrange(self.key(&["frames", &id]), 0, -1)
            .map_err(failed)?;
        let mut frames = Vec::with_capacity(members.len());
        for member in members {
            let (seq, frame) = member
                .split_once('\t')
                .and_then(|(seq, frame)| Some((seq.parse::<u64>().ok()?, frame.to_owned())))
                .ok_or_else(|| StoreError(format!("session {id}: a stored frame is malformed")))?;
            frames.push((seq, frame));
        }
        Ok((
            node,
            (
                SessionRecord {
                    id,
                    user,
                    token_hash,
                    timeout_secs: timeout,
                },
                frames,
            ),
        ))
    }
}

impl SharedSessions for RedisStore {
    fn hold(&self, id: &str, node: &str) -> Result<(), StoreError> {
        redis::cmd("HSET")
            .arg(self.key(&["session", id]))
            .arg("node")
            .arg(node)
            .query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn rotate(
        &self,
        id: &str,
        presented: &[u8; 32],
        next: &[u8; 32],
        node: &str,
    ) -> Result<Rotation, StoreError> {
        let outcome: i64 = redis::Script::new(ROTATE_TOKEN)
            .key(self.key(&["session", id]))
            .arg(hex::encode(presented))
            .arg(hex::encode(next))
            .arg(node)
            .invoke(&mut *self.lock().map_err(failed)?)
            .map_err(failed)?;
        Ok(match outcome {
            2 => Rotation::Rotated,
            1 => Rotation::BadToken,
            _ => Rotation::Unknown,
        })
    }

    fn load_session(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let mut connection = self.lock().map_err(failed)?;
        let exists: bool = connection
            .exists(self.key(&["session", id]))
            .map_err(failed)?;
        if !exists {
            return Ok(None);
        }
        Ok(Some(self.stored_session(&mut connection, id.to_owned())?.1))
    }

    fn held_by(&self, node: &str) -> Result<Vec<StoredSession>, StoreError> {
        let mut connection = self.lock().map_err(failed)?;
        let mut ids: Vec<String> = connection
            .smembers(self.key(&["sessions"]))
            .map_err(failed)?;
        ids.sort();
        let mut held = Vec::new();
        for id in ids {
            let exists: bool = connection
                .exists(self.key(&["session", &id]))
                .map_err(failed)?;
            if !exists {
                // Its lease ran out: its holder is gone for good.
                connection
                    .srem::<_, _, ()>(self.key(&["sessions"]), &id)
                    .map_err(failed)?;
                continue;
            }
            let (holder, session) = self.stored_session(&mut connection, id)?;
            if holder.as_deref().is_none_or(|holder| holder == node) {
                held.push(session);
            }
        }
        Ok(held)
    }

    fn renew_leases(&self, leases: &[(String, u64)]) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, seconds) in leases {
            pipe.expire(self.key(&["session", id]), *seconds as i64)
                .ignore()
                .expire(self.key(&["frames", id]), *seconds as i64)
                .ignore();
        }
        pipe.query::<()>(&mut *self.lock().map_err(failed)?)
            .map_err(failed)
    }

    fn forget_if_held(&self, id: &str, node: &str) -> Result<(), StoreError> {
        redis::Script::new(FORGET_IF_HELD)
            .key(self.key(&["session", id]))
            .key(self.key(&["frames", id]))
            .key(self.key(&["sessions"]))
            .arg(id)
            .arg(node)
            .invoke::<i64>(&mut *self.lock().map_err(failed)?)
            .map(|_| ())
            .map_err(failed)
    }
}
