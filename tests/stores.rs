//! The storage traits, run against every backend this build has: the same
//! test body for each.

use agentserver::audit::{canonical_entry, chain, AuditLog, StoredEntry, GENESIS};
use agentserver::bus::{AuditKind, AuditRecord, AuditSink as _, SessionId, ThreadId};
use agentserver::privileged::{AdmittedAgent, Placement, SignedKind, SignedRecord};
use agentserver::runtime::AgentLimits;
use agentserver::store::{StorageConfig, Stores};
use agentserver_tests::RedisServer;
use std::sync::Arc;
use std::time::Duration;

/// A fresh backend: its name, its folder, its configuration (opening it
/// again is a restart), and the Redis server it uses, kept alive with it.
type Backend = (
    &'static str,
    tempfile::TempDir,
    StorageConfig,
    Option<RedisServer>,
);

/// Every backend, fresh.
fn backends() -> Vec<Backend> {
    let redis = RedisServer::start();
    vec![
        (
            "memory",
            tempfile::tempdir().unwrap(),
            StorageConfig::Memory,
            None,
        ),
        (
            "sqlite",
            tempfile::tempdir().unwrap(),
            StorageConfig::Sqlite,
            None,
        ),
        (
            "redis",
            tempfile::tempdir().unwrap(),
            StorageConfig::Redis {
                url: redis.url.clone(),
                prefix: "test".into(),
            },
            Some(redis),
        ),
    ]
}

fn agent(name: &str, fuel: u64) -> AdmittedAgent {
    AdmittedAgent {
        name: name.into(),
        listens: vec![format!("{name}-tag"), "{urn:x}other".into()],
        description: "An agent & more".into(),
        limits: AgentLimits {
            fuel,
            ..AgentLimits::default()
        },
        component: vec![0, 97, 115, 109, 1, 2, 3],
        // Every other agent placed on two nodes of a cluster, so that both
        // placements travel through every backend.
        nodes: if fuel.is_multiple_of(2) {
            Placement::Nodes(vec!["b".into(), "c".into()])
        } else {
            Placement::All
        },
    }
}

#[test]
fn command_ids_are_single_use_on_every_backend() {
    for (name, dir, config, _redis) in backends() {
        let stores = Stores::open(&config, dir.path()).unwrap();
        let ids = &stores.structure;
        assert!(ids.claim_command_id("a", 100, 10).unwrap(), "{name}");
        assert!(!ids.claim_command_id("a", 100, 10).unwrap(), "{name}");
        assert!(ids.claim_command_id("b", 100, 10).unwrap(), "{name}");
        // Only an id marked as applied reads so; an unclaimed one cannot be.
        ids.mark_applied("a").unwrap();
        ids.mark_applied("unclaimed").unwrap();
        assert!(ids.was_applied("a").unwrap(), "{name}");
        assert!(!ids.was_applied("b").unwrap(), "{name}");
        assert!(!ids.was_applied("unclaimed").unwrap(), "{name}");
        if ids.is_persistent() {
            let reopened = Stores::open(&config, dir.path()).unwrap();
            assert!(
                !reopened.structure.claim_command_id("a", 100, 20).unwrap(),
                "{name}"
            );
            assert!(reopened.structure.was_applied("a").unwrap(), "{name}");
        }
    }
}

#[test]
fn admitted_agents_are_kept_replaced_and_forgotten_on_every_backend() {
    for (name, dir, config, _redis) in backends() {
        let stores = Stores::open(&config, dir.path()).unwrap();
        stores.structure.save_agent(&agent("one", 5)).unwrap();
        stores.structure.save_agent(&agent("two", 6)).unwrap();
        stores.structure.save_agent(&agent("one", 7)).unwrap();
        let kept = stores.structure.admitted_agents().unwrap();
        assert_eq!(kept, vec![agent("one", 7), agent("two", 6)], "{name}");
        stores.structure.forget_agent("two").unwrap();
        stores.structure.forget_agent("never").unwrap();
        assert_eq!(
            stores.structure.admitted_agents().unwrap(),
            vec![agent("one", 7)],
            "{name}"
        );
        if stores.structure.is_persistent() {
            let reopened = Stores::open(&config, dir.path()).unwrap();
            assert_eq!(
                reopened.structure.admitted_agents().unwrap(),
                vec![agent("one", 7)],
                "{name}"
            );
        }
    }
}

#[test]
fn signed_records_are_kept_byte_for_byte_on_every_backend() {
    for (name, dir, config, _redis) in backends() {
        let stores = Stores::open(&config, dir.path()).unwrap();
        let record = |id: &str| {
            SignedRecord {
            id: id.into(),
            // Exact bytes, newlines and markup included.
            payload: format!(
                "<payload id=\"{id}\">\n<node-certificate key-id=\"x\"></node-certificate></payload>"
            ),
            signature: "c2lnbmF0dXJl".into(),
        }
        };
        let structure = &stores.structure;
        structure.save_certificate(&record("c2")).unwrap();
        structure.save_certificate(&record("c1")).unwrap();
        structure.save_certificate(&record("c1")).unwrap();
        let expected = vec![record("c1"), record("c2")];
        assert_eq!(structure.certificates().unwrap(), expected, "{name}");
        // Another kind, kept apart, replaced by key and forgotten.
        let links = SignedKind::FederationLink;
        structure.save_signed(links, "peer", &record("l1")).unwrap();
        structure.save_signed(links, "peer", &record("l2")).unwrap();
        assert_eq!(
            structure.signed_records(links).unwrap(),
            [record("l2")],
            "{name}"
        );
        // Revocations, this owner's and linked peers', each kind apart.
        let revocations = [
            (SignedKind::NodeRevocation, "0123456789abcdef", record("r1")),
            (
                SignedKind::PeerRevocation,
                "peer/0123456789abcdef",
                record("r2"),
            ),
        ];
        for (kind, key, record) in &revocations {
            structure.save_signed(*kind, key, record).unwrap();
        }
        if structure.is_persistent() {
            let reopened = Stores::open(&config, dir.path()).unwrap();
            let again = &reopened.structure;
            assert_eq!(again.certificates().unwrap(), expected, "{name}");
            assert_eq!(
                again.signed_records(links).unwrap(),
                [record("l2")],
                "{name}"
            );
            for (kind, _, record) in &revocations {
                assert_eq!(
                    again.signed_records(*kind).unwrap(),
                    std::slice::from_ref(record),
                    "{name}"
                );
            }
        }
        structure.forget_signed(links, "peer").unwrap();
        assert!(
            structure.signed_records(links).unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(structure.certificates().unwrap(), expected, "{name}");
    }
}

#[test]
fn the_audit_log_chains_across_reopening_on_every_backend() {
    let session = SessionId::from_string("s");
    let thread = ThreadId::from_client("t");
    for (name, dir, config, _redis) in backends() {
        let stores = Stores::open(&config, dir.path()).unwrap();
        let record = |log: &AuditLog, i: u32| {
            log.record(AuditRecord {
                kind: AuditKind::Message,
                thread: Some(&thread),
                session: &session,
                from: "user:a",
                tag: "echo",
                depth: i,
                canonical: "<echo>x</echo>",
            })
        };
        {
            let log = AuditLog::open(Arc::clone(&stores.audit), None).unwrap();
            (0..300).for_each(|i| record(&log, i));
            assert!(log.flush(Duration::from_secs(10)), "{name}");
        }
        let stores = if stores.structure.is_persistent() {
            Stores::open(&config, dir.path()).unwrap()
        } else {
            stores
        };
        {
            let log = AuditLog::open(Arc::clone(&stores.audit), None).unwrap();
            (0..5).for_each(|i| record(&log, i));
        }
        let verified = stores.audit.verify().unwrap().unwrap();
        assert_eq!(verified.count, 305, "{name}");
        assert_eq!(
            stores.audit.thread_entries("t").unwrap().len(),
            305,
            "{name}"
        );
        assert!(
            stores.audit.thread_entries("other").unwrap().is_empty(),
            "{name}"
        );

        // An entry whose hash does not follow is named.
        let (seq, previous) = stores.audit.audit_head().unwrap().unwrap();
        let forged = canonical_entry(
            seq + 1,
            0,
            &AuditRecord {
                kind: AuditKind::Message,
                thread: None,
                session: &session,
                from: "user:a",
                tag: "echo",
                depth: 0,
                canonical: "<echo>forged</echo>",
            },
        );
        let wrong = chain(&GENESIS, &forged);
        assert_ne!(wrong, chain(&previous, &forged));
        stores
            .audit
            .append_audit(&[StoredEntry {
                seq: seq + 1,
                entry: forged,
                hash: hex_encode(&wrong),
            }])
            .unwrap();
        let broken = stores.audit.verify().unwrap().unwrap_err();
        assert_eq!(
            broken.to_string(),
            format!("audit entry {} is broken: its hash does not match its contents and the previous entry", seq + 1),
            "{name}"
        );
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn sessions_and_pending_frames_are_kept_on_every_persistent_backend() {
    use agentserver::session::SessionRecord;
    for (name, dir, config, _redis) in backends() {
        let stores = Stores::open(&config, dir.path()).unwrap();
        let Some(sessions) = stores.sessions.clone() else {
            assert_eq!(
                name, "memory",
                "only memory keeps sessions in the registry alone"
            );
            continue;
        };
        let record = |id: &str, byte: u8| SessionRecord {
            id: id.into(),
            user: "alice".into(),
            token_hash: [byte; 32],
            timeout_secs: 60,
        };
        sessions.save_session(&record("s1", 1)).unwrap();
        sessions.save_session(&record("s2", 2)).unwrap();
        sessions.save_session(&record("s1", 3)).unwrap();
        for seq in 0..5u64 {
            sessions
                .append_frame("s1", seq, &format!("<n>{seq}\ttab</n>"))
                .unwrap();
        }
        sessions.append_frame("s2", 0, "<other/>").unwrap();
        sessions.remove_frames_through("s1", 1).unwrap();
        sessions.delete_session("s2").unwrap();
        let reopened = Stores::open(&config, dir.path()).unwrap();
        let loaded = reopened.sessions.unwrap().load_sessions().unwrap();
        assert_eq!(loaded.len(), 1, "{name}");
        let (stored, frames) = &loaded[0];
        assert_eq!(stored, &record("s1", 3), "{name}");
        let seqs: Vec<u64> = frames.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [2, 3, 4], "{name}");
        assert_eq!(frames[0].1, "<n>2\ttab</n>", "{name}");
    }
}

#[test]
fn key_value_buckets_hold_quotas_sessions_and_restarts_on_every_backend() {
    use agentserver::capability::{Bucket, BucketQuota, KeyValueError};
    let quota = BucketQuota {
        max_keys: 3,
        max_bytes: 40,
    };
    for (name, dir, config, _redis) in backends() {
        let stores = Stores::open(&config, dir.path()).unwrap();
        let kv = &stores.keyvalue;
        let (s1, s2) = (Bucket::session("memo", "s1"), Bucket::session("memo", "s2"));
        let shared = Bucket::agent("memo");
        kv.set(&s1, "k", b"one", &quota).unwrap();
        kv.set(&s2, "k", b"two", &quota).unwrap();
        assert_eq!(kv.get(&s1, "k").unwrap().unwrap(), b"one", "{name}");
        assert_eq!(kv.get(&s2, "k").unwrap().unwrap(), b"two", "{name}");
        assert_eq!(kv.get(&s1, "missing").unwrap(), None, "{name}");

        // Quotas: bytes of keys and values, then keys; a refused write
        // writes nothing.
        let error = kv.set(&s1, "k", &[b'x'; 40], &quota).unwrap_err();
        assert!(matches!(error, KeyValueError::Quota(_)), "{name}: {error}");
        assert_eq!(kv.get(&s1, "k").unwrap().unwrap(), b"one", "{name}");
        kv.set(&s1, "a", b"", &quota).unwrap();
        kv.set(&s1, "b", b"", &quota).unwrap();
        let error = kv.set(&s1, "c", b"", &quota).unwrap_err();
        assert!(error.to_string().contains("3 keys"), "{name}: {error}");
        kv.delete(&s1, "a").unwrap();
        kv.set(&s1, "c", b"", &quota).unwrap();
        let (keys, next) = kv.keys(&s1, 0).unwrap();
        assert_eq!(
            (keys, next),
            (vec!["b".into(), "c".into(), "k".into()], None),
            "{name}"
        );

        // Counters; the agent bucket is one for all sessions.
        assert_eq!(kv.increment(&shared, "n", 2, &quota).unwrap(), 2, "{name}");
        assert_eq!(kv.increment(&shared, "n", 3, &quota).unwrap(), 5, "{name}");

        // An ended session leaves nothing; the agent bucket survives a
        // restart on persistent backends.
        kv.clear(&s1).unwrap();
        assert_eq!(kv.keys(&s1, 0).unwrap(), (Vec::new(), None), "{name}");
        assert_eq!(kv.get(&s2, "k").unwrap().unwrap(), b"two", "{name}");
        if stores.structure.is_persistent() {
            let reopened = Stores::open(&config, dir.path()).unwrap();
            let kv = &reopened.keyvalue;
            assert_eq!(kv.get(&shared, "n").unwrap().unwrap(), b"5", "{name}");
            // Usage is kept with the data: the quota still counts them.
            kv.set(&s1, "fresh", b"", &quota).unwrap();
            kv.remove_agent("memo").unwrap();
            assert_eq!(kv.get(&shared, "n").unwrap(), None, "{name}");
            assert_eq!(kv.get(&s2, "k").unwrap(), None, "{name}");
        }
    }
}

/// A batch whose reply was lost is sent again; Redis keeps it once.
#[test]
fn redis_keeps_a_retried_audit_batch_once() {
    let redis = RedisServer::start();
    let config = StorageConfig::Redis {
        url: redis.url.clone(),
        prefix: "retry".into(),
    };
    let stores = Stores::open(&config, std::path::Path::new("/nonexistent")).unwrap();
    let session = SessionId::from_string("s");
    let mut previous = GENESIS;
    let batch: Vec<StoredEntry> = (1..=3)
        .map(|seq| {
            let record = AuditRecord {
                kind: AuditKind::Message,
                thread: None,
                session: &session,
                from: "user:a",
                tag: "echo",
                depth: 0,
                canonical: "<echo>x</echo>",
            };
            let entry = canonical_entry(seq, 1_000, &record);
            previous = chain(&previous, &entry);
            StoredEntry {
                seq,
                entry,
                hash: hex_encode(&previous),
            }
        })
        .collect();
    stores.audit.append_audit(&batch[..2]).unwrap();
    // The first two again (their reply was lost), with the third.
    stores.audit.append_audit(&batch).unwrap();
    let verified = stores.audit.verify().unwrap().expect("an intact chain");
    assert_eq!(verified.count, 3);
}

#[test]
fn redis_shares_sessions_between_nodes_and_lets_an_unrenewed_lease_run_out() {
    use agentserver::session::{Rotation, SessionRecord};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(
        &StorageConfig::Redis {
            url: redis.url.clone(),
            prefix: "leases".into(),
        },
        dir.path(),
    )
    .unwrap();
    let (sessions, shared) = (
        stores.sessions.unwrap(),
        stores.shared_sessions.expect("redis shares sessions"),
    );
    let hash = |byte: u8| [byte; 32];
    for id in ["kept", "orphan"] {
        sessions
            .save_session(&SessionRecord {
                id: id.into(),
                user: "alice".into(),
                token_hash: hash(1),
                timeout_secs: 60,
            })
            .unwrap();
        shared.hold(id, "a").unwrap();
    }
    sessions.append_frame("orphan", 3, "<held/>").unwrap();
    // A token rotates once, wherever it is shown; the rotating node holds
    // the session from then on.
    assert_eq!(
        shared.rotate("kept", &hash(9), &hash(2), "b").unwrap(),
        Rotation::BadToken
    );
    assert_eq!(
        shared.rotate("kept", &hash(1), &hash(2), "b").unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        shared.rotate("kept", &hash(1), &hash(3), "c").unwrap(),
        Rotation::BadToken
    );
    assert_eq!(
        shared.rotate("nope", &hash(1), &hash(3), "c").unwrap(),
        Rotation::Unknown
    );
    let held: Vec<String> = shared
        .held_by("a")
        .unwrap()
        .into_iter()
        .map(|(record, _)| record.id)
        .collect();
    assert_eq!(held, ["orphan"]);
    // Only the holder forgets a session.
    shared.forget_if_held("kept", "a").unwrap();
    assert!(shared.load_session("kept").unwrap().is_some());
    // A lease nobody renews runs out, frames and all.
    let (_, frames) = shared.load_session("orphan").unwrap().unwrap();
    assert_eq!(frames, [(3, "<held/>".to_owned())]);
    shared.renew_leases(&[("orphan".into(), 1)]).unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    assert!(shared.load_session("orphan").unwrap().is_none());
    assert!(shared.held_by("a").unwrap().is_empty());
    assert_eq!(
        sessions.load_sessions().unwrap().len(),
        1,
        "the set forgot it"
    );
}
