//! Host-side bindings of the agent world (`wit/agent.wit`), and the host's
//! implementation of its one import, `host.log`.

use super::state::InstanceState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: { default: trappable },
    exports: { default: async },
});

pub use self::agentserver::agent::host::Level;

impl self::agentserver::agent::host::Host for InstanceState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        Ok(self.output.log(level, &message)?)
    }
}

impl self::agentserver::agent::types::Host for InstanceState {}
