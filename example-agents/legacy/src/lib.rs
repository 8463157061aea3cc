//! An echo agent built against `agentserver:agent@0.1.0` (`wit/0.1.0`), the
//! world before `host.emit` and capabilities: `<echo>…</echo>` answers
//! `<echoed>…</echoed>`.

// The generated bindings have functions of many arguments.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/0.1.0",
    world: "agent",
});

use agentserver::agent::host::{log, Level};

struct LegacyEcho;

impl Guest for LegacyEcho {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        log(Level::Debug, "legacy echo");
        let inner = msg
            .payload
            .split_once('>')
            .and_then(|(_, rest)| rest.rsplit_once("</"))
            .map(|(inner, _)| inner)
            .ok_or_else(|| Failure::Malformed("expected <echo>text</echo>".into()))?;
        Ok(vec![format!("<echoed>{inner}</echoed>")])
    }
}

export!(LegacyEcho);
