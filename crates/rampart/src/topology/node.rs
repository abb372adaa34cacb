//! One redis-server a pool can route to, with the state every worker reads to route.
//!
//! A node's health, role and replication state are written by the control tasks (active health
//! checks, Sentinel following) and by passive failure counting on live traffic; workers read
//! them with relaxed atomic loads. Closing every connection to a node (a switch away from an old
//! primary, a node leaving the topology) is a generation bump the workers' connections watch.
//!
//! A node of a twemproxy `servers:` pool has no health checks: what its connections see on live
//! traffic is its state ([`NodeRt::traffic_failed`], [`NodeRt::passive_ok`]). It does not change
//! routing (twemproxy's ring changes only through `auto_eject_hosts`), but it is what every
//! report shows, and each change is an event.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use rampart_config::ServerAddr;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::observe::stats::{Cell, ServerStat};

/// The pool settings that decide whether a replica serves reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaRules {
    /// A replica whose link is up serves while its lag is at most this (`max_replica_lag`).
    pub max_lag: Duration,
    /// A replica whose link is down serves while it has been down at most this long
    /// (`max_stale`; zero: never with the link down).
    pub max_stale: Duration,
}

impl ReplicaRules {
    /// The rules of a pool's configuration.
    pub fn of(conf: &rampart_config::Pool) -> ReplicaRules {
        ReplicaRules {
            max_lag: conf.max_replica_lag,
            max_stale: conf.max_stale,
        }
    }
}

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

impl Role {
    /// The word for it in logs, events and INFO: `primary`, `replica` or `unknown`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Stored in place of a lag not measured.
const UNKNOWN: u64 = u64::MAX;

/// The longest wait for one host name to resolve when node addresses are compared.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a connection closed by [`NodeRt::drain_all`] waits for the replies of what it
/// sent. Replies a demoted primary wrote are already on their way; this bounds a node that
/// stopped answering at that moment.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// The addresses `host:port` resolves to; none when it does not within 2 s. For comparing
/// the names of nodes (a file may name a host that a server reports as an IP address, or the
/// reverse), never for connecting.
pub async fn resolve(host: &str, port: u16) -> Vec<std::net::SocketAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => Vec::new(),
    }
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
    /// Its last check was answered `BUSY` (a script running past busy-reply-threshold).
    busy: AtomicBool,
    role: AtomicU8,
    replica_ok: AtomicBool,
    lag_ms: AtomicU64,
    check_us: AtomicU64,
    last_check_ms: AtomicU64,
    eject_until_ms: AtomicU64,
    ejections: AtomicU32,
    passive_failures: AtomicU32,
    /// Health-checked (pools with replicas or Sentinel); else its state comes from traffic.
    checked: bool,
    /// Unchecked nodes: the last connection or request on live traffic failed.
    traffic_down: AtomicBool,
    /// Sentinel lists the node as down (`s_down`/`o_down`): it takes no requests.
    listed_down: AtomicBool,
    listed_flags: Mutex<String>,
    /// Replication bytes behind its primary at the last check (`u64::MAX`: not known).
    lag_bytes: AtomicU64,
    /// Seconds its replication link had been down at the last check (`u64::MAX`: up).
    link_down_s: AtomicU64,
    /// Unix time (s) its replication link went down, as of the last check (0: up).
    link_down_since: AtomicU64,
    /// Reads served while its link was down, one cell per worker.
    stale_reads: Vec<Cell>,
    /// Unix time (µs) of the last ejection (twemproxy's `server_ejected_at`).
    pub ejected_at_us: AtomicU64,
    last_error: Mutex<String>,
    /// For a replica: the primary it replicates from, as its last check's `ROLE` named it.
    follows: Mutex<Option<(String, u16)>>,
    /// Bumped by each close; the flag says whether the last one lets replies in flight
    /// arrive first ([`NodeRt::drain_all`]).
    close_gen: watch::Sender<(u64, bool)>,
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
            busy: AtomicBool::new(false),
            role: AtomicU8::new(Role::Unknown as u8),
            replica_ok: AtomicBool::new(!checked),
            lag_ms: AtomicU64::new(UNKNOWN),
            check_us: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            eject_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            checked,
            traffic_down: AtomicBool::new(false),
            listed_down: AtomicBool::new(false),
            listed_flags: Mutex::new(String::new()),
            lag_bytes: AtomicU64::new(UNKNOWN),
            link_down_s: AtomicU64::new(UNKNOWN),
            link_down_since: AtomicU64::new(0),
            stale_reads: (0..workers).map(|_| Cell::default()).collect(),
            ejected_at_us: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            follows: Mutex::new(None),
            close_gen: watch::channel((0, false)).0,
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

    /// The number of workers it keeps statistics for.
    pub fn workers(&self) -> usize {
        self.cells.len()
    }

    /// Sum of statistic `s` over the workers.
    pub fn sum(&self, s: ServerStat) -> i64 {
        self.cells.iter().map(|c| c[s as usize].get()).sum()
    }

    /// Passes health checks, is not ejected, not in maintenance and not listed down by
    /// Sentinel.
    #[inline]
    pub fn is_routable(&self) -> bool {
        self.up.load(Relaxed)
            && !self.is_ejected()
            && !self.maintenance.load(Relaxed)
            && !self.listed_down.load(Relaxed)
    }

    /// Health-checked (a pool with replicas or Sentinel); false for a twemproxy `servers:`
    /// node, whose state comes from live traffic.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// An unchecked node whose last connection or request on live traffic failed.
    pub fn is_traffic_down(&self) -> bool {
        self.traffic_down.load(Relaxed)
    }

    /// A connection to this node failed, broke or timed out on live traffic (`why`, a
    /// sentence). For an unchecked node this is its state: the first failure after a success
    /// marks it down, records the reason and an event. Routing is not changed by it.
    pub fn traffic_failed(&self, why: &str) {
        if self.checked {
            return;
        }
        self.set_error(why);
        if !self.traffic_down.swap(true, Relaxed) {
            tracing::warn!(node = %self.label, "node down: {why}");
            self.event(
                crate::observe::events::Kind::NodeDown,
                format!("down: {why} (seen on live traffic)"),
            );
        }
    }

    /// Sentinel lists the node as down (`Some(flags)`) or no longer does (`None`). A node
    /// listed down takes no requests whatever its own checks say.
    pub fn set_listed_down(&self, flags: Option<&str>) {
        let down = flags.is_some();
        if self.listed_down.swap(down, Relaxed) != down {
            let msg = match flags {
                Some(f) => format!("Sentinel lists it as down ({f})"),
                None => "Sentinel no longer lists it as down".to_string(),
            };
            tracing::warn!(node = %self.label, "{msg}");
            let kind = if down {
                crate::observe::events::Kind::NodeDown
            } else {
                crate::observe::events::Kind::NodeUp
            };
            self.event(kind, msg);
        }
        if let Ok(mut l) = self.listed_flags.lock() {
            flags.unwrap_or_default().clone_into(&mut l);
        }
    }

    /// Sentinel's flags for the node while it lists it as down (`s_down,slave,...`).
    pub fn listed_down(&self) -> Option<String> {
        if !self.listed_down.load(Relaxed) {
            return None;
        }
        self.listed_flags.lock().ok().map(|f| f.clone())
    }

    /// Its last health check was answered `BUSY`: alive, but answering `BUSY` to every
    /// command but SCRIPT KILL and the like until its script ends. A busy replica serves no
    /// reads while another node can.
    #[inline]
    pub fn is_busy(&self) -> bool {
        self.busy.load(Relaxed)
    }

    /// Record whether the last health check was answered `BUSY`.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Relaxed);
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

    /// Record an event about this node (named by its address, as every report names it).
    pub fn event(&self, kind: crate::observe::events::Kind, message: impl Into<String>) {
        let addr = self.addr.to_string();
        crate::observe::events::record(kind, &self.place.0, &self.place.1, &addr, message);
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

    /// A replica that may serve reads: not loading nor in a full sync, and either its link
    /// up with a lag within `max_replica_lag`, or its link down for at most `max_stale`.
    pub fn replica_ok(&self) -> bool {
        self.replica_ok.load(Relaxed)
    }

    /// A replica that serves reads with its replication link down (stale): what it returns
    /// may miss writes its primary took since [`NodeRt::link_down_since`].
    #[inline]
    pub fn is_stale(&self) -> bool {
        self.link_down_s.load(Relaxed) != UNKNOWN && self.replica_ok()
    }

    /// Record how long the replication link has been down (seconds, from the last check);
    /// `None`: up, or never up.
    pub fn set_link_down(&self, secs: Option<u64>) {
        self.link_down_s.store(secs.unwrap_or(UNKNOWN), Relaxed);
        let since = secs.map_or(0, |s| crate::clock::unix_secs().saturating_sub(s));
        // Whole seconds move by one between checks: keep the first value seen.
        let was = self.link_down_since.load(Relaxed);
        if since == 0 || was == 0 || since.abs_diff(was) > 1 {
            self.link_down_since.store(since, Relaxed);
        }
    }

    /// Unix time (s) the replication link went down, while it is down; `None` while up.
    pub fn link_down_since(&self) -> Option<u64> {
        Some(self.link_down_since.load(Relaxed)).filter(|&v| v != 0)
    }

    /// Seconds the replication link had been down at the last check; `None` while up.
    pub fn link_down_s(&self) -> Option<u64> {
        Some(self.link_down_s.load(Relaxed)).filter(|&v| v != UNKNOWN)
    }

    /// Count a read sent to this node while it is stale (worker `w`'s cell).
    #[inline]
    pub fn count_stale_read(&self, w: usize) {
        if let Some(c) = self.stale_reads.get(w) {
            c.add(1);
        }
    }

    /// Reads sent to this node while it served stale, summed over the workers.
    pub fn stale_reads(&self) -> i64 {
        self.stale_reads.iter().map(Cell::get).sum()
    }

    /// Take the node out of the read rotation until its next good check (it answered
    /// `LOADING`).
    pub fn refuse_reads(&self) {
        self.replica_ok.store(false, Relaxed);
    }

    /// Replication lag in ms at the last check: how long ago its primary had the offset the
    /// replica has now; `None` while not measured (a primary, or no offsets seen yet).
    pub fn lag_ms(&self) -> Option<u64> {
        Some(self.lag_ms.load(Relaxed)).filter(|&v| v != UNKNOWN)
    }

    /// Replication bytes behind its primary at the last check; `None` while not measured.
    pub fn lag_bytes(&self) -> Option<u64> {
        Some(self.lag_bytes.load(Relaxed)).filter(|&v| v != UNKNOWN)
    }

    /// Record the replication lag measured by a check (`None`: not known).
    pub fn set_lag(&self, ms: Option<u64>, bytes: Option<u64>) {
        self.lag_ms.store(ms.unwrap_or(UNKNOWN), Relaxed);
        self.lag_bytes.store(bytes.unwrap_or(UNKNOWN), Relaxed);
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

    /// Record a health check result (the lag separately, [`NodeRt::set_lag`]); a primary has no lag.
    pub fn set_checked(&self, role: Role, replica_ok: bool, took_us: u64) {
        if role == Role::Primary {
            self.set_lag(None, None);
        }
        self.role.store(role as u8, Relaxed);
        self.replica_ok.store(replica_ok, Relaxed);
        self.check_us.store(took_us, Relaxed);
        self.last_check_ms.store(now_ms(), Relaxed);
    }

    /// Record the primary this node replicates from, as its `ROLE` names it (`None`: a
    /// primary, or not said).
    pub fn set_follows(&self, primary: Option<(String, u16)>) {
        if let Ok(mut f) = self.follows.lock() {
            *f = primary;
        }
    }

    /// The primary this node replicated from at its last check (host as `ROLE` gives it,
    /// port); `None` for a primary or when not known.
    pub fn follows(&self) -> Option<(String, u16)> {
        self.follows.lock().ok().and_then(|f| f.clone())
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

    /// A request on live traffic succeeded. An unchecked node marked down by traffic is up
    /// again (an event says so).
    #[inline]
    pub fn passive_ok(&self) {
        if self.passive_failures.load(Relaxed) != 0 {
            self.passive_failures.store(0, Relaxed);
        }
        if self.traffic_down.load(Relaxed) && self.traffic_down.swap(false, Relaxed) {
            tracing::info!(node = %self.label, "node up: a request succeeded");
            self.event(
                crate::observe::events::Kind::NodeUp,
                "up: a request on live traffic succeeded",
            );
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
        let time = humantime::format_duration(time);
        tracing::warn!(node = %self.label, "node ejected for {time} after {n} consecutive failures on live traffic");
        self.event(
            crate::observe::events::Kind::NodeEjected,
            format!("ejected for {time} after {n} consecutive failures on live traffic"),
        );
        true
    }

    /// Close every worker's connections to this node (their in-flight requests fail).
    pub fn close_all(&self) {
        self.close_gen.send_modify(|(g, drain)| {
            *g += 1;
            *drain = false;
        });
    }

    /// Close every worker's connections to this node once the replies of what they sent
    /// have arrived, writing nothing more (at most [`DRAIN_LIMIT`], or the pool's timeout
    /// when shorter). For a node that itself says it is no longer the primary: a write it
    /// took before that is answered as it answered, one it refused (`READONLY`) is held for
    /// the new primary, and no client gets an error for a connection rampart closed.
    /// Dedicated connections (subscriber links, transactions, blocking commands) read on
    /// for at most [`DRAIN_LIMIT`] too, and are not reused.
    pub fn drain_all(&self) {
        self.close_gen.send_modify(|(g, drain)| {
            *g += 1;
            *drain = true;
        });
    }

    /// Watch for [`NodeRt::close_all`] and [`NodeRt::drain_all`]: the generation, and
    /// whether the last close lets replies in flight arrive.
    pub fn close_watch(&self) -> watch::Receiver<(u64, bool)> {
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
