//! The privileged-command reader on arbitrary bytes — the envelope, the
//! payload, the signature and a base64 component inline — never panics,
//! never accepts a signature it did not check, and never reads a command it
//! would not write back the same way.
//!
//! Every input is tried twice: as it comes, and signed with a fixed test
//! key (when it signs at all), so that the fuzzer reaches the command
//! reader behind the signature check as well as the envelope in front of it.

#![no_main]

use agentserver::privileged::{sign, Command, SignedCommand, SigningKey};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

/// The most a command may be here (the server's default is 64 MiB).
const MAX_BYTES: usize = 1 << 20;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn check(document: &[u8], key: &SigningKey, signed_by_key: bool) {
    let Ok(command) = SignedCommand::read(document, MAX_BYTES) else {
        return;
    };
    let verified = command.verify(&key.verifying_key()).is_ok();
    if !signed_by_key {
        // Bytes the fuzzer wrote cannot carry a valid signature of a key it
        // does not have.
        assert!(!verified, "a signature nobody made verified");
    }
    if let Ok(read) = Command::read(&command.payload_tree) {
        // A command read is one the server can write out again and read
        // back as the same command.
        let again = read.to_unsigned_document();
        let signed = sign(again.as_bytes(), key, 1_800_000_000, Duration::from_secs(600))
            .expect("a command the reader took signs");
        let reread = SignedCommand::read(signed.as_bytes(), MAX_BYTES)
            .expect("a command the reader took reads again");
        assert_eq!(
            Command::read(&reread.payload_tree).expect("and is the same command"),
            read
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    check(data, &key, false);
    if let Ok(signed) = sign(data, &key, 1_800_000_000, Duration::from_secs(600)) {
        check(signed.as_bytes(), &key, true);
    }
});
