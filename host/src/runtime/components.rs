//! The component store: components kept by the SHA-256 of their bytes,
//! checked against the agent world before they are accepted, and their
//! compiled code cached on disk so that a restart does not recompile.
//!
//! # The compile cache
//!
//! `CACHE_DIR/HASH.cwasm` holds `Component::serialize` output. A restart
//! maps that file into memory (`Component::deserialize_file`) rather than
//! reading it: code pages come from the page cache on first use, and the
//! initial linear-memory images of the component's modules are mapped
//! copy-on-write straight from the file, so neither loading nor
//! instantiating copies them. That is what makes a 20 MB interpreter
//! component load in milliseconds.
//!
//! A cache file is used only when wasmtime accepts it for this engine (its
//! own format, same version, same settings); anything else — missing,
//! truncated, from another version or configuration — is ignored,
//! recompiled and rewritten. Files are written to a temporary name, synced
//! and renamed, so a crash leaves either the old file or the new one. The
//! directory is trusted as the server's binary is: only servers write it
//! (several of the same build may share one), and its contents are not
//! checksummed on load (that would read every page of the file). Never
//! change a cache file in place while a server runs — its code is mapped
//! from that file; deleting files, or the whole directory to force
//! recompilation, is safe.

use super::bindings::AgentWorldPre;
use super::error::LoadError;
use super::state::InstanceState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

/// The SHA-256 of a component's bytes; shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentHash([u8; 32]);

impl ComponentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ComponentHash(Sha256::digest(bytes).into())
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ComponentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ComponentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentHash({self})")
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a SHA-256 hash is 64 hexadecimal digits")]
pub struct BadHash;

impl FromStr for ComponentHash {
    type Err = BadHash;

    fn from_str(s: &str) -> Result<Self, BadHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| BadHash)?;
        Ok(ComponentHash(bytes))
    }
}

/// Where a component's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentOrigin {
    /// Compiled from its bytes now.
    Compiled,
    /// Loaded from the on-disk compile cache.
    Cached,
}

/// A component that implements the agent world, compiled and ready to
/// instantiate. Only the component store makes one.
pub struct AgentComponent {
    hash: ComponentHash,
    origin: ComponentOrigin,
    imports: Vec<String>,
    can_emit: bool,
    pub(crate) pre: AgentWorldPre<InstanceState>,
}

impl AgentComponent {
    /// The SHA-256 of the component's bytes.
    pub fn hash(&self) -> ComponentHash {
        self.hash
    }

    /// Whether the compiled code was compiled now or loaded from the cache.
    pub fn origin(&self) -> ComponentOrigin {
        self.origin
    }

    /// The interfaces the component imports, as `package/interface@version`.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Whether the component imports `host.emit`'s interface version
    /// (0.2.0 or later), and so may emit during a call.
    pub fn can_emit(&self) -> bool {
        self.can_emit
    }
}

impl fmt::Debug for AgentComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentComponent")
            .field("hash", &self.hash)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Components by hash, validated and compiled once.
pub(crate) struct ComponentStore {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<ComponentHash, Arc<AgentComponent>>>,
}

/// The first four bytes of every wasm binary.
const WASM_MAGIC: &[u8] = b"\0asm";
/// The version field of a core module (a component has another).
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];

impl ComponentStore {
    pub(crate) fn new(
        engine: Engine,
        linker: Linker<InstanceState>,
        cache_dir: Option<PathBuf>,
    ) -> Self {
        ComponentStore {
            engine,
            linker,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Validates and compiles `bytes` (or finds them already loaded, or in
    /// the cache). Compiling is CPU-bound and can take seconds for a large
    /// component: call this off the async reactor.
    pub(crate) fn load(&self, bytes: &[u8]) -> Result<Arc<AgentComponent>, LoadError> {
        let hash = ComponentHash::of(bytes);
        if let Some(found) = self.lock().get(&hash) {
            return Ok(Arc::clone(found));
        }
        if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
            return Err(LoadError::NotWasm);
        }
        if &bytes[4..8] == CORE_MODULE_VERSION {
            return Err(LoadError::CoreModule);
        }
        let (component, origin) = match self.load_cached(&hash) {
            Some(component) => (component, ComponentOrigin::Cached),
            None => {
                tracing::info!(component = %hash, bytes = bytes.len(),
                    "compiling a component (once: the code is cached for later starts)");
                let started = std::time::Instant::now();
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Invalid(describe(&e)))?;
                tracing::info!(component = %hash, elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled");
                (component, ComponentOrigin::Compiled)
            }
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WorldMismatch(describe(&e)))?;
        let pre =
            AgentWorldPre::new(instance_pre).map_err(|e| LoadError::WorldMismatch(describe(&e)))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        // Decided once here: the bus asks on every delivery.
        let can_emit = imports.iter().any(|name| {
            name.starts_with("agentserver:agent/host@") && name != "agentserver:agent/host@0.1.0"
        });
        if origin == ComponentOrigin::Compiled {
            self.store_cached(&hash, &component);
        }
        let loaded = Arc::new(AgentComponent {
            hash,
            origin,
            imports,
            can_emit,
            pre,
        });
        self.lock().insert(hash, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Reads and loads a component file.
    pub(crate) fn load_file(&self, path: &Path) -> Result<Arc<AgentComponent>, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io(e.kind().to_string()))?;
        self.load(&bytes)
    }

    /// Forgets a loaded component, so that the next load of the same bytes
    /// reads the cache or compiles again. Agents still running it keep it.
    pub(crate) fn forget(&self, hash: &ComponentHash) -> bool {
        self.lock().remove(hash).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ComponentHash, Arc<AgentComponent>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_path(&self, hash: &ComponentHash) -> Option<PathBuf> {
        Some(self.cache_dir.as_ref()?.join(format!("{hash}.cwasm")))
    }

    /// The cached compiled code for `hash`, if present and made by a
    /// compatible engine.
    fn load_cached(&self, hash: &ComponentHash) -> Option<Component> {
        let path = self.cache_path(hash)?;
        if !path.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts its input to be wasmtime's own
        // serialization and the file not to change while mapped. The file
        // is one this store wrote, atomically, in a directory only the
        // server writes, and never rewrites in place (a rebuild renames a
        // new file over it, which leaves existing mappings intact);
        // wasmtime itself refuses files of another format, version or
        // configuration.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::info!(component = %hash, error = %describe(&error),
                    "compiled cache file not usable by this engine; recompiling");
                None
            }
        }
    }

    /// Writes the compiled code for `hash` to the cache. Failures are logged
    /// and otherwise ignored: the cache only saves time.
    fn store_cached(&self, hash: &ComponentHash, component: &Component) {
        let Some(path) = self.cache_path(hash) else {
            return;
        };
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(describe(&e)))
            .and_then(|code| write_atomically(&path, &code));
        if let Err(error) = result {
            tracing::warn!(component = %hash, %error, "could not write the compile cache");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A wasmtime error as one line: its messages from outermost to root cause.
pub(crate) fn describe(error: &wasmtime::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.is_empty() {
            if text.contains(&cause) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
