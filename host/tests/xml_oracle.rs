//! Differential test of exclusive C14N against lxml (libxml2), over a
//! generated corpus of varied documents, and the idempotence of the
//! canonical form over the same corpus.
//!
//! Needs python3 with lxml (`make test` installs it from
//! tests/requirements.txt); fails, never skips, when it is missing.

use agentserver::xml::{canonicalize, Limits};
use std::path::Path;
use std::process::Command;

/// Documents in the corpus.
const CORPUS_SIZE: usize = 2_500;

/// A small deterministic PRNG (xorshift64*), so that the corpus is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PREFIXES: &[&str] = &["p", "q", "r", "ns1", "a"];
const URIS: &[&str] = &[
    "urn:a",
    "urn:b",
    "http://example.org/ns",
    "http://example.org/ns/other",
    "urn:x?a=1;b=%C3%A9",
    "",
];
// Not in the corpus, because libxml2 departs from the W3C recommendation
// there (the conformance tests cover them): it writes `&` in a namespace
// URI unescaped, and refuses non-ASCII namespace URIs.
const LOCALS: &[&str] = &[
    "a",
    "b",
    "item",
    "data",
    "x-y",
    "n1",
    "Z",
    "_u",
    "r\u{e9}sum\u{e9}",
];
const ATTRS: &[&str] = &["id", "b", "a", "z", "A", "_x", "attr", "a1", "\u{e9}"];
const TEXTS: &[&str] = &[
    "plain",
    " spaced  out ",
    "a &amp; b",
    "1 &lt; 2 &gt; 0",
    "quote \" and ' apostrophe",
    "tab\there",
    "line\nbreak",
    "cr\r\nlf",
    "lone\rcr",
    "&#x41;&#66;&#xD;&#x9;",
    "&#x10000; astral \u{1F600}",
    "]] &gt;",
    "\u{e9}\u{f1}\u{fc}",
    "",
];
const VALUES: &[&str] = &[
    "v",
    "with space",
    "a &amp; b",
    "&lt;tag&gt;",
    "&quot;quoted&quot;",
    "it's",
    "tab\tliteral",
    "nl\nliteral",
    "cr\r\nliteral",
    "&#9;&#10;&#13;",
    "&#x20;lead",
    "\u{e9}",
    "",
    ">",
];

struct Generator {
    rng: Rng,
    out: String,
}

impl Generator {
    /// One element; `scope` is the list of (prefix, uri) in scope (the
    /// default namespace as prefix "").
    fn element(&mut self, depth: usize, scope: &[(String, String)]) {
        let mut scope = scope.to_vec();
        let mut declarations = Vec::new();
        for _ in 0..self.rng.below(4) {
            let prefix = if self.rng.chance(30) {
                ""
            } else {
                self.rng.pick(PREFIXES)
            };
            if declarations
                .iter()
                .any(|(p, _): &(String, String)| p == prefix)
            {
                continue;
            }
            let uri = if prefix.is_empty() && self.rng.chance(25) {
                ""
            } else if self.rng.chance(30) {
                // Redundant: the same as in scope, if there is one.
                scope.iter().rev().find(|(p, _)| p == prefix).map_or_else(
                    || self.rng.pick(URIS),
                    |(_, u)| URIS.iter().find(|x| *x == u).copied().unwrap_or(URIS[0]),
                )
            } else {
                self.rng.pick(URIS)
            };
            // `xmlns:p=""` is an error in Namespaces in XML 1.0.
            let uri = if uri.is_empty() && !prefix.is_empty() {
                URIS[0]
            } else {
                uri
            };
            declarations.push((prefix.to_owned(), uri.to_owned()));
        }
        for (p, u) in &declarations {
            scope.push((p.clone(), u.clone()));
        }
        let bound: Vec<String> = {
            let mut seen: Vec<String> = Vec::new();
            for (p, u) in scope.iter().rev() {
                if !p.is_empty() && !u.is_empty() && !seen.contains(p) {
                    seen.push(p.clone());
                }
            }
            seen
        };
        let local = self.rng.pick(LOCALS);
        let name = if !bound.is_empty() && self.rng.chance(50) {
            format!("{}:{local}", bound[self.rng.below(bound.len())])
        } else {
            local.to_owned()
        };
        self.out.push('<');
        self.out.push_str(&name);
        for (p, u) in &declarations {
            let quote = if self.rng.chance(20) { '\'' } else { '"' };
            if p.is_empty() {
                self.out.push_str(&format!(" xmlns={quote}{u}{quote}"));
            } else {
                self.out.push_str(&format!(" xmlns:{p}={quote}{u}{quote}"));
            }
        }
        let mut used: Vec<(String, String)> = Vec::new();
        for _ in 0..self.rng.below(5) {
            let local = self.rng.pick(ATTRS);
            let (qname, uri) = match self.rng.below(10) {
                0 => (
                    format!("xml:{}", self.rng.pick(&["lang", "space"])),
                    "xml".to_owned(),
                ),
                1..=3 if !bound.is_empty() => {
                    let prefix = &bound[self.rng.below(bound.len())];
                    let uri = scope
                        .iter()
                        .rev()
                        .find(|(p, _)| p == prefix)
                        .map(|(_, u)| u.clone())
                        .unwrap_or_default();
                    (format!("{prefix}:{local}"), uri)
                }
                _ => (local.to_owned(), String::new()),
            };
            let key_local = qname.rsplit(':').next().unwrap_or("").to_owned();
            if used.contains(&(uri.clone(), key_local.clone())) {
                continue;
            }
            used.push((uri, key_local));
            let value = self.rng.pick(VALUES);
            if self.rng.chance(20) && !value.contains('\'') {
                self.out.push_str(&format!(" {qname}='{value}'"));
            } else {
                let value = value.replace('"', "&quot;");
                self.out.push_str(&format!(" {qname}=\"{value}\""));
            }
        }
        if self.rng.chance(15) {
            self.out
                .push_str(if self.rng.chance(50) { "/>" } else { " />" });
            return;
        }
        self.out.push('>');
        for _ in 0..self.rng.below(5) {
            match self.rng.below(10) {
                0..=3 if depth < 5 => self.element(depth + 1, &scope),
                4 => {
                    let text =
                        self.rng
                            .pick(&["x < y && z", "]]", "plain", "\r\n", "<b>not markup</b>"]);
                    self.out.push_str(&format!("<![CDATA[{text}]]>"));
                }
                5 => self.out.push_str(
                    "<!-- a comment -- no, a dash -->"
                        .replace("-- no", " no")
                        .as_str(),
                ),
                6 => self.out.push_str("<?pi some data ?>"),
                _ => {
                    let text = self.rng.pick(TEXTS);
                    self.out.push_str(text);
                }
            }
        }
        self.out.push_str(&format!("</{name}>"));
    }

    fn document(&mut self) -> String {
        self.out.clear();
        if self.rng.chance(30) {
            self.out
                .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        }
        if self.rng.chance(15) {
            self.out.push_str("<!-- before -->\n<?before-pi data?>\n");
        }
        self.element(0, &[]);
        if self.rng.chance(15) {
            self.out.push_str("\n<!-- after --><?after-pi?>\n");
        }
        std::mem::take(&mut self.out)
    }
}

fn run_oracle(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/lxml_c14n.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3 is needed for the lxml oracle (make test installs it)");
    assert!(
        output.status.success(),
        "the lxml oracle failed (is lxml installed? `python3 -m pip install -r tests/requirements.txt`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn exclusive_c14n_matches_lxml_on_a_generated_corpus_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut generator = Generator {
        rng: Rng(0x5eed_1234_abcd_0001),
        out: String::new(),
    };
    let documents: Vec<String> = (0..CORPUS_SIZE).map(|_| generator.document()).collect();
    for (i, document) in documents.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:05}.xml")), document).unwrap();
    }
    run_oracle(dir.path());
    let limits = Limits::default();
    let mut compared = 0;
    let mut failures = Vec::new();
    for (i, document) in documents.iter().enumerate() {
        let expected = std::fs::read(dir.path().join(format!("{i:05}.lxml")));
        let ours = canonicalize(document.as_bytes(), &limits, &[]);
        match (expected, ours) {
            (Ok(expected), Ok(ours)) => {
                compared += 1;
                if ours.as_bytes() != expected.as_slice() {
                    failures.push(format!(
                        "document {i}:\n  input: {document:?}\n  lxml:  {:?}\n  ours:  {:?}",
                        String::from_utf8_lossy(&expected),
                        ours.as_str()
                    ));
                    continue;
                }
                let again = canonicalize(ours.as_bytes(), &limits, &[]).unwrap();
                assert_eq!(
                    again.as_str(),
                    ours.as_str(),
                    "not idempotent: document {i}"
                );
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(error)) => failures.push(format!(
                "document {i}: we refused ({error}) what lxml accepted:\n  {document:?}"
            )),
            (Err(_), Ok(ours)) => {
                let why = std::fs::read_to_string(dir.path().join(format!("{i:05}.lxml-error")))
                    .unwrap_or_default();
                failures.push(format!("document {i}: we accepted what lxml refused ({why}):\n  {document:?}\n  ours: {:?}", ours.as_str()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CORPUS_SIZE} differ:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
    assert!(
        compared >= 2_000,
        "only {compared} documents were canonicalized by both"
    );
}
