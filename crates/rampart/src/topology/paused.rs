//! The `CLIENT PAUSE` state of every pool, process-wide: set and ended by
//! `session::pause` (which holds the paused sessions), read by the sessions and by the
//! spool replay (`ha::replay`), which sends no spooled write while its pool's writes are
//! paused, as Redis sends none of its own clients'.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::observe::stats::MAX_POOLS;

/// One pool's pause.
pub struct PoolPause {
    /// Milliseconds after [`epoch`] when the pause ends; 0: not paused.
    pub until_ms: AtomicU64,
    /// Every command is held, not only writes.
    pub all: AtomicBool,
}

/// The pause of each pool slot (`PoolRt::index`).
pub static STATE: [PoolPause; MAX_POOLS] = [const {
    PoolPause {
        until_ms: AtomicU64::new(0),
        all: AtomicBool::new(false),
    }
}; MAX_POOLS];

/// The instant [`PoolPause::until_ms`] counts from.
pub fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

/// Whether writes of pool slot `pool` are paused now (`CLIENT PAUSE`, `WRITE` or `ALL`).
pub fn writes_paused(pool: usize) -> bool {
    let Some(p) = STATE.get(pool) else {
        return false;
    };
    let until = p.until_ms.load(Ordering::Relaxed);
    until != 0 && Instant::now() < epoch() + Duration::from_millis(until)
}
