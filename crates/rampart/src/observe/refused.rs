//! Credentials that a node or a Sentinel refused to rampart's own connections: `AUTH`
//! answered with `WRONGPASS` or `NOAUTH` (a wrong `redis_auth`, `redis_username` or
//! `sentinel_password`), or a `backend_tls` handshake that failed.
//!
//! Every request connection of every worker, each health check and the Sentinel follower
//! meet the same refusal, several times a second, for as long as the file is wrong. One state
//! per pool, peer kind and address makes the log say it once:
//!
//! ```text
//!  accepted ──refusal──► refusing: one warning (pool, node or Sentinel, the reason)
//!     ▲                     │ more refusals: counted; a reminder at most once a minute
//!     │                     │ (the refusals since the last line, the latest reason)
//!     └──── accepted ───────┘ one info line (how many refusals, over how long)
//! ```
//!
//! A reload that changes the credentials leaves connections of the previous generation
//! finishing (a retired connection, a health check under way): each outcome carries the
//! [`Creds`] it was met with, and an outcome with older credentials than the newest seen at
//! that address neither starts nor ends an episode (it is still counted). Without this, a
//! connection still logging in with the old, valid password would end the episode the new,
//! wrong one started, and the log would say the node accepts rampart's credentials again.
//!
//! Every refusal is counted for `/metrics` (`rampart_backend_auth_failures_total`). The
//! reason is the server's or the TLS library's words, never the credential that was sent.
//! At most [`MAX_TRACKED`] addresses are followed; past that an address that accepts is
//! forgotten to make room, and when every followed address is refusing a new one is not
//! followed (nor logged) until one recovers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What kind of server refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// A Redis node of the pool (`redis_auth`, `redis_username`, `backend_tls`).
    Node,
    /// One of the pool's Sentinels (`sentinel_password`, `sentinel_username`,
    /// `backend_tls`).
    Sentinel,
}

impl Peer {
    /// `node` or `sentinel`: the `peer` label of the metric and the word of the log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Node => "node",
            Peer::Sentinel => "sentinel",
        }
    }
}

/// Which credentials an outcome was met with: when the handshake that sent them was built
/// (`built`, increasing over the life of the process) and a digest of what it sends
/// (`digest`: the encoded commands and whether TLS is on; never shown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    /// Order of the handshake's building: a reload builds later ones.
    pub built: u64,
    /// Digest of what the handshake sends.
    pub digest: u64,
}

/// Least time between two warnings about one address that keeps refusing: 60 s.
pub const REMIND: Duration = Duration::from_secs(60);

/// Most addresses followed at once (every node and Sentinel of every pool): 4096.
pub const MAX_TRACKED: usize = 4096;

/// What to log after a refusal or an acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Nothing (still refusing within [`REMIND`] of the last line, or still accepting).
    Quiet,
    /// The address started refusing.
    Started,
    /// Still refusing: `failures` refusals since the last line, `over` the time since it.
    Reminder {
        /// Refusals since the last line, this one included.
        failures: u64,
        /// Time since the last line.
        over: Duration,
    },
    /// Accepting again after `failures` refusals over `over`.
    Recovered {
        /// Refusals since the address started refusing.
        failures: u64,
        /// Time since the first of them.
        over: Duration,
    },
}

/// One followed address.
#[derive(Debug)]
struct State {
    /// Refusals since the start.
    total: u64,
    /// Whether its last outcome was a refusal.
    refusing: bool,
    /// When it started refusing.
    since: Instant,
    /// Refusals since it started refusing.
    episode: u64,
    /// When the last line about it was written.
    line_at: Instant,
    /// Refusals since that line.
    unsaid: u64,
    /// The newest credentials an outcome at this address was met with.
    newest: Creds,
}

impl State {
    /// Whether `creds` are older than, and different from, the newest seen here (an outcome
    /// of a previous generation's connection, which says nothing of the current
    /// credentials); otherwise they become the newest.
    fn superseded(&mut self, creds: Creds) -> bool {
        if creds.built < self.newest.built && creds.digest != self.newest.digest {
            return true;
        }
        if creds.built > self.newest.built {
            self.newest = creds;
        }
        false
    }
}

/// `(pool, peer, address)`.
type Key = (String, Peer, String);

/// A followed address as the caller has it: `(pool, peer, address)`.
pub type At<'a> = (&'a str, Peer, &'a str);

/// The state of every followed address; [`refused`] and [`accepted`] use one of these for
/// the whole process.
#[derive(Debug, Default)]
pub struct Tracker {
    states: HashMap<Key, State>,
    refusing: usize,
}

impl Tracker {
    /// A refusal by `addr` at `now` of `creds`: what to log.
    pub fn refused(&mut self, at: At<'_>, creds: Creds, now: Instant) -> Line {
        let (pool, peer, addr) = at;
        let key = (pool.to_string(), peer, addr.to_string());
        if !self.states.contains_key(&key) && !self.make_room() {
            return Line::Quiet;
        }
        let s = self.states.entry(key).or_insert(State {
            total: 0,
            refusing: false,
            since: now,
            episode: 0,
            line_at: now,
            unsaid: 0,
            newest: creds,
        });
        s.total = s.total.saturating_add(1);
        if s.superseded(creds) {
            return Line::Quiet;
        }
        if !s.refusing {
            s.refusing = true;
            s.since = now;
            s.episode = 1;
            s.line_at = now;
            s.unsaid = 0;
            self.refusing += 1;
            return Line::Started;
        }
        s.episode = s.episode.saturating_add(1);
        s.unsaid = s.unsaid.saturating_add(1);
        let over = now.saturating_duration_since(s.line_at);
        if over < REMIND {
            return Line::Quiet;
        }
        let failures = std::mem::take(&mut s.unsaid);
        s.line_at = now;
        Line::Reminder { failures, over }
    }

    /// A completed handshake with `addr` at `now` with `creds`: what to log.
    pub fn accepted(&mut self, at: At<'_>, creds: Creds, now: Instant) -> Line {
        let (pool, peer, addr) = at;
        let key = (pool.to_string(), peer, addr.to_string());
        let Some(s) = self.states.get_mut(&key) else {
            return Line::Quiet;
        };
        if !s.refusing || s.superseded(creds) {
            return Line::Quiet;
        }
        s.refusing = false;
        self.refusing -= 1;
        Line::Recovered {
            failures: s.episode,
            over: now.saturating_duration_since(s.since),
        }
    }

    /// Whether any followed address is refusing.
    pub fn any_refusing(&self) -> bool {
        self.refusing > 0
    }

    /// Every followed address with its refusals since the start, sorted.
    pub fn totals(&self) -> Vec<(String, Peer, String, u64)> {
        let mut all: Vec<_> = self
            .states
            .iter()
            .map(|((pool, peer, addr), s)| (pool.clone(), *peer, addr.clone(), s.total))
            .collect();
        all.sort();
        all
    }

    /// Room for one more address: forget one that accepts when full. `false` when every
    /// followed address is refusing.
    fn make_room(&mut self) -> bool {
        if self.states.len() < MAX_TRACKED {
            return true;
        }
        let calm = self
            .states
            .iter()
            .find(|(_, s)| !s.refusing)
            .map(|(k, _)| k.clone());
        match calm {
            Some(k) => {
                self.states.remove(&k);
                true
            }
            None => false,
        }
    }
}

static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);
/// How many addresses are refusing: an acceptance takes the lock only when some are.
static REFUSING: AtomicUsize = AtomicUsize::new(0);

fn with<T>(f: impl FnOnce(&mut Tracker) -> T) -> Option<T> {
    let mut guard = TRACKER.lock().ok()?;
    let t = guard.get_or_insert_with(Tracker::default);
    let out = f(t);
    REFUSING.store(t.refusing, Relaxed);
    Some(out)
}

/// `addr` (a node or a Sentinel of `pool`) refused rampart's credentials, `why` in the
/// server's words: counted, and logged when it starts and at most once a minute after.
pub fn refused(pool: &str, peer: Peer, addr: &str, creds: Creds, why: &str) {
    let line =
        with(|t| t.refused((pool, peer, addr), creds, Instant::now())).unwrap_or(Line::Quiet);
    let peer = peer.as_str();
    // A failed TLS handshake is more often rampart refusing the server's certificate (wrong
    // `backend_tls` CA or host name) than the server refusing rampart's: the line says
    // which side the TLS library blamed, not "refused rampart's credentials".
    let tls = why.strip_prefix("TLS handshake failed: ");
    match (line, tls) {
        (Line::Started, Some(why)) => tracing::warn!(
            pool,
            "TLS handshake with {peer} {addr} failed: {why} (counted in rampart_backend_auth_failures_total; reminded at most once a minute)"
        ),
        (Line::Started, None) => tracing::warn!(
            pool,
            "{peer} {addr} refused rampart's credentials: {why} (counted in rampart_backend_auth_failures_total; reminded at most once a minute)"
        ),
        (Line::Reminder { failures, over }, Some(why)) => tracing::warn!(
            pool,
            "TLS handshake with {peer} {addr} still fails: {failures} more failure(s) in the last {}: {why}",
            humantime::format_duration(whole_seconds(over))
        ),
        (Line::Reminder { failures, over }, None) => tracing::warn!(
            pool,
            "{peer} {addr} still refuses rampart's credentials: {failures} more refusal(s) in the last {}: {why}",
            humantime::format_duration(whole_seconds(over))
        ),
        _ => {}
    }
}

/// Whether any followed address is refusing (one atomic load: callers skip building an
/// address for [`accepted`] when none is).
pub fn any() -> bool {
    REFUSING.load(Relaxed) > 0
}

/// A handshake with `addr` completed (`creds` accepted): one info line if it was refusing
/// the same or older credentials.
pub fn accepted(pool: &str, peer: Peer, addr: &str, creds: Creds) {
    if !any() {
        return;
    }
    let line =
        with(|t| t.accepted((pool, peer, addr), creds, Instant::now())).unwrap_or(Line::Quiet);
    if let Line::Recovered { failures, over } = line {
        tracing::info!(
            pool,
            "{} {addr} accepts rampart's credentials again, after {failures} refusal(s) over {}",
            peer.as_str(),
            humantime::format_duration(whole_seconds(over))
        );
    }
}

/// Every followed address with its refusals since the start: `(pool, peer, address,
/// refusals)`, sorted.
pub fn totals() -> Vec<(String, Peer, String, u64)> {
    with(|t| t.totals()).unwrap_or_default()
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn creds(built: u64, digest: u64) -> Creds {
        Creds { built, digest }
    }

    /// The credentials every outcome of these tests is met with, unless a test says.
    const C: Creds = creds(1, 1);

    #[test]
    fn one_warning_then_a_reminder_a_minute_then_one_recovery() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            t.refused(("p", Peer::Sentinel, "s:1"), C, at(0)),
            Line::Started
        );
        assert!(t.any_refusing());
        // Three a second for a minute: nothing more until the minute is up.
        let mut said = Vec::new();
        for i in 1..=180 {
            let line = t.refused(("p", Peer::Sentinel, "s:1"), C, at(i * 333));
            if line != Line::Quiet {
                said.push(line);
            }
        }
        assert!(
            said.is_empty(),
            "no reminder within the first minute: {said:?}"
        );
        let line = t.refused(("p", Peer::Sentinel, "s:1"), C, at(60_000));
        assert_eq!(
            line,
            Line::Reminder {
                failures: 181,
                over: Duration::from_secs(60)
            }
        );
        // Another address is followed on its own.
        assert_eq!(
            t.refused(("p", Peer::Node, "s:1"), C, at(60_001)),
            Line::Started
        );
        assert_eq!(
            t.accepted(("p", Peer::Sentinel, "s:1"), C, at(61_000)),
            Line::Recovered {
                failures: 182,
                over: Duration::from_secs(61)
            }
        );
        assert_eq!(
            t.accepted(("p", Peer::Sentinel, "s:1"), C, at(62_000)),
            Line::Quiet
        );
        assert_eq!(
            t.totals(),
            vec![
                ("p".to_string(), Peer::Node, "s:1".to_string(), 1),
                ("p".to_string(), Peer::Sentinel, "s:1".to_string(), 182),
            ]
        );
        // Refusing again starts a new episode with its own warning.
        assert_eq!(
            t.refused(("p", Peer::Sentinel, "s:1"), C, at(63_000)),
            Line::Started
        );
    }

    /// A reload from the right password to a wrong one: a connection of the previous
    /// generation still logging in with the right one does not end the episode the wrong
    /// one started; the reverse reload ends it, and the old, wrong password's late refusals
    /// start no new one. The same credentials built again (a reload that changed something
    /// else) are not older credentials.
    #[test]
    fn outcomes_of_superseded_credentials_neither_start_nor_end_an_episode() {
        let mut t = Tracker::default();
        let now = Instant::now();
        let right = creds(1, 10);
        let wrong = creds(2, 20);
        assert_eq!(
            t.refused(("p", Peer::Node, "n:1"), wrong, now),
            Line::Started
        );
        assert_eq!(
            t.accepted(("p", Peer::Node, "n:1"), right, now),
            Line::Quiet
        );
        assert!(t.any_refusing(), "still refusing the current credentials");
        let fixed = creds(3, 10);
        assert!(matches!(
            t.accepted(("p", Peer::Node, "n:1"), fixed, now),
            Line::Recovered { failures: 1, .. }
        ));
        assert_eq!(t.refused(("p", Peer::Node, "n:1"), wrong, now), Line::Quiet);
        assert!(!t.any_refusing());
        assert_eq!(t.totals()[0].3, 2, "a superseded refusal is still counted");
        // Built again with the same content: its refusals are the current ones.
        let rebuilt = creds(4, 10);
        assert_eq!(
            t.refused(("p", Peer::Node, "n:1"), rebuilt, now),
            Line::Started
        );
        assert!(matches!(
            t.accepted(("p", Peer::Node, "n:1"), fixed, now),
            Line::Recovered { failures: 1, .. }
        ));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_refusing_addresses() {
        let mut t = Tracker::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED {
            t.refused(("p", Peer::Node, &format!("n:{i}")), C, now);
        }
        assert_eq!(t.refused(("p", Peer::Node, "new:1"), C, now), Line::Quiet);
        assert_eq!(t.totals().len(), MAX_TRACKED);
        t.accepted(("p", Peer::Node, "n:7"), C, now);
        assert_eq!(t.refused(("p", Peer::Node, "new:1"), C, now), Line::Started);
        assert_eq!(t.totals().len(), MAX_TRACKED);
        assert!(!t.totals().iter().any(|(_, _, a, _)| a == "n:7"));
    }
}
