//! Following a Redis Cluster: the slot map read from the nodes (`CLUSTER NODES`), checked,
//! agreed, and applied to the pool's shards and slot table.
//!
//! ```text
//! seeds ──CLUSTER NODES──► first map ──► shards (one per primary with slots, its replicas)
//!                                        slot table (16384 entries -> shard)
//! every cluster_refresh, or soon after a MOVED or a failed connection, and every 100 ms
//! while a shard has no writable primary (at most once per 100 ms):
//!   ask every known node ──► group the answers by slot owners and members (each node's
//!   id, address, role) ──► the largest group, if agreed by two nodes or more (or only one
//!   node answered) and no slot's owner has a lower config epoch than the table's
//!   ──► new views (nodes at their addresses, primary) and a new table
//!   ──► a primary with slots and no shard: a shard asked for; a shard with no slot left
//!       and no primary: dropped (the control plane rebuilds the pool either way)
//! ```
//!
//! The map itself (the `CLUSTER NODES` reply, asked and agreed) is [`crate::ha::cluster_map`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rampart_config::{Node, Pool, ServerAddr, Shard};
use tokio_util::sync::CancellationToken;

use crate::ha::cluster_map::{agreed, ask_all, ask_all_why, ClusterMap, MapNode};
use crate::handshake::Handshake;
use crate::topology::cluster::SlotTable;
use crate::topology::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardView};

/// Shortest time between two refreshes.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the map is asked for while a shard has no writable primary (a failover).
const FAILOVER_POLL: Duration = Duration::from_millis(100);
/// How often maps that go on being refused are logged again.
const REFUSED_REMINDER: Duration = Duration::from_secs(60);

/// The log of maps not adopted. While no node answers (every node down, or refusing
/// rampart's TLS handshake) the map is asked for every [`FAILOVER_POLL`]: the first refusal
/// is logged, then at most one line every [`REFUSED_REMINDER`] with the number refused since,
/// and one line when a map is adopted again. Every refusal is counted
/// (`rampart_cluster_maps_refused_total`).
#[derive(Default)]
struct Refusals {
    /// Refusals since the last map adopted.
    total: u64,
    /// Refusals left out of the log since its last line.
    quiet: u64,
    /// When the last line was written.
    last_line: Option<tokio::time::Instant>,
}

impl Refusals {
    /// A map was refused for `why`; `warn` for a map refused after it was agreed.
    fn refused(&mut self, pool: &str, why: &str, warn: bool) {
        self.total += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_line
            .is_some_and(|l| now.duration_since(l) < REFUSED_REMINDER)
        {
            self.quiet += 1;
            return;
        }
        let more = match std::mem::take(&mut self.quiet) {
            0 => String::new(),
            n => format!(
                " ({n} more refused since the last line; logged again at most once a minute)"
            ),
        };
        self.last_line = Some(now);
        if warn {
            tracing::warn!(pool, "cluster map not adopted: {why}{more}");
        } else {
            tracing::info!(pool, "cluster map not adopted: {why}{more}");
        }
    }

    /// A map was adopted: one line if some were refused before it.
    fn adopted(&mut self, pool: &str) {
        if self.total > 0 {
            tracing::info!(
                pool,
                "cluster map adopted again, after {} refused",
                self.total
            );
        }
        *self = Refusals::default();
    }
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
/// every node that answered. The seeds are reached as the pool's connections reach its nodes:
/// over TLS when the pool has `backend_tls` (failed handshakes counted in statistics slot
/// `stats_slot`).
///
/// # Errors
/// A `backend_tls` file cannot be read, no node answered, the answers disagree, or the map
/// names no primary serving slots.
pub async fn discover(
    conf: &Pool,
    stats_slot: usize,
) -> anyhow::Result<(Vec<Shard>, SlotTable, Vec<Vec<String>>)> {
    let tls = crate::tls::PoolTls::load(conf)?;
    let handshake = Handshake::data(conf).with_tls(tls.client, stats_slot);
    let limit = conf.timeout;
    let mut addrs: Vec<ServerAddr> = conf
        .cluster
        .iter()
        .map(|s| ServerAddr::Tcp {
            host: s.host.clone(),
            port: s.port,
        })
        .collect();
    let (mut maps, why) = ask_all_why(&addrs, &handshake, limit).await;
    if maps.is_empty() {
        anyhow::bail!(
            "pool '{}': no cluster seed answered CLUSTER NODES within {limit:?} ({})",
            conf.name,
            why.join("; ")
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
    let unanimous = maps.first().filter(|f| maps.iter().all(|m| m.same_as(f)));
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
    let mut refusals = Refusals::default();
    for shard in &pool.shards {
        for n in &shard.view().nodes {
            crate::ha::sentinel::start_check(&pool, n, &mut checks, &stop);
        }
    }
    loop {
        let started = tokio::time::Instant::now();
        refresh(&pool, workers, &mut checks, &mut refusals, &stop).await;
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
    refusals: &mut Refusals,
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
        let why = format!(
            "no two nodes agree on the slot owners ({} answered)",
            maps.len()
        );
        refusals.refused(&pool.conf.name, &why, false);
        return;
    };
    match adopt(pool, map, workers, checks, stop).await {
        Ok(()) => refusals.adopted(&pool.conf.name),
        Err(why) => {
            cluster.count_refused();
            refusals.refused(&pool.conf.name, &why, true);
        }
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
    let primaries = map.primaries();
    let matched = match_shards(&ids, map, &primaries);
    for (p, &shard) in primaries.iter().zip(&matched) {
        let p = *p;
        let group: Vec<&MapNode> = std::iter::once(p).chain(map.replicas_of(&p.id)).collect();
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
    // A shard no primary of the map matched and no slot points at any more (its primary
    // gave every slot away, or left the cluster): the pool is rebuilt without it.
    for (i, s) in pool.shards.iter().enumerate() {
        if !matched.contains(&Some(i)) && table.ranges(i).is_empty() {
            tracing::info!(pool = %pool.conf.name, shard = %s.name, "the shard's nodes serve no slot: asking for the pool without it");
            cluster.drop_shard(&s.name);
        }
    }
    if let Ok(mut g) = cluster.ids.lock() {
        *g = ids;
    }
    cluster.publish(table);
    Ok(())
}

/// The shard each of `primaries` belongs to, by node ids (`ids`, per shard): first the shard
/// that knows the primary itself (a promoted replica keeps its shard), else one that knows
/// one of its replicas and that no other primary claims (a shard's primary that gave its
/// slots away may now be a replica of another: it must not take that one's shard). `None`
/// for a primary of no known shard (added since start).
fn match_shards(
    ids: &[Vec<String>],
    map: &ClusterMap,
    primaries: &[&MapNode],
) -> Vec<Option<usize>> {
    let knows = |i: usize, id: &str| ids[i].iter().any(|k| k == id);
    let mut out: Vec<Option<usize>> = primaries
        .iter()
        .map(|p| (0..ids.len()).find(|&i| knows(i, &p.id)))
        .collect();
    for (k, p) in primaries.iter().enumerate() {
        if out[k].is_some() {
            continue;
        }
        out[k] = (0..ids.len())
            .find(|&i| !out.contains(&Some(i)) && map.replicas_of(&p.id).any(|r| knows(i, &r.id)));
    }
    out
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
    // A map asked for while a failover ran (the follower asks every FAILOVER_POLL while a
    // shard's writes are held) may name the primary that was just demoted: a switch to a
    // node that says it is a replica would close the live primary and send writes to one
    // that answers MOVED, so the view waits for a map its primary agrees with.
    let moves = current.as_ref() != Some(&primary.addr);
    let said = if moves {
        crate::ha::sentinel::says_master(&primary.addr, pool).await
    } else {
        None
    };
    if said == Some(false) {
        tracing::info!(
            pool = %pool.conf.name,
            shard = %rt.name,
            node = %primary.addr,
            "the map names a primary that says it is a replica: an answer from before a failover, not applied"
        );
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
    if moves {
        if let Some(p) = old.primary.and_then(|p| old.nodes.get(p)) {
            // Nothing more is written to the old primary.
            p.close_all();
        }
        // It said master just above: held writes move at once instead of at its next check.
        if let (Some(p), Some(true)) = (nodes.first(), said) {
            p.set_checked(Role::Primary, false, p.check_us());
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
    let view = ShardView {
        nodes,
        primary: Some(0),
    };
    if moves && current.is_some() {
        // After a failover, writes wait briefly for the shard's Pub/Sub links (sharded
        // channels live on the slot's primary) to subscribe there.
        pool.fail_over_to(i, view).await;
    } else {
        rt.set_view(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::cluster_map::parse_nodes;
    use crate::ha::cluster_map::tests::{at, NODES};

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
}
