//! The pools as the workers see them: configuration, shards, their nodes, the ring, and
//! twemproxy-style ejection.
//!
//! A pool's ring (the continuum) places keys on shards. Each shard has a current view of its
//! nodes and which one is the primary, published with one atomic pointer swap when Sentinel or
//! the health checks change it; a request loads it once. For twemproxy `servers:` pools a shard
//! is one server, and `auto_eject_hosts` follows twemproxy: `server_failure_limit` consecutive
//! failures take the shard off the ring for `server_retry_timeout` and its keys move meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};
use hashkit::{Continuum, ServerPoint};
use rampart_config::{Node, Pool, ServerAddr};

use crate::clock::now_ms;
use crate::durability::spool::Spool;
use crate::handshake::Handshake;
use crate::topology::node::{NodeRt, Role};

/// The nodes of a shard and which one takes writes.
#[derive(Debug, Default)]
pub struct ShardView {
    /// Every node (primary and replicas).
    pub nodes: Vec<Arc<NodeRt>>,
    /// Index of the primary in `nodes`; `None` while no primary is known (writes are held).
    pub primary: Option<usize>,
}

impl ShardView {
    /// The primary when it may take writes now: known, healthy, and (when health-checked) it
    /// says `role:master` itself.
    #[inline]
    pub fn writable_primary(&self) -> Option<&Arc<NodeRt>> {
        let n = self.nodes.get(self.primary?)?;
        (n.is_routable() && n.role() != Role::Replica).then_some(n)
    }
}

/// One shard at run time.
#[derive(Debug)]
pub struct ShardRt {
    /// Position in the pool (and on the ring).
    pub index: usize,
    /// Name in stats and errors.
    pub name: String,
    view: ArcSwap<ShardView>,
    failures: AtomicU32,
    ejected: AtomicBool,
    retry_at_ms: AtomicU64,
    switching: AtomicBool,
    /// Why writes are held: [`HOLD_SWITCHOVER`] and/or [`HOLD_FAILOVER`] bits.
    holding: AtomicU8,
    /// Sentinels that announced a failover of this shard (`+try-failover`) that has not
    /// ended yet, with when they announced it.
    failing_over: std::sync::Mutex<Vec<Announced>>,
    held_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// What a running (or the last) planned switchover is doing, for INFO.
    pub switch_state: std::sync::Mutex<String>,
    failovers: AtomicU64,
    switchovers: AtomicU64,
    resubscriptions: AtomicU64,
    /// The Pub/Sub links of this shard (a worker's subscriber connection, by link id) and the
    /// node on which each has every subscription confirmed (`None` while it connects or
    /// subscribes): a switchover releases its held writes, PUBLISH among them, once every
    /// link is subscribed on the new primary. At most one entry per worker and pool.
    pubsub_links: std::sync::Mutex<std::collections::HashMap<u64, Option<u64>>>,
    /// Its circuit and fail-open counters (cache pools with `fail_open`).
    pub circuit: crate::topology::circuit::Circuit,
    /// The shard's write spool (pools with `spool_dir`), kept across reloads while its
    /// directory stays the same.
    pub spool: Option<Arc<Spool>>,
}

/// A failover a sentinel announced: the sentinel, when, and the primary it fails over.
type Announced = (String, std::time::Instant, ServerAddr);

/// A planned switchover holds the shard's writes.
const HOLD_SWITCHOVER: u8 = 1;
/// A Sentinel failover of the shard is under way: writes are held until the new primary is
/// applied.
const HOLD_FAILOVER: u8 = 2;
/// A new primary is in the view and the shard's Pub/Sub links are subscribing on it: writes
/// (PUBLISH among them) wait for them, briefly (see `ha::sentinel`).
const HOLD_LINKS: u8 = 4;
/// A cluster node dropped the shard's shard channels (it lost their slot): writes wait until
/// they are subscribed again where the new map places them (see
/// [`PoolRt::hold_while`]).
const HOLD_DROPPED: u8 = 8;

impl ShardRt {
    /// A planned switchover of this shard is running (its writes may be held).
    #[inline]
    pub fn is_switching(&self) -> bool {
        self.switching.load(Ordering::Relaxed)
    }
    /// Claim the shard for a switchover; false if one is already running.
    pub fn begin_switch(&self) -> bool {
        !self.switching.swap(true, Ordering::AcqRel)
    }
    /// Hold (or stop holding) the shard's writes while its Pub/Sub links subscribe on a new
    /// primary; independent of a switchover's or a failover's hold.
    pub fn hold_for_links(&self, on: bool) {
        self.set_hold(HOLD_LINKS, on);
    }
    /// Set or clear one reason (`bit`) to hold the shard's writes; the others stay.
    fn set_hold(&self, bit: u8, on: bool) {
        if on {
            self.holding.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.holding.fetch_and(!bit, Ordering::AcqRel);
        }
    }
    /// The shard has Pub/Sub links (some worker holds a subscription placed on it).
    pub fn has_pubsub_links(&self) -> bool {
        self.pubsub_links
            .lock()
            .is_ok_and(|links| !links.is_empty())
    }
    /// Hold (or stop holding) the shard's writes for the running switchover.
    pub fn hold_writes(&self, on: bool) {
        if let Ok(mut since) = self.held_since.lock() {
            *since = on.then(std::time::Instant::now);
        }
        self.set_hold(HOLD_SWITCHOVER, on);
    }
    /// End the switchover and release its held writes; returns how long they were held.
    pub fn end_switch(&self) -> std::time::Duration {
        let held = self
            .held_since
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.holding.fetch_and(!HOLD_SWITCHOVER, Ordering::AcqRel);
        self.switching.store(false, Ordering::Release);
        held
    }
    /// Sentinel `sentinel` announced a failover of this shard's primary `from`
    /// (`+try-failover`): writes are held from now until a view with another primary is
    /// published ([`ShardRt::set_view`]), every announcing sentinel gives up
    /// ([`ShardRt::failover_ended`]), or `limit` passes ([`ShardRt::expire_failovers`]).
    /// Returns true when this starts the hold. An announcement about another address than the
    /// view's primary (a late event of a failover already applied) holds nothing.
    ///
    /// Why: once the leader sends `REPLICAOF NO ONE` to the chosen replica, whatever the old
    /// primary still acknowledges is lost when it is turned into a replica. The announcement
    /// comes an election and at least one Sentinel timer tick (100 ms) before that command.
    pub fn failover_started(&self, sentinel: &str, from: &ServerAddr) -> bool {
        let view = self.view();
        let primary = view.primary.and_then(|i| view.nodes.get(i));
        if primary.is_some_and(|p| &p.addr != from) {
            return false;
        }
        let Ok(mut running) = self.failing_over.lock() else {
            return false;
        };
        running.retain(|(s, _, _)| s != sentinel);
        running.push((
            sentinel.to_string(),
            std::time::Instant::now(),
            from.clone(),
        ));
        self.holding.fetch_or(HOLD_FAILOVER, Ordering::AcqRel) & HOLD_FAILOVER == 0
    }
    /// Sentinel `sentinel` ended its failover attempt without a new primary
    /// (`-failover-abort-*`, `+failover-end-for-timeout`). Returns true when no failover is
    /// left running, so the hold ended.
    pub fn failover_ended(&self, sentinel: &str) -> bool {
        let Ok(mut running) = self.failing_over.lock() else {
            return false;
        };
        running.retain(|(s, _, _)| s != sentinel);
        self.end_failover_hold_if_idle(&running)
    }
    /// Failovers announced longer than `limit` ago are no longer waited for (a Sentinel that
    /// died mid-failover, an event lost). Returns true when this ended the hold.
    pub fn expire_failovers(&self, limit: std::time::Duration) -> bool {
        let Ok(mut running) = self.failing_over.lock() else {
            return false;
        };
        if running.is_empty() {
            return false;
        }
        running.retain(|(_, since, _)| since.elapsed() < limit);
        self.end_failover_hold_if_idle(&running)
    }
    /// How long until the latest failover announced is `limit` old (when
    /// [`ShardRt::expire_failovers`] with `limit` ends the hold); `None` when none is running.
    pub fn failover_hold_left(&self, limit: std::time::Duration) -> Option<std::time::Duration> {
        let running = self.failing_over.lock().ok()?;
        running
            .iter()
            .map(|(_, since, _)| limit.saturating_sub(since.elapsed()))
            .max()
    }
    fn end_failover_hold_if_idle(&self, running: &[Announced]) -> bool {
        running.is_empty()
            && self.holding.fetch_and(!HOLD_FAILOVER, Ordering::AcqRel) & HOLD_FAILOVER != 0
    }
    /// The shard's writes are held now (a switchover or a Sentinel failover under way).
    pub fn writes_held(&self) -> bool {
        self.holding.load(Ordering::Relaxed) != 0
    }
    /// A Sentinel failover of this shard is under way (its writes are held).
    pub fn is_failing_over(&self) -> bool {
        self.holding.load(Ordering::Relaxed) & HOLD_FAILOVER != 0
    }
    /// Record the switchover's progress.
    pub fn set_switch_state(&self, s: impl Into<String>) {
        let s = s.into();
        tracing::info!(shard = %self.name, "switchover: {s}");
        if let Ok(mut st) = self.switch_state.lock() {
            *st = s;
        }
    }
    /// The primary that may take writes now (none while a switchover or a Sentinel failover
    /// holds them).
    #[inline]
    pub fn write_target<'a>(&self, view: &'a ShardView) -> Option<&'a Arc<NodeRt>> {
        if self.holding.load(Ordering::Relaxed) != 0 {
            return None;
        }
        view.writable_primary()
    }
    /// The current view (one atomic load).
    #[inline]
    pub fn view(&self) -> Guard<Arc<ShardView>> {
        self.view.load()
    }
    /// Publish a new view. A view whose primary is not the one a running Sentinel failover
    /// fails over ends that failover's hold (writes then wait only until the new primary is
    /// confirmed, as after any switch).
    pub fn set_view(&self, v: ShardView) {
        let primary = v
            .primary
            .and_then(|i| v.nodes.get(i))
            .map(|n| n.addr.clone());
        self.view.store(Arc::new(v));
        if !self.is_failing_over() {
            return;
        }
        let Ok(mut running) = self.failing_over.lock() else {
            return;
        };
        if running
            .iter()
            .any(|(_, _, from)| Some(from) != primary.as_ref())
        {
            running.clear();
            if self.end_failover_hold_if_idle(&running) {
                tracing::info!(shard = %self.name, "the failover's new primary is in the view: held writes go to it once it is confirmed");
            }
        }
    }
    /// Off the ring (twemproxy auto-eject).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }
    /// Count a primary change made by Sentinel or by a Redis Cluster (not the first primary
    /// named).
    pub fn count_failover(&self) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }
    /// Count a planned switchover that completed.
    pub fn count_switchover(&self) {
        self.switchovers.fetch_add(1, Ordering::Relaxed);
    }
    /// Primary changes made by Sentinel or by a Redis Cluster since the shard was first
    /// configured.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }
    /// Planned switchovers completed since the shard was first configured.
    pub fn switchovers(&self) -> u64 {
        self.switchovers.load(Ordering::Relaxed)
    }
    /// Count a worker's subscriber connection of this shard that was opened again (after it
    /// broke or its node was switched away from) and subscribed everything it held again.
    pub fn count_resubscription(&self) {
        self.resubscriptions.fetch_add(1, Ordering::Relaxed);
    }
    /// Pub/Sub link `link` of this shard has every subscription confirmed on node `on`
    /// (`None`: it is connecting or subscribing); see [`ShardRt::pubsub_links_on`].
    pub fn pubsub_link_at(&self, link: u64, on: Option<u64>) {
        if let Ok(mut links) = self.pubsub_links.lock() {
            links.insert(link, on);
        }
    }
    /// Pub/Sub link `link` no longer serves this shard (nothing subscribed, or it moved to the
    /// shard of a reloaded pool).
    pub fn pubsub_link_gone(&self, link: u64) {
        if let Ok(mut links) = self.pubsub_links.lock() {
            links.remove(&link);
        }
    }
    /// Every Pub/Sub link of this shard has its subscriptions confirmed on node `node` (true
    /// when there is none).
    pub fn pubsub_links_on(&self, node: u64) -> bool {
        self.pubsub_links
            .lock()
            .map_or(true, |links| links.values().all(|on| *on == Some(node)))
    }
    /// Subscriber connections of this shard resubscribed since the shard was first configured.
    pub fn resubscriptions(&self) -> u64 {
        self.resubscriptions.load(Ordering::Relaxed)
    }
}

/// One pool at run time.
#[derive(Debug)]
pub struct PoolRt {
    /// Bumped when an ejected server comes back to the ring (its keys move back to it): a
    /// command blocked, or a watch held, for such a key on the server that stood in for it
    /// ends (see `upstream::dedicated`).
    pub placement: tokio::sync::watch::Sender<u64>,
    /// Index of the pool in the config (and in the stats tables).
    pub index: usize,
    /// The validated pool config.
    pub conf: Pool,
    /// The shards, in config order.
    pub shards: Vec<ShardRt>,
    /// Nodes are health-checked (pools with replicas or Sentinel); twemproxy pools are not.
    pub checked: bool,
    /// AUTH and SELECT for every connection to a data node (requests, health checks,
    /// switchover).
    pub handshake: Arc<Handshake>,
    /// AUTH for every connection to one of the pool's Sentinels.
    pub sentinel_handshake: Handshake,
    /// The pool's TLS material (listener and backend side), read when the pool was built.
    pub tls: crate::tls::PoolTls,
    /// A cluster pool's slot map and follower state (`cluster:` pools only); keys are
    /// placed by it instead of the ring.
    pub cluster: Option<crate::topology::cluster::ClusterRt>,
    /// Commands denied, renamed and allowed (`deny_commands`, `rename_commands`,
    /// `allow_commands`).
    pub policy: crate::topology::policy::Policy,
    points: Vec<ServerPoint>,
    ring: ArcSwap<Continuum>,
    any_ejected: AtomicBool,
    next_retry_ms: AtomicU64,
    /// A reload (or a cluster reshape) published another generation of this pool: what is
    /// changed here no longer reaches the workers.
    retired: AtomicBool,
}

fn node_rt(
    n: &Node,
    label: String,
    place: (String, String),
    workers: usize,
    checked: bool,
) -> Arc<NodeRt> {
    Arc::new(NodeRt::new(
        n.addr.clone(),
        label,
        (n.zone.clone(), n.priority),
        place,
        workers,
        checked,
    ))
}

/// The hold of a Sentinel failover announced to `old`, the previous generation of a shard of
/// the Sentinel pool `conf`: a reload during the failover keeps holding the shard's writes
/// (released to the old primary, they would be lost when Sentinel demotes it). The new
/// generation's follower ends it as the old one would have: the new primary in the view, the
/// announcing sentinels giving up, or `failover_hold` after the announcement.
fn carried_failover(conf: &Pool, old: Option<&ShardRt>) -> (u8, Vec<Announced>) {
    let Some(o) = old.filter(|_| conf.is_sentinel()) else {
        return (0, Vec::new());
    };
    let running = o.failing_over.lock().map(|r| r.clone()).unwrap_or_default();
    if running.is_empty() || !o.is_failing_over() {
        return (0, Vec::new());
    }
    (HOLD_FAILOVER, running)
}

/// The directory of shard `shard`'s spool: `<spool_dir>/<pool>/<shard>`, each name with
/// anything but letters, digits, `-`, `_` and `.` replaced by `_`.
pub fn spool_dir(conf: &Pool, shard: &str) -> Option<std::path::PathBuf> {
    let clean = |s: &str| -> String {
        let t: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if t.chars().all(|c| c == '.') {
            format!("_{t}")
        } else {
            t
        }
    };
    let sp = conf.spool.as_ref()?;
    Some(sp.dir.join(clean(&conf.name)).join(clean(shard)))
}

/// The spool of a shard: the one it had before a reload when its directory is the same,
/// else opened now (a spool that cannot be opened is kept stopped, with the reason logged).
fn shard_spool(conf: &Pool, shard: &str, old: Option<&ShardRt>) -> Option<Arc<Spool>> {
    let dir = spool_dir(conf, shard)?;
    let max = conf.spool.as_ref().map_or(0, |s| s.max_bytes);
    if let Some(sp) = old
        .and_then(|o| o.spool.as_ref())
        .filter(|s| s.dir() == dir)
    {
        sp.set_max_bytes(max);
        return Some(Arc::clone(sp));
    }
    let (spool, opened) = Spool::open(&dir, max);
    match opened {
        Ok(rec) => tracing::info!(
            pool = %conf.name,
            shard,
            "spool {}: {} entries to replay{}",
            dir.display(),
            rec.entries,
            if rec.torn_bytes > 0 {
                format!(", a torn tail of {} bytes cut", rec.torn_bytes)
            } else {
                String::new()
            }
        ),
        Err(e) => tracing::error!(pool = %conf.name, shard, "spool stopped: {e}"),
    }
    Some(spool)
}

/// Longest a switchover or a failover keeps a shard's writes held, once the new primary is
/// applied, for the shard's Pub/Sub links to subscribe on it (they start within
/// milliseconds: the old primary's connections are closed at the switch).
const SUBSCRIBERS_WAIT: Duration = Duration::from_secs(1);

impl PoolRt {
    /// Apply `view`, in which a failover made a new node the primary of `shard` (Sentinel,
    /// the cluster, or the old primary answering as the new one's replica). When the pool
    /// holds writes through failovers (`failover_hold` > 0) and the shard has Pub/Sub links,
    /// its writes stay held until the links are subscribed on the view's primary
    /// ([`PoolRt::pubsub_subscribed_on`]), so that a PUBLISH released there is heard by every
    /// subscriber; otherwise the view is applied at once.
    pub async fn fail_over_to(&self, shard: usize, view: ShardView) {
        let Some(rt) = self.shards.get(shard) else {
            return;
        };
        let new = view.primary.and_then(|p| view.nodes.get(p)).map(|n| n.id);
        let wait = new.filter(|_| !self.conf.failover_hold.is_zero() && rt.has_pubsub_links());
        if wait.is_some() {
            rt.hold_for_links(true);
        }
        rt.set_view(view);
        if let Some(new) = wait {
            self.pubsub_subscribed_on(shard, new).await;
            rt.hold_for_links(false);
        }
    }

    /// A node of cluster pool `shard` dropped its shard channels on its own (it lost their
    /// slot: to a replica that took over, or by a migration). It may still answer a PUBLISH
    /// to them (a Redis 7 replica serves `SPUBLISH` for its primary's slots) with nobody
    /// subscribed there, until rampart has read the new map. So when the pool holds writes
    /// through failovers, the shard's writes wait in the hold while `unplaced` says the
    /// channels are not yet subscribed again where the map places them: at most 1 s, and
    /// never longer than `failover_hold`.
    pub async fn hold_while(&self, shard: usize, unplaced: impl Fn() -> bool) {
        let Some(rt) = self.shards.get(shard) else {
            return;
        };
        if self.conf.failover_hold.is_zero()
            || self.conf.pubsub.from != rampart_config::PubSubFrom::Primary
        {
            return;
        }
        rt.set_hold(HOLD_DROPPED, true);
        self.wait_briefly(|| !unplaced()).await;
        rt.set_hold(HOLD_DROPPED, false);
    }

    /// Wait until `done` (looked at every millisecond), at most 1 s and never longer than
    /// the pool's `failover_hold`; false when the time ran out first.
    async fn wait_briefly(&self, done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + SUBSCRIBERS_WAIT.min(self.conf.failover_hold);
        while !done() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Wait (at most 1 s, and never longer than the pool's `failover_hold`) until every
    /// worker's Pub/Sub link of `shard` has its subscriptions confirmed on node `new`, so that
    /// no held PUBLISH reaches the new primary before the subscriptions that should hear it.
    /// Pools whose subscriptions live on replicas (`pubsub_from: replica`) do not wait.
    pub async fn pubsub_subscribed_on(&self, shard: usize, new: u64) {
        if self.conf.pubsub.from != rampart_config::PubSubFrom::Primary {
            return;
        }
        let Some(rt) = self.shards.get(shard) else {
            return;
        };
        if !self.wait_briefly(|| rt.pubsub_links_on(new)).await {
            tracing::info!(
                pool = %self.conf.name,
                shard = %rt.name,
                "releasing the held writes before every subscriber connection subscribed on the new primary"
            );
        }
    }

    /// Build the run-time pool and its initial ring (every shard live).
    pub fn new(index: usize, conf: Pool, workers: usize) -> Self {
        Self::with_nodes(index, conf, workers, None)
    }

    /// Like [`PoolRt::new`], reusing the nodes of `prev` (the same pool before a reload) that
    /// stay in the same shard at the same address, so their health state, statistics and
    /// connections carry over; a Sentinel pool's shards keep the nodes Sentinel named.
    pub fn with_nodes(index: usize, conf: Pool, workers: usize, prev: Option<&PoolRt>) -> Self {
        let twemproxy = conf.shards.iter().all(|s| s.replicas.is_empty())
            && !conf.is_sentinel()
            && !conf.is_cluster();
        let checked = !twemproxy;
        let shards: Vec<ShardRt> = conf
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let place = (conf.name.clone(), s.name.clone());
                let old_shard = prev.and_then(|p| p.shards.iter().find(|o| o.name == s.name));
                let old = old_shard.map(|o| o.view());
                let counted = |f: fn(&ShardRt) -> u64| AtomicU64::new(old_shard.map_or(0, f));
                let reuse = |n: &Node, label: String| {
                    old.as_ref()
                        .and_then(|v| {
                            v.nodes
                                .iter()
                                .find(|o| o.addr == n.addr && o.label == label)
                        })
                        .cloned()
                        .unwrap_or_else(|| node_rt(n, label, place.clone(), workers, checked))
                };
                let mut nodes = Vec::new();
                if let Some(p) = &s.primary {
                    let label = if twemproxy {
                        s.name.clone()
                    } else {
                        p.text.clone()
                    };
                    nodes.push(reuse(p, label));
                }
                for r in &s.replicas {
                    nodes.push(reuse(r, r.text.clone()));
                }
                let carried = carried_failover(&conf, old_shard);
                // An ejected server that stays (same name, same address, auto_eject_hosts
                // still on) stays ejected until its retry time: a reload for another reason
                // does not put a dead server back on the ring.
                // The same shard on the same server: its primary as listed (a Sentinel or
                // cluster pool's shard keeps the view it followed, so is the same).
                let same_server = old_shard.is_some_and(|o| {
                    conf.is_sentinel()
                        || conf.is_cluster()
                        || o.view().nodes.first().map(|n| &n.addr)
                            == s.primary.as_ref().map(|p| &p.addr)
                });
                let eject = old_shard
                    .filter(|_| twemproxy && conf.auto_eject_hosts && same_server)
                    .map_or((0, false, 0), |o| {
                        (
                            o.failures.load(Ordering::Relaxed),
                            o.is_ejected(),
                            o.retry_at_ms.load(Ordering::Relaxed),
                        )
                    });
                let mut primary = s.primary.as_ref().map(|_| 0);
                if conf.is_sentinel() || conf.is_cluster() {
                    if let Some(v) = &old {
                        nodes = v.nodes.clone();
                        primary = v.primary;
                    }
                } else if let (Some(v), Some(was)) = (&old, old_shard.and(prev)) {
                    // A primary moved at run time (a switchover, a role change followed by
                    // `ha::roles`) stays the primary while the file names the same primary as
                    // before: a reload for another reason does not send writes back to the
                    // node the file names, which is a replica now.
                    let named_before = was
                        .conf
                        .shards
                        .iter()
                        .find(|o| o.name == s.name)
                        .and_then(|o| o.primary.as_ref())
                        .map(|a| &a.addr);
                    let current = v.primary.and_then(|i| v.nodes.get(i));
                    if named_before == s.primary.as_ref().map(|a| &a.addr) {
                        if let Some(i) =
                            current.and_then(|c| nodes.iter().position(|n| Arc::ptr_eq(n, c)))
                        {
                            primary = Some(i);
                        }
                    }
                }
                ShardRt {
                    index: i,
                    name: s.name.clone(),
                    view: ArcSwap::from_pointee(ShardView { nodes, primary }),
                    failures: AtomicU32::new(eject.0),
                    ejected: AtomicBool::new(eject.1),
                    retry_at_ms: AtomicU64::new(eject.2),
                    switching: AtomicBool::new(false),
                    holding: AtomicU8::new(carried.0),
                    failing_over: std::sync::Mutex::new(carried.1),
                    held_since: std::sync::Mutex::new(None),
                    // How the last switchover ended stays readable across a reload.
                    switch_state: std::sync::Mutex::new(
                        old_shard
                            .and_then(|o| o.switch_state.lock().ok().map(|x| x.clone()))
                            .unwrap_or_default(),
                    ),
                    failovers: counted(ShardRt::failovers),
                    switchovers: counted(ShardRt::switchovers),
                    resubscriptions: counted(ShardRt::resubscriptions),
                    pubsub_links: std::sync::Mutex::new(std::collections::HashMap::new()),
                    circuit: crate::topology::circuit::Circuit::carried(
                        workers,
                        old_shard
                            .filter(|_| conf.fail_open.is_some() && same_server)
                            .map(|o| &o.circuit),
                    ),
                    spool: shard_spool(&conf, &s.name, old_shard),
                }
            })
            .collect();
        let points: Vec<ServerPoint> = conf
            .shards
            .iter()
            .map(|s| ServerPoint {
                identity: s.identity.clone(),
                weight: s.weight,
            })
            .collect();
        let live: Vec<bool> = shards.iter().map(|s| !s.is_ejected()).collect();
        let ring = Continuum::build(conf.distribution, &points, &live);
        let next_retry = shards
            .iter()
            .filter(|s| s.is_ejected())
            .map(|s| s.retry_at_ms.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let cluster = conf.is_cluster().then(|| {
            use crate::topology::cluster::{ClusterRt, SlotTable};
            match prev.and_then(|p| Some((p, p.cluster.as_ref()?))) {
                Some((prev, c)) => {
                    // Shards are matched by name: one added or dropped moves the indexes of
                    // the others, in the slot table and the node ids alike.
                    let at: Vec<Option<usize>> = prev
                        .shards
                        .iter()
                        .map(|o| conf.shards.iter().position(|s| s.name == o.name))
                        .collect();
                    let mut ids = vec![Vec::new(); conf.shards.len()];
                    for (old, known) in c.ids().into_iter().enumerate() {
                        if let Some(Some(i)) = at.get(old) {
                            ids[*i] = known;
                        }
                    }
                    ClusterRt::new(c.table().remap(|o| at.get(o).copied().flatten()), ids)
                }
                None => ClusterRt::new(SlotTable::empty(), vec![Vec::new(); conf.shards.len()]),
            }
        });
        PoolRt {
            cluster,
            index,
            handshake: Arc::new(Handshake::data(&conf)),
            sentinel_handshake: Handshake::sentinel(&conf),
            tls: crate::tls::PoolTls::default(),
            policy: crate::topology::policy::Policy::new(&conf.commands),
            conf,
            shards,
            checked,
            points,
            ring: ArcSwap::from_pointee(ring),
            any_ejected: AtomicBool::new(next_retry != u64::MAX),
            next_retry_ms: AtomicU64::new(next_retry),
            retired: AtomicBool::new(false),
            placement: tokio::sync::watch::channel(0).0,
        }
    }

    /// Mark this generation of the pool as replaced by a newer one (after the swap).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// A newer generation of this pool was published: its shards' views and holds are no
    /// longer the ones the workers route by.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The pool with its TLS material: the listener's certificate for `tls_listen`, and the
    /// backend side's in the handshakes of every connection to its nodes and Sentinels.
    pub fn with_tls(mut self, tls: crate::tls::PoolTls) -> Self {
        let client = tls.client.clone();
        self.handshake = Arc::new(Handshake::data(&self.conf).with_tls(client.clone(), self.index));
        self.sentinel_handshake = Handshake::sentinel(&self.conf).with_tls(client, self.index);
        self.tls = tls;
        self
    }

    /// The shard that holds `key` (its hash tag part when the pool has one), or `None` when no
    /// shard is on the ring.
    #[inline]
    pub fn shard_for_key(&self, key: &[u8]) -> Option<usize> {
        if self.any_ejected.load(Ordering::Relaxed) {
            self.revive_due();
        }
        if let Some(c) = &self.cluster {
            return c.table().shard(hashkit::cluster_slot(key));
        }
        let h = self.key_hash(key);
        self.ring.load().dispatch(h)
    }

    /// The ring that places keys now (after putting back the ejected servers whose retry
    /// time has come, as a request does): a new one after every ejection, return to the
    /// ring and reload.
    pub fn ring(&self) -> Arc<Continuum> {
        if self.any_ejected.load(Ordering::Relaxed) {
            self.revive_due();
        }
        self.ring.load_full()
    }

    /// The pool's hash of `key` (of its hash tag part when the pool has one): the position on
    /// the ring that places it.
    #[inline]
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        if self.cluster.is_some() {
            return u32::from(hashkit::cluster_slot(key));
        }
        let hashed = match &self.conf.hash_tag {
            Some(tag) => tag.extract(key),
            None => key,
        };
        self.conf.hash.hash(hashed)
    }

    /// The shard serving `slot` in a cluster pool (`None` when uncovered, or in other pools).
    #[inline]
    pub fn shard_for_slot(&self, slot: u16) -> Option<usize> {
        self.cluster.as_ref().and_then(|c| c.table().shard(slot))
    }

    /// The Redis Cluster slot of `key` in a cluster pool (`None` in other pools).
    #[inline]
    pub fn slot_of(&self, key: &[u8]) -> Option<u16> {
        self.cluster.as_ref().map(|_| hashkit::cluster_slot(key))
    }

    /// Any shard on the ring (for commands without keys that one shard answers).
    pub fn any_shard(&self) -> Option<usize> {
        self.shard_for_key(&crate::rand::next_u64().to_le_bytes())
    }

    /// A request to the shard succeeded: its failure streak ends.
    #[inline]
    pub fn shard_ok(&self, idx: usize) {
        let s = &self.shards[idx];
        if s.failures.load(Ordering::Relaxed) != 0 {
            s.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connection to the shard's server failed, broke or timed out (twemproxy's
    /// auto-eject). Returns true when this failure ejected it.
    pub fn shard_failed(&self, idx: usize) -> bool {
        if !self.conf.auto_eject_hosts {
            return false;
        }
        let s = &self.shards[idx];
        let n = s.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.conf.server_failure_limit || s.is_ejected() {
            return false;
        }
        s.failures.store(0, Ordering::Relaxed);
        let retry = now_ms() + self.conf.server_retry_timeout.as_millis() as u64;
        s.retry_at_ms.store(retry, Ordering::Relaxed);
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        for n in &s.view().nodes {
            n.ejected_at_us.store(at, Ordering::Relaxed);
        }
        s.ejected.store(true, Ordering::Relaxed);
        self.next_retry_ms.fetch_min(retry, Ordering::Relaxed);
        self.any_ejected.store(true, Ordering::Relaxed);
        self.rebuild();
        let time = self.conf.server_retry_timeout;
        tracing::warn!(pool = %self.conf.name, server = %s.name, "server ejected from the ring for {time:?} after {n} consecutive failures");
        for node in &s.view().nodes {
            // Its keys live on another server now: a command blocked there (or a WATCH
            // held there) would wait for ever on a server nobody writes to; closing its
            // connections ends them with an error, as a node switched away from does.
            node.close_all();
            node.event(
                crate::observe::events::Kind::NodeEjected,
                format!("ejected from the ring for {time:?} after {n} consecutive failures (auto_eject_hosts)"),
            );
        }
        true
    }

    /// Put back on the ring every ejected shard whose retry time has come (twemproxy retries
    /// an ejected server on the first request after `server_retry_timeout`).
    fn revive_due(&self) {
        let now = now_ms();
        if now < self.next_retry_ms.load(Ordering::Relaxed) {
            return;
        }
        let mut next = u64::MAX;
        let mut changed = false;
        for s in &self.shards {
            if !s.is_ejected() {
                continue;
            }
            let at = s.retry_at_ms.load(Ordering::Relaxed);
            if at <= now {
                s.ejected.store(false, Ordering::Relaxed);
                changed = true;
                tracing::info!(pool = %self.conf.name, server = %s.name, "retrying ejected server");
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
            self.placement.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    fn rebuild(&self) {
        let live: Vec<bool> = self.shards.iter().map(|s| !s.is_ejected()).collect();
        self.ring.store(Arc::new(Continuum::build(
            self.conf.distribution,
            &self.points,
            &live,
        )));
    }

    /// Whether a connection opened for `other` (the same pool in another generation) may
    /// serve this one: the same handshake (`redis_auth`, `redis_db`), `tcpkeepalive`,
    /// number of connections per node and `backend_tls` files (renewed content is used by
    /// the connections opened from then on). A reload that changes any of these replaces the
    /// connections instead of moving them over.
    pub fn same_connections(&self, other: &PoolRt) -> bool {
        let (a, b) = (&self.conf, &other.conf);
        a.redis_auth == b.redis_auth
            && a.redis_username == b.redis_username
            && a.redis_db == b.redis_db
            && a.tcpkeepalive == b.tcpkeepalive
            && a.server_connections == b.server_connections
            && a.backend_tls == b.backend_tls
    }

    /// Whether a connection opened for `other` (the same pool in another generation) sees
    /// the keys this one's connections see: the same `redis_db` and `redis_username`.
    pub fn same_keyspace(&self, other: &PoolRt) -> bool {
        self.conf.redis_db == other.conf.redis_db
            && self.conf.redis_username == other.conf.redis_username
    }

    /// Whether keys land on the same shards as in `other` (the same pool in another
    /// generation): the same `hash`, `hash_tag`, `distribution` and ring (shards in order,
    /// their names and weights). A cluster pool places keys by slot and follows `MOVED`
    /// itself: always the same here.
    pub fn same_placement(&self, other: &PoolRt) -> bool {
        let (a, b) = (&self.conf, &other.conf);
        self.cluster.is_some()
            || (a.hash == b.hash
                && a.hash_tag == b.hash_tag
                && a.distribution == b.distribution
                && self.points == other.points)
    }

    /// Whether the health checks of this pool's nodes run with the same settings as those of
    /// `other` (the same pool in another generation): `health_check`, `max_replica_lag`,
    /// `max_stale`, the handshake and the backend TLS material (a renewed certificate starts
    /// the checks again with it).
    pub fn same_checks(&self, other: &PoolRt) -> bool {
        let (a, b) = (&self.conf, &other.conf);
        a.health == b.health
            && a.max_replica_lag == b.max_replica_lag
            && a.max_stale == b.max_stale
            && a.redis_auth == b.redis_auth
            && a.redis_username == b.redis_username
            && a.redis_db == b.redis_db
            && self.tls.client_digest() == other.tls.client_digest()
    }

    /// The pool timeout as a duration.
    pub fn timeout(&self) -> Duration {
        self.conf.timeout
    }
}
