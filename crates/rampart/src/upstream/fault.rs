//! Faults the operator injects into live traffic (`POST /api/faults`), to rehearse failures:
//! a delay, an error reply, a black hole (no reply until the request's deadline) or a reset
//! of the client's connection, for the requests of one pool, optionally only one shard, node
//! and command, for a share of them, for a bounded time.
//!
//! ```text
//! route::send ── node chosen ── any fault? (one relaxed load) ── no ──► backend, as always
//!                                   │ yes: the first active fault that matches
//!                                   ├─ delay      ── sent now; its reply waits `delay` in a
//!                                   │                pen of its own, then goes to its slot
//!                                   ├─ error      ── `-<text>`, nothing sent
//!                                   ├─ blackhole  ── nothing sent; at the deadline the
//!                                   │                timeout error a silent server gives
//!                                   └─ reset      ── nothing sent; the client is closed
//! ```
//!
//! The list is process-wide, published with one atomic swap, and bounded ([`MAX_FAULTS`],
//! each at most [`MAX_DURATION`]). Every fault ends by itself: it stops matching at its end
//! and a timer removes it. A delayed reply keeps the server's order (the request is sent at
//! once, so a client still reads its own writes) and the pen holds one reply for at most the
//! request's deadline plus the delay.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant as StdInstant};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::topology::node::NodeRt;
use crate::upstream::error::{ConnFailure, Failure};
use crate::upstream::sink::Sink;

/// Most faults active at once.
pub const MAX_FAULTS: usize = 64;
/// Longest a fault may last: 1 hour.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest delay a fault may add: 60 s.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Longest error text, bytes.
pub const MAX_ERROR_LEN: usize = 512;

/// What a fault does to a request it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The reply reaches the client later by a delay drawn per request (the request is sent
    /// at once).
    Delay(Delay),
    /// The client gets `-<text>` and nothing is sent.
    Error(String),
    /// Nothing is sent and nothing answers until the request's deadline (the pool
    /// `timeout`), when the client gets the error a server that went silent gives.
    Blackhole,
    /// Nothing is sent and the client's connection is closed.
    Reset,
}

impl Kind {
    /// `delay`, `error`, `blackhole` or `reset`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Delay(_) => "delay",
            Kind::Error(_) => "error",
            Kind::Blackhole => "blackhole",
            Kind::Reset => "reset",
        }
    }
}

/// How long a delay fault holds each reply: a fixed time or a draw from a distribution.
/// Every value is at most [`MAX_DELAY`]; a normal or exponential draw is also cut at the
/// request's deadline (its tail is unbounded, and a reply held past the deadline would only
/// mimic a black hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delay {
    /// This long, every time.
    Fixed(Duration),
    /// `base` plus a part of `jitter` drawn uniformly: between `base` and `base + jitter`.
    Uniform {
        /// The least delay.
        base: Duration,
        /// Up to this much more.
        jitter: Duration,
    },
    /// Normal (Gaussian) around `mean` with standard deviation `stddev`; a negative draw
    /// is 0.
    Normal {
        /// The mean and median.
        mean: Duration,
        /// The standard deviation.
        stddev: Duration,
    },
    /// Exponential with this mean (median `mean * ln 2`, 99th percentile `mean * ln 100`):
    /// most replies a little late, a few very late, as queueing behind other work makes them.
    Exponential {
        /// The mean.
        mean: Duration,
    },
}

impl Delay {
    /// `fixed`, `uniform`, `normal` or `exponential`.
    pub fn name(&self) -> &'static str {
        match self {
            Delay::Fixed(_) => "fixed",
            Delay::Uniform { .. } => "uniform",
            Delay::Normal { .. } => "normal",
            Delay::Exponential { .. } => "exponential",
        }
    }

    /// The fixed delay, the least of a uniform one, or the mean of the others.
    pub fn base(&self) -> Duration {
        match *self {
            Delay::Fixed(d) => d,
            Delay::Uniform { base, .. } => base,
            Delay::Normal { mean, .. } | Delay::Exponential { mean } => mean,
        }
    }

    /// Whether a draw is cut at the request's deadline (the unbounded distributions).
    fn capped(&self) -> bool {
        matches!(self, Delay::Normal { .. } | Delay::Exponential { .. })
    }

    /// Every parameter within `1 ms ..= MAX_DELAY` (a uniform jitter may be 0).
    fn valid(&self) -> bool {
        let ok = |d: Duration| !d.is_zero() && d <= MAX_DELAY;
        match *self {
            Delay::Fixed(d) | Delay::Exponential { mean: d } => ok(d),
            Delay::Uniform { base, jitter } => ok(base) && jitter <= MAX_DELAY,
            Delay::Normal { mean, stddev } => ok(mean) && ok(stddev),
        }
    }

    /// One delay drawn from the distribution, at most [`MAX_DELAY`].
    pub fn draw(&self) -> Duration {
        let secs = match *self {
            Delay::Fixed(d) => return d,
            Delay::Uniform { base, jitter } => {
                let extra = crate::rand::below(jitter.as_micros() as u64 + 1);
                return base + Duration::from_micros(extra);
            }
            Delay::Normal { mean, stddev } => {
                // Box-Muller: two uniform draws make one standard normal one.
                let (u1, u2) = (crate::rand::unit(), crate::rand::unit());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                mean.as_secs_f64() + stddev.as_secs_f64() * z
            }
            Delay::Exponential { mean } => -mean.as_secs_f64() * crate::rand::unit().ln(),
        };
        Duration::from_secs_f64(secs.clamp(0.0, MAX_DELAY.as_secs_f64()))
    }
}

/// What a new fault applies to and does.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The pool's name.
    pub pool: String,
    /// Only this shard (its name); all when `None`.
    pub shard: Option<String>,
    /// Only this node (its address or label); all when `None`.
    pub node: Option<String>,
    /// Only this command (any case); all when `None`.
    pub command: Option<String>,
    /// What it does.
    pub kind: Kind,
    /// Share of the matching requests it applies to, in `(0, 1]`.
    pub share: f64,
    /// How long it lasts, at most [`MAX_DURATION`].
    pub duration: Duration,
}

/// Why a fault was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    /// `duration_s` is 0 or over the cap.
    #[error("duration_s must be between 1 and {} (1 hour)", MAX_DURATION.as_secs())]
    Duration,
    /// `share` out of `(0, 1]`.
    #[error("share must be greater than 0 and at most 1")]
    Share,
    /// A delay of 0 or over the cap.
    #[error(
        "delay_ms and stddev_ms must be between 1 and {0}, jitter_ms at most {0}",
        MAX_DELAY.as_millis()
    )]
    Delay,
    /// An error text that is empty, too long or has a line break.
    #[error("error must be 1 to {MAX_ERROR_LEN} bytes on one line, e.g. \"ERR injected\"")]
    ErrorText,
    /// [`MAX_FAULTS`] are active.
    #[error("{MAX_FAULTS} faults are active already; delete one first")]
    TooMany,
}

/// One active fault.
#[derive(Debug)]
pub struct Fault {
    /// Unique for the process life.
    pub id: u64,
    /// What it applies to and does.
    pub spec: Spec,
    /// Unix time (s) it started.
    pub started_unix: u64,
    until: StdInstant,
    hits: AtomicU64,
}

impl Fault {
    /// Requests it applied to so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }

    /// Time left until it ends by itself.
    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(StdInstant::now())
    }

    fn matches(&self, pool: &str, shard: &str, node: &NodeRt, request: &[u8]) -> bool {
        let s = &self.spec;
        s.pool == pool
            && s.shard.as_deref().is_none_or(|x| x == shard)
            && s.node
                .as_deref()
                .is_none_or(|x| x == node.label || x == node.addr.to_string())
            && s.command
                .as_deref()
                .is_none_or(|c| command_name(request).eq_ignore_ascii_case(c.as_bytes()))
    }
}

/// Faults in the list (active, or ended and not yet removed): 0 is the data path's fast exit.
static COUNT: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Serialises changes of the list (readers never take it).
static EDIT: Mutex<()> = Mutex::new(());

fn list() -> &'static ArcSwap<Vec<Arc<Fault>>> {
    static LIST: OnceLock<ArcSwap<Vec<Arc<Fault>>>> = OnceLock::new();
    LIST.get_or_init(|| ArcSwap::from_pointee(Vec::new()))
}

/// Whether any fault may be active: one relaxed atomic load, the only cost on the data path
/// while none is.
#[inline]
pub fn any() -> bool {
    COUNT.load(Relaxed) != 0
}

/// Add a fault; it ends by itself after its duration (call [`expire_later`] from a runtime
/// to have it removed then; it stops matching anyway).
///
/// # Errors
/// A duration, share, delay or error text out of bounds, or [`MAX_FAULTS`] active already.
pub fn add(spec: Spec) -> Result<Arc<Fault>, FaultError> {
    if spec.duration.is_zero() || spec.duration > MAX_DURATION {
        return Err(FaultError::Duration);
    }
    if !(spec.share > 0.0 && spec.share <= 1.0) {
        return Err(FaultError::Share);
    }
    match &spec.kind {
        Kind::Delay(d) if !d.valid() => return Err(FaultError::Delay),
        Kind::Error(t)
            if t.is_empty()
                || t.len() > MAX_ERROR_LEN
                || t.bytes().any(|b| b == b'\r' || b == b'\n') =>
        {
            return Err(FaultError::ErrorText)
        }
        _ => {}
    }
    let _edit = EDIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = StdInstant::now();
    let mut faults: Vec<Arc<Fault>> = list()
        .load()
        .iter()
        .filter(|f| f.until > now)
        .cloned()
        .collect();
    if faults.len() >= MAX_FAULTS {
        return Err(FaultError::TooMany);
    }
    let fault = Arc::new(Fault {
        id: NEXT_ID.fetch_add(1, Relaxed),
        started_unix: crate::clock::unix_secs(),
        until: now + spec.duration,
        hits: AtomicU64::new(0),
        spec,
    });
    faults.push(Arc::clone(&fault));
    publish(faults);
    Ok(fault)
}

/// Remove fault `id` (and every fault that has ended); false when it was not active.
pub fn remove(id: u64) -> bool {
    let _edit = EDIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = StdInstant::now();
    let old = list().load_full();
    let found = old.iter().any(|f| f.id == id && f.until > now);
    let keep: Vec<Arc<Fault>> = old
        .iter()
        .filter(|f| f.id != id && f.until > now)
        .cloned()
        .collect();
    publish(keep);
    found
}

fn publish(faults: Vec<Arc<Fault>>) {
    COUNT.store(faults.len(), Relaxed);
    list().store(Arc::new(faults));
}

/// The faults active now, oldest first.
pub fn active() -> Vec<Arc<Fault>> {
    let now = StdInstant::now();
    list()
        .load()
        .iter()
        .filter(|f| f.until > now)
        .cloned()
        .collect()
}

/// Remove `fault` when its time is up (spawned on the caller's runtime).
pub fn expire_later(fault: &Fault) {
    let (id, left) = (fault.id, fault.remaining());
    tokio::spawn(async move {
        tokio::time::sleep(left).await;
        if remove(id) {
            tracing::info!(fault = id, "injected fault ended");
        }
    });
}

/// The first active fault that applies to `request` (its RESP bytes) going to `node` of
/// `shard` in `pool`, drawn by its share; counts the hit.
pub fn find(pool: &str, shard: &str, node: &NodeRt, request: &[u8]) -> Option<Arc<Fault>> {
    let now = StdInstant::now();
    let faults = list().load();
    let f = faults
        .iter()
        .find(|f| f.until > now && f.matches(pool, shard, node, request))?;
    if f.spec.share < 1.0 && crate::rand::below(1_000_000) as f64 >= f.spec.share * 1e6 {
        return None;
    }
    f.hits.fetch_add(1, Relaxed);
    Some(Arc::clone(f))
}

/// The command name of a request: its first bulk string (or inline word).
fn command_name(request: &[u8]) -> &[u8] {
    let word = |b: &[u8]| -> usize {
        b.iter()
            .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
            .unwrap_or(b.len())
    };
    if request.first() != Some(&b'*') {
        return &request[..word(request)];
    }
    // *N\r\n$L\r\nNAME\r\n
    let mut lines = request.split(|&c| c == b'\n');
    let _count = lines.next();
    let _len = lines.next();
    lines
        .next()
        .map_or(&[], |l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// Apply `fault` to a request about to go to `node`: `Some(sink)` to send it on with that
/// sink (a delay), `None` when the fault answered (or will answer) it instead.
pub fn apply(fault: &Fault, sink: Sink, deadline: Instant, node: &NodeRt) -> Option<Sink> {
    match &fault.spec.kind {
        Kind::Delay(d) => Some(delayed(sink, d.draw(), d.capped(), deadline)),
        Kind::Error(text) => {
            sink.deliver(format!("-{text}\r\n").as_bytes());
            None
        }
        Kind::Blackhole => {
            let failure = Failure::Connection {
                node: node.label.clone(),
                pool: fault.spec.pool.clone(),
                kind: ConnFailure::Timeout,
                sent: true,
            };
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until(deadline).await;
                sink.fail(failure);
            });
            None
        }
        Kind::Reset => {
            sink.pending.reset();
            None
        }
    }
}

/// A sink whose reply waits `delay` after it arrives (when `capped`, no later than the
/// deadline), then goes to `sink`. The reply is gathered in a reply queue of its own (one
/// slot); if none arrives by the deadline (and a second more), the request fails as timed
/// out.
fn delayed(sink: Sink, delay: Duration, capped: bool, deadline: Instant) -> Sink {
    let (pen, inner) = sink.side();
    tokio::task::spawn_local(async move {
        let arrived = tokio::time::timeout_at(deadline + Duration::from_secs(1), async {
            while pen.outstanding() > 0 {
                pen.wake.notified().await;
            }
        })
        .await;
        if arrived.is_err() {
            return sink.fail(Failure::Ended("no reply arrived for a delayed request"));
        }
        let until = Instant::now() + delay;
        tokio::time::sleep_until(if capped { until.min(deadline) } else { until }).await;
        let reply = pen.out.borrow_mut().split();
        sink.deliver(&reply);
    });
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_name_is_the_first_word() {
        assert_eq!(command_name(b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n"), b"get");
        assert_eq!(command_name(b"GET k\r\n"), b"GET");
        assert_eq!(command_name(b"*1\r\n$4\r\nPING\r\n"), b"PING");
        assert_eq!(command_name(b""), b"");
        assert_eq!(command_name(b"*1\r\n"), b"");
    }

    fn spec(kind: Kind, secs: u64) -> Spec {
        Spec {
            pool: "fault-test".into(),
            shard: None,
            node: None,
            command: Some("GET".into()),
            kind,
            share: 1.0,
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(add(spec(Kind::Reset, 0)).err(), Some(FaultError::Duration));
        assert_eq!(
            add(spec(Kind::Reset, 3601)).err(),
            Some(FaultError::Duration)
        );
        assert_eq!(
            add(spec(
                Kind::Delay(Delay::Normal {
                    mean: Duration::from_millis(5),
                    stddev: Duration::ZERO
                }),
                1
            ))
            .err(),
            Some(FaultError::Delay)
        );
        assert_eq!(
            add(spec(Kind::Error("a\r\nb".into()), 1)).err(),
            Some(FaultError::ErrorText)
        );
        let mut s = spec(Kind::Blackhole, 1);
        s.share = 0.0;
        assert_eq!(add(s).err(), Some(FaultError::Share));
    }

    /// The `q` quantile of `n` draws of `d`, in milliseconds.
    fn quantiles(d: Delay, n: usize, qs: &[f64]) -> Vec<f64> {
        let mut v: Vec<f64> = (0..n).map(|_| d.draw().as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        qs.iter()
            .map(|q| v[((n - 1) as f64 * q).round() as usize])
            .collect()
    }

    #[test]
    fn draws_follow_their_distribution() {
        let ms = Duration::from_millis;
        let close = |got: &[f64], want: &[f64]| {
            got.iter()
                .zip(want)
                .all(|(g, w)| (g - w).abs() <= 0.05 * w + 0.5)
        };
        let normal = Delay::Normal {
            mean: ms(100),
            stddev: ms(20),
        };
        // Quantiles 0.1, 0.5, 0.9 of N(100, 20): 100 -/+ 1.2816 * 20.
        let got = quantiles(normal, 20_000, &[0.1, 0.5, 0.9]);
        assert!(close(&got, &[74.4, 100.0, 125.6]), "normal: {got:?}");
        let exp = Delay::Exponential { mean: ms(100) };
        // -100 ln(1 - q).
        let got = quantiles(exp, 20_000, &[0.5, 0.9, 0.99]);
        assert!(close(&got, &[69.3, 230.3, 460.5]), "exponential: {got:?}");
        let uniform = Delay::Uniform {
            base: ms(50),
            jitter: ms(100),
        };
        let got = quantiles(uniform, 20_000, &[0.0, 0.5, 1.0]);
        assert!(close(&got, &[50.0, 100.0, 150.0]), "uniform: {got:?}");
        assert_eq!(Delay::Fixed(ms(7)).draw(), ms(7));
        // The tail stops at the cap.
        let far = Delay::Exponential { mean: MAX_DELAY };
        assert!((0..1000).all(|_| far.draw() <= MAX_DELAY));
    }

    #[test]
    fn a_fault_is_listed_until_removed() {
        let f = add(spec(Kind::Error("ERR listed".into()), 60)).expect("valid");
        assert!(any());
        assert!(active().iter().any(|x| x.id == f.id));
        assert!(remove(f.id));
        assert!(!active().iter().any(|x| x.id == f.id));
        assert!(!remove(f.id), "removed twice");
    }
}
