//! The TOTP time steps already used: a code is good for one login per
//! user and time step. In one process the memory is a map; nodes of one
//! organism share it in Redis, so that a code used on one node is refused
//! on every other.

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
