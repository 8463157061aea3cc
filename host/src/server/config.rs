//! `organism.toml`: what the server listens on, where it keeps its data,
//! its users, its identity, and the agents it boots with.
//!
//! Paths are relative to the configuration file. Every setting but the
//! agents' names, components and tags has a default.

pub use super::proxy::{AddressRange, TrustedProxies};
use crate::capability::{
    AgentGrants, AllowedHost, BucketQuota, HttpGrant, SecretHeader, StorageGrant,
};
use crate::cluster::{NatsAuth, NatsTls};
use crate::runtime::AgentLimits;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml_edit::{DocumentMut, Item, TableLike};

/// The default address: loopback, port 8765.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8765";

/// The keys the top level may hold.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "users",
    "identity",
    "components_dir",
    "compile_cache",
    "tls_cert",
    "tls_key",
    "storage",
    "max_message_bytes",
    "max_command_bytes",
    "max_connections_per_user",
    "messages_per_second",
    "message_burst",
    "max_pending_frames",
    "session_timeout",
    "max_instances",
    "secrets",
    "max_connections",
    "max_unauthenticated_per_address",
    "proxy",
    "audit",
    "cluster",
    "agent",
];
/// The keys of `[cluster]`.
const CLUSTER_KEYS: &[&str] = &[
    "nats_url",
    "node",
    "nats_credentials",
    "nats_token_file",
    "nats_user",
    "nats_password_file",
    "nats_ca",
    "nats_cert",
    "nats_key",
];
/// The keys of `[audit]`.
const AUDIT_KEYS: &[&str] = &["checkpoint_entries", "checkpoint_seconds"];
/// The keys of `[proxy]`.
const PROXY_KEYS: &[&str] = &["from"];
/// The keys of `[storage]`.
const STORAGE_KEYS: &[&str] = &["backend", "url", "prefix"];
/// The keys of an `[[agent]]`.
const AGENT_KEYS: &[&str] = &[
    "name",
    "component",
    "sha256",
    "listens",
    "description",
    "max_concurrent",
    "max_queued",
    "session_timeout",
    "fuel",
    "memory_bytes",
    "timeout_ms",
    "http",
    "storage",
];
/// The keys of an `[agent.http]`.
const HTTP_KEYS: &[&str] = &[
    "allow",
    "max_requests",
    "max_response_bytes",
    "timeout_ms",
    "header",
];
/// The keys of an `[[agent.http.header]]`.
const HEADER_KEYS: &[&str] = &["host", "name", "value"];
/// The keys of an `[agent.storage]` bucket.
const BUCKET_KEYS: &[&str] = &["max_keys", "max_bytes"];

/// Why the configuration could not be read.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A setting has the wrong type or value.
    #[error("{path}: `{key}`: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// The setting.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

pub use crate::store::StorageConfig;

/// How often the audit writer signs a checkpoint (`[audit]`): after
/// `every_entries` entries or `every_seconds` after the first entry not yet
/// covered, whichever comes first; 0 turns that trigger off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// `checkpoint_entries`, default 10,000.
    pub every_entries: u64,
    /// `checkpoint_seconds`, default 60.
    pub every_seconds: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_entries: 10_000,
            every_seconds: 60,
        }
    }
}

impl CheckpointPolicy {
    /// Whether checkpoints are written at all.
    pub fn is_enabled(&self) -> bool {
        self.every_entries > 0 || self.every_seconds > 0
    }
}

/// One boot-time agent (`[[agent]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Its registered name.
    pub name: String,
    /// Its component file (absolute, resolved against the config file).
    pub component: PathBuf,
    /// The component's SHA-256, checked when present.
    pub sha256: Option<String>,
    /// The tags it listens to.
    pub listens: Vec<String>,
    /// One line for the catalog.
    pub description: String,
    /// Its limits.
    pub limits: AgentLimits,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:8765`.
    pub listen: SocketAddr,
    /// The data directory (dev certificate, compile cache, SQLite). Default `data`.
    pub data_dir: PathBuf,
    /// The user directory. Default `users.toml`.
    pub users: PathBuf,
    /// The organism's Ed25519 public key. Default `identity.pub`.
    pub identity: PathBuf,
    /// Whether `identity` was set explicitly: then a missing file is an
    /// error; otherwise the server starts without accepting privileged
    /// commands.
    pub identity_required: bool,
    /// Where `<component src="…">` files of signed registrations are
    /// looked up. Default `DATA_DIR/components`.
    pub components_dir: PathBuf,
    /// Largest privileged command, bytes (a component may travel inline).
    /// Default 64 MiB; every other frame keeps `max_message_bytes`.
    pub max_command_bytes: usize,
    /// A production certificate chain (PEM); with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Storage backend.
    pub storage: StorageConfig,
    /// Largest frame a client may send, bytes. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Live connections one user may have. Default 8.
    pub max_connections_per_user: usize,
    /// Messages per second one connection may send, sustained. Default 50.
    pub messages_per_second: u32,
    /// Messages one connection may send in a burst. Default 100.
    pub message_burst: u32,
    /// Frames kept for a session while no socket takes them (past it the
    /// oldest are dropped and counted). Default 1,000.
    pub max_pending_frames: usize,
    /// Seconds a session outlives its socket. Default: the longest
    /// `session_timeout` of the boot agents, or 1,800.
    pub session_timeout: Option<u64>,
    /// Agent instances the runtime's pool holds, all agents together.
    /// Default 1,000.
    pub max_instances: u32,
    /// Where compiled components are cached by hash, so that a restart
    /// maps them instead of compiling. Several servers of the same build
    /// may share one. Default `DATA_DIR/compiled`.
    pub compile_cache: PathBuf,
    /// The secrets file grants' headers draw on (`name = "value"`, mode
    /// 0600). Default: none (a grant naming a secret is then refused).
    pub secrets: Option<PathBuf>,
    /// Boot-time agents.
    pub agents: Vec<AgentConfig>,
    /// Connections open at once; past it new ones are closed at once.
    /// Default 10,000.
    pub max_connections: usize,
    /// Connections of one client address that have not logged in yet;
    /// past it new ones from that address are closed at once. Default 64.
    pub max_unauthenticated_per_address: usize,
    /// Reverse proxies allowed to speak for clients (`[proxy] from`): their
    /// PROXY protocol headers and `X-Forwarded-For` name the client.
    /// Default: none.
    pub proxies: TrustedProxies,
    /// When the audit writer signs checkpoints (`[audit]`).
    pub checkpoints: CheckpointPolicy,
    /// Several nodes serving one organism over NATS (`[cluster]`).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses configuration text; `name` is used in errors, relative paths
    /// resolve against `base`.
    pub fn parse(text: &str, name: &Path, base: &Path) -> Result<Config, ConfigError> {
        let document = text
            .parse::<DocumentMut>()
            .map_err(|e| ConfigError::Syntax {
                path: name.to_owned(),
                reason: e.message().to_owned(),
            })?;
        let reader = Reader { name, base };
        let root = document.as_table();
        reader.only_known(root, "", TOP_LEVEL_KEYS)?;
        let listen = reader
            .string(root, "listen")?
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen
            .parse()
            .map_err(|_| reader.bad("listen", "must be an address such as 127.0.0.1:8765"))?;
        let storage = match root.get("storage").and_then(Item::as_table_like) {
            None => StorageConfig::Memory,
            Some(table) => match {
                reader.only_known(table, "storage.", STORAGE_KEYS)?;
                reader.string(table, "backend")?
            }
            .as_deref()
            {
                None | Some("memory") => StorageConfig::Memory,
                Some("sqlite") => StorageConfig::Sqlite,
                Some("redis") => StorageConfig::Redis {
                    url: reader
                        .string(table, "url")?
                        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
                    prefix: reader
                        .string(table, "prefix")?
                        .unwrap_or_else(|| "agentserver".to_owned()),
                },
                Some(_) => {
                    return Err(reader.bad("storage.backend", "must be memory, sqlite or redis"))
                }
            },
        };
        let mut agents = Vec::new();
        if let Some(item) = root.get("agent") {
            let tables = item
                .as_array_of_tables()
                .ok_or_else(|| reader.bad("agent", "must be [[agent]] tables"))?;
            for table in tables.iter() {
                agents.push(reader.agent(table)?);
            }
        }
        let data_dir = reader
            .path(root, "data_dir")?
            .unwrap_or_else(|| base.join("data"));
        let identity = reader.path(root, "identity")?;
        let compile_cache = reader
            .path(root, "compile_cache")?
            .unwrap_or_else(|| data_dir.join("compiled"));
        let proxies = match root.get("proxy") {
            None => TrustedProxies::default(),
            Some(item) => {
                let table = item
                    .as_table_like()
                    .ok_or_else(|| reader.bad("proxy", "must be a table"))?;
                reader.only_known(table, "proxy.", PROXY_KEYS)?;
                let ranges = match table.get("from") {
                    None => Vec::new(),
                    Some(from) => from
                        .as_array()
                        .ok_or_else(|| {
                            reader.bad("proxy.from", "must be a list of addresses or networks")
                        })?
                        .iter()
                        .map(|value| {
                            value
                                .as_str()
                                .ok_or_else(|| {
                                    reader.bad(
                                        "proxy.from",
                                        "must be a list of addresses or networks",
                                    )
                                })?
                                .parse::<AddressRange>()
                                .map_err(|e| reader.bad("proxy.from", &e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                TrustedProxies::new(ranges)
            }
        };
        let checkpoints = match root.get("audit") {
            None => CheckpointPolicy::default(),
            Some(item) => {
                let table = item
                    .as_table_like()
                    .ok_or_else(|| reader.bad("audit", "must be a table"))?;
                reader.only_known(table, "audit.", AUDIT_KEYS)?;
                let defaults = CheckpointPolicy::default();
                CheckpointPolicy {
                    every_entries: reader
                        .integer(table, "checkpoint_entries")?
                        .unwrap_or(defaults.every_entries),
                    every_seconds: reader
                        .integer(table, "checkpoint_seconds")?
                        .unwrap_or(defaults.every_seconds),
                }
            }
        };
        let cluster = match root.get("cluster") {
            None => None,
            Some(item) => {
                let table = item
                    .as_table_like()
                    .ok_or_else(|| reader.bad("cluster", "must be a table"))?;
                reader.only_known(table, "cluster.", CLUSTER_KEYS)?;
                let node = reader
                    .string(table, "node")?
                    .filter(|n| crate::privileged::valid_node_name(n))
                    .ok_or_else(|| {
                        reader.bad(
                            "cluster.node",
                            "every node needs a name of 1 to 64 letters, digits, `-` or `_`",
                        )
                    })?;
                if !matches!(storage, StorageConfig::Redis { .. }) {
                    return Err(reader.bad(
                        "cluster",
                        "the nodes of a cluster share sessions, structure and the audit store: \
                         set [storage] backend = \"redis\"",
                    ));
                }
                let auth = match (
                    reader.path(table, "nats_credentials")?,
                    reader.path(table, "nats_token_file")?,
                    reader.string(table, "nats_user")?,
                    reader.path(table, "nats_password_file")?,
                ) {
                    (None, None, None, None) => NatsAuth::None,
                    (Some(credentials), None, None, None) => NatsAuth::Credentials(credentials),
                    (None, Some(token), None, None) => NatsAuth::Token(token),
                    (None, None, Some(user), Some(password)) => {
                        NatsAuth::UserPassword { user, password }
                    }
                    (None, None, Some(_), None) | (None, None, None, Some(_)) => {
                        return Err(reader.bad(
                            "cluster.nats_user",
                            "`nats_user` and `nats_password_file` go together",
                        ))
                    }
                    _ => {
                        return Err(reader.bad(
                            "cluster",
                            "give one way to authenticate to NATS: `nats_credentials`, \
                             `nats_token_file`, or `nats_user` with `nats_password_file`",
                        ))
                    }
                };
                let client_certificate = match (
                    reader.path(table, "nats_cert")?,
                    reader.path(table, "nats_key")?,
                ) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => Some((cert, key)),
                    _ => {
                        return Err(reader.bad(
                            "cluster.nats_cert",
                            "`nats_cert` and `nats_key` go together",
                        ))
                    }
                };
                Some(crate::cluster::ClusterConfig {
                    nats_url: reader
                        .string(table, "nats_url")?
                        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned()),
                    node,
                    auth,
                    tls: NatsTls {
                        ca: reader.path(table, "nats_ca")?,
                        client_certificate,
                    },
                })
            }
        };
        Ok(Config {
            listen,
            components_dir: reader
                .path(root, "components_dir")?
                .unwrap_or_else(|| data_dir.join("components")),
            data_dir,
            users: reader
                .path(root, "users")?
                .unwrap_or_else(|| base.join("users.toml")),
            identity_required: identity.is_some(),
            identity: identity.unwrap_or_else(|| base.join("identity.pub")),
            max_command_bytes: reader
                .integer(root, "max_command_bytes")?
                .map_or(crate::privileged::DEFAULT_MAX_COMMAND_BYTES, |n| n as usize),
            tls_cert: reader.path(root, "tls_cert")?,
            tls_key: reader.path(root, "tls_key")?,
            storage,
            max_message_bytes: reader
                .integer(root, "max_message_bytes")?
                .map_or(1 << 20, |n| n as usize),
            max_connections_per_user: reader
                .integer(root, "max_connections_per_user")?
                .map_or(8, |n| n as usize),
            messages_per_second: reader
                .integer(root, "messages_per_second")?
                .map_or(50, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            message_burst: reader
                .integer(root, "message_burst")?
                .map_or(100, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            max_pending_frames: reader
                .integer(root, "max_pending_frames")?
                .map_or(1_000, |n| (n as usize).max(1)),
            session_timeout: reader.integer(root, "session_timeout")?,
            max_instances: reader
                .integer(root, "max_instances")?
                .map_or(1_000, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            compile_cache,
            secrets: reader.path(root, "secrets")?,
            agents,
            max_connections: reader
                .integer(root, "max_connections")?
                .map_or(10_000, |n| (n as usize).max(1)),
            max_unauthenticated_per_address: reader
                .integer(root, "max_unauthenticated_per_address")?
                .map_or(64, |n| (n as usize).max(1)),
            proxies,
            checkpoints,
            cluster,
        })
    }
}

struct Reader<'a> {
    name: &'a Path,
    base: &'a Path,
}

impl Reader<'_> {
    /// Refuses the first key of `table` not in `known`: a misspelt key
    /// would otherwise be ignored without a word.
    fn only_known(
        &self,
        table: &dyn TableLike,
        prefix: &str,
        known: &[&str],
    ) -> Result<(), ConfigError> {
        match table.iter().find(|(key, _)| !known.contains(key)) {
            Some((key, _)) => {
                Err(self.bad(&format!("{prefix}{key}"), "is not a configuration key"))
            }
            None => Ok(()),
        }
    }

    fn bad(&self, key: &str, reason: &str) -> ConfigError {
        ConfigError::Bad {
            path: self.name.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn string(&self, table: &dyn TableLike, key: &str) -> Result<Option<String>, ConfigError> {
        match table.get(key) {
            None => Ok(None),
            Some(item) => item
                .as_str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| self.bad(key, "must be a string")),
        }
    }

    fn path(&self, table: &dyn TableLike, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(table, key)?.map(|p| self.base.join(p)))
    }

    fn integer(&self, table: &dyn TableLike, key: &str) -> Result<Option<u64>, ConfigError> {
        match table.get(key) {
            None => Ok(None),
            Some(item) => item
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, "must be a non-negative integer")),
        }
    }

    fn agent(&self, table: &dyn TableLike) -> Result<AgentConfig, ConfigError> {
        let name = self
            .string(table, "name")?
            .ok_or_else(|| self.bad("agent.name", "every [[agent]] needs a name"))?;
        let key = |field: &str| format!("agent `{name}`: {field}");
        self.only_known(table, &key(""), AGENT_KEYS)?;
        let component = self
            .path(table, "component")?
            .ok_or_else(|| self.bad(&key("component"), "the component file is required"))?;
        let listens = match table.get("listens").and_then(Item::as_array) {
            Some(array) => array
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.bad(&key("listens"), "must be a list of tags"))?,
            None => return Err(self.bad(&key("listens"), "a list of tags is required")),
        };
        let defaults = AgentLimits::default();
        let limit = |field: &str| -> Result<Option<u64>, ConfigError> {
            self.integer(table, field)
                .map_err(|_| self.bad(&key(field), "must be a non-negative integer"))
        };
        let limits = AgentLimits {
            max_concurrent: limit("max_concurrent")?
                .map_or(defaults.max_concurrent, |n| n as usize),
            max_queued: limit("max_queued")?.map_or(defaults.max_queued, |n| n as usize),
            session_timeout: limit("session_timeout")?
                .map_or(defaults.session_timeout, Duration::from_secs),
            fuel: limit("fuel")?.unwrap_or(defaults.fuel),
            memory_bytes: limit("memory_bytes")?.map_or(defaults.memory_bytes, |n| n as usize),
            timeout_ms: limit("timeout_ms")?.unwrap_or(defaults.timeout_ms),
            grants: self.grants(table, &key)?,
            ..defaults
        };
        Ok(AgentConfig {
            sha256: self.string(table, "sha256")?,
            description: self.string(table, "description")?.unwrap_or_default(),
            name,
            component,
            listens,
            limits,
        })
    }
}

impl Reader<'_> {
    /// `[agent.http]` and `[agent.storage]` of one agent.
    fn grants(
        &self,
        table: &dyn TableLike,
        key: &dyn Fn(&str) -> String,
    ) -> Result<AgentGrants, ConfigError> {
        let mut grants = AgentGrants::default();
        if let Some(item) = table.get("http") {
            let http = item
                .as_table_like()
                .ok_or_else(|| self.bad(&key("http"), "must be a table"))?;
            self.only_known(http, &key("http."), HTTP_KEYS)?;
            let strings = |item: Option<&Item>, field: &str| -> Result<Vec<String>, ConfigError> {
                match item {
                    None => Ok(Vec::new()),
                    Some(item) => item
                        .as_array()
                        .and_then(|array| {
                            array
                                .iter()
                                .map(|v| v.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| self.bad(&key(field), "must be a list of strings")),
                }
            };
            let mut allow = Vec::new();
            for pattern in strings(http.get("allow"), "http.allow")? {
                allow.push(
                    pattern
                        .parse::<AllowedHost>()
                        .map_err(|e| self.bad(&key("http.allow"), &e.to_string()))?,
                );
            }
            if allow.is_empty() {
                return Err(self.bad(
                    &key("http.allow"),
                    "list the hosts the agent may reach, such as [\"https://api.example.com\"]",
                ));
            }
            let mut grant = HttpGrant::new(allow);
            let number = |field: &str| {
                self.integer(http, field).map_err(|_| {
                    self.bad(
                        &key(&format!("http.{field}")),
                        "must be a non-negative integer",
                    )
                })
            };
            if let Some(n) = number("max_requests")? {
                grant.max_requests = u32::try_from(n).unwrap_or(u32::MAX);
            }
            if let Some(n) = number("max_response_bytes")? {
                grant.max_response_bytes = n;
            }
            if let Some(n) = number("timeout_ms")? {
                grant.timeout_ms = n;
            }
            if let Some(item) = http.get("header") {
                let headers = item.as_array_of_tables().ok_or_else(|| {
                    self.bad(&key("http.header"), "must be [[agent.http.header]] tables")
                })?;
                for header in headers.iter() {
                    self.only_known(header, &key("http.header."), HEADER_KEYS)?;
                    let field = |name: &str| -> Result<String, ConfigError> {
                        self.string(header, name)?.ok_or_else(|| {
                            self.bad(&key(&format!("http.header.{name}")), "is required")
                        })
                    };
                    let host = field("host")?
                        .parse::<AllowedHost>()
                        .map_err(|e| self.bad(&key("http.header.host"), &e.to_string()))?;
                    grant.headers.push(
                        SecretHeader::new(host, &field("name")?, &field("value")?)
                            .map_err(|e| self.bad(&key("http.header"), &e.to_string()))?,
                    );
                }
            }
            grants.http = Some(grant);
        }
        if let Some(item) = table.get("storage") {
            let storage = item
                .as_table_like()
                .ok_or_else(|| self.bad(&key("storage"), "must be a table"))?;
            self.only_known(storage, &key("storage."), &["session", "agent"])?;
            let mut grant = StorageGrant::default();
            for (name, slot) in [("session", &mut grant.session), ("agent", &mut grant.agent)] {
                let Some(bucket) = storage.get(name) else {
                    continue;
                };
                let field = key(&format!("storage.{name}"));
                let bucket = bucket
                    .as_table_like()
                    .ok_or_else(|| self.bad(&field, "must be { max_keys = …, max_bytes = … }"))?;
                self.only_known(bucket, &format!("{field}."), BUCKET_KEYS)?;
                let number = |n: &str| -> Result<u64, ConfigError> {
                    self.integer(bucket, n).ok().flatten().ok_or_else(|| {
                        self.bad(
                            &format!("{field}.{n}"),
                            "a non-negative integer is required",
                        )
                    })
                };
                *slot = Some(BucketQuota {
                    max_keys: number("max_keys")?,
                    max_bytes: number("max_bytes")?,
                });
            }
            grants.storage = Some(grant);
        }
        Ok(grants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_example() {
        let text = r#"
listen = "127.0.0.1:9000"
data_dir = "data"
users = "users.toml"
identity = "identity.pub"

max_connections = 5000
max_unauthenticated_per_address = 16

[proxy]
from = ["127.0.0.1", "10.0.0.0/8"]

[storage]
backend = "sqlite"

[[agent]]
name = "calc"
component = "agents/calculator.wasm"
listens = ["calculate"]
description = "Evaluates arithmetic expressions."
max_concurrent = 8
session_timeout = 1800
fuel = 50_000_000
memory_bytes = 16_777_216
timeout_ms = 1000
"#;
        let config =
            Config::parse(text, Path::new("organism.toml"), Path::new("/etc/org")).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.data_dir, Path::new("/etc/org/data"));
        assert_eq!(config.storage, StorageConfig::Sqlite);
        assert_eq!(
            (
                config.max_connections,
                config.max_unauthenticated_per_address
            ),
            (5000, 16)
        );
        assert!(config.proxies.contains("10.9.8.7".parse().unwrap()));
        assert!(!config.proxies.contains("192.0.2.1".parse().unwrap()));
        assert_eq!(config.agents.len(), 1);
        let calc = &config.agents[0];
        assert_eq!(calc.component, Path::new("/etc/org/agents/calculator.wasm"));
        assert_eq!(calc.listens, ["calculate"]);
        assert_eq!(calc.limits.session_timeout, Duration::from_secs(1800));
        assert_eq!(calc.limits.memory_bytes, 16 << 20);
    }

    #[test]
    fn a_wrong_setting_is_named() {
        let err = Config::parse("listen = 5", Path::new("o.toml"), Path::new(".")).unwrap_err();
        assert_eq!(err.to_string(), "o.toml: `listen`: must be a string");
        let err = Config::parse(
            "[[agent]]\nname = \"x\"\n",
            Path::new("o.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.to_string().contains("agent `x`: component"), "{err}");
        let err = Config::parse(
            "[proxy]\nfrom = [\"10.0.0.0/33\"]\n",
            Path::new("o.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "o.toml: `proxy.from`: \"10.0.0.0/33\" is not an address or a network such as 10.0.0.0/8"
        );
        let err = Config::parse(
            "[proxy]\nfrom = \"10.0.0.1\"\n",
            Path::new("o.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "o.toml: `proxy.from`: must be a list of addresses or networks"
        );
    }

    #[test]
    fn a_cluster_needs_a_node_name_and_the_shared_store() {
        let parse = |text: &str| Config::parse(text, Path::new("o.toml"), Path::new("."));
        let err = parse("[cluster]\nnode = \"a\"\n").unwrap_err().to_string();
        assert!(err.contains("backend = \"redis\""), "{err}");
        let err = parse("[storage]\nbackend = \"redis\"\n[cluster]\nnode = \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cluster.node`"), "{err}");
        let config = parse("[storage]\nbackend = \"redis\"\n[cluster]\nnode = \"a-1\"\n").unwrap();
        assert_eq!(
            config.cluster,
            Some(crate::cluster::ClusterConfig {
                nats_url: "nats://127.0.0.1:4222".into(),
                node: "a-1".into(),
                auth: NatsAuth::None,
                tls: NatsTls::default(),
            })
        );
        assert_eq!(parse("").unwrap().cluster, None);
    }

    #[test]
    fn nats_credentials_and_tls_come_from_files() {
        let parse = |text: &str| {
            Config::parse(
                &format!("[storage]\nbackend = \"redis\"\n[cluster]\nnode = \"a\"\n{text}"),
                Path::new("o.toml"),
                Path::new("/etc/org"),
            )
        };
        let cluster = parse(
            "nats_url = \"tls://n:4222\"\nnats_user = \"a\"\nnats_password_file = \"pw\"\n\
             nats_ca = \"ca.pem\"\nnats_cert = \"a.pem\"\nnats_key = \"a.key\"\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(
            cluster.auth,
            NatsAuth::UserPassword {
                user: "a".into(),
                password: "/etc/org/pw".into()
            }
        );
        assert_eq!(cluster.tls.ca, Some("/etc/org/ca.pem".into()));
        assert_eq!(
            cluster.tls.client_certificate,
            Some(("/etc/org/a.pem".into(), "/etc/org/a.key".into()))
        );
        let token = parse("nats_token_file = \"token\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(token.auth, NatsAuth::Token("/etc/org/token".into()));
        let two = parse("nats_token_file = \"t\"\nnats_credentials = \"c.creds\"\n")
            .unwrap_err()
            .to_string();
        assert!(two.contains("one way to authenticate"), "{two}");
        let half = parse("nats_user = \"a\"\n").unwrap_err().to_string();
        assert!(half.contains("go together"), "{half}");
        let half = parse("nats_cert = \"a.pem\"\n").unwrap_err().to_string();
        assert!(half.contains("go together"), "{half}");
    }

    #[test]
    fn a_misspelt_key_is_named_not_ignored() {
        let parse = |text: &str| {
            Config::parse(text, Path::new("o.toml"), Path::new("."))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            parse("max_comand_bytes = 5"),
            "o.toml: `max_comand_bytes`: is not a configuration key"
        );
        assert_eq!(
            parse(
                "[storage]
backend = \"sqlite\"
path = \"x\"
"
            ),
            "o.toml: `storage.path`: is not a configuration key"
        );
        assert_eq!(
            parse(
                "[[agent]]
name = \"x\"
component = \"x.wasm\"
listens = [\"x\"]
fule = 1
"
            ),
            "o.toml: `agent `x`: fule`: is not a configuration key"
        );
    }
}
