//! Shared harness for the end-to-end tests: finds the example agents built by
//! `make agents`, and gives each test binary one runtime to load them into.

use agentserver::runtime::{
    Agent, AgentLimits, CallError, Delivery, Runtime, RuntimeConfig, SessionKey,
};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The folder holding the built example agents: `$AGENTSERVER_AGENTS_DIR`, or
/// the workspace's `target/wasm32-wasip2/release`.
pub fn agents_dir() -> PathBuf {
    match std::env::var_os("AGENTSERVER_AGENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release"),
    }
}

/// The path of example agent `name`'s component; panics with the command to
/// run when it has not been built.
pub fn agent_wasm(name: &str) -> PathBuf {
    let path = agents_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the example agents with `make agents`",
        path.display()
    );
    path
}

/// The bytes of example agent `name`'s component.
pub fn agent_bytes(name: &str) -> Vec<u8> {
    std::fs::read(agent_wasm(name)).expect("read agent component")
}

/// A runtime config small enough that several runtimes fit in one test
/// process.
pub fn small_runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        max_instances: 64,
        ..RuntimeConfig::default()
    }
}

/// The runtime shared by the tests of one test binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(small_runtime_config()).expect("start runtime"))
}

/// Example agent `component` loaded into the shared runtime as `name`.
pub fn agent(component: &str, limits: AgentLimits) -> Arc<Agent> {
    let loaded = runtime()
        .load_component_file(&agent_wasm(component))
        .expect("load example agent");
    runtime()
        .agent(component, loaded, limits)
        .expect("make agent")
}

/// Calls `agent` in `session` with `payload`, whose root tag is `tag`.
pub async fn call(
    agent: &Agent,
    session: &str,
    tag: &str,
    payload: &str,
) -> Result<Vec<String>, CallError> {
    agent
        .call(
            &SessionKey::from(session),
            Delivery {
                thread: "thread-1",
                sender: "user:test",
                tag,
                payload,
            },
        )
        .await
}

/// A bus with example agents registered: each entry is (registered name,
/// example component, tags it listens to).
pub fn bus_with(
    agents: &[(&str, &str, &[&str])],
) -> (
    agentserver::bus::Bus,
    Arc<agentserver::bus::MemoryAuditSink>,
) {
    let audit = Arc::new(agentserver::bus::MemoryAuditSink::new());
    let bus = agentserver::bus::Bus::new(agentserver::bus::BusConfig::default(), audit.clone());
    for (name, component, tags) in agents {
        register(&bus, name, component, tags, AgentLimits::default());
    }
    (bus, audit)
}

/// Registers example agent `component` on `bus` as `name`, listening to `tags`.
pub fn register(
    bus: &agentserver::bus::Bus,
    name: &str,
    component: &str,
    tags: &[&str],
    limits: AgentLimits,
) {
    use agentserver::bus::{AgentName, Listener, ListenerTarget};
    let loaded = runtime()
        .load_component_file(&agent_wasm(component))
        .expect("load example agent");
    let agent = runtime().agent(name, loaded, limits).expect("make agent");
    bus.register(Listener {
        name: AgentName::new(name).expect("agent name"),
        listens: tags.iter().map(|t| tag(t)).collect(),
        description: format!("example agent {component}"),
        target: ListenerTarget::Local(agent),
    })
    .expect("register agent");
}

/// A tag from its Clark-notation text.
pub fn tag(text: &str) -> agentserver::xml::Tag {
    agentserver::xml::Tag::new(text)
}

/// The next frame in `session`'s outbox, waiting at most 10 s.
pub async fn next_frame(session: &agentserver::bus::Session) -> String {
    match tokio::time::timeout(std::time::Duration::from_secs(10), session.outbox().pop()).await {
        Ok(Some(frame)) => frame.to_string(),
        Ok(None) => panic!("the session's outbox closed"),
        Err(_) => panic!("no frame within 10 s"),
    }
}
