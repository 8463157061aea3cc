//! `agentserver check`: what a start would refuse, found before the start,
//! every problem at once rather than the first.
//!
//! It reads the configuration, the users file, the organism's identity, the
//! node key (and its permissions), the secrets file (and its permissions), the TLS pair, every boot agent's
//! component (SHA-256, world, grants), opens the storage backend (Redis
//! answers, the SQLite file opens) and reads the audit log's head, and tries
//! the port and the data folders (making them if missing, as a start
//! would), without serving anything or changing any state.

use super::config::Config;
use super::{load_boot_agent, runtime_config, tls};
use crate::auth::Users;
use crate::capability::Secrets;
use crate::privileged::OrganismKey;
use crate::runtime::{Runtime, RuntimeServices};
use std::net::SocketAddr;
use std::path::Path;

/// Every problem with the organism configured at `path` (listening on
/// `listen` instead of the configured address, if given), one line each,
/// naming what it is about; empty when a start would find none.
pub fn check(path: &Path, listen: Option<SocketAddr>) -> Vec<String> {
    let mut config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => return vec![error.to_string()],
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let mut problems = Vec::new();
    if !config.users.exists() {
        // A start takes a missing users file as an empty one.
        problems.push(format!(
            "users: {} does not exist: nobody could log in (add users with `agentserver user add`)",
            config.users.display()
        ));
    } else if let Err(error) = Users::load(&config.users) {
        problems.push(format!("users: {error}"));
    }
    if config.identity_required || config.identity.exists() {
        if let Err(error) = OrganismKey::load(&config.identity) {
            problems.push(format!("identity: {error}"));
        }
    }
    if let Some(problem) = node_key_problem(&config.data_dir) {
        problems.push(problem);
    }
    let secrets = match &config.secrets {
        Some(path) => match Secrets::load(path) {
            Ok(secrets) => secrets,
            Err(error) => {
                problems.push(format!("secrets: {error}"));
                Secrets::none()
            }
        },
        None => Secrets::none(),
    };
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let pair = tls::Identity::load(cert, key)
            .and_then(|identity| identity.live_config((cert.clone(), key.clone())));
        if let Err(error) = pair {
            problems.push(format!("tls: {error}"));
        }
    }
    for (what, dir) in [
        ("data_dir", &config.data_dir),
        ("compile_cache", &config.compile_cache),
    ] {
        if let Err(error) = writable(dir) {
            problems.push(format!("{what} {}: {error}", dir.display()));
        }
    }
    match crate::store::Stores::open(&config.storage, &config.data_dir) {
        Ok(stores) => {
            if let Err(error) = stores.audit.audit_head() {
                problems.push(format!("storage: the audit log cannot be read: {error}"));
            }
        }
        Err(error) => problems.push(format!("storage: {error}")),
    }
    if let Err(error) = std::net::TcpListener::bind(config.listen) {
        problems.push(format!("listen {}: {error}", config.listen));
    }
    let runtime = Runtime::with_services(
        runtime_config(&config),
        RuntimeServices {
            secrets,
            ..RuntimeServices::default()
        },
    );
    match runtime {
        Ok(runtime) => {
            for agent in &config.agents {
                if let Err(error) = load_boot_agent(agent, &runtime) {
                    problems.push(error.to_string());
                }
            }
        }
        Err(error) => problems.push(format!("runtime: {error}")),
    }
    problems
}

/// What is wrong with the node key in `data_dir`, if it is there (a start
/// makes a missing one): it must load, and only its owner may read it.
fn node_key_problem(data_dir: &Path) -> Option<String> {
    let path = data_dir.join(crate::commit::NODE_KEY_FILE);
    if !path.exists() {
        return None;
    }
    if let Err(error) = crate::privileged::load_signing_key(&path) {
        return Some(format!("node key: {error}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "node key: {} may be read by others (mode {:o}); make it 0600",
                path.display(),
                mode & 0o777
            ));
        }
    }
    None
}

/// Whether files can be made in `dir` (made first if missing).
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tempfile::NamedTempFile::new_in(dir).map(drop)
}
