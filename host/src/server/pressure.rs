//! Connection pressure: a cap on the connections open at once
//! (`max_connections`) and on those of one address that have not logged in
//! yet (`max_unauthenticated_per_address`), so that one address holding
//! thousands of idle TCP or half-done TLS connections cannot crowd out the
//! users who are logged in, nor exhaust the process's file descriptors.
//!
//! Each admitted connection holds an [`OpenSlot`] for as long as its socket
//! lives; a connection that has not logged in also holds a
//! [`PendingSlot`] for its address, given back once it has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Capacity,
    /// The address has `max_unauthenticated_per_address` connections that
    /// have not logged in.
    Address,
}

/// The caps, and what is open against them.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max_open: usize,
    max_pending_per_address: usize,
    open: AtomicUsize,
    pending: Mutex<HashMap<IpAddr, Pending>>,
    /// Connections refused at the total cap, and per address.
    pub(crate) refused_capacity: AtomicU64,
    pub(crate) refused_address: AtomicU64,
    /// Set while refusing at the total cap, so that a streak is logged once.
    at_capacity: AtomicBool,
}

#[derive(Debug, Default)]
struct Pending {
    count: usize,
    /// Refusing this address; logged once per streak.
    refusing: bool,
}

impl ConnectionLimits {
    pub(crate) fn new(max_open: usize, max_pending_per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_open: max_open.max(1),
            max_pending_per_address: max_pending_per_address.max(1),
            open: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            refused_capacity: AtomicU64::new(0),
            refused_address: AtomicU64::new(0),
            at_capacity: AtomicBool::new(false),
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits one more connection, unless `max_connections` are open.
    pub(crate) fn try_open(self: &Arc<Self>) -> Result<OpenSlot, Refusal> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max_open).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.refused_capacity.fetch_add(1, Ordering::Relaxed);
            if !self.at_capacity.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_connections = self.max_open,
                    "refusing connections: max_connections are open"
                );
            }
            return Err(Refusal::Capacity);
        }
        if self.at_capacity.swap(false, Ordering::Relaxed) {
            tracing::warn!("admitting connections again");
        }
        Ok(OpenSlot(Arc::clone(self)))
    }

    /// Counts one more connection of `address` that has not logged in,
    /// unless it has `max_unauthenticated_per_address` already.
    pub(crate) fn try_pending(self: &Arc<Self>, address: IpAddr) -> Result<PendingSlot, Refusal> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(address).or_default();
        if entry.count >= self.max_pending_per_address {
            self.refused_address.fetch_add(1, Ordering::Relaxed);
            if !entry.refusing {
                entry.refusing = true;
                tracing::warn!(
                    %address,
                    max_unauthenticated_per_address = self.max_pending_per_address,
                    "refusing connections from an address with too many that have not logged in"
                );
            }
            return Err(Refusal::Address);
        }
        entry.count += 1;
        Ok(PendingSlot {
            limits: Arc::clone(self),
            address,
        })
    }
}

/// One open connection; given back when dropped.
#[derive(Debug)]
pub(crate) struct OpenSlot(Arc<ConnectionLimits>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection of an address that has not logged in; given back when
/// dropped.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl PendingSlot {
    /// The address it counts for.
    pub(crate) fn address(&self) -> IpAddr {
        self.address
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut pending = self
            .limits
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = pending.get_mut(&self.address) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                pending.remove(&self.address);
            } else if entry.count < self.limits.max_pending_per_address {
                entry.refusing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_cap_admits_again_as_connections_close() {
        let limits = ConnectionLimits::new(2, 10);
        let a = limits.try_open().unwrap();
        let _b = limits.try_open().unwrap();
        assert_eq!(limits.try_open().unwrap_err(), Refusal::Capacity);
        assert_eq!(limits.open(), 2);
        drop(a);
        let _c = limits.try_open().unwrap();
        assert_eq!(limits.refused_capacity.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_address_cap_counts_each_address_apart() {
        let limits = ConnectionLimits::new(100, 2);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.try_pending(one).unwrap();
        let _second = limits.try_pending(one).unwrap();
        assert_eq!(limits.try_pending(one).unwrap_err(), Refusal::Address);
        let _other = limits.try_pending(two).unwrap();
        drop(first);
        let _again = limits.try_pending(one).unwrap();
        assert_eq!(limits.refused_address.load(Ordering::Relaxed), 1);
        drop(_again);
        drop(_second);
        drop(_other);
        assert!(limits.pending.lock().unwrap().is_empty());
    }
}
