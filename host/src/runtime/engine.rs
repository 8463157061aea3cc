//! The one `wasmtime::Engine`: component model, pooling allocator, fuel,
//! epoch interruption, a bounded wasm stack; and the ticker thread that
//! advances the epoch.

use super::limits::RuntimeConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Builds the engine for `config`.
pub(crate) fn build_engine(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let instances = config.max_instances.max(1);
    let core_instances = instances.saturating_mul(config.core_instances_per_instance.max(1));
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(core_instances)
        .total_memories(instances.saturating_mul(2))
        .total_tables(core_instances)
        .total_stacks(instances)
        .max_memory_size(config.max_memory_bytes)
        // Interpreters compiled to components carry large tables and many
        // small modules; these bounds fit CPython and SpiderMonkey builds.
        .table_elements(1 << 16)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        // When a slot is freed, put back only the pages the instance
        // dirtied (found with the PAGEMAP_SCAN ioctl on Linux 6.7+) by
        // copying them from the image, rather than unmapping them: the next
        // instance in that slot then takes no page faults for them. Up to
        // 4 MiB per slot (a fresh CPython or SpiderMonkey instance dirties
        // 2-4 MiB); beyond that, or on older kernels, pages are unmapped.
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack_bytes)
        .async_stack_size(config.max_wasm_stack_bytes + (1 << 20))
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm)
}

/// Advances the engine's epoch every `tick` on a thread of its own, until
/// dropped. Running calls check the epoch and yield to the executor at each
/// tick, which is what lets a wall-time limit end a call stuck in a loop.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: std::time::Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("agentserver-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
