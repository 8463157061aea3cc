//! What one agent instance's store holds: the WASI context (with nothing
//! granted), its memory limiter and its output sink.

use super::output::GuestOutput;
use std::sync::Arc;
use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Tables may not grow past this many elements; generous for any real agent
/// (interpreters included), small enough that a table bomb stays cheap.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A limit the host enforced by trapping the guest; carried as the trap's
/// error so that the call can be classified precisely.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestLimit {
    /// Memory growth past `memory_bytes`.
    #[error("memory limit exceeded")]
    Memory,
    /// Output past `max_log_bytes`.
    #[error("output limit exceeded")]
    Output,
}

/// The data of one instance's `Store`.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryLimiter,
    pub(crate) output: Arc<GuestOutput>,
}

impl InstanceState {
    /// A fresh state: no files, no network, no environment, no arguments;
    /// stdout and stderr go to `output`.
    pub(crate) fn new(memory_bytes: usize, output: Arc<GuestOutput>) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(output.stream())
            .stderr(output.stream())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryLimiter { memory_bytes },
            output,
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.memory
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces `memory_bytes` by trapping the guest the moment it asks for
/// more, so that the failure is reported as what it is.
struct MemoryLimiter {
    memory_bytes: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(GuestLimit::Memory.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(GuestLimit::Memory.into());
        }
        Ok(true)
    }
}
