//! One snapshot of every pool, shard and node: the only place that decides whether a node is
//! up, why not, whether a shard can take writes and whether a pool is ready. INFO (`pools`),
//! `/metrics`, the stats JSON, `/api/topology`, `/readyz` and the page render it and decide
//! nothing themselves.
//!
//! Where a node's state comes from:
//! - a node of a pool with replicas or Sentinel: its health checks (rise/fall), passive
//!   ejection on live traffic, and Sentinel's own list (a node Sentinel lists as `s_down` stays
//!   in the snapshot, down, with Sentinel's flags as the reason);
//! - a node of a twemproxy `servers:` pool: what routing's own connections saw on live traffic
//!   (the last connect or request failed: down, with the error; a reply since: up). Before any
//!   traffic it is up, never observed (`last_check_age_ms` is `None`).
//!
//! Readiness, per pool:
//! - a cache pool (`cache: true`, by default `auto_eject_hosts: true`) is ready while at
//!   least one shard can take requests, since the ring moves a dead server's keys to the
//!   others (or `fail_open` answers misses for it);
//! - any other pool is ready when every shard can take writes (a writable primary, or a
//!   planned switchover holding its writes for a moment).

use std::sync::Arc;

use crate::clock::now_ms;
use crate::topology::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardRt};

/// The kind of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// A twemproxy `servers:` pool: one unchecked node per shard.
    Twemproxy,
    /// `primary:`/`replicas:` or `shards:`: health-checked replica sets.
    Replicated,
    /// `sentinels:`: replica sets named by Sentinel.
    Sentinel,
    /// `cluster:`: the primaries of a Redis Cluster and their replicas, from its slot map.
    Cluster,
}

impl PoolKind {
    /// `twemproxy`, `replicated`, `sentinel` or `cluster`.
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Twemproxy => "twemproxy",
            PoolKind::Replicated => "replicated",
            PoolKind::Sentinel => "sentinel",
            PoolKind::Cluster => "cluster",
        }
    }
}

/// A node's state in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Up and taking requests (a replica: in the read rotation).
    Up,
    /// Down: failing its checks or its live traffic, or listed down by Sentinel.
    Down,
    /// Taken out by failures on live traffic (passive ejection, or off the ring).
    Ejected,
    /// Drained by an operator.
    Maintenance,
    /// Up, but a replica that may not serve reads now (lag, link, sync).
    Out,
}

impl Status {
    /// `up`, `down`, `ejected`, `maintenance` or `out`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Ejected => "ejected",
            Status::Maintenance => "maintenance",
            Status::Out => "out",
        }
    }
}

/// One node.
#[derive(Debug)]
pub struct NodeSnap {
    /// The node (for its traffic statistics).
    pub node: Arc<NodeRt>,
    /// Its address: `host:port` (IPv6 in brackets) or a socket path.
    pub addr: String,
    /// The name it has in the configuration (a twemproxy server's name), if any.
    pub name: Option<String>,
    /// The key of its server entry in the twemproxy stats JSON (the server name, else the
    /// address as written).
    pub stats_key: String,
    /// Its place in the shard view: `primary` (writes go there) or `replica`.
    pub role: &'static str,
    /// What its last ROLE reply said: `primary`, `replica` or `unknown` (unchecked nodes).
    pub seen_role: &'static str,
    /// The state in one word; [`Status::Up`] only when it takes requests.
    pub status: Status,
    /// Passes its checks (or its live traffic) and Sentinel does not list it down.
    pub up: bool,
    /// Why it is not [`Status::Up`]; empty when it is.
    pub reason: String,
    /// Where `up` comes from: `health-check` or `traffic`.
    pub source: &'static str,
    /// May receive new requests (up, not ejected, not in maintenance).
    pub routable: bool,
    /// It is the shard's primary and takes writes now.
    pub writable: bool,
    /// A replica in the read rotation (link up, no sync, lag within `max_replica_lag`).
    pub replica_usable: bool,
    /// Replication lag in ms; `None` when not measured (primaries, unchecked nodes).
    pub lag_ms: Option<u64>,
    /// Replication bytes behind its primary; `None` when not measured.
    pub lag_bytes: Option<u64>,
    /// A replica in the read rotation with its replication link down (`max_stale`): its
    /// reads may miss its primary's latest writes.
    pub stale: bool,
    /// Unix time (s) its replication link went down; `None` while it is up (or unknown).
    pub stale_since: Option<u64>,
    /// Reads sent to it while it served stale, since start.
    pub stale_reads: i64,
    /// Out by passive failures or (twemproxy) its shard is off the ring.
    pub ejected: bool,
    /// Times passive failures ejected it.
    pub ejections: u32,
    /// Drained by an operator.
    pub maintenance: bool,
    /// Round trip of its last health check, µs (0 for unchecked nodes).
    pub check_us: u64,
    /// Time since its state was last observed (a check, or a failure on live traffic), ms;
    /// `None` before any.
    pub last_check_age_ms: Option<u64>,
}

/// One shard.
#[derive(Debug)]
pub struct ShardSnap {
    /// The shard's name.
    pub name: String,
    /// Address of the primary in its view, if any.
    pub primary: Option<String>,
    /// Takes writes now.
    pub writable: bool,
    /// Why it does not take writes; empty when it does.
    pub reason: String,
    /// Off the ring (twemproxy `auto_eject_hosts`).
    pub ejected: bool,
    /// A planned switchover runs (its writes may be held).
    pub switching: bool,
    /// A Sentinel announced a failover that is not applied yet: writes are held.
    pub failing_over: bool,
    /// What the running (or the last) switchover did.
    pub switch_state: String,
    /// Primary changes made by Sentinel or by a Redis Cluster.
    pub failovers: u64,
    /// Planned switchovers completed.
    pub switchovers: u64,
    /// Worker subscriber connections that resubscribed their channels and patterns after a
    /// break or a switch of node.
    pub resubscriptions: u64,
    /// Its circuit is open (a cache pool that fails open): its requests are answered
    /// without it.
    pub circuit_open: bool,
    /// Reads answered as a miss by failing open, since start.
    pub fail_open_misses: i64,
    /// Writes dropped by failing open, since start.
    pub fail_open_drops: i64,
    /// Its nodes, primary first as in the view.
    pub nodes: Vec<NodeSnap>,
    /// Its write spool, when the pool has one.
    pub spool: Option<SpoolSnap>,
}

/// A shard's write spool as reports show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolSnap {
    /// Its directory.
    pub dir: String,
    /// Entries waiting for replay (being appended, on disk, or being replayed).
    pub entries: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Age of the oldest waiting entry, ms (`None` when none waits).
    pub oldest_age_ms: Option<u64>,
    /// Entries made durable since start.
    pub appended: u64,
    /// Entries replayed and acknowledged by the server since start.
    pub replayed: u64,
    /// Of those, answered with an error by the server.
    pub replay_errors: u64,
    /// Appends refused (full, stopped).
    pub refused: u64,
    /// Why it stopped for good, if it did.
    pub stopped: Option<String>,
}

/// One pool.
#[derive(Debug)]
pub struct PoolSnap {
    /// The pool (for its statistics and configuration).
    pub pool: Arc<PoolRt>,
    /// Its kind.
    pub kind: PoolKind,
    /// `cache` (by default `auto_eject_hosts`): its data may be lost, so it is ready while any
    /// shard serves.
    pub cache: bool,
    /// Ready by the rules of the module documentation.
    pub ready: bool,
    /// Why not, one line per shard that makes it unready; empty when ready.
    pub not_ready: Vec<String>,
    /// Its shards in config order.
    pub shards: Vec<ShardSnap>,
}

/// Every pool of the running configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// In config order.
    pub pools: Vec<PoolSnap>,
}

impl Snapshot {
    /// Take the snapshot of `pools`.
    pub fn of(pools: &[Arc<PoolRt>]) -> Snapshot {
        Snapshot {
            pools: pools.iter().map(pool).collect(),
        }
    }

    /// The proxy can serve: every pool is ready.
    pub fn ready(&self) -> bool {
        self.pools.iter().all(|p| p.ready)
    }

    /// Every node with its pool and shard.
    pub fn nodes(&self) -> impl Iterator<Item = (&PoolSnap, &ShardSnap, &NodeSnap)> {
        self.pools.iter().flat_map(|p| {
            p.shards
                .iter()
                .flat_map(move |s| s.nodes.iter().map(move |n| (p, s, n)))
        })
    }
}

impl PoolSnap {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.pool.conf.name
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
    }
}

fn kind(p: &PoolRt) -> PoolKind {
    if p.cluster.is_some() {
        PoolKind::Cluster
    } else if p.conf.is_sentinel() {
        PoolKind::Sentinel
    } else if p.checked {
        PoolKind::Replicated
    } else {
        PoolKind::Twemproxy
    }
}

fn pool(p: &Arc<PoolRt>) -> PoolSnap {
    let shards: Vec<ShardSnap> = p.shards.iter().map(|s| shard(p, s)).collect();
    let cache = p.conf.cache;
    let not_ready: Vec<String> = if cache {
        if shards.iter().any(|s| s.writable) {
            Vec::new()
        } else {
            vec![format!("{}: no shard can take requests", p.conf.name)]
        }
    } else {
        shards
            .iter()
            .filter(|s| !s.writable && !s.switching && !s.failing_over)
            .map(|s| format!("{}/{}: {}", p.conf.name, s.name, s.reason))
            .collect()
    };
    PoolSnap {
        pool: Arc::clone(p),
        kind: kind(p),
        cache,
        ready: not_ready.is_empty(),
        not_ready,
        shards,
    }
}

fn shard(p: &PoolRt, s: &ShardRt) -> ShardSnap {
    let view = s.view();
    let rules = crate::topology::node::ReplicaRules::of(&p.conf);
    let nodes: Vec<NodeSnap> = view
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| node(n, view.primary == Some(i), s.is_ejected(), rules))
        .collect();
    // A twemproxy server's configured name (its shard is that one server).
    let name = (!p.checked)
        .then(|| p.conf.servers.get(s.index).and_then(|c| c.name.clone()))
        .flatten();
    let primary = view.primary.and_then(|i| nodes.get(i));
    let target = s.write_target(&view).is_some();
    let reason = if s.is_ejected() {
        "ejected from the ring (auto_eject_hosts)".to_string()
    } else if s.is_switching() && !target {
        "a switchover holds its writes".to_string()
    } else if s.is_failing_over() {
        "a Sentinel failover holds its writes".to_string()
    } else {
        match primary {
            None => "no primary known".to_string(),
            Some(n) if !n.up || n.status == Status::Ejected || n.maintenance => {
                format!("primary {} is {}: {}", n.addr, n.status.name(), n.reason)
            }
            Some(n) if n.node.role() == Role::Replica => {
                format!("primary {} says it is a replica", n.addr)
            }
            Some(_) if !target => "no writable primary".to_string(),
            Some(_) => String::new(),
        }
    };
    let writable = reason.is_empty();
    let primary = primary.map(|n| n.addr.clone());
    let nodes = nodes
        .into_iter()
        .enumerate()
        .map(|(i, mut n)| {
            n.writable = writable && view.primary == Some(i);
            n.name.clone_from(&name);
            n
        })
        .collect();
    ShardSnap {
        name: s.name.clone(),
        primary,
        writable,
        reason,
        ejected: s.is_ejected(),
        switching: s.is_switching(),
        failing_over: s.is_failing_over(),
        switch_state: s.switch_state.lock().map(|x| x.clone()).unwrap_or_default(),
        failovers: s.failovers(),
        switchovers: s.switchovers(),
        resubscriptions: s.resubscriptions(),
        circuit_open: s.circuit.is_open(),
        fail_open_misses: s.circuit.misses(),
        fail_open_drops: s.circuit.drops(),
        nodes,
        spool: s.spool.as_ref().map(|sp| {
            use std::sync::atomic::Ordering::Relaxed;
            let st = &sp.stats;
            let oldest = st.oldest_ms.load(Relaxed);
            SpoolSnap {
                dir: sp.dir().display().to_string(),
                entries: sp.waiting(),
                bytes: st.bytes.load(Relaxed),
                oldest_age_ms: (oldest > 0 && sp.waiting() > 0)
                    .then(|| crate::clock::unix_ms().saturating_sub(oldest)),
                appended: st.appended.load(Relaxed),
                replayed: st.replayed.load(Relaxed),
                replay_errors: st.replay_errors.load(Relaxed),
                refused: st.refused.load(Relaxed),
                stopped: sp.stopped(),
            }
        }),
    }
}

fn node(
    n: &Arc<NodeRt>,
    is_primary: bool,
    shard_ejected: bool,
    rules: crate::topology::node::ReplicaRules,
) -> NodeSnap {
    let max_lag_ms = rules.max_lag.as_millis() as u64;
    let listed = n.listed_down();
    let checked = n.is_checked();
    let up = listed.is_none()
        && if checked {
            n.is_up()
        } else {
            !n.is_traffic_down()
        };
    let last_error = n.last_error();
    let ejected = n.is_ejected() || shard_ejected;
    let maintenance = n.in_maintenance();
    let replica = !is_primary && checked;
    let replica_usable = replica && n.replica_ok() && n.role() == Role::Replica && !n.is_busy();
    let lag_ms = n.lag_ms();
    let (status, reason) = if let Some(flags) = listed {
        let mut why = format!("Sentinel lists it as down ({flags})");
        if !last_error.is_empty() && !n.is_up() {
            why = format!("{why}; last check: {last_error}");
        }
        (Status::Down, why)
    } else if !up {
        let why = if !last_error.is_empty() {
            last_error
        } else if checked && n.ejections() > 0 && n.is_ejected() {
            "ejected by failures on live traffic".to_string()
        } else {
            "has not passed its health checks yet".to_string()
        };
        (Status::Down, why)
    } else if maintenance {
        (Status::Maintenance, "in maintenance".to_string())
    } else if n.is_ejected() {
        (
            Status::Ejected,
            "ejected by failures on live traffic".to_string(),
        )
    } else if shard_ejected {
        (
            Status::Ejected,
            "ejected from the ring (auto_eject_hosts)".to_string(),
        )
    } else if replica && n.is_busy() {
        (
            Status::Out,
            "busy running a script (BUSY): serves reads only when no other node can".to_string(),
        )
    } else if replica && !replica_usable {
        let why = match lag_ms {
            _ if n.role() != Role::Replica => {
                format!("says it is {}, not a replica", role_name(n.role()))
            }
            _ if n.link_down_s().is_some() => format!(
                "replication link down for {} s (max_stale {} s), or syncing",
                n.link_down_s().unwrap_or_default(),
                rules.max_stale.as_secs()
            ),
            Some(ms) if ms > max_lag_ms => {
                format!("replication lag {ms} ms is over max_replica_lag ({max_lag_ms} ms)")
            }
            None => "replication link down, syncing, or lag not measured yet".to_string(),
            Some(_) => "replication link down or syncing".to_string(),
        };
        (Status::Out, why)
    } else {
        (Status::Up, String::new())
    };
    let last = n.last_check_ms();
    NodeSnap {
        node: Arc::clone(n),
        addr: n.addr.to_string(),
        name: None,
        stats_key: n.label.clone(),
        role: if is_primary { "primary" } else { "replica" },
        seen_role: role_name(n.role()),
        status,
        up,
        reason,
        source: if checked { "health-check" } else { "traffic" },
        routable: up && n.is_routable() && !shard_ejected,
        writable: false,
        replica_usable,
        lag_ms,
        lag_bytes: n.lag_bytes(),
        stale: replica_usable && n.is_stale(),
        stale_since: n.link_down_since(),
        stale_reads: n.stale_reads(),
        ejected,
        ejections: n.ejections(),
        maintenance,
        check_us: n.check_us(),
        last_check_age_ms: (last != 0).then(|| now_ms().saturating_sub(last)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(yml: &str) -> Vec<Arc<PoolRt>> {
        let conf = rampart_config::parse(yml, "test").expect("test config parses");
        conf.pools
            .into_iter()
            .enumerate()
            .map(|(i, p)| Arc::new(PoolRt::new(i, p, 1)))
            .collect()
    }

    #[test]
    fn a_twemproxy_node_that_failed_on_traffic_is_down_everywhere_with_its_reason() {
        let pools = pools(
            "a:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1 s0\n   - 127.0.0.1:3:1 s1\n",
        );
        let before = Snapshot::of(&pools);
        assert!(before.ready());
        assert!(before
            .nodes()
            .all(|(_, _, n)| n.up && n.last_check_age_ms.is_none()));
        let dead = &pools[0].shards[1].view().nodes[0];
        dead.traffic_failed("connect failed: Connection refused");
        let snap = Snapshot::of(&pools);
        let (_, s, n) = snap
            .nodes()
            .find(|(_, s, _)| s.name == "s1")
            .expect("s1 is in the snapshot");
        assert_eq!((n.up, n.status, n.writable), (false, Status::Down, false));
        assert_eq!(n.reason, "connect failed: Connection refused");
        assert_eq!(n.name.as_deref(), Some("s1"));
        assert_eq!(n.addr, "127.0.0.1:3");
        assert!(!s.writable);
        assert!(s.reason.contains("127.0.0.1:3 is down"), "{}", s.reason);
        assert!(!snap.ready());
        dead.passive_ok();
        assert!(Snapshot::of(&pools).ready());
    }

    #[test]
    fn a_cache_pool_is_ready_while_one_shard_serves() {
        let pools = pools(
            "a:\n  listen: 127.0.0.1:1\n  auto_eject_hosts: true\n  servers:\n   - 127.0.0.1:2:1 s0\n   - 127.0.0.1:3:1 s1\n",
        );
        pools[0].shards[1].view().nodes[0].traffic_failed("connect failed");
        let snap = Snapshot::of(&pools);
        assert!(snap.ready(), "{:?}", snap.pools[0].not_ready);
        pools[0].shards[0].view().nodes[0].traffic_failed("connect failed");
        assert!(!Snapshot::of(&pools).ready());
    }

    #[test]
    fn checked_nodes_start_down_and_say_why() {
        let pools = pools(
            "b:\n  listen: 127.0.0.1:4\n  primary: 127.0.0.1:5\n  replicas:\n    - 127.0.0.1:6\n",
        );
        let snap = Snapshot::of(&pools);
        let nodes: Vec<_> = snap.nodes().collect();
        assert_eq!(nodes.len(), 2);
        for (_, s, n) in nodes {
            assert_eq!(
                (n.up, n.status, n.source),
                (false, Status::Down, "health-check")
            );
            assert_eq!(n.reason, "has not passed its health checks yet");
            assert!(!s.writable);
        }
        assert!(!snap.ready());
    }
}
