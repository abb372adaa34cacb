//! Following a Redis Cluster: the slot map read from the nodes (`CLUSTER NODES`), checked,
//! agreed, and applied to the pool's shards and slot table.
//!
//! ```text
//! seeds ──CLUSTER NODES──► first map ──► shards (one per primary with slots, its replicas)
//!                                        slot table (16384 entries -> shard)
//! every cluster_refresh, or soon after a MOVED or a failed connection, and every 100 ms
//! while a shard has no writable primary (at most once per 100 ms):
//!   ask every known node ──► group the answers by slot ownership ──► the largest group,
//!   if agreed by two nodes or more (or only one node answered) and no slot's owner has a
//!   lower config epoch than the table's ──► new views (nodes, primary) and a new table
//! ```
//!
//! Why `CLUSTER NODES` and not `CLUSTER SLOTS` or `CLUSTER SHARDS`: it is the only one of
//! the three that gives each node's config epoch (Redis 7.0's `CLUSTER SHARDS` gives a health
//! field and hostnames but no epoch; `CLUSTER SLOTS` gives neither epochs nor health), and the
//! epoch is what says which of two answers is newer. It also flags failed nodes (`fail`,
//! `fail?`) and nodes without an address (`noaddr`, `handshake`), and has existed since 3.0.
//! Its cost is a text line per node per ask, parsed here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rampart_config::{Node, Pool, ServerAddr, Shard};
use tokio_util::sync::CancellationToken;

use crate::ha::link::{Link, Val};
use crate::handshake::Handshake;
use crate::topology::cluster::SlotTable;
use crate::topology::node::NodeRt;
use crate::topology::{PoolRt, ShardView};

/// Shortest time between two refreshes.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the map is asked for while a shard has no writable primary (a failover).
const FAILOVER_POLL: Duration = Duration::from_millis(100);

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapNode {
    /// The node id (40 hex characters).
    pub id: String,
    /// Where it listens for clients.
    pub addr: ServerAddr,
    /// It is a primary (`master` flag).
    pub primary: bool,
    /// Its primary's id, for a replica.
    pub master: Option<String>,
    /// Its config epoch (a replica's is its primary's).
    pub epoch: u64,
    /// Flagged `fail` (the cluster agrees it is down).
    pub failed: bool,
    /// The slot ranges it serves.
    pub slots: Vec<(u16, u16)>,
}

/// Slot ranges with their owner's id and config epoch, sorted.
type Ownership<'a> = Vec<(u16, u16, &'a str, u64)>;

/// One node's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMap {
    /// Every node with an address.
    pub nodes: Vec<MapNode>,
}

impl ClusterMap {
    /// The slot ownership this map states, sorted: `(first, last, owner id, owner epoch)`.
    /// Two maps that agree on it place every key alike.
    fn ownership(&self) -> Ownership<'_> {
        let mut v: Ownership<'_> = self
            .nodes
            .iter()
            .filter(|n| n.primary)
            .flat_map(|n| {
                n.slots
                    .iter()
                    .map(move |&(a, b)| (a, b, n.id.as_str(), n.epoch))
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Primaries that serve slots, ordered by their first slot.
    fn primaries(&self) -> Vec<&MapNode> {
        let mut p: Vec<&MapNode> = self
            .nodes
            .iter()
            .filter(|n| n.primary && !n.slots.is_empty())
            .collect();
        p.sort_by_key(|n| n.slots.iter().map(|s| s.0).min());
        p
    }

    /// The replicas of primary `id`.
    fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a MapNode> + 'a {
        self.nodes
            .iter()
            .filter(move |n| !n.primary && n.master.as_deref() == Some(id))
    }
}

/// Parse a `CLUSTER NODES` reply given by the node at `asked` (whose host stands for an empty
/// one: a node that does not know its own address yet shows `:port`).
///
/// # Errors
/// A line that does not have the documented fields, or a slot out of range.
pub fn parse_nodes(text: &str, asked: &ServerAddr) -> Result<ClusterMap, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(format!("a CLUSTER NODES line with {} fields", f.len()));
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        if flags.iter().any(|x| *x == "noaddr" || *x == "handshake") {
            continue;
        }
        let endpoint = f[1].split([',', '@']).next().unwrap_or("");
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return Err(format!("a node address {:?} without a port", f[1]));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("a node address {:?} with a bad port", f[1]))?;
        if port == 0 {
            continue;
        }
        let host = match (host, asked) {
            ("", ServerAddr::Tcp { host, .. }) => host.clone(),
            ("", ServerAddr::Unix(_)) => return Err("a node without an address".into()),
            (h, _) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue; // a migration in progress, [slot->-id] / [slot-<-id]
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b) = match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if a <= b && usize::from(b) < crate::topology::cluster::SLOTS => {
                    (a, b)
                }
                _ => return Err(format!("a slot range {s:?}")),
            };
            slots.push((a, b));
        }
        nodes.push(MapNode {
            id: f[0].to_string(),
            addr: ServerAddr::Tcp { host, port },
            primary: flags.contains(&"master"),
            master: (f[3] != "-").then(|| f[3].to_string()),
            epoch: f[6].parse().unwrap_or(0),
            failed: flags.contains(&"fail"),
            slots,
        });
    }
    if nodes.is_empty() {
        return Err("CLUSTER NODES listed no node".into());
    }
    Ok(ClusterMap { nodes })
}

/// Ask `addr` for its map, within `limit`.
async fn ask(
    addr: &ServerAddr,
    handshake: &Handshake,
    limit: Duration,
) -> Result<ClusterMap, String> {
    let mut link = Link::open(addr, handshake, limit)
        .await
        .map_err(|e| e.to_string())?;
    let reply = link
        .call(&[&[b"CLUSTER", b"NODES"]], limit)
        .await
        .map_err(|e| e.to_string())?;
    match reply.first() {
        Some(Val::Str(s)) => parse_nodes(&String::from_utf8_lossy(s), addr),
        Some(other) => Err(format!("CLUSTER NODES answered {}", other.describe())),
        None => Err("no reply".into()),
    }
}

/// Ask every address at once; the maps that came back.
async fn ask_all(addrs: &[ServerAddr], handshake: &Handshake, limit: Duration) -> Vec<ClusterMap> {
    let mut set = tokio::task::JoinSet::new();
    for a in addrs {
        let (a, h) = (a.clone(), handshake.clone());
        set.spawn(async move {
            match ask(&a, &h, limit).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!(node = %a, "cluster map not read: {e}");
                    None
                }
            }
        });
    }
    let mut maps = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Some(m)) = r {
            maps.push(m);
        }
    }
    maps
}

/// The map most answers agree on: the largest group of answers with the same slot
/// ownership, if two or more nodes gave it, or the only answer when only one node was
/// asked. `None` when no group has two (a lone node's answer, whatever it says, never
/// changes the map of a pool that knows several nodes).
pub fn agreed(maps: &[ClusterMap], asked: usize) -> Option<&ClusterMap> {
    let mut groups: Vec<(Ownership<'_>, usize, &ClusterMap)> = Vec::new();
    for m in maps {
        let own = m.ownership();
        match groups.iter_mut().find(|g| g.0 == own) {
            Some(g) => g.1 += 1,
            None => groups.push((own, 1, m)),
        }
    }
    let best = groups.iter().max_by_key(|g| g.1)?;
    (best.1 >= 2 || asked == 1).then_some(best.2)
}

/// The shards and slot table of a first map (at start): one shard per primary serving
/// slots, named after its address, ordered by first slot; the node ids of each.
pub fn first_shards(map: &ClusterMap) -> (Vec<Shard>, SlotTable, Vec<Vec<String>>) {
    let node = |n: &MapNode| Node {
        addr: n.addr.clone(),
        zone: None,
        priority: rampart_config::defaults::NODE_PRIORITY,
        text: n.addr.to_string(),
    };
    let mut shards = Vec::new();
    let mut ids = Vec::new();
    let mut table = SlotTable::empty();
    for (i, p) in map.primaries().into_iter().enumerate() {
        let name = p.addr.to_string();
        shards.push(Shard {
            identity: name.clone().into_bytes(),
            name,
            weight: 1,
            primary: Some(node(p)),
            replicas: map.replicas_of(&p.id).map(node).collect(),
        });
        let mut group = vec![p.id.clone()];
        group.extend(map.replicas_of(&p.id).map(|r| r.id.clone()));
        ids.push(group);
        for &(a, b) in &p.slots {
            for s in a..=b {
                table.set(s, Some(i), p.epoch);
            }
        }
    }
    (shards, table, ids)
}

/// Read the first map from the seeds of `conf` (at start, before the pool is built): every
/// seed is asked, then every node their answers name, and the map is taken as for a
/// refresh: agreed by two nodes or more (or the only node asked), or else answered alike by
/// every node that answered.
///
/// # Errors
/// No node answered, the answers disagree, or the map names no primary serving slots.
pub async fn discover(conf: &Pool) -> anyhow::Result<(Vec<Shard>, SlotTable, Vec<Vec<String>>)> {
    let handshake = Handshake::data(conf);
    let limit = conf.timeout;
    let mut addrs: Vec<ServerAddr> = conf
        .cluster
        .iter()
        .map(|s| ServerAddr::Tcp {
            host: s.host.clone(),
            port: s.port,
        })
        .collect();
    let mut maps = ask_all(&addrs, &handshake, limit).await;
    if maps.is_empty() {
        anyhow::bail!(
            "pool '{}': no cluster seed answered CLUSTER NODES within {limit:?}",
            conf.name
        );
    }
    let mut more: Vec<ServerAddr> = Vec::new();
    for m in &maps {
        for n in &m.nodes {
            if !addrs.contains(&n.addr) && !more.contains(&n.addr) {
                more.push(n.addr.clone());
            }
        }
    }
    maps.extend(ask_all(&more, &handshake, limit).await);
    addrs.extend(more);
    let unanimous = maps
        .first()
        .filter(|f| maps.iter().all(|m| m.ownership() == f.ownership()));
    let Some(map) = agreed(&maps, addrs.len()).or(unanimous) else {
        anyhow::bail!(
            "pool '{}': the cluster's nodes disagree on the slot map ({} answers, no two alike)",
            conf.name,
            maps.len()
        );
    };
    let (shards, table, ids) = first_shards(map);
    if shards.is_empty() {
        anyhow::bail!(
            "pool '{}': the cluster has no primary serving slots",
            conf.name
        );
    }
    Ok((shards, table, ids))
}

/// Follow the cluster of `pool` until `stop`: check its nodes, refresh its map.
pub async fn follow(pool: Arc<PoolRt>, workers: usize, stop: CancellationToken) {
    let Some(cluster) = pool.cluster.as_ref() else {
        return;
    };
    let mut checks: HashMap<u64, CancellationToken> = HashMap::new();
    for shard in &pool.shards {
        for n in &shard.view().nodes {
            crate::ha::sentinel::start_check(&pool, n, &mut checks, &stop);
        }
    }
    loop {
        let started = tokio::time::Instant::now();
        refresh(&pool, workers, &mut checks, &stop).await;
        // Until the next refresh is due, look every FAILOVER_POLL whether a shard has no
        // writable primary (its health checks saw it go): a failover is then under way, and
        // the map is asked for at that pace until it names the new primary.
        let due = started + pool.conf.cluster_refresh;
        loop {
            let failing = pool
                .shards
                .iter()
                .any(|s| s.write_target(&s.view()).is_none());
            let next = if failing {
                started + FAILOVER_POLL
            } else {
                due
            };
            let now = tokio::time::Instant::now();
            if now >= next {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until((now + FAILOVER_POLL).min(next)) => {}
                _ = cluster.refresh.notified() => break,
                _ = stop.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + DEBOUNCE) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Every address the pool knows: the nodes of its views, else its seeds.
fn known(pool: &PoolRt) -> Vec<ServerAddr> {
    let mut out: Vec<ServerAddr> = Vec::new();
    for s in &pool.shards {
        for n in &s.view().nodes {
            if !out.contains(&n.addr) {
                out.push(n.addr.clone());
            }
        }
    }
    if out.is_empty() {
        out = pool
            .conf
            .cluster
            .iter()
            .map(|s| ServerAddr::Tcp {
                host: s.host.clone(),
                port: s.port,
            })
            .collect();
    }
    out
}

/// Ask the nodes, and adopt their map when it is agreed and consistent.
async fn refresh(
    pool: &Arc<PoolRt>,
    workers: usize,
    checks: &mut HashMap<u64, CancellationToken>,
    stop: &CancellationToken,
) {
    let Some(cluster) = pool.cluster.as_ref() else {
        return;
    };
    let limit = pool.conf.health.timeout.max(pool.conf.timeout);
    let mut addrs = known(pool);
    let maps = ask_all(&addrs, &pool.handshake, limit).await;
    // Nodes the answers name that the pool does not know yet are asked too, so a node added
    // to the cluster counts (and a view of it is made) without a reload.
    let mut more = Vec::new();
    for m in &maps {
        for n in &m.nodes {
            if !addrs.contains(&n.addr) && !more.contains(&n.addr) {
                more.push(n.addr.clone());
            }
        }
    }
    let mut maps = maps;
    if !more.is_empty() {
        maps.extend(ask_all(&more, &pool.handshake, limit).await);
        addrs.extend(more);
    }
    let Some(map) = agreed(&maps, addrs.len()) else {
        cluster.count_refused();
        tracing::info!(pool = %pool.conf.name, answers = maps.len(), "cluster map not adopted: no two nodes agree on the slot owners");
        return;
    };
    if let Err(why) = adopt(pool, map, workers, checks, stop).await {
        cluster.count_refused();
        tracing::warn!(pool = %pool.conf.name, "cluster map not adopted: {why}");
    }
}

/// Apply an agreed map: match its primaries to the pool's shards (by node ids: a promoted
/// replica keeps its shard), refuse it if a slot's owner epoch would go back, then publish
/// the views and the table.
async fn adopt(
    pool: &Arc<PoolRt>,
    map: &ClusterMap,
    workers: usize,
    checks: &mut HashMap<u64, CancellationToken>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let Some(cluster) = pool.cluster.as_ref() else {
        return Ok(());
    };
    // An Arc, not a guard: it lives across the awaits below.
    let old_table = Arc::clone(&cluster.table());
    let mut ids = cluster.ids.lock().map(|i| i.clone()).unwrap_or_default();
    let mut table = SlotTable::clone(&old_table);
    let mut views: Vec<Option<(&MapNode, Vec<&MapNode>)>> = vec![None; pool.shards.len()];
    let mut covered = vec![false; crate::topology::cluster::SLOTS];
    for p in map.primaries() {
        let group: Vec<&MapNode> = std::iter::once(p).chain(map.replicas_of(&p.id)).collect();
        let shard = ids
            .iter()
            .position(|known| group.iter().any(|n| known.contains(&n.id)));
        for &(a, b) in &p.slots {
            for s in a..=b {
                if covered[usize::from(s)] {
                    return Err(format!("slot {s} has two owners"));
                }
                covered[usize::from(s)] = true;
                if p.epoch < old_table.epoch(s) && old_table.shard(s) != shard {
                    return Err(format!(
                        "slot {s}: its owner's config epoch {} is older than the adopted {}",
                        p.epoch,
                        old_table.epoch(s)
                    ));
                }
                // A primary of no known shard (added since start): its slots keep their
                // shard, whose node redirects (MOVED) to it until a reload adds it.
                if let Some(i) = shard {
                    table.set(s, Some(i), p.epoch);
                }
            }
        }
        match shard {
            Some(i) => {
                ids[i] = group.iter().map(|n| n.id.clone()).collect();
                views[i] = Some((p, group[1..].to_vec()));
            }
            None => {
                tracing::info!(pool = %pool.conf.name, node = %p.addr, "a primary the pool has no shard for serves slots: asking for a shard for it");
                let node = |n: &MapNode| Node {
                    addr: n.addr.clone(),
                    zone: None,
                    priority: rampart_config::defaults::NODE_PRIORITY,
                    text: n.addr.to_string(),
                };
                let name = p.addr.to_string();
                cluster.want_shard(
                    Shard {
                        identity: name.clone().into_bytes(),
                        name,
                        weight: 1,
                        primary: Some(node(p)),
                        replicas: group[1..].iter().map(|n| node(n)).collect(),
                    },
                    group.iter().map(|n| n.id.clone()).collect(),
                );
            }
        }
    }
    for (s, c) in covered.iter().enumerate() {
        if !c {
            table.set(s as u16, None, old_table.epoch(s as u16));
        }
    }
    for (i, v) in views.into_iter().enumerate() {
        if let Some((primary, replicas)) = v {
            apply_view(pool, i, primary, &replicas, workers, checks, stop).await;
        }
    }
    // A slot moves to another shard only once that shard's primary passed its health
    // checks (a shard just added starts with its nodes down): until then its old shard's
    // node redirects to it, which works, where the new shard would refuse reads and hold
    // writes.
    let ready: Vec<bool> = pool
        .shards
        .iter()
        .map(|s| s.view().writable_primary().is_some())
        .collect();
    for s in 0..crate::topology::cluster::SLOTS as u16 {
        if let (Some(new), Some(old)) = (table.shard(s), old_table.shard(s)) {
            if new != old && !ready.get(new).copied().unwrap_or(false) {
                table.set(s, Some(old), old_table.epoch(s));
            }
        }
    }
    if let Ok(mut g) = cluster.ids.lock() {
        *g = ids;
    }
    cluster.publish(table);
    Ok(())
}

/// Make shard `i`'s view the primary and replicas of the map (reusing the nodes it has).
async fn apply_view(
    pool: &Arc<PoolRt>,
    i: usize,
    primary: &MapNode,
    replicas: &[&MapNode],
    workers: usize,
    checks: &mut HashMap<u64, CancellationToken>,
    stop: &CancellationToken,
) {
    let rt = &pool.shards[i];
    let old = rt.view();
    let current = old
        .primary
        .and_then(|p| old.nodes.get(p))
        .map(|n| n.addr.clone());
    let wanted: Vec<&ServerAddr> = std::iter::once(&primary.addr)
        .chain(replicas.iter().map(|r| &r.addr))
        .collect();
    let same = wanted.len() == old.nodes.len()
        && wanted
            .iter()
            .all(|a| old.nodes.iter().any(|n| &n.addr == *a))
        && current.as_ref() == Some(&primary.addr);
    if same {
        return;
    }
    let mut nodes: Vec<Arc<NodeRt>> = Vec::new();
    for a in &wanted {
        let n = old
            .nodes
            .iter()
            .find(|n| &n.addr == *a)
            .cloned()
            .unwrap_or_else(|| {
                let n = Arc::new(NodeRt::new(
                    (*a).clone(),
                    a.to_string(),
                    (None, rampart_config::defaults::NODE_PRIORITY),
                    (pool.conf.name.clone(), rt.name.clone()),
                    workers,
                    true,
                ));
                crate::ha::sentinel::start_check(pool, &n, checks, stop);
                n
            });
        nodes.push(n);
    }
    for n in old.nodes.iter() {
        if !nodes.iter().any(|m| m.id == n.id) {
            if let Some(t) = checks.remove(&n.id) {
                t.cancel();
            }
            n.close_all();
        }
    }
    if current.as_ref() != Some(&primary.addr) {
        if let Some(p) = old.primary.and_then(|p| old.nodes.get(p)) {
            // Nothing more is written to the old primary.
            p.close_all();
        }
        if let Some(p) = nodes.first() {
            crate::ha::sentinel::confirm(p, pool).await;
        }
        if current.is_some() {
            rt.count_failover();
        }
        crate::observe::events::record(
            crate::observe::events::Kind::Failover,
            &pool.conf.name,
            &rt.name,
            &primary.addr.to_string(),
            format!(
                "the cluster names a new primary (config epoch {})",
                primary.epoch
            ),
        );
        tracing::warn!(
            pool = %pool.conf.name,
            shard = %rt.name,
            from = %current.as_ref().map_or_else(|| "none".to_string(), ToString::to_string),
            to = %primary.addr,
            epoch = primary.epoch,
            "primary switched"
        );
    }
    rt.set_view(ShardView {
        nodes,
        primary: Some(0),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001,node-1 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    fn at(port: u16) -> ServerAddr {
        ServerAddr::Tcp {
            host: "10.0.0.9".into(),
            port,
        }
    }

    #[test]
    fn cluster_nodes_lines_give_addresses_roles_epochs_and_slots() {
        let m = parse_nodes(NODES, &at(30001)).expect("parses");
        assert_eq!(m.nodes.len(), 6);
        let me = m
            .nodes
            .iter()
            .find(|n| n.id.starts_with("e7d1"))
            .expect("myself");
        assert_eq!(me.addr, at(30001), "an empty host is the asked node's");
        assert!(me.primary);
        assert_eq!(
            me.slots,
            vec![(0, 5460)],
            "a migration marker is not a slot"
        );
        let r = m
            .nodes
            .iter()
            .find(|n| n.id.starts_with("07c3"))
            .expect("replica");
        assert!(!r.primary);
        assert_eq!(r.master.as_deref(), Some(me.id.as_str()));
        let (shards, table, ids) = first_shards(&m);
        assert_eq!(shards.len(), 3);
        assert_eq!(shards[0].replicas.len(), 1);
        assert_eq!(table.shard(0), Some(0));
        assert_eq!(table.shard(5461), Some(1));
        assert_eq!(table.shard(16383), Some(2));
        assert_eq!(table.epoch(16383), 3);
        assert_eq!(ids[0].len(), 2);
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(parse_nodes("abc 1.2.3.4:1@2 master", &at(1)).is_err());
        assert!(parse_nodes("", &at(1)).is_err());
        let bad_slot = "a 1.2.3.4:1@2 master - 0 0 1 connected 0-16384";
        assert!(parse_nodes(bad_slot, &at(1)).is_err());
    }

    #[test]
    fn a_lone_answer_that_disagrees_with_two_others_is_not_taken() {
        let good = parse_nodes(NODES, &at(30001)).expect("parses");
        let mut stale = good.clone();
        for n in &mut stale.nodes {
            if n.id.starts_with("67ed") {
                n.slots = vec![(5461, 10000)];
            }
        }
        let maps = vec![stale.clone(), good.clone(), good.clone()];
        assert_eq!(agreed(&maps, 3), Some(&good));
        assert_eq!(
            agreed(&[stale.clone(), good.clone()], 2),
            None,
            "one against one"
        );
        assert_eq!(
            agreed(std::slice::from_ref(&stale), 6),
            None,
            "one of six answered"
        );
        assert_eq!(
            agreed(std::slice::from_ref(&stale), 1),
            Some(&stale),
            "one asked"
        );
    }
}
