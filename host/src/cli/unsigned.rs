//! `agentserver command …`: writes unsigned privileged commands to standard
//! output, for `agentserver sign`:
//!
//! ```text
//! agentserver command register --name calc --wasm calculator.wasm --listens calculate \
//!   | agentserver sign - --key identity.key \
//!   | agentserver apply - --url wss://… --user owner --fingerprint …
//! ```

use crate::capability::{
    AgentGrants, AllowedHost, BucketQuota, HttpGrant, SecretHeader, StorageGrant,
};
use crate::commit::{key_id, load_public_key, CertificateRequest, Purpose};
use crate::federation::{LinkRequest, PeerTls};
use crate::privileged::time::unix_seconds;
use crate::privileged::{
    Command, ComponentSource, LimitChanges, OrganismKey, Placement, Registration, ShutdownMode,
};
use crate::runtime::ComponentHash;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Arguments of `agentserver command`.
#[derive(Debug, Args)]
pub struct CommandArgs {
    #[command(subcommand)]
    command: Unsigned,
}

/// Limit options, each optional.
#[derive(Debug, Args, Default)]
struct LimitArgs {
    /// Calls in flight at once, all sessions together.
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Seconds an idle session's instance is kept.
    #[arg(long)]
    session_timeout: Option<u64>,
    /// Fuel per call.
    #[arg(long)]
    fuel: Option<u64>,
    /// Linear memory per instance, bytes.
    #[arg(long)]
    memory_bytes: Option<usize>,
    /// Wall time per call, milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[command(flatten)]
    grants: GrantArgs,
}

/// Grant options: any of them replaces the agent's grants with the ones
/// given.
#[derive(Debug, Args, Default)]
struct GrantArgs {
    /// Grant outbound HTTP to this host pattern (repeatable), such as
    /// https://api.example.com, https://*.example.com:8443 or
    /// http://127.0.0.1:18080.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    allow_hosts: Vec<String>,
    /// A header the host adds to requests for HOST, its value naming
    /// secrets: 'HOST NAME VALUE', e.g.
    /// 'https://api.openai.com authorization Bearer {secret:openai}'.
    #[arg(long = "secret-header", value_name = "HOST NAME VALUE")]
    secret_headers: Vec<String>,
    /// Outbound requests per call.
    #[arg(long)]
    http_max_requests: Option<u32>,
    /// Response bytes per call, all requests together.
    #[arg(long)]
    http_max_response_bytes: Option<u64>,
    /// Time one outbound request may take, milliseconds.
    #[arg(long)]
    http_timeout_ms: Option<u64>,
    /// Grant the `session` bucket: KEYS:BYTES.
    #[arg(long, value_name = "KEYS:BYTES")]
    session_bucket: Option<String>,
    /// Grant the `agent` bucket: KEYS:BYTES.
    #[arg(long, value_name = "KEYS:BYTES")]
    agent_bucket: Option<String>,
    /// Remove every grant (with `limits`).
    #[arg(long, conflicts_with_all = ["allow_hosts", "session_bucket", "agent_bucket"])]
    no_grants: bool,
}

impl GrantArgs {
    fn grants(&self) -> anyhow::Result<Option<AgentGrants>> {
        if self.no_grants {
            return Ok(Some(AgentGrants::default()));
        }
        let mut grants = AgentGrants::default();
        if !self.allow_hosts.is_empty() {
            let allow = self
                .allow_hosts
                .iter()
                .map(|pattern| pattern.parse::<AllowedHost>())
                .collect::<Result<Vec<_>, _>>()?;
            let mut http = HttpGrant::new(allow);
            for header in &self.secret_headers {
                let mut parts = header.splitn(3, ' ');
                let (Some(host), Some(name), Some(value)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    anyhow::bail!("--secret-header takes 'HOST NAME VALUE', not {header:?}");
                };
                http.headers
                    .push(SecretHeader::new(host.parse()?, name, value)?);
            }
            http.max_requests = self.http_max_requests.unwrap_or(http.max_requests);
            http.max_response_bytes = self
                .http_max_response_bytes
                .unwrap_or(http.max_response_bytes);
            http.timeout_ms = self.http_timeout_ms.unwrap_or(http.timeout_ms);
            grants.http = Some(http);
        } else if !self.secret_headers.is_empty() {
            anyhow::bail!("--secret-header needs --allow-host");
        }
        let bucket = |text: &Option<String>| -> anyhow::Result<Option<BucketQuota>> {
            let Some(text) = text else { return Ok(None) };
            let (keys, bytes) = text
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("a bucket quota is KEYS:BYTES, not {text:?}"))?;
            Ok(Some(BucketQuota {
                max_keys: keys.parse().context("the bucket's KEYS")?,
                max_bytes: bytes.parse().context("the bucket's BYTES")?,
            }))
        };
        let (session, agent) = (bucket(&self.session_bucket)?, bucket(&self.agent_bucket)?);
        if session.is_some() || agent.is_some() {
            grants.storage = Some(StorageGrant { session, agent });
        }
        Ok((!grants.is_empty()).then_some(grants))
    }
}

impl LimitArgs {
    fn changes(&self) -> anyhow::Result<LimitChanges> {
        Ok(LimitChanges {
            max_concurrent: self.max_concurrent,
            session_timeout: self.session_timeout,
            fuel: self.fuel,
            memory_bytes: self.memory_bytes,
            timeout_ms: self.timeout_ms,
            grants: self.grants.grants()?,
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Graceful,
    Immediate,
}

#[derive(Debug, Subcommand)]
enum Unsigned {
    /// Admit an agent (agent-registration).
    Register {
        /// The agent's name.
        #[arg(long)]
        name: String,
        /// Its component (`.wasm`).
        #[arg(long)]
        wasm: PathBuf,
        /// Tags it listens to (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', required = true)]
        listens: Vec<String>,
        /// One line for users' catalogs.
        #[arg(long, default_value = "")]
        description: String,
        /// Carry the component inside the command (the default).
        #[arg(long, conflicts_with = "src")]
        inline: bool,
        /// Name the file in the server's components directory instead of
        /// carrying it (the file must be there, under the same name).
        #[arg(long)]
        src: bool,
        /// In a cluster, the nodes that run it: `*` (every node, the
        /// default) or node names, comma-separated.
        #[arg(long, default_value = "*")]
        node: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Remove an agent (agent-removal).
    Remove {
        /// The agent's name.
        #[arg(long)]
        name: String,
    },
    /// Change an agent's limits (agent-limits).
    Limits {
        /// The agent's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Let a user send a tag (user-grant).
    Grant {
        /// The user.
        #[arg(long)]
        user: String,
        /// The tag.
        #[arg(long)]
        tag: String,
    },
    /// Stop a user sending a tag (user-revoke).
    Revoke {
        /// The user.
        #[arg(long)]
        user: String,
        /// The tag.
        #[arg(long)]
        tag: String,
    },
    /// Shut the server down.
    Shutdown {
        /// Graceful lets calls in flight finish; immediate does not.
        #[arg(long, value_enum, default_value = "graceful")]
        mode: Mode,
    },
    /// Let a node key sign for the organism (node-certificate): audit
    /// checkpoints, federation traffic.
    NodeCertificate {
        /// The node's public key (`node.pub` in its data directory).
        #[arg(long)]
        node_key: PathBuf,
        /// Days the certificate is valid; renew before it ends.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// What the key may sign (comma-separated): audit, federation.
        #[arg(long, value_delimiter = ',', default_value = "audit")]
        purpose: Vec<String>,
    },
    /// Revoke a node key (node-revoke): it signs nothing more for the
    /// organism, whatever its certificates say; linked organisms learn it.
    NodeRevoke {
        /// The key's id: 16 hex digits (`agentserver identity node` prints
        /// it), or a public key file (`node.pub`) to take it from.
        #[arg(
            long,
            required_unless_present = "node_key",
            conflicts_with = "node_key"
        )]
        key_id: Option<String>,
        /// The node's public key (`node.pub`), instead of `--key-id`.
        #[arg(long)]
        node_key: Option<PathBuf>,
        /// Why, for whoever reads the logs.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Link to another organism (federation-link); its owner must sign a
    /// link naming this organism too.
    #[command(group(clap::ArgGroup::new("tls").required(true).args(["tls_fingerprint", "tls_ca"])))]
    FederationLink {
        /// The peer owner's public key (its `identity.pub`).
        #[arg(long)]
        peer_key: PathBuf,
        /// The peer's port: wss://host:port/.
        #[arg(long)]
        address: String,
        /// The SHA-256 fingerprint of the peer's TLS certificate (its
        /// `agentserver run` prints it): that certificate and no other.
        #[arg(long)]
        tls_fingerprint: Option<String>,
        /// Instead of `--tls-fingerprint`: the CA certificate(s) that issue
        /// the peer's TLS certificate (PEM); any certificate they issue for
        /// the address's host is taken, so renewals need no new link.
        #[arg(long, value_name = "FILE.pem")]
        tls_ca: Option<PathBuf>,
        /// Tags that may go to the peer (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        send: Vec<String>,
        /// Tags the peer may start threads with here.
        #[arg(long, value_delimiter = ',')]
        accept: Vec<String>,
    },
    /// End the link to an organism (federation-unlink).
    FederationUnlink {
        /// The peer's owner fingerprint (the SHA-256 of its owner's public
        /// key, as `agentserver identity generate` printed it).
        #[arg(long)]
        peer: String,
    },
}

/// Prints the unsigned command.
pub fn run(args: &CommandArgs) -> anyhow::Result<()> {
    let command = match &args.command {
        Unsigned::Register {
            name,
            wasm,
            listens,
            description,
            inline: _,
            src,
            node,
            limits,
        } => {
            let bytes =
                std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let component = if *src {
                let file = wasm
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the component's file name is not UTF-8")?;
                ComponentSource::File(file.to_owned())
            } else {
                ComponentSource::Inline(bytes.clone())
            };
            Command::Register(Registration {
                name: name.clone(),
                listens: listens.clone(),
                description: description.clone(),
                sha256: ComponentHash::of(&bytes),
                component,
                limits: limits.changes()?,
                nodes: Placement::parse(node).map_err(|e| anyhow::anyhow!("--node: {e}"))?,
            })
        }
        Unsigned::Remove { name } => Command::Remove { name: name.clone() },
        Unsigned::Limits { name, limits } => Command::Limits {
            name: name.clone(),
            changes: limits.changes()?,
        },
        Unsigned::Grant { user, tag } => Command::Grant {
            user: user.clone(),
            tag: tag.clone(),
        },
        Unsigned::Revoke { user, tag } => Command::Revoke {
            user: user.clone(),
            tag: tag.clone(),
        },
        Unsigned::Shutdown { mode } => Command::Shutdown(match mode {
            Mode::Graceful => ShutdownMode::Graceful,
            Mode::Immediate => ShutdownMode::Immediate,
        }),
        Unsigned::NodeCertificate {
            node_key,
            days,
            purpose,
        } => {
            let public_key = load_public_key(node_key)?;
            let mut purposes = purpose
                .iter()
                .map(|name| {
                    Purpose::from_name(name).with_context(|| {
                        format!(
                            "purpose {name:?} is unknown; the purposes are audit and federation"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            purposes.sort();
            purposes.dedup();
            let now = unix_seconds(std::time::SystemTime::now());
            Command::NodeCertificate(CertificateRequest {
                key_id: key_id(&public_key),
                public_key,
                purposes,
                not_after: now + days.saturating_mul(86_400),
            })
        }
        Unsigned::NodeRevoke {
            key_id: given,
            node_key,
            reason,
        } => {
            let key_id = match (given, node_key) {
                (Some(id), _) => id.to_ascii_lowercase(),
                (None, Some(path)) => key_id(&load_public_key(path)?),
                (None, None) => anyhow::bail!("give --key-id or --node-key"),
            };
            Command::NodeRevoke(crate::commit::RevocationRequest {
                key_id,
                reason: reason.clone(),
            })
        }
        Unsigned::FederationLink {
            peer_key,
            address,
            tls_fingerprint,
            tls_ca,
            send,
            accept,
        } => Command::Link(LinkRequest {
            peer_key: *OrganismKey::load(peer_key)?.verifying_key(),
            address: address.clone(),
            tls: match (tls_fingerprint, tls_ca) {
                (Some(fingerprint), None) => {
                    PeerTls::Fingerprint(fingerprint.to_ascii_lowercase().replace(':', ""))
                }
                (None, Some(path)) => PeerTls::Ca(load_cas(path)?),
                _ => anyhow::bail!("give either --tls-fingerprint or --tls-ca"),
            },
            send: send.clone(),
            accept: accept.clone(),
        }),
        Unsigned::FederationUnlink { peer } => Command::Unlink { peer: peer.clone() },
    };
    super::write_stdout(&command.to_unsigned_document())
}

/// The certificates in a PEM file, DER, for `--tls-ca`.
fn load_cas(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cas = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .map(|der| der.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(
        !cas.is_empty(),
        "{}: no certificate (-----BEGIN CERTIFICATE-----) found",
        path.display()
    );
    Ok(cas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: CommandArgs,
    }

    #[test]
    fn a_link_pins_the_peer_by_fingerprint_or_by_a_ca_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap()
        };
        let (first, second) = (ca("CA one"), ca("CA two"));
        let pem = dir.path().join("cas.pem");
        std::fs::write(&pem, format!("{}{}", first.pem(), second.pem())).unwrap();
        assert_eq!(
            load_cas(&pem).unwrap(),
            vec![first.der().to_vec(), second.der().to_vec()]
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(load_cas(&empty)
            .unwrap_err()
            .to_string()
            .contains("no certificate"));

        let parse = |pin: &[&str]| {
            let mut argv = vec![
                "command",
                "federation-link",
                "--peer-key",
                "peer.pub",
                "--address",
                "wss://peer.example.net:8765/",
                "--send",
                "calculate",
            ];
            argv.extend_from_slice(pin);
            Cli::try_parse_from(argv)
        };
        let fingerprint = "ab".repeat(32);
        let ca_file = pem.to_str().unwrap();
        assert!(parse(&["--tls-fingerprint", &fingerprint]).is_ok());
        assert!(parse(&["--tls-ca", ca_file]).is_ok());
        assert!(parse(&["--tls-fingerprint", &fingerprint, "--tls-ca", ca_file]).is_err());
        assert!(parse(&[]).is_err());
    }
}
