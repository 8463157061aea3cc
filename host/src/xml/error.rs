//! Why XML was refused. Every message is safe to show whoever sent it: it
//! names the rule that was broken, never echoes more than a name.

use thiserror::Error;

/// Why an input was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// The input is larger than the limit.
    #[error("input is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// The input's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is not UTF-8.
    #[error("input is not valid UTF-8")]
    InvalidUtf8,
    /// A document type declaration.
    #[error("DOCTYPE declarations are not allowed")]
    Doctype,
    /// An entity declaration (in a DTD or anywhere else).
    #[error("entity declarations are not allowed")]
    EntityDeclaration,
    /// A reference to an entity that is not one of the five predefined ones.
    #[error("reference to undeclared entity `{0}`")]
    UndeclaredEntity(String),
    /// A processing instruction other than the XML declaration.
    #[error("processing instructions are not allowed")]
    ProcessingInstruction,
    /// Elements nest deeper than the limit.
    #[error("elements nest deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// One element has more attributes than the limit.
    #[error("an element has more than {limit} attributes")]
    TooManyAttributes {
        /// The limit.
        limit: usize,
    },
    /// A namespace prefix with no declaration in scope.
    #[error("namespace prefix `{0}` is not declared")]
    UnboundPrefix(String),
    /// Not well-formed XML, and not repairable.
    #[error("not well-formed XML: {0}")]
    Malformed(String),
}

impl XmlError {
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        XmlError::Malformed(reason.into())
    }
}
