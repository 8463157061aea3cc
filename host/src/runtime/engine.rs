//! The one `wasmtime::Engine`: component model, pooling allocator, fuel,
//! epoch interruption, a bounded wasm stack; and the ticker thread that
//! advances the epoch.

use super::limits::RuntimeConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
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

/// Ticks the ticker makes with no guest code running before it sleeps
/// until some runs again: 100 ms at the default tick.
const IDLE_TICKS: u32 = 100;

/// Advances the engine's epoch every `tick` on a thread of its own, until
/// dropped. Running calls check the epoch and yield to the executor at each
/// tick, which is what lets a wall-time limit end a call stuck in a loop.
///
/// An idle server would still wake a thousand times a second for nothing,
/// so once no guest code has run for [`IDLE_TICKS`] ticks the ticker parks,
/// and the next guest to start ([`GuestActivity::running`]) unparks it.
/// No start is missed: the ticker says it is parked before it looks at the
/// count of running guests for the last time, and a guest counts itself
/// before it looks whether the ticker is parked (both sequentially
/// consistent), so at least one of them sees the other; an unpark that
/// comes before the park makes the park return at once.
pub(crate) struct EpochTicker {
    activity: Arc<GuestActivity>,
    thread: Option<JoinHandle<()>>,
}

/// What the ticker and the guests it interrupts share.
#[derive(Debug, Default)]
pub(crate) struct GuestActivity {
    /// Guests running (a call or an instantiation, suspended or not).
    running: AtomicUsize,
    /// Whether the ticker is parked, or about to park.
    parked: AtomicBool,
    /// Set when the ticker should end.
    stop: AtomicBool,
    /// Ticks made so far.
    ticks: AtomicU64,
    /// The ticker's thread, to unpark it.
    ticker: OnceLock<Thread>,
}

impl GuestActivity {
    /// Counts a guest as running until the guard drops, waking the ticker
    /// if it sleeps.
    pub(crate) fn running(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(ticker) = self.ticker.get() {
                ticker.unpark();
            }
        }
        Running(self)
    }

    /// Ticks made so far.
    #[cfg(test)]
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

/// A running guest, counted until dropped.
pub(crate) struct Running<'a>(&'a GuestActivity);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: std::time::Duration) -> std::io::Result<Self> {
        let activity = Arc::new(GuestActivity::default());
        let shared = Arc::clone(&activity);
        let thread = std::thread::Builder::new()
            .name("agentserver-epoch".into())
            .spawn(move || {
                let mut idle = 0;
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                    shared.ticks.fetch_add(1, Ordering::Relaxed);
                    if shared.running.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                        continue;
                    }
                    idle += 1;
                    if idle < IDLE_TICKS {
                        continue;
                    }
                    shared.parked.store(true, Ordering::SeqCst);
                    if shared.running.load(Ordering::SeqCst) == 0
                        && !shared.stop.load(Ordering::SeqCst)
                    {
                        std::thread::park();
                    }
                    shared.parked.store(false, Ordering::SeqCst);
                    idle = 0;
                }
            })?;
        let _ = activity.ticker.set(thread.thread().clone());
        Ok(EpochTicker {
            activity,
            thread: Some(thread),
        })
    }

    /// What guests report to this ticker.
    pub(crate) fn activity(&self) -> &Arc<GuestActivity> {
        &self.activity
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.activity.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Waits up to ten seconds for `ready`.
    fn eventually(what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_ticker_sleeps_while_no_guest_runs_and_wakes_for_the_next() {
        let ticker =
            EpochTicker::start(Engine::default(), Duration::from_millis(1)).expect("ticker");
        let activity = Arc::clone(ticker.activity());
        eventually("the ticker parks once idle", || {
            activity.parked.load(Ordering::SeqCst)
        });
        let parked_at = activity.ticks();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(activity.ticks(), parked_at, "no ticks while parked");

        let running = activity.running();
        eventually("a running guest wakes the ticker", || {
            activity.ticks() > parked_at + 10
        });
        assert!(!activity.parked.load(Ordering::SeqCst));
        // While a guest runs, the ticker never parks.
        let ticks = activity.ticks();
        eventually("it keeps ticking", || {
            activity.ticks() > ticks + u64::from(IDLE_TICKS) + 10
        });
        assert!(!activity.parked.load(Ordering::SeqCst));
        drop(running);
        eventually("and parks again once the guest is done", || {
            activity.parked.load(Ordering::SeqCst)
        });
        drop(ticker);
    }
}
