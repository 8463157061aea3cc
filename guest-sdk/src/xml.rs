//! Reading the payload an agent receives and writing the payloads it emits.
//!
//! The host delivers every payload in exclusive canonical XML, so the reader
//! here is small: elements, attributes, text, character references. It also
//! accepts the few liberties hand-written XML takes (`<a/>`, single quotes,
//! whitespace in tags), which makes it handy in an agent's own unit tests.
//!
//! Writing goes through [`ElementBuilder`], which escapes every text and
//! attribute value, so data can never turn into markup.

use crate::Failure;
use std::borrow::Cow;
use std::fmt::Write as _;

/// How deeply elements may nest before [`Element::parse`] gives up. The host
/// refuses deeper messages anyway; this bound keeps a guest's stack safe.
pub const MAX_DEPTH: usize = 64;

/// One parsed element, borrowing from the payload string.
#[derive(Debug, Clone, PartialEq)]
pub struct Element<'a> {
    name: &'a str,
    attributes: Vec<(&'a str, String)>,
    children: Vec<Node<'a>>,
    inner: &'a str,
}

/// A child of an [`Element`].
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// A child element.
    Element(Element<'a>),
    /// Character data, with references resolved.
    Text(String),
}

impl<'a> Element<'a> {
    /// Parses one element (leading and trailing whitespace allowed).
    ///
    /// A payload that is not one well-formed element gives
    /// `Failure::Malformed` with a short reason, ready to return from
    /// [`Agent::handle`](crate::Agent::handle) with `?`.
    pub fn parse(xml: &'a str) -> Result<Element<'a>, Failure> {
        let mut parser = Parser { src: xml, pos: 0 };
        parser.skip_whitespace();
        let element = parser.element(0)?;
        parser.skip_whitespace();
        if parser.pos != xml.len() {
            return Err(malformed("content after the root element"));
        }
        Ok(element)
    }

    /// The element's qualified name as written (`calculate`, `ns:item`).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The local part of the name (after any prefix).
    pub fn local_name(&self) -> &'a str {
        self.name.rsplit(':').next().unwrap_or(self.name)
    }

    /// The value of attribute `name` (qualified name as written), references resolved.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All attributes in document order, including namespace declarations.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &str)> + '_ {
        self.attributes.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// Child nodes in document order.
    pub fn nodes(&self) -> &[Node<'a>] {
        &self.children
    }

    /// Child elements in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element<'a>> + '_ {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }

    /// Child elements with the given name.
    pub fn children_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.children().filter(move |child| child.name == name)
    }

    /// The first child element with the given name.
    pub fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children().find(|child| child.name == name)
    }

    /// All text inside the element, descendants included, in document order.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        for node in &self.children {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Element(element) => element.collect_text(out),
            }
        }
    }

    /// The element's content exactly as it stands in the payload, markup
    /// included: what to copy into another element unchanged.
    pub fn inner_xml(&self) -> &'a str {
        self.inner
    }
}

fn malformed(reason: &str) -> Failure {
    Failure::Malformed(format!("payload is not well-formed XML: {reason}"))
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos += rest.len() - trimmed.len();
    }

    fn expect(&mut self, token: &str) -> Result<(), Failure> {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            Ok(())
        } else {
            Err(malformed(&format!("expected `{token}`")))
        }
    }

    fn name(&mut self) -> Result<&'a str, Failure> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<' | '"' | '\''))
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(malformed("expected a name"));
        }
        self.pos += end;
        Ok(&rest[..end])
    }

    fn element(&mut self, depth: usize) -> Result<Element<'a>, Failure> {
        if depth >= MAX_DEPTH {
            return Err(malformed("elements nest too deeply"));
        }
        self.expect("<")?;
        let name = self.name()?;
        let mut attributes = Vec::new();
        loop {
            self.skip_whitespace();
            if self.rest().starts_with("/>") {
                self.pos += 2;
                return Ok(Element {
                    name,
                    attributes,
                    children: Vec::new(),
                    inner: "",
                });
            }
            if self.rest().starts_with('>') {
                self.pos += 1;
                break;
            }
            let key = self.name()?;
            self.skip_whitespace();
            self.expect("=")?;
            self.skip_whitespace();
            let quote = match self.rest().chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return Err(malformed("attribute value must be quoted")),
            };
            self.pos += 1;
            let rest = self.rest();
            let end = rest
                .find(quote)
                .ok_or_else(|| malformed("unterminated attribute value"))?;
            let value = unescape(&rest[..end])?;
            self.pos += end + 1;
            attributes.push((key, value.into_owned()));
        }
        let inner_start = self.pos;
        let mut children = Vec::new();
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return Err(malformed(&format!("element `{name}` is not closed")));
            }
            if rest.starts_with("</") {
                let inner = &self.src[inner_start..self.pos];
                self.pos += 2;
                let end_name = self.name()?;
                if end_name != name {
                    return Err(malformed(&format!(
                        "`</{end_name}>` does not close `<{name}>`"
                    )));
                }
                self.skip_whitespace();
                self.expect(">")?;
                return Ok(Element {
                    name,
                    attributes,
                    children,
                    inner,
                });
            }
            if let Some(body) = rest.strip_prefix("<![CDATA[") {
                let end = body
                    .find("]]>")
                    .ok_or_else(|| malformed("unterminated CDATA section"))?;
                push_text(&mut children, Cow::Borrowed(&body[..end]));
                self.pos += "<![CDATA[".len() + end + 3;
            } else if rest.starts_with("<!--") {
                let end = rest
                    .find("-->")
                    .ok_or_else(|| malformed("unterminated comment"))?;
                self.pos += end + 3;
            } else if rest.starts_with("<?") {
                let end = rest
                    .find("?>")
                    .ok_or_else(|| malformed("unterminated processing instruction"))?;
                self.pos += end + 2;
            } else if rest.starts_with('<') {
                children.push(Node::Element(self.element(depth + 1)?));
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                push_text(&mut children, unescape(&rest[..end])?);
                self.pos += end;
            }
        }
    }
}

fn push_text(children: &mut Vec<Node<'_>>, text: Cow<'_, str>) {
    if let Some(Node::Text(previous)) = children.last_mut() {
        previous.push_str(&text);
    } else {
        children.push(Node::Text(text.into_owned()));
    }
}

/// Resolves the predefined entities and character references in `raw`.
fn unescape(raw: &str) -> Result<Cow<'_, str>, Failure> {
    if !raw.contains('&') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| malformed("unterminated reference"))?;
        let reference = &after[..semi];
        let ch = match reference {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = reference
                    .strip_prefix("#x")
                    .or_else(|| reference.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = reference.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| malformed(&format!("unknown reference `&{reference};`")))?
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Escapes `text` for use as character data.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Escapes `value` for use inside a double-quoted attribute value.
pub fn escape_attribute(value: &str) -> Cow<'_, str> {
    escape(value, true)
}

fn escape(input: &str, attribute: bool) -> Cow<'_, str> {
    let needs = |c: char| {
        matches!(c, '&' | '<' | '>' | '\r') || (attribute && matches!(c, '"' | '\t' | '\n'))
    };
    if !input.contains(needs) {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len() + 16);
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#x9;"),
            '\n' if attribute => out.push_str("&#xA;"),
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// `<name>inner_xml</name>`: wraps content that is already XML (for example
/// [`Element::inner_xml`]) in a new element, unchanged.
pub fn wrap(name: &str, inner_xml: &str) -> String {
    format!("<{name}>{inner_xml}</{name}>")
}

/// Builds one element, escaping every value put into it.
///
/// ```
/// use agentserver_guest::xml::ElementBuilder;
///
/// let xml = ElementBuilder::new("result")
///     .attribute("unit", "m\"s")
///     .text("1 < 2")
///     .build();
/// assert_eq!(xml, r#"<result unit="m&quot;s">1 &lt; 2</result>"#);
/// ```
///
/// Element and attribute names are written as given: they come from the
/// agent's own code, not from its input, and the host refuses a payload
/// whose names are not XML names.
#[derive(Debug, Clone)]
pub struct ElementBuilder {
    name: String,
    start: String,
    content: String,
}

impl ElementBuilder {
    /// Starts an element named `name`.
    pub fn new(name: &str) -> Self {
        ElementBuilder {
            name: name.to_owned(),
            start: format!("<{name}"),
            content: String::new(),
        }
    }

    /// Adds an attribute; the value is escaped.
    pub fn attribute(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.start, " {name}=\"{}\"", escape_attribute(value));
        self
    }

    /// Appends character data; it is escaped.
    pub fn text(mut self, text: &str) -> Self {
        self.content.push_str(&escape_text(text));
        self
    }

    /// Appends a child element.
    pub fn child(mut self, child: ElementBuilder) -> Self {
        self.content.push_str(&child.build());
        self
    }

    /// Appends content that is already XML, unchanged.
    pub fn raw(mut self, xml: &str) -> Self {
        self.content.push_str(xml);
        self
    }

    /// The finished element, as a payload string.
    pub fn build(self) -> String {
        format!("{}>{}</{}>", self.start, self.content, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_payload_with_children_and_references() {
        let xml = r#"<square-sum a="x&quot;y"><n>3</n> <n>&#x34;</n>&amp;</square-sum>"#;
        let root = Element::parse(xml).expect("parses");
        assert_eq!(root.name(), "square-sum");
        assert_eq!(root.attribute("a"), Some("x\"y"));
        let numbers: Vec<String> = root.children_named("n").map(|n| n.text()).collect();
        assert_eq!(numbers, ["3", "4"]);
        assert_eq!(root.text(), "3 4&");
        assert_eq!(root.inner_xml(), "<n>3</n> <n>&#x34;</n>&amp;");
    }

    #[test]
    fn reads_self_closing_cdata_and_namespaced_names() {
        let root = Element::parse("<p:a xmlns:p='urn:x'><b/><![CDATA[<raw>]]></p:a>").unwrap();
        assert_eq!(root.local_name(), "a");
        assert_eq!(root.attribute("xmlns:p"), Some("urn:x"));
        assert_eq!(root.child("b").map(|b| b.inner_xml()), Some(""));
        assert_eq!(root.text(), "<raw>");
    }

    #[test]
    fn refuses_broken_payloads_as_malformed() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a x=1/>",
            "<a>&bogus;</a>",
            "<a/><b/>",
            "text",
        ] {
            match Element::parse(bad) {
                Err(Failure::Malformed(reason)) => assert!(!reason.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_nesting_deeper_than_the_bound() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(Element::parse(&deep), Err(Failure::Malformed(_))));
    }

    #[test]
    fn builder_escapes_text_and_attributes() {
        let xml = ElementBuilder::new("out")
            .attribute("v", "<&\"\t\n>")
            .text("a<b & c>\r")
            .child(ElementBuilder::new("i").text("1"))
            .build();
        assert_eq!(
            xml,
            "<out v=\"&lt;&amp;&quot;&#x9;&#xA;&gt;\">a&lt;b &amp; c&gt;&#xD;<i>1</i></out>"
        );
        let back = Element::parse(&xml).unwrap();
        assert_eq!(back.attribute("v"), Some("<&\"\t\n>"));
        assert_eq!(back.text(), "a<b & c>\r1");
    }
}
