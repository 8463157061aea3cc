//! Which nodes of a cluster run an admitted agent: the `node` attribute of
//! `<agent-registration>` (`node="*"`, the default, for every node; or
//! node names separated by commas).

use super::Refused;
use std::fmt;

/// The nodes an admitted agent runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// Every node (`node="*"`, or no attribute). On a server outside a
    /// cluster, that server.
    #[default]
    All,
    /// Only the nodes named, in the order given, without repeats.
    Nodes(Vec<String>),
}

/// Whether `name` is a valid node name: letters, digits, `-` and `_`.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Placement {
    /// Reads the attribute's value.
    pub fn parse(text: &str) -> Result<Placement, Refused> {
        let text = text.trim();
        if text == "*" {
            return Ok(Placement::All);
        }
        let mut nodes: Vec<String> = Vec::new();
        for name in text.split(',').map(str::trim) {
            if !valid_node_name(name) {
                return Err(Refused::Invalid(format!(
                    "`node` takes `*` or node names separated by commas (letters, digits, - \
                     and _), not {text:?}"
                )));
            }
            if !nodes.iter().any(|n| n == name) {
                nodes.push(name.to_owned());
            }
        }
        Ok(Placement::Nodes(nodes))
    }

    /// Whether the node named `node` runs the agent; `None` is a server
    /// outside a cluster, which runs only agents placed on every node.
    pub fn includes(&self, node: Option<&str>) -> bool {
        match (self, node) {
            (Placement::All, _) => true,
            (Placement::Nodes(nodes), Some(node)) => nodes.iter().any(|n| n == node),
            (Placement::Nodes(_), None) => false,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::All => f.write_str("*"),
            Placement::Nodes(nodes) => f.write_str(&nodes.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stars_and_lists() {
        assert_eq!(Placement::parse("*").unwrap(), Placement::All);
        assert_eq!(
            Placement::parse("b, c,b").unwrap(),
            Placement::Nodes(vec!["b".into(), "c".into()])
        );
        assert_eq!(Placement::parse("b,c").unwrap().to_string(), "b,c");
        assert!(Placement::parse("").is_err());
        assert!(Placement::parse("a,,b").is_err());
        assert!(Placement::parse("a b").is_err());
    }

    #[test]
    fn says_which_nodes_run_it() {
        let some = Placement::parse("b,c").unwrap();
        assert!(some.includes(Some("c")));
        assert!(!some.includes(Some("a")));
        assert!(!some.includes(None));
        assert!(Placement::All.includes(None));
        assert!(Placement::All.includes(Some("a")));
    }
}
