//! A small element tree read from canonical XML, for the few places the
//! server itself reads a message's structure (privileged commands).
//!
//! It holds qualified names as written and resolved text; it is built only
//! from [`CanonicalXml`], which has already passed every limit of the XML
//! core, so building it cannot blow up.

use super::error::XmlError;
use super::text::{attribute_value, resolve_reference};
use super::CanonicalXml;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// One element: its qualified name, attributes, child elements, and the
/// text directly inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The qualified name as written (`payload`, `p:payload`).
    pub name: String,
    /// Attributes in document order (canonical order for canonical input),
    /// namespace declarations included.
    pub attributes: Vec<(String, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// The element's own text (its text nodes joined, references resolved).
    pub text: String,
}

impl Element {
    /// Reads the root element of `xml`.
    pub fn parse(xml: &CanonicalXml) -> Result<Element, XmlError> {
        let mut reader = Reader::from_str(xml.as_str());
        let mut stack: Vec<Element> = Vec::new();
        loop {
            let event = reader
                .read_event()
                .map_err(|e| XmlError::malformed(e.to_string()))?;
            match event {
                Event::Start(start) => stack.push(element(&start)?),
                Event::Empty(start) => {
                    let done = element(&start)?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Event::End(_) => {
                    let done = stack
                        .pop()
                        .ok_or_else(|| XmlError::malformed("unbalanced end tag"))?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Event::Text(text) => {
                    if let Some(current) = stack.last_mut() {
                        current
                            .text
                            .push_str(&String::from_utf8_lossy(text.as_ref()));
                    }
                }
                Event::GeneralRef(reference) => {
                    if let Some(current) = stack.last_mut() {
                        current
                            .text
                            .push(resolve_reference(&String::from_utf8_lossy(
                                reference.as_ref(),
                            ))?);
                    }
                }
                Event::Eof => return Err(XmlError::malformed("no root element")),
                _ => {}
            }
        }
    }

    /// The value of attribute `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The child elements named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |child| child.name == name)
    }

    /// The one child named `name`, if there is exactly one.
    pub fn only_child(&self, name: &str) -> Option<&Element> {
        let mut found = self.children.iter().filter(|child| child.name == name);
        match (found.next(), found.next()) {
            (Some(child), None) => Some(child),
            _ => None,
        }
    }
}

fn element(start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| XmlError::malformed(e.to_string()))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let raw = String::from_utf8_lossy(&attribute.value);
        attributes.push((key, attribute_value(&raw)?));
    }
    Ok(Element {
        name: String::from_utf8_lossy(start.name().as_ref()).into_owned(),
        attributes,
        children: Vec::new(),
        text: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{canonicalize, Limits};

    #[test]
    fn reads_names_attributes_children_and_text() {
        let xml = canonicalize(
            b"<a x='1 &amp; 2'><b/>one &lt; two<c y=\"z\">three</c></a>",
            &Limits::default(),
            &[],
        )
        .unwrap();
        let root = Element::parse(&xml).unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(root.attribute("x"), Some("1 & 2"));
        assert_eq!(root.text, "one < two");
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.only_child("c").unwrap().text, "three");
        assert_eq!(root.only_child("c").unwrap().attribute("y"), Some("z"));
        assert!(root.only_child("d").is_none());
    }
}
