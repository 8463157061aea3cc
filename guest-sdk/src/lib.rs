//! Write an [AgentServer] agent in Rust: implement one trait, call one macro.
//!
//! An agent is a WebAssembly component built for `wasm32-wasip2` against the
//! published agent world (`wit/agent.wit`). The host hands it one message at a
//! time as an [`Envelope`]; the agent answers with zero or more XML payloads,
//! which the host emits on the same thread, or with a [`Failure`].
//!
//! This crate generates the bindings for that world, so an agent needs no
//! other dependency:
//!
//! ```no_run
//! use agentserver_guest::{export_agent, xml, Agent, Envelope, Failure};
//!
//! struct Echo;
//!
//! impl Agent for Echo {
//!     fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
//!         let payload = xml::Element::parse(&msg.payload)?;
//!         Ok(vec![xml::wrap("echoed", payload.inner_xml())])
//!     }
//! }
//!
//! export_agent!(Echo);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` in a crate
//! whose `[lib]` has `crate-type = ["cdylib"]`; the `.wasm` that comes out is
//! the component the server admits.
//!
//! # What an agent can count on
//!
//! - `msg.payload` is one element in exclusive canonical XML: no DOCTYPE, no
//!   comments, attributes sorted, only the five predefined entities and
//!   character references. [`xml::Element::parse`] reads exactly that form.
//! - `msg.sender` is set by the host (`user:NAME` or an agent's name) and
//!   cannot be forged; `msg.thread` is opaque.
//! - State kept in statics lives as long as the instance, and the host keeps one
//!   instance per session, so it is per session.
//!
//! [AgentServer]: https://github.com/agentserver/agentserver

pub mod http;
pub mod kv;
pub mod log;
pub mod xml;

// Lets the generated bindings name this crate by its public path from inside
// the crate too.
extern crate self as agentserver_guest;

/// Bindings generated from `wit/agent.wit`, world `agent-http-keyvalue`.
/// An agent's component imports only what it uses: one that never calls
/// [`http`] or [`kv`] needs no grant.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "agent-http-keyvalue",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_agent_world",
        default_bindings_module: "::agentserver_guest::bindings",
        runtime_path: "::agentserver_guest::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub use bindings::agentserver::agent::types::{Envelope, Failure};

/// Sends one XML payload on the current thread now, before `handle`
/// returns: progress, or an answer streamed in parts. It is routed like a
/// returned payload and counts against the same per-call limits; past them
/// the call ends.
pub fn emit(payload: &str) {
    bindings::agentserver::agent::host::emit(payload);
}

/// An agent: handles one message at a time.
///
/// `handle` is an associated function rather than a method: an instance of
/// the component *is* the agent's state, so state lives in statics (for
/// example a `static COUNT: AtomicU64`) and the host keeps one instance per
/// session.
pub trait Agent {
    /// Handles one message. Each returned string is one XML payload, emitted
    /// by the host on the message's thread; an `Err` reaches the sender as an
    /// `agent-failed` error carrying the failure's text.
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure>;
}

/// Exports a type implementing [`Agent`] as the component's `handle` function.
///
/// Call it once, at the top level of the agent's crate.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        #[doc(hidden)]
        struct __AgentServerExport;

        impl $crate::bindings::Guest for __AgentServerExport {
            fn handle(
                msg: $crate::Envelope,
            ) -> ::core::result::Result<::std::vec::Vec<::std::string::String>, $crate::Failure> {
                <$agent as $crate::Agent>::handle(msg)
            }
        }

        $crate::bindings::__export_agent_world!(__AgentServerExport with_types_in $crate::bindings);
    };
}

impl Failure {
    /// The text the failure carries, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            Failure::Malformed(text) | Failure::Refused(text) | Failure::Internal(text) => text,
        }
    }
}
