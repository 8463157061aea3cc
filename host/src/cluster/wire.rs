//! What nodes of one organism say to each other over NATS, as XML:
//!
//! ```text
//! <node name="b" time="MS"><serves agent="calc" tag="calculate">Evaluates…</serves></node>   (announce, every second)
//! <node leaving="yes" name="b" time="MS"></node>                                          (on shutdown)
//! <cluster-message depth="1" from="user:alice" node="a" thread="T"><calculate>2+2</calculate></cluster-message>
//! <taken node="b"></taken>                                                                (the reply: which node took it)
//! <cluster-answer depth="2" from="calc" thread="T"><result>4</result></cluster-answer>
//! ```
//!
//! A message carries its canonical payload, its sender as the origin's bus
//! named it, its depth and the thread on the origin node; an answer names
//! that thread. Payloads are read back with the XML core, so they arrive
//! canonical.

use crate::xml::{
    canonicalize, canonicalize_subtree, escape_attribute, escape_text, CanonicalXml, Element,
    Limits,
};

/// What one node serves: (agent, tag, description).
pub type Serves = Vec<(String, String, String)>;

/// A node's announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The node's name.
    pub node: String,
    /// Whether it is leaving.
    pub leaving: bool,
    /// What it serves.
    pub serves: Serves,
}

impl Announce {
    /// The announcement's XML.
    pub fn to_xml(&self, time_ms: u64) -> String {
        let mut out = String::from("<node");
        if self.leaving {
            out.push_str(" leaving=\"yes\"");
        }
        out.push_str(" name=\"");
        escape_attribute(&mut out, &self.node);
        out.push_str(&format!("\" time=\"{time_ms}\">"));
        for (agent, tag, description) in &self.serves {
            out.push_str("<serves agent=\"");
            escape_attribute(&mut out, agent);
            out.push_str("\" tag=\"");
            escape_attribute(&mut out, tag);
            out.push_str("\">");
            escape_text(&mut out, description);
            out.push_str("</serves>");
        }
        out.push_str("</node>");
        out
    }

    /// Reads an announcement.
    pub fn read(bytes: &[u8]) -> Option<Announce> {
        let root = element(bytes)?;
        if root.name != "node" {
            return None;
        }
        Some(Announce {
            node: root.attribute("name")?.to_owned(),
            leaving: root.attribute("leaving") == Some("yes"),
            serves: root
                .children_named("serves")
                .filter_map(|serves| {
                    Some((
                        serves.attribute("agent")?.to_owned(),
                        serves.attribute("tag")?.to_owned(),
                        serves.text.clone(),
                    ))
                })
                .collect(),
        })
    }
}

/// A message for a node that serves its tag, or an answer coming back.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The origin node (messages only).
    pub node: String,
    /// The sender, as the bus names it.
    pub from: String,
    /// Agent deliveries behind it.
    pub depth: u32,
    /// The thread on the origin node.
    pub thread: String,
    /// The canonical payload.
    pub payload: CanonicalXml,
}

impl Carried {
    /// `<cluster-message …>` (with `answer` false) or `<cluster-answer …>`.
    pub fn to_xml(&self, answer: bool) -> String {
        let name = if answer {
            "cluster-answer"
        } else {
            "cluster-message"
        };
        let mut out = format!("<{name} depth=\"{}\" from=\"", self.depth);
        escape_attribute(&mut out, &self.from);
        if !answer {
            out.push_str("\" node=\"");
            escape_attribute(&mut out, &self.node);
        }
        out.push_str("\" thread=\"");
        escape_attribute(&mut out, &self.thread);
        out.push_str("\">");
        out.push_str(self.payload.as_str());
        out.push_str(&format!("</{name}>"));
        out
    }

    /// Reads a message (`answer` false) or an answer.
    pub fn read(bytes: &[u8], answer: bool) -> Option<Carried> {
        let root = element(bytes)?;
        let expected = if answer {
            "cluster-answer"
        } else {
            "cluster-message"
        };
        if root.name != expected || root.children.len() != 1 {
            return None;
        }
        let payload =
            canonicalize_subtree(bytes, &limits(bytes), &[], |depth, _| depth == 1).ok()?;
        Some(Carried {
            node: root.attribute("node").unwrap_or_default().to_owned(),
            from: root.attribute("from")?.to_owned(),
            depth: root.attribute("depth")?.parse().ok()?,
            thread: root.attribute("thread")?.to_owned(),
            payload,
        })
    }
}

/// Sent when a node has run what it took on a thread: `taken` counts the
/// messages of the thread it had taken by then, so that the origin knows
/// whether the thread still waits on it.
pub fn done(thread: &str, taken: u64) -> String {
    let mut out = format!("<cluster-done taken=\"{taken}\" thread=\"");
    escape_attribute(&mut out, thread);
    out.push_str("\"></cluster-done>");
    out
}

/// The thread and count a `<cluster-done>` names.
pub fn read_done(bytes: &[u8]) -> Option<(String, u64)> {
    let root = element(bytes)?;
    if root.name != "cluster-done" {
        return None;
    }
    Some((
        root.attribute("thread")?.to_owned(),
        root.attribute("taken")?.parse().ok()?,
    ))
}

/// The reply to a message: the node that took it.
pub fn taken(node: &str) -> String {
    let mut out = String::from("<taken node=\"");
    escape_attribute(&mut out, node);
    out.push_str("\"></taken>");
    out
}

/// The node named by a reply.
pub fn read_taken(bytes: &[u8]) -> Option<String> {
    let root = element(bytes)?;
    (root.name == "taken").then(|| root.attribute("node").map(str::to_owned))?
}

fn limits(bytes: &[u8]) -> Limits {
    Limits {
        max_input_bytes: bytes.len().max(Limits::default().max_input_bytes),
        ..Limits::default()
    }
}

fn element(bytes: &[u8]) -> Option<Element> {
    let canonical = canonicalize(bytes, &limits(bytes), &[]).ok()?;
    Element::parse(&canonical).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_nodes_say_reads_back() {
        let announce = Announce {
            node: "b".into(),
            leaving: false,
            serves: vec![(
                "calc".into(),
                "calculate".into(),
                "Adds <things> & more.".into(),
            )],
        };
        assert_eq!(
            Announce::read(announce.to_xml(7).as_bytes()),
            Some(announce)
        );
        let payload = canonicalize(
            b"<calculate a='1'>2 &lt; 3</calculate>",
            &Limits::default(),
            &[],
        )
        .unwrap();
        let carried = Carried {
            node: "a".into(),
            from: "user:al\"ice".into(),
            depth: 3,
            thread: "t-1".into(),
            payload,
        };
        for answer in [false, true] {
            let read = Carried::read(carried.to_xml(answer).as_bytes(), answer).unwrap();
            assert_eq!(read.from, carried.from);
            assert_eq!(read.depth, 3);
            assert_eq!(read.thread, "t-1");
            assert_eq!(read.payload.as_str(), carried.payload.as_str());
            assert_eq!(read.node, if answer { "" } else { "a" });
        }
        assert_eq!(read_taken(taken("b").as_bytes()).as_deref(), Some("b"));
        assert_eq!(
            read_done(done("t-1", 3).as_bytes()),
            Some(("t-1".into(), 3))
        );
    }
}
