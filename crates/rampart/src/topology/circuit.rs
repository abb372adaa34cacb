//! The circuit of one shard of a cache pool that fails open (`fail_open: true`).
//!
//! ```text
//!  closed ── fail_open_after failures in a row ──► open ── a health check gets PONG ──► closed
//!    ▲  (a reply in time resets the count)          │ every request answered at once:
//!    └──────────────────────────────────────────────┘ a miss, a dropped write, or an error
//! ```
//!
//! Only a health check (`ha::circuit`) closes an open circuit: client traffic never goes to a
//! shard whose circuit is open. The counts of misses and drops made by failing open live here,
//! one cell per worker (each written only by its worker).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::observe::stats::Cell;

/// One shard's circuit and its fail-open counters.
#[derive(Debug)]
pub struct Circuit {
    open: AtomicBool,
    failures: AtomicU32,
    openings: AtomicU64,
    misses: Vec<Cell>,
    drops: Vec<Cell>,
}

impl Circuit {
    /// A closed circuit for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Circuit {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            openings: AtomicU64::new(0),
            misses: (0..workers).map(|_| Cell::default()).collect(),
            drops: (0..workers).map(|_| Cell::default()).collect(),
        }
    }

    /// Requests of the shard are answered without being sent.
    /// The circuit of a shard a reload keeps (same name, same primary): open or closed,
    /// its failures and its counts carried over from `old`, so a reload neither closes a
    /// circuit its dead shard still needs open (every reload cost requests waiting
    /// `fail_open_timeout` until it opened again) nor resets the figures.
    pub fn carried(workers: usize, old: Option<&Circuit>) -> Self {
        let c = Circuit::new(workers);
        if let Some(o) = old {
            c.open.store(o.is_open(), Relaxed);
            c.failures.store(o.failures.load(Relaxed), Relaxed);
            c.openings.store(o.openings(), Relaxed);
            if let (Some(m), Some(d)) = (c.misses.first(), c.drops.first()) {
                m.add(o.misses());
                d.add(o.drops());
            }
        }
        c
    }

    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    /// A request of the shard got no reply in time (or its connection failed); returns true
    /// when this failure, the `after`-th in a row, opened the circuit.
    pub fn failure(&self, after: u32) -> bool {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        n >= after && !self.open.swap(true, Relaxed) && {
            self.openings.fetch_add(1, Relaxed);
            true
        }
    }

    /// A reply arrived in time: the failures in a row start again.
    #[inline]
    pub fn success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// A health check got a reply: close the circuit; true when it was open.
    pub fn close(&self) -> bool {
        self.failures.store(0, Relaxed);
        self.open.swap(false, Relaxed)
    }

    /// Times the circuit opened.
    pub fn openings(&self) -> u64 {
        self.openings.load(Relaxed)
    }

    /// Count a read answered as a miss by worker `w`.
    pub fn count_miss(&self, w: usize) {
        if let Some(c) = self.misses.get(w) {
            c.add(1);
        }
    }

    /// Count a write dropped by worker `w`.
    pub fn count_drop(&self, w: usize) {
        if let Some(c) = self.drops.get(w) {
            c.add(1);
        }
    }

    /// Reads answered as a miss, all workers.
    pub fn misses(&self) -> i64 {
        self.misses.iter().map(Cell::get).sum()
    }

    /// Writes dropped, all workers.
    pub fn drops(&self) -> i64 {
        self.drops.iter().map(Cell::get).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_failures_in_a_row_and_only_a_check_closes_it() {
        let c = Circuit::new(1);
        assert!(!c.failure(3));
        c.success();
        assert!(!c.failure(3));
        assert!(!c.failure(3));
        assert!(c.failure(3), "the third in a row opens it");
        assert!(c.is_open());
        assert!(!c.failure(3), "already open");
        c.success();
        assert!(c.is_open(), "a reply does not close it");
        assert!(c.close());
        assert!(!c.is_open());
        assert_eq!(c.openings(), 1);
    }
}
