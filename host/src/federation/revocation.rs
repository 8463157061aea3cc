//! Revoked node keys on links: this organism's own owner's `node-revoke`
//! records (applied as privileged commands, pushed to every linked peer)
//! and those of linked peers' owners (learned over their links, checked
//! with the owner key this side's link pins).
//!
//! A key revoked here signs nothing more for the organism; a peer's key
//! revoked by its owner is refused from the moment the revocation arrives:
//! its hellos, its messages, and the connections it authenticated, which
//! are closed. Revocations are kept in the structure store and never
//! deleted, so they hold across restarts and pre-empt keys not yet seen.

use super::wire::{revocations_frame, MAX_REVOCATIONS};
use super::{Federation, Link};
use crate::commit::Revocation;
use crate::privileged::time::format_instant;
use crate::privileged::{SignedKind, SignedRecord, VerifyingKey};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Peer revocations kept per linked organism at most; past it, new ones
/// are refused (audited).
pub const MAX_PEER_REVOCATIONS: usize = 4_096;

/// What this organism knows to be revoked.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    /// This owner's revocations, by key id.
    own: HashMap<String, Revocation>,
    /// Their records, in the order they were applied (newest last), as
    /// pushed to peers.
    own_records: Vec<SignedRecord>,
    /// Linked peers' owners' revocations, by peer fingerprint and key id.
    peers: HashMap<(String, String), Revocation>,
}

/// Why `revocation` stops its key, for logs and the audit log.
fn reason(peer: Option<&str>, revocation: &Revocation) -> String {
    let whose = match peer {
        Some(peer) => format!("organism {}'s owner", &peer[..16.min(peer.len())]),
        None => "this organism's owner".to_owned(),
    };
    let mut text = format!(
        "node key revoked: {whose} revoked key {} as of {} (command {}",
        revocation.request.key_id,
        format_instant(revocation.issued),
        revocation.id
    );
    if let Some(why) = &revocation.request.reason {
        text.push_str(": ");
        text.push_str(why);
    }
    text.push(')');
    text
}

/// What a connection has pushed of this owner's revocations, and a wake-up
/// when revocations change.
#[derive(Debug)]
pub struct RevocationFeed {
    federation: Arc<Federation>,
    changes: watch::Receiver<u64>,
    sent: usize,
}

impl RevocationFeed {
    /// Waits until a revocation is applied or learned.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The frame carrying this owner's revocations the connection has not
    /// pushed yet (the newest [`MAX_REVOCATIONS`] of them), if any.
    pub fn pending(&mut self) -> Option<String> {
        let revoked = self.federation.revoked();
        let records = &revoked.own_records;
        if records.len() <= self.sent {
            return None;
        }
        let start = self.sent.max(records.len().saturating_sub(MAX_REVOCATIONS));
        self.sent = records.len();
        Some(revocations_frame(&records[start..]))
    }
}

impl Federation {
    fn revoked(&self) -> std::sync::MutexGuard<'_, Revoked> {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A feed for one connection, nothing pushed yet.
    pub fn revocation_feed(self: &Arc<Self>) -> RevocationFeed {
        RevocationFeed {
            federation: Arc::clone(self),
            changes: self.revocation_changes.subscribe(),
            sent: 0,
        }
    }

    /// Loads this owner's revocations from the store (at start).
    pub(super) fn load_own_revocations(&self) -> Result<(), String> {
        let own = self.own()?;
        let mut loaded: Vec<(Revocation, SignedRecord)> = self
            .store
            .signed_records(SignedKind::NodeRevocation)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|record| {
                Revocation::verify(&record, &own.owner)
                    .map(|revocation| (revocation, record))
                    .map_err(|e| format!("a stored revocation: {e}"))
            })
            .collect::<Result<_, _>>()?;
        loaded.sort_by_key(|(revocation, _)| revocation.issued);
        let mut revoked = self.revoked();
        for (revocation, record) in loaded {
            revoked.own_records.push(record);
            revoked
                .own
                .insert(revocation.request.key_id.clone(), revocation);
        }
        if let Some(revocation) = revoked.own.get(own.node.key_id()) {
            tracing::warn!(
                key_id = own.node.key_id(),
                reason = %reason(None, revocation),
                "this node's key is revoked: it signs nothing for the organism; give the server \
                 a new node key (move DATA_DIR/node.key away and restart) and certify that one"
            );
        }
        Ok(())
    }

    /// Loads what the store holds of `link`'s peer owner's revocations
    /// (when the link starts): each record that verifies with the owner
    /// key the link pins.
    pub(super) fn load_peer_revocations(&self, link: &Link) -> Result<(), String> {
        let peer = link.request.peer();
        let records = self
            .store
            .signed_records(SignedKind::PeerRevocation)
            .map_err(|e| e.to_string())?;
        let mut revoked = self.revoked();
        for record in records {
            if let Ok(revocation) = Revocation::verify(&record, &link.request.peer_key) {
                revoked.peers.insert(
                    (peer.clone(), revocation.request.key_id.clone()),
                    revocation,
                );
            }
        }
        Ok(())
    }

    /// Applies a signed `node-revoke` of this organism's owner: keeps it,
    /// stops the key at once here, and pushes it to every linked peer on
    /// the open connections.
    pub fn apply_revocation(&self, record: SignedRecord) -> Result<(), String> {
        let own = self.own()?;
        let revocation = Revocation::verify(&record, &own.owner).map_err(|e| e.to_string())?;
        let key_id = revocation.request.key_id.clone();
        {
            let mut revoked = self.revoked();
            if let Some(earlier) = revoked.own.get(&key_id) {
                return Err(format!(
                    "node key {key_id} is already revoked (command {}, as of {})",
                    earlier.id,
                    format_instant(earlier.issued)
                ));
            }
            self.store
                .save_signed(SignedKind::NodeRevocation, &key_id, &record)
                .map_err(|e| e.to_string())?;
            revoked.own_records.push(record);
            revoked.own.insert(key_id.clone(), revocation.clone());
        }
        self.revocation_changes.send_modify(|version| *version += 1);
        if key_id == own.node.key_id() {
            tracing::warn!(
                %key_id,
                reason = %reason(None, &revocation),
                "this node's own key is revoked: it signs nothing more for the organism — no \
                 federation traffic, and audit checkpoints it signs from now on vouch for \
                 nothing; give the server a new node key (move DATA_DIR/node.key away and \
                 restart) and certify that one"
            );
        } else {
            tracing::info!(%key_id, reason = ?revocation.request.reason, "node key revoked");
        }
        Ok(())
    }

    /// Why `key_id` speaks for this organism nowhere, if this owner
    /// revoked it.
    pub fn revoked_key(&self, key_id: &str) -> Option<String> {
        self.revoked()
            .own
            .get(key_id)
            .map(|revocation| reason(None, revocation))
    }

    /// Why this node's own key may not sign, if it is revoked.
    pub(super) fn own_key_revoked(&self) -> Option<String> {
        self.revoked_key(self.own.as_ref()?.node.key_id())
    }

    /// Why `peer`'s node key `key_id` may not speak here, if its owner
    /// revoked it.
    pub(crate) fn peer_key_revoked(&self, peer: &str, key_id: &str) -> Option<String> {
        self.revoked()
            .peers
            .get(&(peer.to_owned(), key_id.to_owned()))
            .map(|revocation| reason(Some(peer), revocation))
    }

    /// Takes revocations `peer` sent: each must be signed by `peer_owner`,
    /// the owner key this side's link pins; those are kept and take effect
    /// at once, the others are refused and audited. Returns how many were
    /// new, or the first refusal's reason.
    pub(crate) fn take_revocations(
        &self,
        peer: &str,
        peer_owner: &VerifyingKey,
        records: Vec<SignedRecord>,
    ) -> Result<usize, String> {
        let mut refused: Option<String> = None;
        let mut new = 0;
        for record in records {
            let outcome = self.take_revocation(peer, peer_owner, &record);
            match outcome {
                Ok(true) => new += 1,
                Ok(false) => {}
                Err(why) => {
                    self.audit_refusal(peer, &why);
                    refused.get_or_insert(why);
                }
            }
        }
        if new > 0 {
            self.revocation_changes.send_modify(|version| *version += 1);
        }
        match refused {
            Some(why) => Err(why),
            None => Ok(new),
        }
    }

    /// Takes one revocation; true when it is new.
    fn take_revocation(
        &self,
        peer: &str,
        peer_owner: &VerifyingKey,
        record: &SignedRecord,
    ) -> Result<bool, String> {
        let revocation = Revocation::verify(record, peer_owner)
            .map_err(|e| format!("a revocation that is not the peer owner's ({e}) was refused"))?;
        let key = (peer.to_owned(), revocation.request.key_id.clone());
        let mut revoked = self.revoked();
        if revoked.peers.contains_key(&key) {
            return Ok(false);
        }
        if revoked.peers.keys().filter(|(p, _)| p == peer).count() >= MAX_PEER_REVOCATIONS {
            return Err(format!(
                "a revocation past the {MAX_PEER_REVOCATIONS} kept for this organism was refused"
            ));
        }
        self.store
            .save_signed(
                SignedKind::PeerRevocation,
                &format!("{peer}/{}", revocation.request.key_id),
                record,
            )
            .map_err(|e| format!("a revocation could not be kept: {e}"))?;
        tracing::warn!(
            %peer,
            key_id = revocation.request.key_id,
            reason = %reason(Some(peer), &revocation),
            "federation: a linked organism's owner revoked a node key; it is refused from now on"
        );
        revoked.peers.insert(key, revocation);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, BusConfig, NoAudit};
    use crate::commit::{NodeKey, RevocationRequest};
    use crate::federation::LinkRequest;
    use crate::privileged::{
        sign, Command, MemoryStructureStore, OrganismKey, SignedCommand, SigningKey, StructureStore,
    };

    /// `command` signed by `owner`, as kept.
    fn record(owner: &SigningKey, command: &Command) -> SignedRecord {
        let now = crate::privileged::time::unix_seconds(std::time::SystemTime::now());
        let signed = sign(
            command.to_unsigned_document().as_bytes(),
            owner,
            now,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
        let command = SignedCommand::read(signed.as_bytes(), 1 << 20).unwrap();
        command.to_record().unwrap()
    }

    fn revoke(key_id: &str) -> Command {
        Command::NodeRevoke(RevocationRequest {
            key_id: key_id.to_owned(),
            reason: None,
        })
    }

    fn federation(
        owner: &SigningKey,
        node: &NodeKey,
        store: &Arc<MemoryStructureStore>,
    ) -> Arc<Federation> {
        let store: Arc<dyn StructureStore> = store.clone();
        Federation::new(
            Some(&OrganismKey::from(owner.verifying_key())),
            Some(node.clone()),
            Bus::new(BusConfig::default(), Arc::new(NoAudit)),
            store,
            Arc::new(NoAudit),
        )
    }

    #[test]
    fn revocations_take_effect_at_once_and_come_back_after_a_restart() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let node = NodeKey::from(SigningKey::from_bytes(&[2; 32]));
        let peer_owner = SigningKey::from_bytes(&[3; 32]);
        let peer = crate::federation::fingerprint(&peer_owner.verifying_key());
        let store = Arc::new(MemoryStructureStore::new());
        let first = federation(&owner, &node, &store);
        // A link that only accepts: no gateway to start.
        let link = Command::Link(LinkRequest {
            peer_key: peer_owner.verifying_key(),
            address: "wss://127.0.0.1:1/".into(),
            tls: crate::federation::PeerTls::Fingerprint("0".repeat(64)),
            send: Vec::new(),
            accept: vec!["echo".into()],
        });
        first.apply_link(record(&owner, &link)).unwrap();

        // The peer owner's revocation counts; a stranger's does not; one
        // already known is not new.
        let theirs = record(&peer_owner, &revoke("00112233aabbccdd"));
        assert_eq!(
            first.take_revocations(&peer, &peer_owner.verifying_key(), vec![theirs.clone()]),
            Ok(1)
        );
        assert!(first
            .peer_key_revoked(&peer, "00112233aabbccdd")
            .is_some_and(|reason| reason.starts_with("node key revoked")));
        assert!(first.peer_key_revoked(&peer, "ffeeddccbbaa9988").is_none());
        let forged = record(&owner, &revoke("ffeeddccbbaa9988"));
        let refused = first
            .take_revocations(&peer, &peer_owner.verifying_key(), vec![forged])
            .unwrap_err();
        assert!(refused.contains("not the peer owner's"), "{refused}");
        assert!(first.peer_key_revoked(&peer, "ffeeddccbbaa9988").is_none());
        assert_eq!(
            first.take_revocations(&peer, &peer_owner.verifying_key(), vec![theirs]),
            Ok(0)
        );

        // This owner revokes this node's key: it signs nothing more, and
        // the revocation is pushed once per connection.
        let mut feed = first.revocation_feed();
        assert!(feed.pending().is_none());
        let own = record(&owner, &revoke(node.key_id()));
        first.apply_revocation(own.clone()).unwrap();
        assert!(first.own_key_revoked().is_some());
        assert!(first.credentials().is_err());
        assert!(first.revoked_key(node.key_id()).is_some());
        assert!(first.revoked_key("0011223344556677").is_none());
        let again = first.apply_revocation(own.clone()).unwrap_err();
        assert!(again.contains("already revoked"), "{again}");
        let frame = feed.pending().unwrap();
        assert!(frame.contains(&own.id), "{frame}");
        assert!(feed.pending().is_none());
        // Another owner's revocation is not this organism's.
        let stranger = record(&peer_owner, &revoke("0123456789abcdef"));
        assert!(first.apply_revocation(stranger).is_err());

        // After a restart on the same store, both are in force again.
        let second = federation(&owner, &node, &store);
        second.restore().unwrap();
        assert!(second.own_key_revoked().is_some());
        assert!(second.peer_key_revoked(&peer, "00112233aabbccdd").is_some());
        let mut feed = second.revocation_feed();
        assert!(feed.pending().is_some_and(|frame| frame.contains(&own.id)));
    }
}
