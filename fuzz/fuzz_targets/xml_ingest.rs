//! Parse → repair → canonicalize never panics, and whatever comes out is a
//! fixed point of canonicalization and parses as an envelope when it is one.

#![no_main]

use agentserver::xml::{canonicalize, ingest, Envelope, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(ingested) = ingest(data, &limits) {
        for payload in &ingested.payloads {
            let again = canonicalize(payload.as_bytes(), &limits, &[])
                .expect("canonical output canonicalizes");
            assert_eq!(again.as_str(), payload.as_str(), "canonical form is a fixed point");
            if payload.tag().as_str() == "message" {
                let _ = Envelope::parse(payload);
            }
        }
    }
    let _ = canonicalize(data, &limits, &["#default", "p"]);
});
