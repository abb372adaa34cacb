//! Configuration reload (SIGHUP or the admin API): read the file again, build and validate a
//! whole new set of pools (nodes that stay keep their state and connections), bind new
//! listeners, and only then publish it with one atomic swap; any error leaves the running
//! configuration untouched. A pool whose credentials towards its nodes change is first tried
//! on one of its nodes (see `try_credentials`). A cluster pool whose new seeds name none of
//! the nodes it follows moves to that other cluster, and a pool made a cluster pool or a
//! cluster pool added follows its cluster: its map is read from the seeds before anything
//! changes (see `move_clusters`), and the pool is built anew from it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rampart_config::{Config, ServerAddr};

use crate::control::Handle;
use crate::ha::link::{Link, OpenError, Val};
use crate::topology::cluster::SlotTable;
use crate::topology::node::{resolve, NodeRt};
use crate::topology::PoolRt;
use crate::topology::Shared;

/// Build the pools of `config`, reusing the nodes (state, statistics, connections) and the
/// statistics slot of pools that `old` already has. A cluster pool whose `shards` the
/// caller filled (its map was just read from its seeds: at start, or a reload that moved it
/// to another cluster) keeps nothing of `old` but its statistics slot.
///
/// # Errors
/// A cluster pool new to `old` whose map was not read (no shards), a pool over
/// the number of statistics slots, or a certificate or key that cannot be read.
pub fn build_pools(
    shared: &Shared,
    config: Config,
    old: &[Arc<PoolRt>],
) -> anyhow::Result<Vec<Arc<PoolRt>>> {
    let mut pools = Vec::new();
    for mut conf in config.pools {
        let prev = old.iter().find(|p| p.conf.name == conf.name);
        let fresh = conf.is_cluster() && !conf.shards.is_empty();
        if conf.is_cluster() && conf.shards.is_empty() {
            // The file names seeds only: the shards are those the cluster gave at start.
            match prev.filter(|p| p.conf.is_cluster()) {
                Some(p) => conf.shards = p.conf.shards.clone(),
                None => anyhow::bail!(
                    "pool '{}': a cluster pool added by a reload needs a restart to read its slot map",
                    conf.name
                ),
            }
        }
        let slot = match prev {
            Some(p) => p.index,
            None => shared.pool_slot(&conf.name)?,
        };
        // Certificates and keys are read again on every reload; a bad file refuses it.
        let tls = crate::tls::PoolTls::load(&conf)?;
        pools.push(Arc::new(
            PoolRt::with_nodes(
                slot,
                conf,
                shared.workers,
                prev.filter(|_| !fresh).map(|p| p.as_ref()),
            )
            .with_tls(tls),
        ));
    }
    Ok(pools)
}

/// How long a reload waits for running switchovers to finish before it is refused.
const SWITCHOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Mark the pools of `old` that `new` replaced (every one a reload rebuilt) as retired.
fn retire(old: &[Arc<PoolRt>], new: &[Arc<PoolRt>]) {
    for o in old
        .iter()
        .filter(|o| !new.iter().any(|n| Arc::ptr_eq(n, o)))
    {
        o.retire();
    }
}

/// Every spool that holds writes not replayed yet carries over to `new`: a reload that
/// removes its pool or shard, turns its spool off or moves `spool_dir` would leave
/// acknowledged writes on disk with nothing to replay them (and a later spool in that
/// directory would replay them behind newer writes).
///
/// # Errors
/// `pool '<name>' shard '<shard>': its spool (<dir>) holds <n> write(s) not replayed yet;
/// ...; nothing changed`.
fn kept_spools(old: &[Arc<PoolRt>], new: &[Arc<PoolRt>]) -> Result<(), String> {
    for o in old {
        for s in &o.shards {
            let Some(sp) = &s.spool else { continue };
            let waiting = sp.waiting();
            if waiting == 0 {
                continue;
            }
            let kept = new
                .iter()
                .find(|p| p.conf.name == o.conf.name)
                .and_then(|p| p.shards.iter().find(|n| n.name == s.name))
                .and_then(|n| n.spool.as_ref())
                .is_some_and(|n| Arc::ptr_eq(n, sp));
            if !kept {
                return Err(format!(
                    "pool '{}' shard '{}': its spool ({}) holds {waiting} write(s) not replayed yet, which this file would leave behind (the shard or pool removed, its spool turned off or moved); reload again once the spool is empty; nothing changed",
                    o.conf.name,
                    s.name,
                    sp.dir().display()
                ));
            }
        }
    }
    Ok(())
}

/// Share of keys (0..1) of a sample that would move to another shard between `a` and `b`.
/// A key whose shard is renamed but served by the same primary (a pool that changes how it
/// lists its backends, `servers:` to `primary:`, over the same node) stays where its data is.
/// When `hash_tag` changes, the sample is keys with a tag (of the old and of the new
/// delimiters, `x{user7}y`): keys without one stay, those with one move, and only they can
/// tell. `named`: the primaries of `b`'s shards as its new Sentinels name them, where its
/// view has none yet (a pool made a Sentinel pool, or given other Sentinels).
fn moved_share(a: &PoolRt, b: &PoolRt, named: Option<&[rampart_config::ServerAddr]>) -> f64 {
    const SAMPLE: usize = 20_000;
    let primaries = |p: &PoolRt| -> Vec<Option<rampart_config::ServerAddr>> {
        p.shards
            .iter()
            .map(|s| {
                let v = s.view();
                v.primary
                    .and_then(|i| v.nodes.get(i))
                    .map(|n| n.addr.clone())
            })
            .collect()
    };
    let (pa, mut pb) = (primaries(a), primaries(b));
    for (p, n) in pb.iter_mut().zip(named.unwrap_or_default()) {
        if p.is_none() {
            *p = Some(n.clone());
        }
    }
    let tags: Vec<[u8; 2]> = if a.conf.hash_tag == b.conf.hash_tag {
        Vec::new()
    } else {
        [&a.conf.hash_tag, &b.conf.hash_tag]
            .into_iter()
            .flatten()
            .map(|t| t.delimiters())
            .collect()
    };
    let mut moved = 0;
    for i in 0..SAMPLE {
        let key = match tags.get(i % tags.len().max(1)) {
            Some([open, close]) => {
                let mut k = format!("rampart:reload:{i}:").into_bytes();
                k.push(*open);
                k.extend_from_slice(format!("tag{}", i / 2).as_bytes());
                k.push(*close);
                k
            }
            None => format!("rampart:reload:{i}").into_bytes(),
        };
        let (sa, sb) = (a.shard_for_key(&key), b.shard_for_key(&key));
        let same = match (sa, sb) {
            (Some(x), Some(y)) => {
                a.shards[x].name == b.shards[y].name
                    || pa[x].as_ref().is_some_and(|n| Some(n) == pb[y].as_ref())
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            moved += 1;
        }
    }
    moved as f64 / SAMPLE as f64
}

/// Read the config file again and apply it. A pool whose key placement would change (shards
/// added, removed, renamed or re-weighted, another hash) is applied only when `force` is set
/// or the pool is a cache (`cache: true`, by default `auto_eject_hosts: true`, whose keys may
/// move anyway).
///
/// # Errors
/// Why nothing changed: the file is invalid, a listener cannot be bound, or a ring change
/// was not forced. The running configuration stays as it was.
pub async fn reload(shared: &Arc<Shared>, control: &Handle, force: bool) -> Result<String, String> {
    // Shutting down abandons a reload wherever it waits (the control plane's lock, a
    // switchover, a trial connection), so the drain does not wait behind it.
    let result = tokio::select! {
        r = reload_inner(shared, control, force) => r,
        () = shared.shutdown.cancelled() => {
            Err("rampart is shutting down; the reload was abandoned".to_string())
        }
    };
    let (kind_msg, ok) = match &result {
        Ok(m) => (m.clone(), true),
        Err(e) => (format!("refused: {e}"), false),
    };
    shared.reloads.fetch_add(1, Ordering::Relaxed);
    if !ok {
        shared.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("reload {kind_msg}");
    } else {
        tracing::info!("reload: {kind_msg}");
    }
    if let Ok(mut last) = shared.last_reload.lock() {
        *last = kind_msg.clone();
    }
    crate::observe::events::record(crate::observe::events::Kind::Reload, "", "", "", kind_msg);
    result
}

async fn reload_inner(
    shared: &Arc<Shared>,
    control: &Handle,
    force: bool,
) -> Result<String, String> {
    let path = shared
        .config_path
        .as_ref()
        .ok_or("rampart was started without a configuration file")?;
    let mut config = rampart_config::load(path).map_err(|e| e.to_string())?;
    for w in config.pools.iter().flat_map(|p| &p.warnings) {
        tracing::warn!("{w}");
    }
    let mut guard = control.lock().await;
    let control = guard.as_mut().ok_or("the control plane is not running")?;
    // A running switchover holds writes in the shards of the current generation: let it
    // finish first, and start none until this one is published.
    let _switchovers = crate::ha::switchover::exclusive(SWITCHOVER_WAIT)
        .await
        .ok_or_else(|| {
            format!(
                "a switchover was still running after {} s; nothing changed, reload again once it is done",
                SWITCHOVER_WAIT.as_secs()
            )
        })?;
    let old = shared.pools.load_full();
    let moved = move_clusters(shared, &mut config, &old).await?;
    let new = build_pools(shared, config, &old).map_err(|e| format!("{e:#}"))?;
    for m in moved.iter() {
        if let Some(c) = new
            .iter()
            .find(|p| p.conf.name == m.pool)
            .and_then(|p| p.cluster.as_ref())
        {
            if let Ok(mut g) = c.ids.lock() {
                *g = m.ids.clone();
            }
            c.publish(m.table.clone());
        }
    }
    let is_moved = |name: &str| moved.iter().any(|m| m.pool == name);
    // Sentinels the pools did not follow must know their masters; the primaries they name
    // are where the keys of those shards will be.
    let mut named = std::collections::HashMap::new();
    for p in new.iter().filter(|p| p.conf.is_sentinel()) {
        let same = old
            .iter()
            .find(|o| o.conf.name == p.conf.name)
            .is_some_and(|o| o.conf.sentinels == p.conf.sentinels);
        if !same {
            named.insert(
                p.conf.name.clone(),
                crate::ha::sentinel::try_sentinels(p).await?,
            );
        }
    }
    let mut moves = Vec::new();
    for p in &new {
        // A pool moved to another cluster has other data: no key of it moves.
        if is_moved(&p.conf.name) {
            continue;
        }
        if let Some(o) = old.iter().find(|o| o.conf.name == p.conf.name) {
            let share = moved_share(o, p, named.get(&p.conf.name).map(Vec::as_slice));
            if share > 0.0 {
                // A cache's keys may move anyway; a pool that becomes one with this reload
                // still holds data placed by the old ring.
                moves.push((p.conf.name.clone(), share, o.conf.cache && p.conf.cache));
            }
        }
    }
    let blocked: Vec<String> = moves
        .iter()
        .filter(|(_, _, cache)| !cache && !force)
        .map(|(n, s, _)| format!("pool '{n}' would move {:.1}% of its keys", s * 100.0))
        .collect();
    if !blocked.is_empty() {
        return Err(format!(
            "{}; reload with force to apply (POST /api/reload?force=true)",
            blocked.join(", ")
        ));
    }
    kept_spools(&old, &new)?;
    // A moved pool's new seeds accepted its handshake already, and its old nodes prove
    // nothing about the new cluster.
    let tried: Vec<Arc<PoolRt>> = new
        .iter()
        .filter(|p| !is_moved(&p.conf.name))
        .cloned()
        .collect();
    try_credentials(&old, &tried).await?;
    for p in new.iter().filter(|p| is_moved(&p.conf.name)) {
        rise_now(p, |_, _| true).await;
    }
    rise_fresh(shared, &old, &new).await;
    let bound = control.bind_new(&new).map_err(|e| format!("{e:#}"))?;
    shared.pools.store(Arc::new(new.clone()));
    shared.generation.fetch_add(1, Ordering::Release);
    retire(&old, &new);
    // Sessions that wait for nothing but messages see the new users and pools now.
    crate::observe::clients::reloaded();
    control.sync(shared, &new, bound);
    // The nodes of the cluster a pool left: dedicated and subscriber connections close now;
    // request connections as each worker moves to the new generation.
    for o in old.iter().filter(|o| is_moved(&o.conf.name)) {
        for s in &o.shards {
            for n in &s.view().nodes {
                n.close_all();
            }
        }
    }
    crate::control::rights::check_new(&old, &new);
    let mut msg = format!("applied {} pool(s); {}", new.len(), changes(&old, &new));
    for m in &moved {
        let what = match m.kind {
            Became::Moved => "moved to another cluster",
            Became::Cluster => "is now a cluster pool",
            Became::Added => "follows its cluster",
        };
        msg.push_str(&format!("; pool '{}' {what} ({} shards)", m.pool, m.shards));
    }
    for (n, s, _) in &moves {
        msg.push_str(&format!("; pool '{n}' moved {:.1}% of its keys", s * 100.0));
    }
    Ok(msg)
}

/// The first map of a cluster pool that a reload moves to another cluster.
struct Moved {
    /// The pool's name.
    pool: String,
    /// Its slot table.
    table: SlotTable,
    /// The node ids of each shard (primary first).
    ids: Vec<Vec<String>>,
    /// How many shards the map gave.
    shards: usize,
    /// Why its map was read.
    kind: Became,
}

/// Cluster pools whose map `config` makes the reload read from their seeds: a cluster pool
/// pointed at another cluster (its `cluster:` seeds changed and include none of the nodes
/// of the running pool's map, compared by address, host names resolved), a pool of another
/// kind made a cluster pool, and a cluster pool the file adds. The map of each is read now,
/// as at start, and its `shards` filled from it, so `build_pools` builds it as a new pool. A
/// pool whose new seeds still include a node it follows keeps following its cluster (the
/// seeds then serve at the next start).
///
/// # Errors
/// `pool '<name>': no cluster seed answered CLUSTER NODES ...` (or another reason the seeds
/// gave no valid map), followed by `; the pool stays on its cluster; nothing changed` (or
/// `the pool stays as it was`, `the pool is not added`).
async fn move_clusters(
    shared: &Shared,
    config: &mut Config,
    old: &[Arc<PoolRt>],
) -> Result<Vec<Moved>, String> {
    let mut moved = Vec::new();
    for conf in config.pools.iter_mut().filter(|c| c.is_cluster()) {
        let prev = old.iter().find(|o| o.conf.name == conf.name);
        let kind = match prev {
            Some(o) if o.conf.is_cluster() => {
                if o.conf.cluster == conf.cluster || follows_a_seed(o, conf).await {
                    continue;
                }
                Became::Moved
            }
            Some(_) => Became::Cluster,
            None => Became::Added,
        };
        let slot = match prev {
            Some(o) => o.index,
            None => shared.pool_slot(&conf.name).map_err(|e| format!("{e:#}"))?,
        };
        let (shards, table, ids) = crate::ha::cluster::discover(conf, slot)
            .await
            .map_err(|e| {
                let stays = match kind {
                    Became::Moved => "the pool stays on its cluster",
                    Became::Cluster => "the pool stays as it was",
                    Became::Added => "the pool is not added",
                };
                format!("{e:#}; {stays}; nothing changed")
            })?;
        tracing::info!(pool = %conf.name, shards = shards.len(), "cluster slot map read from the new seeds");
        moved.push(Moved {
            pool: conf.name.clone(),
            table,
            ids,
            shards: shards.len(),
            kind,
        });
        conf.shards = shards;
    }
    Ok(moved)
}

/// What a reload that reads a cluster pool's map from its seeds does to the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Became {
    /// A cluster pool moved to another cluster.
    Moved,
    /// A pool of another kind made a cluster pool.
    Cluster,
    /// A cluster pool the reload adds.
    Added,
}

/// Check every node of `pool` that `which` picks by its shard's name and the node (a cluster
/// pool moved to another cluster, its shards added since start, the nodes a reload made
/// anew; not published yet) as their health checks would, all at once, so that those that pass serve from the swap on (see
/// `ha::health::rise_now`); takes about `rise` checks `fast_interval` apart.
async fn rise_now(pool: &PoolRt, which: impl Fn(&str, &NodeRt) -> bool) {
    let mut checks = tokio::task::JoinSet::new();
    for s in &pool.shards {
        for n in s.view().nodes.iter().filter(|n| which(&s.name, n)) {
            checks.spawn(crate::ha::health::rise_now(
                Arc::clone(n),
                pool.conf.health,
                crate::topology::node::ReplicaRules::of(&pool.conf),
                Arc::clone(&pool.handshake),
            ));
        }
    }
    while checks.join_next().await.is_some() {}
}

/// The nodes a reload makes anew in a checked pool (a shard added or renamed, a node added,
/// a pool that changes kind: `servers:` to `primary:`, to `sentinels:`) start down, and
/// would refuse the pool's requests until their checks bring them up: they are checked
/// now, before the swap, as a cluster pool moved to another cluster is. A Sentinel shard
/// with no node yet first asks its Sentinels for them (see `ha::sentinel::first_views`).
/// Cluster pools follow their own path (`move_clusters`, `reshape_clusters`).
async fn rise_fresh(shared: &Shared, old: &[Arc<PoolRt>], new: &[Arc<PoolRt>]) {
    let known: std::collections::HashSet<u64> = old
        .iter()
        .flat_map(|p| p.shards.iter())
        .flat_map(|s| s.view().nodes.iter().map(|n| n.id).collect::<Vec<_>>())
        .collect();
    let mut all = tokio::task::JoinSet::new();
    for p in new.iter().filter(|p| p.checked && !p.conf.is_cluster()) {
        let (p, known) = (Arc::clone(p), known.clone());
        let workers = shared.workers;
        all.spawn(async move {
            if p.conf.is_sentinel() {
                crate::ha::sentinel::first_views(&p, workers).await;
            }
            rise_now(&p, |_, n| !known.contains(&n.id)).await;
        });
    }
    while all.join_next().await.is_some() {}
}

/// Whether one of `conf`'s cluster seeds is a node of `pool`'s current map: the same host
/// text and port, or an address both resolve to.
async fn follows_a_seed(pool: &PoolRt, conf: &rampart_config::Pool) -> bool {
    let mut nodes: Vec<(String, u16)> = Vec::new();
    for s in &pool.shards {
        for n in &s.view().nodes {
            if let ServerAddr::Tcp { host, port } = &n.addr {
                nodes.push((host.clone(), *port));
            }
        }
    }
    let mut node_ips: Vec<SocketAddr> = Vec::new();
    for (h, p) in &nodes {
        node_ips.extend(resolve(h, *p).await);
    }
    for seed in &conf.cluster {
        if nodes
            .iter()
            .any(|(h, p)| *h == seed.host && *p == seed.port)
        {
            return true;
        }
        if resolve(&seed.host, seed.port)
            .await
            .iter()
            .any(|a| node_ips.contains(a))
        {
            return true;
        }
    }
    false
}

/// Before a reload changes how a pool logs in to its nodes (`redis_auth`, `redis_username`,
/// `redis_db`) or speaks to them (`backend_tls`, or the content of its files), one node the
/// running pool knows is connected to with the new set-up, and sent a `PING` when nothing
/// else was (no password left) or TLS changed. If it refuses it (`WRONGPASS`, `NOAUTH`, a
/// database it does not have, a failed TLS handshake, a connection closed at its first
/// command), the reload is refused:
/// applied, every new server connection and health check of the pool would fail. A node
/// that cannot be reached proves nothing and does not stop the reload. The password never
/// appears in the refusal (Redis' own error text is quoted).
///
/// # Errors
/// `pool '<name>': node <addr> refuses the new redis_auth/redis_username/redis_db (<Redis'
/// error>); nothing changed` (`backend_tls` in place of the keys when TLS changed, with the
/// TLS or connection error).
async fn try_credentials(old: &[Arc<PoolRt>], new: &[Arc<PoolRt>]) -> Result<(), String> {
    for p in new {
        let Some(o) = old.iter().find(|o| o.conf.name == p.conf.name) else {
            continue;
        };
        let creds = o.conf.redis_auth != p.conf.redis_auth
            || o.conf.redis_username != p.conf.redis_username
            || o.conf.redis_db != p.conf.redis_db;
        let tls = o.conf.backend_tls != p.conf.backend_tls
            || o.tls.client_digest() != p.tls.client_digest();
        if !creds && !tls {
            continue;
        }
        // The new pool has not learnt Sentinel's or the cluster's nodes yet: ask the running
        // pool for one.
        let Some(node) = o
            .shards
            .iter()
            .find_map(|s| s.view().nodes.first().cloned())
        else {
            continue;
        };
        let what = match (creds, tls) {
            (true, false) => "redis_auth/redis_username/redis_db",
            (false, _) => "backend_tls",
            (true, true) => "redis_auth/redis_username/redis_db/backend_tls",
        };
        let refused = |why: &dyn std::fmt::Display| {
            Err(format!(
                "pool '{}': node {} refuses the new {what} ({why}); nothing changed",
                p.conf.name, node.label
            ))
        };
        // A connection that closes after it was made (not one that times out) is a server
        // that does not speak what the new backend_tls speaks.
        let closed = |e: &std::io::Error| tls && e.kind() != std::io::ErrorKind::TimedOut;
        // Quiet: the running pool's connections are refused until the swap, and say so.
        match Link::open(&node.addr, &p.handshake.quiet(), p.timeout()).await {
            // Nothing may have been sent yet (no password): the first command says whether
            // the node wants one, and whether it speaks the new TLS set-up.
            Ok(mut link) if p.handshake.is_empty() || tls => {
                match link.call(&[&[b"PING"]], p.timeout()).await {
                    Ok(r) => {
                        if let Some(Val::Err(e)) = r.first() {
                            if e.starts_with("NOAUTH") {
                                return refused(e);
                            }
                        }
                    }
                    Err(e) if closed(&e) => return refused(&e),
                    Err(_) => {}
                }
            }
            Err(OpenError::Refused(e))
                if e.is_credentials()
                    || matches!(e, crate::handshake::HandshakeError::Select(..)) =>
            {
                return refused(&e);
            }
            // The TLS handshake failed (an untrusted certificate, a server without TLS).
            Err(OpenError::Connect(e)) if tls && e.to_string().contains("TLS handshake") => {
                return refused(&e);
            }
            Err(OpenError::Io(e)) if closed(&e) => return refused(&e),
            // Accepted, not reached, or busy: nothing to hold the reload for.
            _ => {}
        }
    }
    Ok(())
}

/// The certificates a reload read that differ from those before (same files, new content):
/// `certificates renewed: listener proxy.pem expires 2032-01-01T00:00:00Z`.
fn renewed(old: &PoolRt, new: &PoolRt) -> Option<String> {
    let fresh: Vec<String> = new
        .tls
        .certs
        .iter()
        .filter(|c| !old.tls.certs.contains(c))
        .map(|c| {
            let at = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(c.not_after).unwrap_or(0));
            format!(
                "{} {} expires {}",
                c.role,
                c.file,
                humantime::format_rfc3339_seconds(at)
            )
        })
        .collect();
    let word = if old.tls.certs.is_empty() {
        "loaded"
    } else {
        "renewed"
    };
    (!fresh.is_empty()).then(|| format!("certificates {word}: {}", fresh.join(", ")))
}

/// Give each cluster pool the shards its follower asked for (primaries added to the cluster
/// since start) and take away those it dropped (no slot left, their primary gone from the
/// cluster or serving none): the pool is rebuilt, its other shards, nodes and connections
/// kept as a reload keeps them (matched by name), and published the same way; connections
/// to the nodes of a dropped shard finish what they hold and close. Returns what changed, as
/// `pool/shard added` and `pool/shard removed`.
pub async fn reshape_clusters(shared: &Arc<Shared>, control: &Handle) -> Vec<String> {
    let mut guard = control.lock().await;
    let Some(control) = guard.as_mut() else {
        return Vec::new();
    };
    // Not while a switchover holds writes in the current generation: the next round.
    let Some(_switchovers) = crate::ha::switchover::try_exclusive() else {
        return Vec::new();
    };
    let old = shared.pools.load_full();
    let mut changed = Vec::new();
    let mut gone_nodes = Vec::new();
    let mut new: Vec<Arc<PoolRt>> = Vec::with_capacity(old.len());
    for p in old.iter() {
        let (wanted, gone) = p
            .cluster
            .as_ref()
            .map(|c| (c.take_new_shards(), c.take_gone_shards()))
            .unwrap_or_default();
        let wanted: Vec<_> = wanted
            .into_iter()
            .filter(|(s, _)| !p.conf.shards.iter().any(|o| o.name == s.name))
            .collect();
        // Never the last shard: a pool keeps somewhere to send its keys.
        let gone: Vec<String> = gone
            .into_iter()
            .filter(|g| p.conf.shards.iter().any(|o| &o.name == g))
            .take(p.conf.shards.len().saturating_sub(1) + wanted.len())
            .collect();
        if wanted.is_empty() && gone.is_empty() {
            new.push(Arc::clone(p));
            continue;
        }
        let mut conf = p.conf.clone();
        for g in &gone {
            changed.push(format!("{}/{g} removed", conf.name));
            if let Some(s) = p.shards.iter().find(|s| &s.name == g) {
                gone_nodes.extend(s.view().nodes.iter().cloned());
            }
        }
        conf.shards.retain(|s| !gone.contains(&s.name));
        let mut added_ids = Vec::new();
        let added: Vec<String> = wanted.iter().map(|(s, _)| s.name.clone()).collect();
        for (s, i) in wanted {
            changed.push(format!("{}/{} added", conf.name, s.name));
            added_ids.push((s.name.clone(), i));
            conf.shards.push(s);
        }
        // The same TLS material (listener and backend side): only the shards change.
        let rt = PoolRt::with_nodes(p.index, conf, shared.workers, Some(p)).with_tls(p.tls.clone());
        if let Some(c) = &rt.cluster {
            if let Ok(mut g) = c.ids.lock() {
                for (name, i) in added_ids {
                    if let Some(at) = rt.shards.iter().position(|s| s.name == name) {
                        g[at] = i;
                    }
                }
            }
        }
        // A new shard's primary passes its checks before the pool names it: commands
        // sent to every shard (DBSIZE, KEYS, SCAN) reach it from the swap on.
        rise_now(&rt, |name, _| added.iter().any(|a| a == name)).await;
        new.push(Arc::new(rt));
    }
    if changed.is_empty() {
        return changed;
    }
    match control.bind_new(&new) {
        Ok(bound) => {
            shared.pools.store(Arc::new(new.clone()));
            shared.generation.fetch_add(1, Ordering::Release);
            retire(&old, &new);
            control.sync(shared, &new, bound);
            // Dedicated and subscriber connections to a dropped shard's nodes close now;
            // request connections close as each worker moves to the new generation.
            for n in &gone_nodes {
                n.close_all();
            }
            let msg = format!("cluster shards changed: {}", changed.join(", "));
            tracing::info!("{msg}");
            crate::observe::events::record(crate::observe::events::Kind::Reload, "", "", "", msg);
        }
        Err(e) => tracing::error!("cluster shards not changed: {e:#}"),
    }
    changed
}

/// What a reload changed, per pool, in words: `demo: timeout 1000ms -> 500ms,
/// health_check.interval 1s -> 200ms; extra: added`, or `nothing changed`.
fn changes(old: &[Arc<PoolRt>], new: &[Arc<PoolRt>]) -> String {
    let mut out = Vec::new();
    for p in new {
        match old.iter().find(|o| o.conf.name == p.conf.name) {
            None => out.push(format!("{}: added", p.conf.name)),
            Some(o) => {
                let mut c = p.conf.changes_from(&o.conf);
                if let Some(renewed) = renewed(o, p) {
                    c.push(renewed);
                }
                if !c.is_empty() {
                    out.push(format!("{}: {}", p.conf.name, c.join(", ")));
                }
            }
        }
    }
    for o in old
        .iter()
        .filter(|o| !new.iter().any(|p| p.conf.name == o.conf.name))
    {
        out.push(format!("{}: removed", o.conf.name));
    }
    if out.is_empty() {
        "nothing changed".into()
    } else {
        out.join("; ")
    }
}
