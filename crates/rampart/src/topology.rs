//! The pools as the workers see them: configuration, servers, the ring, and ejection state.
//!
//! A [`PoolRt`] is shared by every worker thread. Its ring (the continuum) is published through
//! one atomic pointer swap, so a request loads it once without a lock. Ejection follows
//! twemproxy's rules when `auto_eject_hosts` is on: `server_failure_limit` consecutive failures
//! take a server off the ring for `server_retry_timeout`, and its keys move to the others until it
//! comes back. With `auto_eject_hosts` off the ring never changes and a dead server answers errors.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hashkit::{Continuum, ServerPoint};
use rampart_config::{Pool, Server, ServerAddr};

/// Milliseconds since the process started (monotonic).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Seconds since the Unix epoch, as twemproxy reports timestamps.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Shared state of one backend server.
#[derive(Debug)]
pub struct ServerRt {
    /// The server line of the config.
    pub conf: Server,
    /// Human-readable name: the configured name, else the address text.
    pub label: String,
    failures: AtomicU32,
    ejected: AtomicBool,
    retry_at_ms: AtomicU64,
    /// Unix time (µs) of the last ejection, 0 if never (twemproxy's `server_ejected_at`).
    pub ejected_at_us: AtomicU64,
}

impl ServerRt {
    /// Whether the server is currently off the ring.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }
    /// The address to connect to.
    pub fn addr(&self) -> &ServerAddr {
        &self.conf.addr
    }
}

/// One pool at run time.
#[derive(Debug)]
pub struct PoolRt {
    /// Index of the pool in the config (and in the stats tables).
    pub index: usize,
    /// The validated pool config.
    pub conf: Pool,
    /// The servers, in config order.
    pub servers: Vec<ServerRt>,
    points: Vec<ServerPoint>,
    ring: ArcSwap<Continuum>,
    any_ejected: AtomicBool,
    next_retry_ms: AtomicU64,
}

impl PoolRt {
    /// Build the run-time pool and its initial ring (every server live).
    pub fn new(index: usize, conf: Pool) -> Self {
        let servers: Vec<ServerRt> = conf
            .servers
            .iter()
            .map(|s| ServerRt {
                label: s.name.clone().unwrap_or_else(|| s.text.clone()),
                conf: s.clone(),
                failures: AtomicU32::new(0),
                ejected: AtomicBool::new(false),
                retry_at_ms: AtomicU64::new(0),
                ejected_at_us: AtomicU64::new(0),
            })
            .collect();
        let points: Vec<ServerPoint> = conf
            .servers
            .iter()
            .map(|s| ServerPoint {
                identity: hashkit::ring_identity(&s.text, server_port(&s.addr), s.name.as_deref()),
                weight: s.weight,
            })
            .collect();
        let live = vec![true; servers.len()];
        let ring = Continuum::build(conf.distribution, &points, &live);
        PoolRt {
            index,
            conf,
            servers,
            points,
            ring: ArcSwap::from_pointee(ring),
            any_ejected: AtomicBool::new(false),
            next_retry_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// The server that holds `key` (its hash tag part when the pool has one), or `None` when no
    /// server is on the ring.
    #[inline]
    pub fn server_for_key(&self, key: &[u8]) -> Option<usize> {
        if self.any_ejected.load(Ordering::Relaxed) {
            self.revive_due();
        }
        let hashed = match &self.conf.hash_tag {
            Some(tag) => tag.extract(key),
            None => key,
        };
        let h = self.conf.hash.hash(hashed);
        self.ring.load().dispatch(h)
    }

    /// Any server on the ring (for keyless commands that need one shard).
    pub fn any_server(&self) -> Option<usize> {
        self.server_for_key(&crate::rand::next_u64().to_le_bytes())
    }

    /// A request to the server succeeded: its failure streak ends.
    #[inline]
    pub fn server_ok(&self, idx: usize) {
        let s = &self.servers[idx];
        if s.failures.load(Ordering::Relaxed) != 0 {
            s.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connection to the server failed, broke or timed out. Returns true when this failure
    /// ejected the server.
    pub fn server_failed(&self, idx: usize) -> bool {
        if !self.conf.auto_eject_hosts {
            return false;
        }
        let s = &self.servers[idx];
        let n = s.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.conf.server_failure_limit || s.is_ejected() {
            return false;
        }
        s.failures.store(0, Ordering::Relaxed);
        let retry = now_ms() + self.conf.server_retry_timeout.as_millis() as u64;
        s.retry_at_ms.store(retry, Ordering::Relaxed);
        s.ejected_at_us.store(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            Ordering::Relaxed,
        );
        s.ejected.store(true, Ordering::Relaxed);
        self.next_retry_ms.fetch_min(retry, Ordering::Relaxed);
        self.any_ejected.store(true, Ordering::Relaxed);
        self.rebuild();
        tracing::warn!(pool = %self.conf.name, server = %s.label, "server ejected after {n} consecutive failures");
        true
    }

    /// Put back on the ring every ejected server whose retry time has come (twemproxy retries an
    /// ejected server on the first request after `server_retry_timeout`).
    fn revive_due(&self) {
        let now = now_ms();
        if now < self.next_retry_ms.load(Ordering::Relaxed) {
            return;
        }
        let mut next = u64::MAX;
        let mut changed = false;
        for s in &self.servers {
            if !s.is_ejected() {
                continue;
            }
            let at = s.retry_at_ms.load(Ordering::Relaxed);
            if at <= now {
                s.ejected.store(false, Ordering::Relaxed);
                changed = true;
                tracing::info!(pool = %self.conf.name, server = %s.label, "retrying ejected server");
            } else {
                next = next.min(at);
            }
        }
        self.next_retry_ms.store(next, Ordering::Relaxed);
        if next == u64::MAX {
            self.any_ejected.store(false, Ordering::Relaxed);
        }
        if changed {
            self.rebuild();
        }
    }

    fn rebuild(&self) {
        let live: Vec<bool> = self.servers.iter().map(|s| !s.is_ejected()).collect();
        self.ring.store(Arc::new(Continuum::build(
            self.conf.distribution,
            &self.points,
            &live,
        )));
    }

    /// The pool timeout as a duration.
    pub fn timeout(&self) -> Duration {
        self.conf.timeout
    }
}

fn server_port(addr: &ServerAddr) -> u16 {
    match addr {
        ServerAddr::Tcp { port, .. } => *port,
        ServerAddr::Unix(_) => 0,
    }
}
