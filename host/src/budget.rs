//! The host-wide memory budget: bytes that request bodies and guest linear memories may hold
//! at once, across all functions.
//!
//! Per-instance limits (`--max-guest-memory-mib`) and per-function concurrency do not bound
//! the whole: 64 requests that each decode a large image fit every per-request limit and can
//! still take a pod past its container limit. Every body buffered by the server and every page
//! a guest grows its memory by is reserved here first; a reservation that does not fit fails
//! at once, and the request gets 503 with `Retry-After` instead of the process growing past
//! the budget. Failing rather than waiting keeps two half-grown requests from waiting on each
//! other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes the host lets requests hold at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty reservation, to grow as memory is needed.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes held against a [`MemoryBudget`], given back when dropped, however the request ends.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Hold `total` bytes in all (more or fewer than now); false, holding what it held
    /// before, if the budget cannot spare the difference.
    pub fn resize(&mut self, total: usize) -> bool {
        if total > self.bytes {
            if !self.budget.take(total - self.bytes) {
                return false;
            }
        } else {
            self.budget.give_back(self.bytes - total);
        }
        self.bytes = total;
        true
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The budget it draws on.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The default budget: half the container's memory limit (cgroup v2 `memory.max` or v1
/// `memory.limit_in_bytes`) where one is set, else half the machine's memory. The other half
/// is for the models, the compiled functions and the host itself.
pub fn default_limit() -> usize {
    container_limit()
        .or_else(machine_memory)
        .map(|b| b / 2)
        .unwrap_or(4 << 30)
}

fn container_limit() -> Option<usize> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let v2 = read("/sys/fs/cgroup/memory.max");
    let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    v2.or(v1)?
        .trim()
        .parse::<u64>()
        .ok()
        // v1 says "no limit" with a huge number rather than `max`.
        .filter(|&b| b < 1 << 50)
        .and_then(|b| usize::try_from(b).ok())
}

fn machine_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<usize>()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_are_given_back_on_drop() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert!(a.resize(60));
        assert!(!b.resize(50), "60 + 50 is over 100");
        assert_eq!(b.bytes(), 0);
        assert!(b.resize(40));
        assert_eq!(budget.used(), 100);
        assert!(a.resize(10), "shrinking always fits");
        assert_eq!(budget.used(), 50);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_default_is_some_memory() {
        assert!(default_limit() >= 1 << 20);
    }
}
