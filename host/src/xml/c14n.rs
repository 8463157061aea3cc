//! Exclusive XML Canonicalization 1.0, without comments, in one streaming
//! pass over quick-xml's events, with the hardening checks done on the way.
//!
//! The canonicalizer keeps two stacks of namespace declarations: those in
//! scope in the input (to resolve prefixes) and those already rendered in
//! the output (so that a declaration is written only where it is visibly
//! used and not already in force in the output). No tree is built; memory
//! is the output plus the two stacks, bounded by the input's size.
//!
//! It serves three shapes of input ([`Shape`]): one document, a run of
//! top-level elements (what an agent emits: each becomes its own canonical
//! payload), and one selected element's subtree inside a document (what a
//! signature covers).

use super::error::XmlError;
use super::limits::Limits;
use super::tag::Tag;
use super::text;
use super::CanonicalXml;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The namespace the `xml` prefix is bound to, always.
pub(crate) const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations themselves.
const XMLNS_NAMESPACE: &str = "http://www.w3.org/2000/xmlns/";

/// What the input is and what to output.
pub(crate) enum Shape<'s> {
    /// One document: exactly one root element.
    Document,
    /// Zero or more top-level elements, each canonicalized on its own.
    Fragments,
    /// One document; output the subtree of the first element for which the
    /// selector, given its depth (root: 0) and tag, returns true.
    Subtree(&'s mut dyn FnMut(usize, &Tag) -> bool),
}

/// Options of one run.
pub(crate) struct Options<'a, 's> {
    pub(crate) shape: Shape<'s>,
    /// Refuse processing instructions (the bus does; the c14n tool does not).
    pub(crate) refuse_pis: bool,
    /// The InclusiveNamespaces PrefixList (`#default` for the default namespace).
    pub(crate) inclusive_prefixes: &'a [&'a str],
}

/// A namespace declaration: prefix (empty for the default) and URI.
#[derive(Debug, Clone)]
struct Binding {
    prefix: Box<str>,
    uri: Box<str>,
}

/// One attribute on its way out, with its sort key.
struct OutAttribute {
    uri: usize,
    local: std::ops::Range<usize>,
    qname: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

struct Canonicalizer<'i, 'a, 's> {
    input: &'i str,
    limits: &'a Limits,
    options: Options<'a, 's>,
    /// Declarations in scope in the input, innermost last.
    in_scope: Vec<Binding>,
    /// For each open element, where its declarations start in `in_scope`.
    scope_marks: Vec<usize>,
    /// Declarations rendered in the output, innermost last.
    rendered: Vec<Binding>,
    /// For each open element, where its rendered declarations start.
    rendered_marks: Vec<usize>,
    /// Depth (open elements) at which output started, while capturing.
    capture_from: Option<usize>,
    /// Whether the subtree was found already (subtree shape).
    captured: bool,
    out: Vec<u8>,
    root_tag: Option<Tag>,
    results: Vec<CanonicalXml>,
    /// Scratch buffers reused for every element.
    scratch: Vec<u8>,
    attributes: Vec<OutAttribute>,
    uris: Vec<String>,
    uris_len: usize,
    seen_root: bool,
}

/// A few distinct strings without allocating (spills to the heap past 8).
#[derive(Default)]
struct SmallSet<'a> {
    inline: [&'a str; 8],
    len: usize,
    spill: Vec<&'a str>,
}

impl<'a> SmallSet<'a> {
    fn insert(&mut self, item: &'a str) {
        if self.iter().any(|x| x == item) {
            return;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = item;
            self.len += 1;
        } else {
            self.spill.push(item);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.inline[..self.len]
            .iter()
            .copied()
            .chain(self.spill.iter().copied())
    }
}

/// Canonicalizes `input` (already checked for size and UTF-8).
pub(crate) fn canonicalize(
    input: &str,
    limits: &Limits,
    options: Options<'_, '_>,
) -> Result<Vec<CanonicalXml>, XmlError> {
    text::check_chars(input)?;
    let mut c = Canonicalizer {
        input,
        limits,
        options,
        in_scope: Vec::new(),
        scope_marks: Vec::new(),
        rendered: Vec::new(),
        rendered_marks: Vec::new(),
        capture_from: None,
        captured: false,
        out: Vec::with_capacity(input.len()),
        root_tag: None,
        results: Vec::new(),
        scratch: Vec::new(),
        attributes: Vec::new(),
        uris: Vec::new(),
        uris_len: 0,
        seen_root: false,
    };
    c.run()?;
    Ok(c.results)
}

fn malformed(error: impl std::fmt::Display) -> XmlError {
    XmlError::malformed(error.to_string())
}

fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|_| XmlError::InvalidUtf8)
}

impl<'i> Canonicalizer<'i, '_, '_> {
    fn depth(&self) -> usize {
        self.scope_marks.len()
    }

    fn capturing(&self) -> bool {
        self.capture_from.is_some()
    }

    fn run(&mut self) -> Result<(), XmlError> {
        let mut reader = Reader::from_str(self.input);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.allow_unmatched_ends = false;
        // Whitespace-only text before the root, between PIs and so on:
        // kept as events so that the rules about text outside the root can
        // be applied here.
        config.trim_text(false);
        // Markup after the root, which the document shape refuses and the
        // fragments shape accepts.
        let mut after_root_pis: Vec<u8> = Vec::new();
        loop {
            let event = reader.read_event().map_err(malformed)?;
            match event {
                Event::Start(start) => self.start(&start, false)?,
                Event::Empty(start) => self.start(&start, true)?,
                Event::End(end) => {
                    let name = utf8(end.name().into_inner())?;
                    self.end(name)?;
                }
                Event::Text(t) => {
                    let raw = utf8(t.as_ref())?;
                    if raw.contains("]]>") {
                        return Err(XmlError::malformed("`]]>` is not allowed in text"));
                    }
                    if self.depth() == 0 {
                        if !raw
                            .bytes()
                            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                        {
                            return Err(XmlError::malformed("text outside the root element"));
                        }
                    } else if self.capturing() {
                        text::push_text(&mut self.out, raw);
                    }
                }
                Event::GeneralRef(r) => {
                    let body = utf8(r.as_ref())?;
                    let c = text::resolve_reference(body)?;
                    if self.depth() == 0 {
                        return Err(XmlError::malformed("reference outside the root element"));
                    }
                    if self.capturing() {
                        text::push_text_char(&mut self.out, c);
                    }
                }
                Event::CData(data) => {
                    if self.depth() == 0 {
                        return Err(XmlError::malformed("CDATA outside the root element"));
                    }
                    if self.capturing() {
                        text::push_text(&mut self.out, utf8(data.as_ref())?);
                    }
                }
                Event::Comment(_) => {}
                Event::Decl(decl) => {
                    if let Some(encoding) = decl.encoding() {
                        let encoding = encoding.map_err(malformed)?;
                        if !encoding.eq_ignore_ascii_case(b"utf-8") {
                            return Err(XmlError::malformed("only UTF-8 input is accepted"));
                        }
                    }
                }
                Event::PI(pi) => self.processing_instruction(&pi, &mut after_root_pis)?,
                Event::DocType(doctype) => {
                    let raw: &[u8] = &doctype;
                    return Err(if raw.windows(8).any(|w| w == b"<!ENTITY") {
                        XmlError::EntityDeclaration
                    } else {
                        XmlError::Doctype
                    });
                }
                Event::Eof => break,
            }
        }
        if self.depth() != 0 {
            return Err(XmlError::malformed("the document ends inside an element"));
        }
        match self.options.shape {
            Shape::Document | Shape::Subtree(_) if !self.seen_root => {
                return Err(XmlError::malformed("no root element"))
            }
            Shape::Subtree(_) if !self.captured => {
                return Err(XmlError::malformed("the selected element is not there"))
            }
            _ => {}
        }
        if let (Shape::Document, Some(last)) = (&self.options.shape, self.results.last_mut()) {
            if !after_root_pis.is_empty() {
                let mut text = std::mem::take(&mut last.text).into_bytes();
                text.extend_from_slice(&after_root_pis);
                last.text = String::from_utf8(text).map_err(|_| XmlError::InvalidUtf8)?;
            }
        }
        Ok(())
    }

    fn processing_instruction(
        &mut self,
        pi: &quick_xml::events::BytesPI<'_>,
        after_root: &mut Vec<u8>,
    ) -> Result<(), XmlError> {
        let target = utf8(pi.target())?;
        if self.options.refuse_pis || target.eq_ignore_ascii_case("xml") {
            return Err(XmlError::ProcessingInstruction);
        }
        if !text::is_name(target) || target.contains(':') {
            return Err(XmlError::malformed("bad processing instruction target"));
        }
        let content = utf8(pi.content())?;
        let data = content.trim_start_matches([' ', '\t', '\n', '\r']);
        let mut rendered = Vec::with_capacity(target.len() + data.len() + 5);
        rendered.extend_from_slice(b"<?");
        rendered.extend_from_slice(target.as_bytes());
        if !data.is_empty() {
            rendered.push(b' ');
            // Line ends in PI data are normalized like all text.
            let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
            rendered.extend_from_slice(normalized.as_bytes());
        }
        rendered.extend_from_slice(b"?>");
        match (self.depth(), &self.options.shape) {
            (0, Shape::Document) if !self.seen_root => {
                // Before the root: the PI, then a newline.
                self.out.extend_from_slice(&rendered);
                self.out.push(b'\n');
            }
            (0, Shape::Document) => {
                after_root.push(b'\n');
                after_root.extend_from_slice(&rendered);
            }
            (0, _) => {}
            _ if self.capturing() => self.out.extend_from_slice(&rendered),
            _ => {}
        }
        Ok(())
    }

    /// Resolves `prefix` ("" for the default namespace) in the input scope.
    fn resolve(&self, prefix: &str) -> Option<&str> {
        resolve_in(&self.in_scope, prefix)
    }

    /// The namespace `prefix` has in the output context.
    fn rendered_uri(&self, prefix: &str) -> &str {
        self.rendered
            .iter()
            .rev()
            .find(|b| &*b.prefix == prefix)
            .map_or("", |b| &*b.uri)
    }

    fn start(&mut self, start: &BytesStart<'_>, empty: bool) -> Result<(), XmlError> {
        let depth = self.depth();
        if depth >= self.limits.max_depth {
            return Err(XmlError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        if depth == 0 {
            if self.seen_root && !matches!(self.options.shape, Shape::Fragments) {
                return Err(XmlError::malformed("more than one root element"));
            }
            self.seen_root = true;
        }
        let qname = utf8(start.name().into_inner())?;
        if !text::is_qname(qname) {
            return Err(XmlError::malformed("bad element name"));
        }
        let (prefix, local) = split_qname(qname);

        // Declarations first: they apply to the element's own name and
        // attributes.
        self.scope_marks.push(self.in_scope.len());
        let mut count = 0usize;
        let raw_attributes: Vec<(&str, &str)> = {
            let mut list = Vec::new();
            for attribute in start.attributes() {
                let attribute = attribute.map_err(malformed)?;
                count += 1;
                if count > self.limits.max_attributes {
                    return Err(XmlError::TooManyAttributes {
                        limit: self.limits.max_attributes,
                    });
                }
                let key = utf8(attribute.key.into_inner())?;
                // The value borrows from the input: quick-xml does not
                // unescape unless asked.
                let value = match attribute.value {
                    std::borrow::Cow::Borrowed(bytes) => utf8(bytes)?,
                    std::borrow::Cow::Owned(_) => {
                        return Err(XmlError::malformed("unexpected attribute encoding"))
                    }
                };
                if !text::is_qname(key) {
                    return Err(XmlError::malformed("bad attribute name"));
                }
                if key == "xmlns" || key.starts_with("xmlns:") {
                    let declared = key.strip_prefix("xmlns:").unwrap_or("");
                    let uri = text::attribute_value(value)?;
                    if declared == "xmlns" || uri == XMLNS_NAMESPACE {
                        return Err(XmlError::malformed("the xmlns prefix cannot be declared"));
                    }
                    if declared == "xml" {
                        if uri != XML_NAMESPACE {
                            return Err(XmlError::malformed("the xml prefix cannot be rebound"));
                        }
                        continue;
                    }
                    if uri == XML_NAMESPACE {
                        return Err(XmlError::malformed(
                            "the XML namespace cannot be bound to another prefix",
                        ));
                    }
                    if !declared.is_empty() && uri.is_empty() {
                        return Err(XmlError::malformed(
                            "a prefix cannot be undeclared in XML 1.0",
                        ));
                    }
                    self.in_scope.push(Binding {
                        prefix: declared.into(),
                        uri: uri.into(),
                    });
                } else {
                    list.push((key, value));
                }
            }
            list
        };

        if !prefix.is_empty() && self.resolve(prefix).is_none() {
            return Err(XmlError::UnboundPrefix(prefix.to_owned()));
        }

        // Which element starts output?
        let tag = if depth == 0
            || (!self.capturing() && matches!(self.options.shape, Shape::Subtree(_)))
        {
            Some(Tag::from_parts(self.resolve(prefix).unwrap_or(""), local))
        } else {
            None
        };
        if !self.capturing() {
            let begin = match &mut self.options.shape {
                Shape::Document | Shape::Fragments => depth == 0,
                Shape::Subtree(select) => {
                    !self.captured && tag.as_ref().is_some_and(|tag| select(depth, tag))
                }
            };
            if begin {
                self.capture_from = Some(depth);
                self.captured = true;
                self.root_tag = tag;
            }
        }

        self.rendered_marks.push(self.rendered.len());
        if self.capturing() {
            self.write_start(qname, prefix, &raw_attributes)?;
        } else {
            // Still check the attributes resolve and do not repeat.
            self.write_start_checks(&raw_attributes)?;
        }
        if empty {
            self.end(qname)?;
        }
        Ok(())
    }

    fn write_start_checks(&mut self, raw_attributes: &[(&str, &str)]) -> Result<(), XmlError> {
        let mut seen: Vec<(&str, &str)> = Vec::with_capacity(raw_attributes.len());
        for (key, value) in raw_attributes {
            let (prefix, local) = split_qname(key);
            let uri = if prefix.is_empty() {
                ""
            } else {
                self.resolve(prefix)
                    .ok_or_else(|| XmlError::UnboundPrefix(prefix.to_owned()))?
            };
            if seen.contains(&(uri, local)) {
                return Err(XmlError::malformed("an attribute is repeated"));
            }
            seen.push((uri, local));
            text::attribute_value(value)?;
        }
        Ok(())
    }

    fn write_start(
        &mut self,
        qname: &str,
        prefix: &str,
        raw_attributes: &[(&str, &str)],
    ) -> Result<(), XmlError> {
        // Attributes: resolve, render values into scratch, sort.
        self.scratch.clear();
        self.attributes.clear();
        self.uris_len = 0;
        let mut used_prefixes = SmallSet::default();
        used_prefixes.insert(prefix);
        for (key, value) in raw_attributes {
            let (attribute_prefix, local) = split_qname(key);
            let uri = if attribute_prefix.is_empty() {
                ""
            } else {
                let uri = resolve_in(&self.in_scope, attribute_prefix)
                    .ok_or_else(|| XmlError::UnboundPrefix(attribute_prefix.to_owned()))?;
                if attribute_prefix != "xml" {
                    used_prefixes.insert(attribute_prefix);
                }
                uri
            };
            let uri_index = match self.uris[..self.uris_len].iter().position(|u| u == uri) {
                Some(i) => i,
                None => {
                    // Reuse the String left from an earlier element.
                    if self.uris_len == self.uris.len() {
                        self.uris.push(String::new());
                    }
                    let slot = &mut self.uris[self.uris_len];
                    slot.clear();
                    slot.push_str(uri);
                    self.uris_len += 1;
                    self.uris_len - 1
                }
            };
            let qname_start = self.scratch.len();
            self.scratch.extend_from_slice(key.as_bytes());
            let local_start = qname_start + (key.len() - local.len());
            let value_start = self.scratch.len();
            text::push_attribute_value(&mut self.scratch, value)?;
            self.attributes.push(OutAttribute {
                uri: uri_index,
                local: local_start..value_start,
                qname: qname_start..value_start,
                value: value_start..self.scratch.len(),
            });
        }
        let (scratch, uris) = (&self.scratch, &self.uris);
        self.attributes.sort_by(|a, b| {
            uris[a.uri]
                .cmp(&uris[b.uri])
                .then_with(|| scratch[a.local.clone()].cmp(&scratch[b.local.clone()]))
        });
        if self.attributes.windows(2).any(|w| {
            uris[w[0].uri] == uris[w[1].uri]
                && scratch[w[0].local.clone()] == scratch[w[1].local.clone()]
        }) {
            return Err(XmlError::malformed("an attribute is repeated"));
        }

        // Namespace declarations to render: visibly used, plus the
        // inclusive prefix list, where the output context differs.
        let mut to_render: Vec<(String, String)> = Vec::new();
        let consider = |prefix: &str, this: &Self, to_render: &mut Vec<(String, String)>| {
            if prefix == "xml" || to_render.iter().any(|(p, _)| p == prefix) {
                return;
            }
            let uri = if prefix.is_empty() {
                this.resolve("").unwrap_or("")
            } else {
                match this.resolve(prefix) {
                    Some(uri) => uri,
                    None => return,
                }
            };
            if uri != this.rendered_uri(prefix) {
                to_render.push((prefix.to_owned(), uri.to_owned()));
            }
        };
        for used in used_prefixes.iter() {
            consider(used, self, &mut to_render);
        }
        for inclusive in self.options.inclusive_prefixes {
            let prefix = if *inclusive == "#default" {
                ""
            } else {
                inclusive
            };
            if prefix.is_empty() && self.resolve("").is_none() && self.rendered_uri("").is_empty() {
                continue;
            }
            consider(prefix, self, &mut to_render);
        }
        to_render.sort();

        let out = &mut self.out;
        out.push(b'<');
        out.extend_from_slice(qname.as_bytes());
        for (prefix, uri) in &to_render {
            out.extend_from_slice(b" xmlns");
            if !prefix.is_empty() {
                out.push(b':');
                out.extend_from_slice(prefix.as_bytes());
            }
            out.extend_from_slice(b"=\"");
            text::push_escaped_attribute(out, uri);
            out.push(b'"');
        }
        for attribute in &self.attributes {
            out.push(b' ');
            out.extend_from_slice(&self.scratch[attribute.qname.clone()]);
            out.extend_from_slice(b"=\"");
            out.extend_from_slice(&self.scratch[attribute.value.clone()]);
            out.push(b'"');
        }
        out.push(b'>');
        for (prefix, uri) in to_render {
            self.rendered.push(Binding {
                prefix: prefix.into(),
                uri: uri.into(),
            });
        }
        Ok(())
    }

    fn end(&mut self, qname: &str) -> Result<(), XmlError> {
        if self.capturing() {
            self.out.extend_from_slice(b"</");
            self.out.extend_from_slice(qname.as_bytes());
            self.out.push(b'>');
        }
        let scope_mark = self
            .scope_marks
            .pop()
            .ok_or_else(|| XmlError::malformed("end tag without a start tag"))?;
        self.in_scope.truncate(scope_mark);
        if let Some(mark) = self.rendered_marks.pop() {
            self.rendered.truncate(mark);
        }
        if self.capture_from == Some(self.depth()) {
            self.capture_from = None;
            let bytes = std::mem::take(&mut self.out);
            let text = String::from_utf8(bytes).map_err(|_| XmlError::InvalidUtf8)?;
            let tag = self
                .root_tag
                .take()
                .ok_or_else(|| XmlError::malformed("internal: root tag missing"))?;
            self.results.push(CanonicalXml { text, tag });
        }
        Ok(())
    }
}

/// Resolves `prefix` against declarations in scope, innermost last.
fn resolve_in<'b>(in_scope: &'b [Binding], prefix: &str) -> Option<&'b str> {
    if prefix == "xml" {
        return Some(XML_NAMESPACE);
    }
    in_scope
        .iter()
        .rev()
        .find(|b| &*b.prefix == prefix)
        .map(|b| &*b.uri)
}

/// `(prefix, local)` of a qualified name; the prefix is empty when absent.
pub(crate) fn split_qname(qname: &str) -> (&str, &str) {
    qname.split_once(':').unwrap_or(("", qname))
}
