//! What the client-library tests (Python and JavaScript) share: where the
//! repository is, the llm agent's configuration, the signed registration
//! their "apply a command" tests carry, and the users' secrets as the
//! libraries' tests read them.

use crate::{agent_bytes, agent_wasm, AgentSpec, MockLlm, TestServer};
use agentserver::privileged::{Command, ComponentSource, Registration};
use agentserver::runtime::ComponentHash;
use std::path::{Path, PathBuf};

/// The repository's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_owned()
}

/// The `[[agent]]` table of the llm agent, allowed to reach `mock`.
pub fn llm_agent(mock: &MockLlm) -> String {
    let base = mock.base();
    format!(
        "[[agent]]\nname = \"llm\"\ncomponent = {:?}\nlistens = [\"ask\"]\ntimeout_ms = 30000\nmemory_bytes = 67108864\nfuel = 5000000000\n\
         [agent.http]\nallow = [{base:?}]\n\
         [agent.storage]\nsession = {{ max_keys = 8, max_bytes = 65536 }}\n",
        agent_wasm("llm").display().to_string(),
    )
}

/// A signed registration of the echo component as agent `twin`, listening
/// to `twin`, with the command id `register-twin`, written to `DIR/twin.xml`.
pub fn signed_twin(server: &TestServer, dir: &Path) {
    let bytes = agent_bytes("echo");
    let unsigned = Command::Register(Registration {
        name: "twin".into(),
        listens: vec!["twin".into()],
        description: "The echo agent under another name.".into(),
        sha256: ComponentHash::of(&bytes),
        component: ComponentSource::Inline(bytes),
        limits: Default::default(),
        nodes: Default::default(),
    })
    .to_unsigned_document()
    .replacen("<payload", "<payload id=\"register-twin\"", 1);
    std::fs::write(dir.join("twin.xml"), server.sign(&unsigned)).expect("write the signed command");
}

/// `{"user": "SECRET", …}` for `AGENTSERVER_USERS`.
pub fn users_json(server: &TestServer, users: &[&str]) -> String {
    let entries: Vec<String> = users
        .iter()
        .map(|user| format!("\"{user}\": \"{}\"", server.totp_secret(user)))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// Every tag the client libraries' test users may send (`twin` arrives by
/// signed command, nobody listens to `nobody`); `secret` is not among them.
pub const CLIENT_TAGS: &[&str] = &[
    "echo",
    "calculate",
    "square-sum",
    "count",
    "hold",
    "trap",
    "spray",
    "ask",
    "twin",
    "nobody",
];

/// The agents both client libraries' suites talk to (with [`client_agents`]).
pub const CLIENT_AGENTS: &[AgentSpec<'static>] = &[
    ("echo", "echo", &["echo"]),
    ("calc", "calculator", &["calculate"]),
    ("delegator", "delegator", &["square-sum"]),
    ("counter", "counter", &["count"]),
];

/// The rest of their configuration: the llm agent reaching `mock`, and
/// hostile, which runs one call at a time and queues none, so that a
/// second caller is told `busy`.
pub fn client_agents(mock: &MockLlm) -> String {
    format!(
        "{}[[agent]]\nname = \"hostile\"\ncomponent = {:?}\nlistens = [\"hold\", \"trap\", \"spray\"]\nmax_concurrent = 1\nmax_queued = 0\n",
        llm_agent(mock),
        agent_wasm("hostile").display().to_string()
    )
}
