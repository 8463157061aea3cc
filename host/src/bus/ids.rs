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
        ThreadId(uuid::Uuid::new_v4().to_string().into())
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
    fn thread_ids_are_unique_uuids() {
        let (a, b) = (ThreadId::new(), ThreadId::new());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
    }
}
