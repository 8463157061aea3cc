//! What the federation tests and benchmark share: a test server's owner
//! fingerprint and node key, the signed commands that certify that key and
//! link two organisms, and applying a command over a client.

use crate::{recv_until, TestServer};
use agentserver::client::Client;
use agentserver::commit::{key_id, CertificateRequest, NodeKey, Purpose};
use agentserver::federation::{LinkRequest, PeerTls};
use agentserver::privileged::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The owner fingerprint of a test server: how other organisms name it.
pub fn fingerprint(server: &TestServer) -> String {
    agentserver::federation::fingerprint(&server.key.verifying_key())
}

/// The node key the server made in its data directory.
pub fn node_key(server: &TestServer) -> NodeKey {
    NodeKey::load_or_create(&server.dir.path().join("data"))
        .expect("the server made its node key")
        .0
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A `node-certificate` for the server's node key, for `purposes`, ending
/// `days` from now (unsigned).
pub fn certificate(server: &TestServer, purposes: Vec<Purpose>, days: u64) -> Command {
    let node = node_key(server);
    Command::NodeCertificate(CertificateRequest {
        key_id: key_id(&node.verifying_key()),
        public_key: node.verifying_key(),
        purposes,
        not_after: unix_seconds() + days * 86_400,
    })
}

/// A `federation-link` to `peer` (unsigned), pinning its TLS certificate's
/// fingerprint.
pub fn link(peer: &TestServer, send: &[&str], accept: &[&str]) -> Command {
    let tls = PeerTls::Fingerprint(peer.server().fingerprint().to_owned());
    link_pinned(peer, tls, send, accept)
}

/// A `federation-link` to `peer` (unsigned), pinning its TLS certificate
/// as `tls` says.
pub fn link_pinned(peer: &TestServer, tls: PeerTls, send: &[&str], accept: &[&str]) -> Command {
    Command::Link(LinkRequest {
        peer_key: peer.key.verifying_key(),
        address: peer.url(),
        tls,
        send: send.iter().map(|t| t.to_string()).collect(),
        accept: accept.iter().map(|t| t.to_string()).collect(),
    })
}

/// Signs `command` with the server's owner key, sends it over `client`
/// and returns the verdict.
pub async fn apply(server: &TestServer, client: &mut Client, command: &Command) -> String {
    client
        .send(&server.sign(&command.to_unsigned_document()))
        .await
        .expect("send the command");
    recv_until(client, "<privileged-result").await
}

/// `command` signed with the server's owner key, as a peer shows it at a
/// handshake: its canonical payload and signature.
pub fn signed_record(
    server: &TestServer,
    command: &Command,
) -> agentserver::privileged::SignedRecord {
    let signed = server.sign(&command.to_unsigned_document());
    let command = agentserver::privileged::SignedCommand::read(signed.as_bytes(), 1 << 20)
        .expect("a signed command reads back");
    command.to_record().expect("signed")
}
