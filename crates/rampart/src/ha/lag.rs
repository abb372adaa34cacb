//! Replication lag from replication offsets.
//!
//! Every health check of a primary records its `master_repl_offset` under its replication id
//! (`master_replid`), with the time the reply arrived. A replica's check reads its own
//! `slave_repl_offset` and the replication id it follows, and is as far behind as the time
//! since its primary was first seen past that offset:
//!
//! ```text
//! primary offsets seen:  t=0.0 s: 1000   t=0.2 s: 1400   t=0.4 s: 1900
//! replica at t=0.5 s:    1500  -> the primary had passed 1500 at 0.4 s: lag >= 0.1 s, 400 bytes
//! replica at t=0.5 s:    1900  -> lag 0 (it has everything the primary was seen with)
//! ```
//!
//! So an idle, caught-up replica is at 0 whatever the time since its primary last wrote to it
//! (Redis pings its replicas only every 10 s), and a replica that stops applying the stream
//! while its primary takes writes grows by a second per second. The measure is a lower bound,
//! exact to within one check interval of the primary (or [`SPACING_MS`]). Histories are process-wide, bounded
//! ([`SAMPLES`] per replication id, [`HISTORIES`] ids), and shared by every pool that checks
//! the same primary.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Offsets kept per replication id (at least [`SPACING_MS`] apart: about 100 s of history).
pub const SAMPLES: usize = 1024;
/// Replication ids kept; the one updated longest ago goes first.
pub const HISTORIES: usize = 64;
/// Least time between two kept offsets of one primary.
pub const SPACING_MS: u64 = 100;

/// How far a replica is behind its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    /// Milliseconds since its primary was first seen past the replica's offset (0: caught up).
    pub ms: u64,
    /// Bytes of the replication stream the primary was last seen with and the replica lacks.
    pub bytes: u64,
}

/// The offsets one primary was seen with, oldest first: (ms, offset), offsets increasing.
#[derive(Debug, Default)]
pub struct History {
    seen: VecDeque<(u64, u64)>,
    updated_ms: u64,
}

impl History {
    /// The primary was seen with `offset` at `at_ms`.
    pub fn primary(&mut self, offset: u64, at_ms: u64) {
        self.updated_ms = at_ms;
        match self.seen.back_mut() {
            // Offsets of one replication id never go back; if they do, start again.
            Some(&mut (_, last)) if offset < last => self.seen.clear(),
            Some(&mut (_, last)) if offset == last => return,
            // Thin out: a sample within SPACING_MS of the last kept one is skipped (the lag
            // stays a lower bound: a later sample says the primary was past it).
            Some(&mut (t, _)) if at_ms < t + SPACING_MS => return,
            _ => {}
        }
        if self.seen.len() == SAMPLES {
            self.seen.pop_front();
        }
        self.seen.push_back((at_ms, offset));
    }

    /// The lag of a replica at `offset` at `at_ms`; `None` before the primary was seen.
    pub fn replica(&self, offset: u64, at_ms: u64) -> Option<Lag> {
        let &(_, newest) = self.seen.back()?;
        let passed = self.seen.iter().find(|&&(_, o)| o > offset);
        Some(Lag {
            ms: passed.map_or(0, |&(t, _)| at_ms.saturating_sub(t)),
            bytes: newest.saturating_sub(offset),
        })
    }
}

static HISTORY: Mutex<Option<HashMap<String, History>>> = Mutex::new(None);

/// A primary with replication id `replid` was seen with `offset` now.
pub fn primary_seen(replid: &str, offset: u64) {
    let now = crate::clock::now_ms();
    let Ok(mut all) = HISTORY.lock() else { return };
    let all = all.get_or_insert_with(HashMap::new);
    if !all.contains_key(replid) && all.len() >= HISTORIES {
        let oldest = all
            .iter()
            .min_by_key(|(_, h)| h.updated_ms)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            all.remove(&k);
        }
    }
    all.entry(replid.to_string())
        .or_default()
        .primary(offset, now);
}

/// The lag now of a replica following replication id `replid` at `offset`; `None` when no
/// primary with that id has been seen.
pub fn replica_lag(replid: &str, offset: u64) -> Option<Lag> {
    let now = crate::clock::now_ms();
    let all = HISTORY.lock().ok()?;
    all.as_ref()?.get(replid)?.replica(offset, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_up_replica_has_no_lag_however_long_the_primary_is_idle() {
        let mut h = History::default();
        h.primary(1000, 0);
        h.primary(1000, 9_000);
        assert_eq!(h.replica(1000, 9_500), Some(Lag { ms: 0, bytes: 0 }));
        // Redis' ping every 10 s moves the offset; a replica that has it is still at 0.
        h.primary(1014, 10_000);
        assert_eq!(h.replica(1014, 10_100), Some(Lag { ms: 0, bytes: 0 }));
    }

    #[test]
    fn a_replica_behind_is_as_late_as_the_time_since_the_primary_passed_its_offset() {
        let mut h = History::default();
        h.primary(1000, 0);
        h.primary(1400, 200);
        h.primary(1900, 400);
        assert_eq!(
            h.replica(1500, 500),
            Some(Lag {
                ms: 100,
                bytes: 400
            })
        );
        assert_eq!(
            h.replica(1000, 500),
            Some(Lag {
                ms: 300,
                bytes: 900
            })
        );
        assert_eq!(h.replica(1900, 500), Some(Lag { ms: 0, bytes: 0 }));
        assert_eq!(History::default().replica(1, 1), None);
    }

    #[test]
    fn history_is_bounded_and_thinned() {
        let mut h = History::default();
        for i in 0..(SAMPLES as u64 * 3) {
            h.primary(i + 1, i * SPACING_MS / 2);
        }
        assert!(h.seen.len() <= SAMPLES);
        // A replica behind everything kept is at least as late as the oldest sample.
        let (oldest, _) = h.seen[0];
        let now = SAMPLES as u64 * 3 * SPACING_MS / 2;
        assert_eq!(h.replica(0, now).map(|l| l.ms), Some(now - oldest));
    }

    #[test]
    fn histories_are_found_by_replication_id() {
        primary_seen("lag-test-replid-a", 500);
        assert_eq!(replica_lag("lag-test-replid-a", 500).map(|l| l.ms), Some(0));
        assert_eq!(replica_lag("lag-test-replid-b", 500), None);
    }
}
