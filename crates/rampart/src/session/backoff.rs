//! Failed `AUTH` back-off, per client address, process-wide.
//!
//! Every failed `AUTH` (or `HELLO ... AUTH`) is counted ([`failures`]) and remembered
//! against the client's IP address. From the [`THRESHOLD`]th failure within [`WINDOW`] on,
//! each further `AUTH` from that address waits before it is even checked: [`FIRST_DELAY`],
//! doubling with each failure, at most [`MAX_DELAY`]. The session holds the `AUTH` unread
//! meanwhile (so a pipeline of guesses waits once per guess) and other sessions, from other
//! addresses or of other pools, run as before. An address with no failure for [`WINDOW`] is
//! forgotten. The table holds at most [`MAX_ADDRESSES`] addresses; a new one beyond that
//! evicts the address whose last failure is oldest (counted: [`evicted`]).
//!
//! Clients on a unix socket have no address and are not slowed. The table is behind one
//! lock, taken only by `AUTH` (never by other commands).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures within [`WINDOW`] after which `AUTH` from the address is slowed.
pub const THRESHOLD: u32 = 5;
/// How long a failure is remembered (since the address' last failure).
pub const WINDOW: Duration = Duration::from_secs(60);
/// The wait before the first slowed `AUTH`; it doubles with each further failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 10_000;

struct Entry {
    failures: u32,
    last: Instant,
}

static TABLE: Mutex<Option<HashMap<IpAddr, Entry>>> = Mutex::new(None);
static FAILURES: AtomicU64 = AtomicU64::new(0);
static EVICTED: AtomicU64 = AtomicU64::new(0);
static DELAYED: AtomicU64 = AtomicU64::new(0);

/// The IP address of a client whose address reads `ip:port` (`None` for a unix socket).
pub fn ip_of(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// How long an `AUTH` from `ip` waits before it is checked now (`None`: not at all).
pub fn delay(ip: Option<IpAddr>) -> Option<Duration> {
    let ip = ip?;
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = guard.as_mut()?;
    let e = table.get(&ip)?;
    if e.last.elapsed() > WINDOW {
        table.remove(&ip);
        return None;
    }
    if e.failures < THRESHOLD {
        return None;
    }
    DELAYED.fetch_add(1, Ordering::Relaxed);
    Some(delay_after(e.failures))
}

/// The wait after `failures` failures (at least [`THRESHOLD`]).
pub fn delay_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(THRESHOLD).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Counts a failed `AUTH` from `ip` (every failure is counted; only addresses are
/// remembered).
pub fn failed(ip: Option<IpAddr>) {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    let Some(ip) = ip else { return };
    let now = Instant::now();
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = guard.get_or_insert_with(HashMap::new);
    if !table.contains_key(&ip) && table.len() >= MAX_ADDRESSES {
        let oldest = table.iter().min_by_key(|(_, e)| e.last).map(|(a, _)| *a);
        if let Some(a) = oldest {
            table.remove(&a);
            EVICTED.fetch_add(1, Ordering::Relaxed);
        }
    }
    let e = table.entry(ip).or_insert(Entry {
        failures: 0,
        last: now,
    });
    if now.duration_since(e.last) > WINDOW {
        e.failures = 0;
    }
    e.failures = e.failures.saturating_add(1);
    e.last = now;
}

/// Failed `AUTH` commands since start (`rampart_auth_failures_total`, INFO `auth_failures`).
pub fn failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// `AUTH` commands held back by the back-off since start.
pub fn delayed() -> u64 {
    DELAYED.load(Ordering::Relaxed)
}

/// Addresses evicted from the full table since start.
pub fn evicted() -> u64 {
    EVICTED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        assert_eq!(delay_after(5), Duration::from_millis(100));
        assert_eq!(delay_after(6), Duration::from_millis(200));
        assert_eq!(delay_after(8), Duration::from_millis(800));
        assert_eq!(delay_after(12), MAX_DELAY);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn an_address_is_slowed_after_the_threshold_and_others_are_not() {
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..THRESHOLD - 1 {
            failed(Some(a));
        }
        assert_eq!(delay(Some(a)), None);
        failed(Some(a));
        assert_eq!(delay(Some(a)), Some(FIRST_DELAY));
        failed(Some(a));
        assert_eq!(delay(Some(a)), Some(FIRST_DELAY * 2));
        assert_eq!(delay(Some(b)), None);
        assert_eq!(delay(None), None);
        assert_eq!(ip_of("[::1]:6379"), Some("::1".parse().expect("ip")));
        assert_eq!(ip_of("/tmp/r.sock:0"), None);
    }
}
