//! The bounds every parse is held to.

/// Limits on one XML input, each with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input, bytes. Default 1 MiB.
    pub max_input_bytes: usize,
    /// Deepest element nesting. Default 64.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    /// Default 1,024.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 1 << 20,
            max_depth: 64,
            max_attributes: 1_024,
        }
    }
}
