//! Identifiers on the bus: threads, sessions, agents. Newtypes, so that one
//! can never be passed where another is meant.

use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// A thread's opaque id: a random UUID made by the server.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ThreadId(Arc<str>);

impl ThreadId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self::random().0
    }

    /// A fresh random id (a version 4 UUID) and its 128 bits, which is how
    /// the bus keys its threads.
    pub(crate) fn random() -> (Self, u128) {
        let uuid = uuid::Builder::from_random_bytes(random_bits().to_le_bytes()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid.hyphenated().encode_lower(&mut text);
        (ThreadId((&*text).into()), uuid.as_u128())
    }

    /// The 128 bits of `id` if it is a UUID, whatever made it.
    pub(crate) fn bits(id: &str) -> Option<u128> {
        uuid::Uuid::try_parse(id).ok().map(|uuid| uuid.as_u128())
    }

    /// Wraps an id a client sent; it means nothing until looked up.
    pub fn from_client(id: &str) -> Self {
        ThreadId(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ThreadId {
    fn default() -> Self {
        Self::new()
    }
}

/// 128 unpredictable bits without a system call: std's SipHash, keyed
/// once per OS thread from the system's randomness, over a counter. Ids
/// made this way are unique and cannot be guessed from one another (they
/// grant nothing by themselves: a thread is only ever reached through the
/// session that owns it), and cost no `getrandom` call per message.
fn random_bits() -> u128 {
    use std::cell::Cell;
    use std::hash::BuildHasher as _;
    thread_local! {
        static KEYED: (std::collections::hash_map::RandomState, Cell<u64>) =
            (std::collections::hash_map::RandomState::new(), Cell::new(0));
    }
    KEYED.with(|(keys, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        let high = keys.hash_one((n, 0u8));
        let low = keys.hash_one((n, 1u8));
        (u128::from(high) << 64) | u128::from(low)
    })
}

/// Hashes a thread's 128 random bits by folding them: they are already
/// uniform, and only the server makes the keys that go into a table.
#[derive(Default, Clone, Copy)]
pub(crate) struct ThreadBitsHasher(u64);

impl std::hash::Hasher for ThreadBitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, bits: u128) {
        self.0 ^= (bits as u64) ^ ((bits >> 64) as u64);
    }
}

/// The bus's name for a connected (or resumable) client session.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// A fresh random id.
    pub fn new() -> Self {
        SessionId(uuid::Uuid::new_v4().to_string().into())
    }

    /// Wraps an existing id.
    pub fn from_string(id: &str) -> Self {
        SessionId(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

/// An agent's registered name: 1 to 64 characters of `a-z`, `0-9`, `-`,
/// `_` and `.`, starting with a letter, so that it is safe in logs, XML
/// attributes and `from` fields alike.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(Arc<str>);

/// A string that is not a valid agent name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("agent names are 1 to 64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter")]
pub struct BadAgentName;

impl AgentName {
    /// Checks and wraps `name`.
    pub fn new(name: &str) -> Result<Self, BadAgentName> {
        let mut chars = name.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
        if starts_with_letter && rest_ok && name.len() <= 64 {
            Ok(AgentName(name.into()))
        } else {
            Err(BadAgentName)
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0)
            }
        }
    )*};
}

display_as_str!(ThreadId, SessionId, AgentName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_checked() {
        for good in ["calc", "echo-2", "a", "my_agent.v1"] {
            assert!(AgentName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Calc",
            "1calc",
            "user:alice",
            "a b",
            "<x>",
            &"a".repeat(65),
        ] {
            assert_eq!(AgentName::new(bad), Err(BadAgentName), "{bad}");
        }
    }

    #[test]
    fn thread_ids_are_unique_version_4_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (id, bits) = ThreadId::random();
            let uuid = uuid::Uuid::try_parse(id.as_str()).unwrap();
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(ThreadId::bits(id.as_str()), Some(bits));
            assert!(seen.insert(bits), "{id} came twice");
        }
        // Other OS threads have keys of their own.
        let elsewhere = std::thread::spawn(|| ThreadId::random().1).join().unwrap();
        assert!(!seen.contains(&elsewhere));
        assert_eq!(ThreadId::bits("not-a-uuid"), None);
    }
}
