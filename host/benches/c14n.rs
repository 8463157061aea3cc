//! Canonicalization throughput: parse + exclusive C14N of a 1 KB message, a
//! 100 KB namespaced document and a 5 MB document, against lxml (libxml2)
//! on the same files in the same run.
//!
//! Run with `make bench` or `cargo bench -p agentserver --bench c14n`
//! (needs python3 with lxml, which `make bench` installs).

use agentserver::xml::{canonicalize, Limits};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn message_1k() -> String {
    let mut doc = String::from("<calculate xmlns:m=\"urn:meta\" id=\"42\" m:priority=\"high\">");
    while doc.len() < 1000 {
        doc.push_str("(1 + 2) * 3 &amp; more ");
    }
    doc.push_str("</calculate>");
    doc
}

fn namespaced_100k() -> String {
    let mut doc = String::from(
        "<inv:inventory xmlns:inv=\"urn:example:inventory\" xmlns:p=\"urn:example:product\" xmlns=\"urn:example:default\" xmlns:unused=\"urn:u\">",
    );
    let mut i = 0;
    while doc.len() < 100_000 {
        doc.push_str(&format!(
            "<p:item z=\"{i}\" a=\"x &amp; y\" p:sku=\"SKU-{i}\"><name xml:lang=\"en\">Item {i} &lt;new&gt;</name><p:price currency=\"EUR\">{}.99</p:price><note xmlns=\"\">plain</note></p:item>\n",
            i % 100
        ));
        i += 1;
    }
    doc.push_str("</inv:inventory>");
    doc
}

fn document_5m() -> String {
    let mut doc = String::from("<log>");
    let mut i = 0;
    while doc.len() < 5_000_000 {
        doc.push_str(&format!(
            "<entry seq=\"{i}\" level=\"info\"><when>2026-11-24T12:00:00Z</when><text>request {i} served in 3 ms; cache hit</text></entry>\n"
        ));
        i += 1;
    }
    doc.push_str("</log>");
    doc
}

/// Parse + canonicalize `input` repeatedly for about a second; MB/s.
fn ours(input: &[u8]) -> f64 {
    let limits = Limits {
        max_input_bytes: 64 << 20,
        ..Limits::default()
    };
    canonicalize(input, &limits, &[]).expect("canonicalizes");
    let mut iterations = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(canonicalize(input, &limits, &[]).expect("canonicalizes"));
        iterations += 1;
    }
    (input.len() as u64 * iterations) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn lxml(files: &[&Path]) -> Vec<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/lxml_bench.py");
    let output = Command::new("python3")
        .arg(script)
        .args(files)
        .output()
        .expect("python3 with lxml (make bench installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0)
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = [
        ("1 KB message", message_1k()),
        ("100 KB namespaced", namespaced_100k()),
        ("5 MB document", document_5m()),
    ];
    let mut paths = Vec::new();
    for (i, (_, doc)) in inputs.iter().enumerate() {
        let path = dir.path().join(format!("input{i}.xml"));
        std::fs::write(&path, doc).expect("write input");
        paths.push(path);
    }
    let theirs = lxml(&paths.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    println!("| input | bytes | agentserver MB/s | lxml (libxml2) MB/s | ratio |");
    println!("|---|---|---|---|---|");
    for ((name, doc), lxml) in inputs.iter().zip(theirs) {
        let ours = ours(doc.as_bytes());
        println!(
            "| {name} | {} | {ours:.1} | {lxml:.1} | {:.2}x |",
            doc.len(),
            ours / lxml
        );
    }
}
