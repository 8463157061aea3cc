//! Root tags: an element's expanded name in Clark notation, and the tags
//! the protocol reserves for itself.

use std::fmt;
use std::sync::Arc;

/// Tags the protocol reserves: never routed to agents, never registrable.
pub const RESERVED_TAGS: &[&str] = &[
    "authenticate",
    "resume-session",
    "catalog",
    "capability",
    "message",
    "meta",
    "access-denied",
    "error",
    "huh",
    "end-session",
    "privileged-command",
    "privileged-result",
    "federation-hello",
    "federation-message",
    "federation-revocations",
];

/// An element's expanded name: `local`, or `{namespace}local` (Clark
/// notation) for a namespaced one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Arc<str>);

impl Tag {
    /// A tag from its Clark-notation text, as written in configuration
    /// (`calculate`, `{urn:example}calculate`).
    pub fn new(clark: &str) -> Self {
        Tag(clark.into())
    }

    /// [`Tag::new`], sharing the text of a tag this OS thread made
    /// recently: the tags of a server's traffic are few, and each message
    /// otherwise allocates its tag anew.
    pub(crate) fn recent(clark: &str) -> Self {
        use std::cell::RefCell;
        /// Tags remembered per OS thread.
        const RECENT: usize = 8;
        thread_local! {
            static MADE: RefCell<([Option<Tag>; RECENT], usize)> =
                const { RefCell::new(([const { None }; RECENT], 0)) };
        }
        MADE.with(|made| {
            let Ok(mut made) = made.try_borrow_mut() else {
                return Tag::new(clark);
            };
            let (tags, next) = &mut *made;
            if let Some(tag) = tags.iter().flatten().find(|tag| tag.as_str() == clark) {
                return tag.clone();
            }
            let tag = Tag::new(clark);
            tags[*next] = Some(tag.clone());
            *next = (*next + 1) % RECENT;
            tag
        })
    }

    /// A tag from Clark-notation text written by a person or a command,
    /// checked: `local` or `{namespace}local`, where `local` is an XML name
    /// without a colon and the namespace is not empty. `None` otherwise.
    pub fn parse(clark: &str) -> Option<Self> {
        let local = match clark.strip_prefix('{') {
            Some(rest) => {
                let (namespace, local) = rest.split_once('}')?;
                if namespace.is_empty() || namespace.contains(['{', '<', '"']) {
                    return None;
                }
                local
            }
            None => clark,
        };
        (super::text::is_name(local) && !local.contains(':')).then(|| Tag(clark.into()))
    }

    /// The tag of an element named `local` in namespace `namespace` (empty:
    /// no namespace).
    pub fn from_parts(namespace: &str, local: &str) -> Self {
        if namespace.is_empty() {
            Tag(local.into())
        } else {
            Tag(format!("{{{namespace}}}{local}").into())
        }
    }

    /// The Clark-notation text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace part (empty when there is none).
    pub fn namespace(&self) -> &str {
        match self
            .0
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
        {
            Some((namespace, _)) => namespace,
            None => "",
        }
    }

    /// The local part.
    pub fn local_name(&self) -> &str {
        match self
            .0
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
        {
            Some((_, local)) => local,
            None => &self.0,
        }
    }

    /// Whether the protocol reserves this tag. Only unnamespaced tags are
    /// reserved.
    pub fn is_reserved(&self) -> bool {
        RESERVED_TAGS.contains(&&*self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clark_notation_round_trips() {
        let tag = Tag::from_parts("urn:x", "calc");
        assert_eq!(tag.as_str(), "{urn:x}calc");
        assert_eq!((tag.namespace(), tag.local_name()), ("urn:x", "calc"));
        let plain = Tag::from_parts("", "calc");
        assert_eq!((plain.namespace(), plain.local_name()), ("", "calc"));
        assert!(Tag::new("message").is_reserved());
        assert!(!Tag::from_parts("urn:x", "message").is_reserved());
    }
}
