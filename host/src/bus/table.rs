//! The routing table: which listeners hear which root tag.
//!
//! The table is immutable; a change builds a new one and swaps it in, so
//! routing reads a consistent snapshot without holding a lock while it
//! calls agents. A message already routed finishes with the listeners it was
//! routed to; the next message sees the new table.

use super::ids::AgentName;
use crate::runtime::Agent;
use crate::xml::Tag;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use thiserror::Error;

/// Where a listener's messages go: a wasm agent in this process, or a
/// listener elsewhere (a federation link) that takes the same canonical
/// payload and answers later on the same thread.
#[derive(Debug, Clone)]
pub enum ListenerTarget {
    /// An agent running in this process.
    Local(Arc<Agent>),
    /// A listener outside this process.
    Remote(Arc<dyn RemoteTarget>),
}

impl ListenerTarget {
    /// The local agent, if it is one.
    pub fn local(&self) -> Option<&Arc<Agent>> {
        match self {
            ListenerTarget::Local(agent) => Some(agent),
            ListenerTarget::Remote(_) => None,
        }
    }
}

/// A listener outside this process. The bus hands it each message routed
/// to it; whatever answers come back later arrive through the
/// [`ThreadHandle`](super::ThreadHandle) it was given.
pub trait RemoteTarget: Send + Sync + std::fmt::Debug {
    /// Takes one message without waiting for the far side. An error is the
    /// reason it could not be sent; the thread gets `agent-failed` with it.
    fn forward(&self, delivery: super::RemoteDelivery) -> Result<(), String>;

    /// Whether the far side is another node of this same organism (so
    /// that structural commands naming the agent reach it there), rather
    /// than another organism.
    fn is_same_organism(&self) -> bool {
        false
    }
}

/// A registered listener: an agent's name, the tags it listens to, the
/// description users see in their catalog, and where it runs.
#[derive(Debug, Clone)]
pub struct Listener {
    /// The agent's registered name.
    pub name: AgentName,
    /// The root tags it listens to.
    pub listens: Vec<Tag>,
    /// One line for the catalog.
    pub description: String,
    /// Where its messages go.
    pub target: ListenerTarget,
}

/// Why a listener could not be added or removed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TableError {
    /// An agent with that name is already registered.
    #[error("an agent named `{0}` is already registered")]
    NameTaken(String),
    /// The tag is reserved for the protocol.
    #[error("`{0}` is a reserved tag and cannot be listened to")]
    ReservedTag(String),
    /// The listener listens to nothing.
    #[error("an agent must listen to at least one tag")]
    NoTags,
    /// No agent with that name is registered.
    #[error("no agent named `{0}` is registered")]
    UnknownAgent(String),
}

/// One tag a user may see in their catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// The tag.
    pub tag: Tag,
    /// The agent listening to it.
    pub agent: AgentName,
    /// The agent's description.
    pub description: String,
}

/// An immutable snapshot of who listens to what.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    by_tag: HashMap<Tag, Vec<Arc<Listener>>>,
    by_name: BTreeMap<AgentName, Arc<Listener>>,
}

impl RoutingTable {
    /// The listeners of `tag`, in registration order.
    pub fn listeners(&self, tag: &Tag) -> &[Arc<Listener>] {
        self.by_tag.get(tag).map_or(&[], Vec::as_slice)
    }

    /// The listener named `name`.
    pub fn agent(&self, name: &AgentName) -> Option<&Arc<Listener>> {
        self.by_name.get(name)
    }

    /// All listeners, by name.
    pub fn agents(&self) -> impl Iterator<Item = &Arc<Listener>> {
        self.by_name.values()
    }

    /// Every (tag, agent) pair, sorted by tag then agent.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut all: Vec<Capability> = self
            .by_name
            .values()
            .flat_map(|listener| {
                listener.listens.iter().map(|tag| Capability {
                    tag: tag.clone(),
                    agent: listener.name.clone(),
                    description: listener.description.clone(),
                })
            })
            .collect();
        all.sort_by(|a, b| {
            a.tag
                .as_str()
                .cmp(b.tag.as_str())
                .then(a.agent.cmp(&b.agent))
        });
        all
    }

    /// This table plus `listener`.
    pub fn with(&self, listener: Listener) -> Result<RoutingTable, TableError> {
        if self.by_name.contains_key(&listener.name) {
            return Err(TableError::NameTaken(listener.name.to_string()));
        }
        if listener.listens.is_empty() {
            return Err(TableError::NoTags);
        }
        if let Some(tag) = listener.listens.iter().find(|tag| tag.is_reserved()) {
            return Err(TableError::ReservedTag(tag.to_string()));
        }
        let mut next = self.clone();
        let listener = Arc::new(listener);
        for tag in &listener.listens {
            let listeners = next.by_tag.entry(tag.clone()).or_default();
            if !listeners.iter().any(|l| l.name == listener.name) {
                listeners.push(Arc::clone(&listener));
            }
        }
        next.by_name.insert(listener.name.clone(), listener);
        Ok(next)
    }

    /// This table without the agent named `name`.
    pub fn without(&self, name: &AgentName) -> Result<(RoutingTable, Arc<Listener>), TableError> {
        let mut next = self.clone();
        let removed = next
            .by_name
            .remove(name)
            .ok_or_else(|| TableError::UnknownAgent(name.to_string()))?;
        next.by_tag.retain(|_, listeners| {
            listeners.retain(|l| &l.name != name);
            !listeners.is_empty()
        });
        Ok((next, removed))
    }
}
