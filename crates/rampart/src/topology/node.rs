//! One redis-server a pool can route to, with the state every worker reads to route.
//!
//! A node's health, role and replication state are written by the control tasks (active health
//! checks, Sentinel following) and by passive failure counting on live traffic; workers read
//! them with relaxed atomic loads. Closing every connection to a node (a switch away from an old
//! primary, a node leaving the topology) is a generation bump the workers' connections watch.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

use rampart_config::ServerAddr;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::observe::stats::{Cell, ServerStat};

/// What a node says it is (ROLE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Not known yet.
    Unknown = 0,
    /// `role:master`.
    Primary = 1,
    /// `role:slave`.
    Replica = 2,
}

/// A node's statistics as written by one worker.
pub type NodeCells = Vec<Cell>;

/// One backend node.
pub struct NodeRt {
    /// Unique for the process life.
    pub id: u64,
    /// Where it listens (host names are resolved on every connect).
    pub addr: ServerAddr,
    /// Name in stats and errors: the configured server name, else the address as written.
    pub label: String,
    /// Zone, when configured.
    pub zone: Option<String>,
    /// Lower is preferred among equals.
    pub priority: u32,
    /// The pool and shard it belongs to (for events and logs).
    pub place: (String, String),
    up: AtomicBool,
    maintenance: AtomicBool,
    role: AtomicU8,
    replica_ok: AtomicBool,
    lag_ms: AtomicU64,
    check_us: AtomicU64,
    last_check_ms: AtomicU64,
    eject_until_ms: AtomicU64,
    ejections: AtomicU32,
    passive_failures: AtomicU32,
    /// Unix time (µs) of the last ejection (twemproxy's `server_ejected_at`).
    pub ejected_at_us: AtomicU64,
    last_error: Mutex<String>,
    close_gen: watch::Sender<u64>,
    /// Statistics, one row per worker (each row written only by its worker).
    pub cells: Vec<NodeCells>,
    /// Replies to clients of requests this node served alone (calls, error replies, latency
    /// as the client saw it), one per worker.
    pub replies: Vec<crate::observe::stats::CommandCells>,
}

impl NodeRt {
    /// A node; `checked` nodes start down and must pass health checks, others start up.
    pub fn new(
        addr: ServerAddr,
        label: String,
        (zone, priority): (Option<String>, u32),
        place: (String, String),
        workers: usize,
        checked: bool,
    ) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NodeRt {
            id: NEXT.fetch_add(1, Relaxed),
            addr,
            label,
            zone,
            priority,
            place,
            up: AtomicBool::new(!checked),
            maintenance: AtomicBool::new(false),
            role: AtomicU8::new(Role::Unknown as u8),
            replica_ok: AtomicBool::new(!checked),
            lag_ms: AtomicU64::new(0),
            check_us: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            eject_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_at_us: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            close_gen: watch::channel(0).0,
            cells: (0..workers)
                .map(|_| (0..ServerStat::COUNT).map(|_| Cell::default()).collect())
                .collect(),
            replies: (0..workers).map(|_| Default::default()).collect(),
        }
    }

    /// The cell of statistic `s` for worker `w`.
    #[inline]
    pub fn cell(&self, w: usize, s: ServerStat) -> &Cell {
        &self.cells[w][s as usize]
    }

    /// Sum of statistic `s` over the workers.
    pub fn sum(&self, s: ServerStat) -> i64 {
        self.cells.iter().map(|c| c[s as usize].get()).sum()
    }

    /// Passes health checks and is not ejected.
    #[inline]
    pub fn is_routable(&self) -> bool {
        self.up.load(Relaxed) && !self.is_ejected() && !self.maintenance.load(Relaxed)
    }

    /// In maintenance: no new requests; the ones in flight finish.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(Relaxed)
    }

    /// Put the node into maintenance (drain) or take it out.
    pub fn set_maintenance(&self, on: bool) {
        if self.maintenance.swap(on, Relaxed) != on {
            self.event(
                crate::observe::events::Kind::Maintenance,
                if on {
                    "maintenance: drained, no new requests"
                } else {
                    "maintenance over"
                },
            );
        }
    }

    /// Record an event about this node.
    pub fn event(&self, kind: crate::observe::events::Kind, message: impl Into<String>) {
        crate::observe::events::record(kind, &self.place.0, &self.place.1, &self.label, message);
    }

    /// Taken out by passive failures and not yet back.
    pub fn is_ejected(&self) -> bool {
        let until = self.eject_until_ms.load(Relaxed);
        until != 0 && now_ms() < until
    }

    /// Health state from active checks.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Role from the last check.
    pub fn role(&self) -> Role {
        match self.role.load(Relaxed) {
            1 => Role::Primary,
            2 => Role::Replica,
            _ => Role::Unknown,
        }
    }

    /// A replica that may serve reads: link up, not loading, lag within the limit.
    pub fn replica_ok(&self) -> bool {
        self.replica_ok.load(Relaxed)
    }

    /// Replication lag seen at the last check.
    pub fn lag_ms(&self) -> u64 {
        self.lag_ms.load(Relaxed)
    }

    /// Latency of the last health check.
    pub fn check_us(&self) -> u64 {
        self.check_us.load(Relaxed)
    }

    /// When the last check finished (ms since start; 0 = never).
    pub fn last_check_ms(&self) -> u64 {
        self.last_check_ms.load(Relaxed)
    }

    /// The reason of the last failure.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// How many times passive failures ejected it.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    /// Record a health check result.
    pub fn set_checked(&self, role: Role, replica_ok: bool, lag_ms: u64, took_us: u64) {
        self.role.store(role as u8, Relaxed);
        self.replica_ok.store(replica_ok, Relaxed);
        self.lag_ms.store(lag_ms, Relaxed);
        self.check_us.store(took_us, Relaxed);
        self.last_check_ms.store(now_ms(), Relaxed);
    }

    /// The node refused a write as a replica (READONLY): no writes until a check or Sentinel
    /// says otherwise.
    pub fn demote(&self) {
        self.role.store(Role::Replica as u8, Relaxed);
    }

    /// Record a failure reason.
    pub fn set_error(&self, why: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            why.clone_into(&mut e);
        }
        self.last_check_ms.store(now_ms(), Relaxed);
    }

    /// Change the health state; returns true when it changed.
    pub fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Relaxed);
        if was && !up {
            self.close_all();
        }
        if up {
            self.passive_failures.store(0, Relaxed);
        }
        was != up
    }

    /// A request on live traffic succeeded.
    #[inline]
    pub fn passive_ok(&self) {
        if self.passive_failures.load(Relaxed) != 0 {
            self.passive_failures.store(0, Relaxed);
        }
    }

    /// A connection failed or a request timed out on live traffic. After `limit` in a row the
    /// node leaves rotation for `base` doubled per earlier ejection (capped, jittered) and comes
    /// back only through active checks. Returns true when this failure ejected it.
    pub fn passive_failure(
        &self,
        limit: u32,
        base: std::time::Duration,
        cap: std::time::Duration,
    ) -> bool {
        let n = self.passive_failures.fetch_add(1, Relaxed) + 1;
        if limit == 0 || n < limit || self.is_ejected() {
            return false;
        }
        self.passive_failures.store(0, Relaxed);
        let k = self.ejections.fetch_add(1, Relaxed).min(16);
        let time = crate::rand::jitter(base.saturating_mul(1 << k).min(cap));
        self.eject_until_ms
            .store(now_ms() + time.as_millis() as u64, Relaxed);
        self.ejected_at_us.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            Relaxed,
        );
        // Back only through active checks: it must pass `rise` checks again.
        self.up.store(false, Relaxed);
        tracing::warn!(node = %self.label, "node ejected for {time:?} after {n} consecutive failures on live traffic");
        self.event(
            crate::observe::events::Kind::NodeEjected,
            format!("ejected for {time:?} after {n} consecutive failures on live traffic"),
        );
        true
    }

    /// Close every worker's connections to this node (their in-flight requests fail).
    pub fn close_all(&self) {
        self.close_gen.send_modify(|g| *g += 1);
    }

    /// Watch for [`NodeRt::close_all`].
    pub fn close_watch(&self) -> watch::Receiver<u64> {
        self.close_gen.subscribe()
    }
}

impl std::fmt::Debug for NodeRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRt")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("up", &self.is_up())
            .field("role", &self.role())
            .finish()
    }
}
