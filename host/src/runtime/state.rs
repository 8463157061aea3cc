//! What one agent instance's store holds: the WASI context (with nothing
//! granted), its memory limiter, its output sink, the agent's capabilities
//! (outbound HTTP, storage) and the context of the call in progress.

use super::output::GuestOutput;
use crate::capability::keyvalue::{Bucket, KeyValueError, KeyValueStore};
use crate::capability::{BucketQuota, CallScope, OutboundClient, StorageGrant, Usage, UsageAudit};
use std::fmt::Write as _;
use std::sync::Arc;
use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

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
    /// `host.emit` past `max_emitted_payloads`.
    #[error("emitted payload limit exceeded")]
    EmittedPayloads,
    /// `host.emit` past `max_emitted_bytes`.
    #[error("emitted byte limit exceeded")]
    EmittedBytes,
}

/// Receives what an agent emits with `host.emit` during a call: the bus
/// routes it on the call's thread at once.
pub trait Emitter: Send + Sync {
    /// Takes one payload, as the guest wrote it.
    fn emit(&self, payload: String);
}

/// Storage granted to an agent: the grant and the backend.
pub(crate) struct GrantedStorage {
    pub(crate) grant: StorageGrant,
    pub(crate) store: Arc<dyn KeyValueStore>,
}

/// What an agent may use beyond computing, shared by its instances.
pub(crate) struct Capabilities {
    pub(crate) agent: Arc<str>,
    /// The scope of calls that use no capability, and of no call.
    pub(crate) idle_scope: Arc<CallScope>,
    pub(crate) http: Option<Arc<OutboundClient>>,
    pub(crate) storage: Option<GrantedStorage>,
    pub(crate) audit: Arc<dyn UsageAudit>,
}

/// An open bucket, as the guest holds it.
#[derive(Debug, Clone)]
pub struct KeyValueHandle {
    pub(crate) bucket: Bucket,
    pub(crate) quota: BucketQuota,
}

/// The call in progress: whom it runs for, where its emissions go, and
/// what it emitted so far.
pub(crate) struct CallContext {
    pub(crate) scope: Arc<CallScope>,
    pub(crate) emitter: Option<Arc<dyn Emitter>>,
    /// Emissions kept for the call's result when there is no emitter.
    pub(crate) held: Vec<String>,
    pub(crate) emitted: usize,
    pub(crate) emitted_bytes: usize,
    pub(crate) max_payloads: usize,
    pub(crate) max_bytes: usize,
}

impl CallContext {
    /// No call: `scope` is an agent's idle scope, shared so that making
    /// one costs no allocation.
    pub(crate) fn idle(scope: &Arc<CallScope>) -> Self {
        CallContext {
            scope: Arc::clone(scope),
            emitter: None,
            held: Vec::new(),
            emitted: 0,
            emitted_bytes: 0,
            max_payloads: 0,
            max_bytes: 0,
        }
    }
}

/// The data of one instance's `Store`.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    memory: MemoryLimiter,
    http: WasiHttpCtx,
    hooks: HttpHooks,
    pub(crate) output: Arc<GuestOutput>,
    pub(crate) capabilities: Arc<Capabilities>,
    pub(crate) call: CallContext,
}

impl InstanceState {
    /// A fresh state: no files, no network, no environment, no arguments;
    /// stdout and stderr go to `output`.
    pub(crate) fn new(
        memory_bytes: usize,
        output: Arc<GuestOutput>,
        capabilities: Arc<Capabilities>,
    ) -> Self {
        let idle = Arc::clone(&capabilities.idle_scope);
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
            http: WasiHttpCtx::new(),
            hooks: HttpHooks {
                client: capabilities.http.clone(),
                scope: Arc::clone(&idle),
            },
            output,
            capabilities,
            call: CallContext::idle(&idle),
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.memory
    }

    /// Starts a call: its scope, emitter and emission budget.
    pub(crate) fn begin_call(&mut self, call: CallContext) {
        self.hooks.scope = Arc::clone(&call.scope);
        self.call = call;
    }

    /// `host.emit`: counted against the call's output limits, then routed
    /// at once (or held for the result when nothing routes it).
    pub(crate) fn emit(&mut self, payload: String) -> wasmtime::Result<()> {
        let call = &mut self.call;
        call.emitted += 1;
        call.emitted_bytes += payload.len();
        if call.emitted > call.max_payloads {
            return Err(GuestLimit::EmittedPayloads.into());
        }
        if call.emitted_bytes > call.max_bytes {
            return Err(GuestLimit::EmittedBytes.into());
        }
        match &call.emitter {
            Some(emitter) => emitter.emit(payload),
            None => call.held.push(payload),
        }
        Ok(())
    }

    /// Whether calls use a capability, and so need a scope of their own.
    pub(crate) fn has_capabilities(&self) -> bool {
        self.capabilities.http.is_some() || self.capabilities.storage.is_some()
    }

    /// Audits one storage write (never its value).
    pub(crate) fn audit_write(
        &self,
        op: &str,
        bucket: &Bucket,
        key: &str,
        bytes: usize,
        refused: Option<&KeyValueError>,
    ) {
        let mut xml = String::from("<kv-write");
        let mut attribute = |name: &str, value: &str| {
            let _ = write!(xml, " {name}=\"");
            crate::xml::escape_attribute(&mut xml, value);
            xml.push('"');
        };
        attribute("bucket", bucket.kind());
        attribute("bytes", &bytes.to_string());
        if let Some(error) = refused {
            attribute("error", &error.to_string());
        }
        attribute("key", crate::capability::clip(key));
        attribute("op", op);
        xml.push_str("></kv-write>");
        self.capabilities.audit.record(&Usage {
            agent: &self.capabilities.agent,
            session: self.call.scope.session(),
            thread: self.call.scope.thread(),
            tag: "kv-write",
            canonical: &xml,
        });
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

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Sends a guest's outbound requests through its agent's client, under the
/// current call's budget. An agent without an HTTP grant never gets here (it
/// is refused at admission), and would be denied if it did.
struct HttpHooks {
    client: Option<Arc<OutboundClient>>,
    scope: Arc<CallScope>,
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        match &self.client {
            Some(client) => client.forbidden_headers().contains(name),
            None => wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name),
        }
    }

    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        match &self.client {
            Some(client) => {
                let forbidden = Arc::clone(client.forbidden_headers());
                Arc::new(move |name| forbidden.contains(name))
            }
            None => Arc::new(|name| wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)),
        }
    }

    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        let client = self.client.clone();
        let scope = Arc::clone(&self.scope);
        Box::new(async move {
            let client = client.ok_or(wasmtime_wasi_http::Error::HttpRequestDenied)?;
            let response = client.send(request, scope).await?;
            let done: Box<
                dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send,
            > = Box::new(async { Ok(()) });
            Ok((response, done))
        })
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
