//! `counter`: listens to `count` and answers `<count-is>N</count-is>`, N being
//! how many `count` messages this instance has handled.
//!
//! The count lives in the instance, and the host keeps one instance per
//! session, so every session counts on its own.

use agentserver_guest::{export_agent, xml::ElementBuilder, Agent, Envelope, Failure};
use std::sync::atomic::{AtomicU64, Ordering};

static HANDLED: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Agent for Counter {
    fn handle(_msg: Envelope) -> Result<Vec<String>, Failure> {
        let count = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(vec![ElementBuilder::new("count-is")
            .text(&count.to_string())
            .build()])
    }
}

export_agent!(Counter);
