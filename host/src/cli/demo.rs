//! `agentserver demo`: loads the example agents and calls each once,
//! printing what goes in and what comes out. A first look at the runtime
//! before the server is up.

use crate::runtime::{AgentLimits, Delivery, Runtime, RuntimeConfig, SessionKey};
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `agentserver demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder holding the built example agents (`make agents`).
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    agents: PathBuf,
    /// Where compiled components are cached between runs.
    #[arg(long, default_value = "run/compiled")]
    cache_dir: PathBuf,
}

/// (agent, tag, payload) for each call the demo makes.
const CALLS: &[(&str, &str, &str)] = &[
    ("echo", "echo", "<echo>Hello, <b>agents</b>!</echo>"),
    (
        "calculator",
        "calculate",
        "<calculate>2 + 3 * 4</calculate>",
    ),
    ("calculator", "calculate", "<calculate>2 + * 4</calculate>"),
    ("counter", "count", "<count/>"),
    ("counter", "count", "<count/>"),
    (
        "delegator",
        "square-sum",
        "<square-sum><n>3</n><n>4</n></square-sum>",
    ),
];

/// Runs the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(args.cache_dir.clone()),
        ..RuntimeConfig::default()
    })?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    let session = SessionKey::from("demo");
    let mut agents = std::collections::HashMap::new();
    for (name, tag, payload) in CALLS {
        if !agents.contains_key(name) {
            let path = args.agents.join(format!("{name}.wasm"));
            let started = Instant::now();
            let component = runtime.load_component_file(&path).with_context(|| {
                format!(
                    "cannot load {} (build it with `make agents`)",
                    path.display()
                )
            })?;
            println!(
                "loaded {name:<10} sha256 {} ({:?}, {:.1} ms)",
                component.hash(),
                component.origin(),
                started.elapsed().as_secs_f64() * 1e3
            );
            agents.insert(
                *name,
                runtime.agent(name, component, AgentLimits::default())?,
            );
        }
        let agent = &agents[name];
        let delivery = Delivery {
            thread: "demo-thread",
            sender: "user:demo",
            tag,
            payload,
        };
        let started = Instant::now();
        let result = tokio.block_on(agent.call(&session, delivery));
        let micros = started.elapsed().as_secs_f64() * 1e6;
        match result {
            Ok(payloads) => println!(
                "{name:>10} <- {payload}\n{:>10} -> {} ({micros:.0} µs)",
                "",
                payloads.join(" ")
            ),
            Err(error) => println!(
                "{name:>10} <- {payload}\n{:>10} !! {error} ({micros:.0} µs)",
                ""
            ),
        }
    }
    Ok(())
}
