//! What logins must remember beyond one process: the TOTP time steps
//! already used (a code is good for one login per user and time step) and,
//! for the nodes of a cluster, the failures counted toward the rate limits.
//! In one process the steps are a map; nodes of one organism share both in
//! Redis, so that a code used on one node is refused on every other and a
//! guesser gets no fresh allowance by moving to another node.

use crate::privileged::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;

/// Where the last used time step of each user is kept.
pub trait StepMemory: Send + Sync + std::fmt::Debug {
    /// Records `step` as used by `user` and returns true, or returns false
    /// when that step or a later one was used already.
    fn claim_step(&self, user: &str, step: u64) -> Result<bool, StoreError>;
}

/// The memory of one process.
#[derive(Debug, Default)]
pub struct LocalSteps(Mutex<HashMap<String, u64>>);

impl StepMemory for LocalSteps {
    fn claim_step(&self, user: &str, step: u64) -> Result<bool, StoreError> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.get(user).is_some_and(|&previous| step <= previous) {
            return Ok(false);
        }
        last.insert(user.to_owned(), step);
        Ok(true)
    }
}

/// Login failures counted where the nodes of a cluster all see them: per
/// key (a user name or an address), in fixed windows.
pub trait SharedFailures: Send + Sync + std::fmt::Debug {
    /// Counts one failure for `key` in the current window of `window`
    /// seconds; returns the window's count so far.
    fn record_failure(&self, key: &str, window: u64) -> Result<u64, StoreError>;

    /// The failures counted for `key` in the current window.
    fn failures(&self, key: &str) -> Result<u64, StoreError>;
}
