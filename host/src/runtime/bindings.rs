//! Host-side bindings of the agent worlds (`wit/agent.wit`, version 0.2.0,
//! and `wit/0.1.0/agent.wit`), and the host's implementation of their
//! imports: `host.log`, `host.emit` and `wasi:keyvalue`. Outbound HTTP is
//! `wasmtime-wasi-http`'s, through the hooks in `state`.
//!
//! Both versions export the same `handle` (component types are structural),
//! so one set of export bindings calls components of either version; the
//! linker defines both versions' imports.

use super::state::{InstanceState, KeyValueHandle};

use crate::capability::keyvalue::{Bucket as StoredBucket, KeyValueError};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent-keyvalue",
    imports: { default: trappable },
    exports: { default: async },
    // The envelope a call hands the guest borrows the bus's strings
    // rather than copying them first: they are copied once, into the
    // guest's memory.
    ownership: Borrowing { duplicate_if_necessary: true },
    with: {
        "wasi:keyvalue/store.bucket": crate::runtime::KeyValueHandle,
    },
});

/// The published 0.1.0 world, for components built against it.
pub(crate) mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "agent",
        imports: { default: trappable },
    });
}

pub use self::agentserver::agent::host::Level;
use self::wasi::keyvalue::store::{Error as StoreError, KeyResponse};
use wasmtime::component::Resource;

/// The exports every agent has, whichever version it was built against.
pub(crate) type AgentWorld = AgentKeyvalue;
/// Checks a component's exports before it is instantiated.
pub(crate) type AgentWorldPre<T> = AgentKeyvaluePre<T>;

impl self::agentserver::agent::host::Host for InstanceState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        Ok(self.output.log(level, &message)?)
    }

    fn emit(&mut self, payload: String) -> wasmtime::Result<()> {
        self.emit(payload)
    }
}

impl self::agentserver::agent::types::Host for InstanceState {}

impl v1::agentserver::agent::host::Host for InstanceState {
    fn log(
        &mut self,
        level: v1::agentserver::agent::host::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        use v1::agentserver::agent::host::Level as Old;
        let level = match level {
            Old::Trace => Level::Trace,
            Old::Debug => Level::Debug,
            Old::Info => Level::Info,
            Old::Warn => Level::Warn,
            Old::Error => Level::Error,
        };
        Ok(self.output.log(level, &message)?)
    }
}

impl v1::agentserver::agent::types::Host for InstanceState {}

fn guest_error(error: KeyValueError) -> StoreError {
    match error {
        KeyValueError::Quota(text) => StoreError::Other(text),
        KeyValueError::Storage(text) => StoreError::Other(format!("storage failed: {text}")),
    }
}

impl self::wasi::keyvalue::store::Host for InstanceState {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<KeyValueHandle>, StoreError>> {
        let Some(storage) = self.capabilities.storage.as_ref() else {
            return Ok(Err(StoreError::AccessDenied));
        };
        let agent = &self.capabilities.agent;
        let (bucket, quota) = match identifier.as_str() {
            "session" => (
                StoredBucket::session(agent, self.call.scope.session()),
                storage.grant.session,
            ),
            "agent" => (StoredBucket::agent(agent), storage.grant.agent),
            _ => return Ok(Err(StoreError::NoSuchStore)),
        };
        let Some(quota) = quota else {
            return Ok(Err(StoreError::AccessDenied));
        };
        let handle = KeyValueHandle { bucket, quota };
        Ok(Ok(self.table.push(handle)?))
    }
}

impl self::wasi::keyvalue::store::HostBucket for InstanceState {
    fn get(
        &mut self,
        bucket: Resource<KeyValueHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, StoreError>> {
        let handle = self.table.get(&bucket)?;
        let Some(storage) = &self.capabilities.storage else {
            return Ok(Err(StoreError::AccessDenied));
        };
        Ok(storage.store.get(&handle.bucket, &key).map_err(guest_error))
    }

    fn set(
        &mut self,
        bucket: Resource<KeyValueHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StoreError>> {
        let handle = self.table.get(&bucket)?.clone();
        let Some(storage) = &self.capabilities.storage else {
            return Ok(Err(StoreError::AccessDenied));
        };
        let result = storage
            .store
            .set(&handle.bucket, &key, &value, &handle.quota);
        self.audit_write(
            "set",
            &handle.bucket,
            &key,
            value.len(),
            result.as_ref().err(),
        );
        Ok(result.map_err(guest_error))
    }

    fn delete(
        &mut self,
        bucket: Resource<KeyValueHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), StoreError>> {
        let handle = self.table.get(&bucket)?.clone();
        let Some(storage) = &self.capabilities.storage else {
            return Ok(Err(StoreError::AccessDenied));
        };
        let result = storage.store.delete(&handle.bucket, &key);
        self.audit_write("delete", &handle.bucket, &key, 0, result.as_ref().err());
        Ok(result.map_err(guest_error))
    }

    fn exists(
        &mut self,
        bucket: Resource<KeyValueHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, StoreError>> {
        self.get(bucket, key)
            .map(|result| result.map(|value| value.is_some()))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<KeyValueHandle>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, StoreError>> {
        let handle = self.table.get(&bucket)?;
        let Some(storage) = &self.capabilities.storage else {
            return Ok(Err(StoreError::AccessDenied));
        };
        Ok(storage
            .store
            .keys(&handle.bucket, cursor.unwrap_or(0))
            .map(|(keys, cursor)| KeyResponse { keys, cursor })
            .map_err(guest_error))
    }

    fn drop(&mut self, bucket: Resource<KeyValueHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl self::wasi::keyvalue::atomics::Host for InstanceState {
    fn increment(
        &mut self,
        bucket: Resource<KeyValueHandle>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, StoreError>> {
        let handle = self.table.get(&bucket)?.clone();
        let Some(storage) = &self.capabilities.storage else {
            return Ok(Err(StoreError::AccessDenied));
        };
        let result = storage
            .store
            .increment(&handle.bucket, &key, delta, &handle.quota);
        self.audit_write("increment", &handle.bucket, &key, 8, result.as_ref().err());
        Ok(result.map_err(guest_error))
    }
}
