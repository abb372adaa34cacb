//! `CLIENT PAUSE` / `CLIENT UNPAUSE`, per pool and process-wide (every worker's sessions of
//! that pool). While a pool is paused its sessions hold their next command that the pause
//! covers (every command with `ALL`, commands that may change data with `WRITE`) and every
//! command after it, in order, until the pause ends or `CLIENT UNPAUSE`; a held session stops
//! reading, so what it holds is bounded by its input limit. `CLIENT UNPAUSE` itself is never
//! held, so an operator can always end a pause.
//!
//! A session checks its pool with one relaxed atomic load per command ([`holds`]). The state
//! lives in `topology::paused`, where the spool replay reads it too.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rampart_commands::{Command, Flags};
use tokio::sync::Notify;

use crate::topology::paused::{epoch, STATE};

fn unpaused() -> &'static Notify {
    static N: OnceLock<Notify> = OnceLock::new();
    N.get_or_init(Notify::new)
}

/// Pause pool slot `pool` for `timeout` from now: every command when `all`, else commands
/// that may change data. As in Redis, a pause already running keeps the later end and the
/// stricter kind.
pub fn pause(pool: usize, timeout: Duration, all: bool) {
    let Some(p) = STATE.get(pool) else { return };
    let until = (epoch().elapsed() + timeout).as_millis().max(1) as u64;
    if all {
        p.all.store(true, Ordering::Relaxed);
    }
    p.until_ms.fetch_max(until, Ordering::AcqRel);
}

/// End the pause of pool slot `pool` now and wake its held sessions.
pub fn unpause(pool: usize) {
    if let Some(p) = STATE.get(pool) {
        p.until_ms.store(0, Ordering::Release);
        p.all.store(false, Ordering::Relaxed);
    }
    unpaused().notify_waiters();
}

/// Whether `cmd` (unknown commands are `None`) from a session of pool slot `pool` waits now,
/// and until when.
#[inline]
pub fn holds(pool: usize, cmd: Option<&Command>, argv: &[&[u8]]) -> Option<Instant> {
    let p = STATE.get(pool)?;
    let until = p.until_ms.load(Ordering::Relaxed);
    if until == 0 {
        return None;
    }
    let end = epoch() + Duration::from_millis(until);
    if Instant::now() >= end {
        // Over: the first session to see it clears it (a newer pause keeps its later end).
        let _ = p
            .until_ms
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
        p.all.store(false, Ordering::Relaxed);
        return None;
    }
    if is_unpause(argv) {
        return None;
    }
    (p.all.load(Ordering::Relaxed) || may_write(cmd)).then_some(end)
}

/// Whether pool slot `pool` may be paused now (one relaxed load; [`holds`] tells more).
#[inline]
pub fn active(pool: usize) -> bool {
    STATE
        .get(pool)
        .is_some_and(|p| p.until_ms.load(Ordering::Relaxed) != 0)
}

/// Wait until `end`, or until pool slot `pool` is unpaused (the session then checks again).
pub async fn wait(pool: usize, end: Instant) {
    let woken = unpaused().notified();
    // An unpause between the check and now is not missed: the wake-up registered above.
    if !active(pool) {
        return;
    }
    tokio::select! {
        _ = woken => {}
        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(end)) => {}
    }
}

fn is_unpause(argv: &[&[u8]]) -> bool {
    matches!(argv, [c, s, ..] if c.eq_ignore_ascii_case(b"client") && s.eq_ignore_ascii_case(b"unpause"))
}

/// Commands a `WRITE` pause holds: those that may change data, and, as Redis, those that
/// may be propagated (scripts, functions, PUBLISH, PFCOUNT). Unknown commands are not held:
/// they are refused anyway.
fn may_write(cmd: Option<&Command>) -> bool {
    let Some(c) = cmd else { return false };
    c.flags.contains(Flags::WRITE)
        || matches!(
            c.name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish" | "pfcount"
        )
}
