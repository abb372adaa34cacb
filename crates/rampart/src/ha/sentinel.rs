//! Following Redis Sentinel, as its client protocol describes.
//!
//! For every shard of a Sentinel pool (the shard's name is the master name) the follower asks
//! the sentinels for the master's address (`SENTINEL MASTER`, preferring the answer with the
//! highest config epoch when they disagree) and its replicas (`SENTINEL REPLICAS`), at least
//! every `sentinel_poll`. It also subscribes on every sentinel to its events (`CHANNELS`);
//! each triggers an immediate poll, and a `+switch-master` is applied at once. Sentinel decides
//! who the primary is, not the proxy: writes go only to the address Sentinel names, and only
//! once that node's own ROLE says master (any other node that claims master, such as a
//! restarted old primary, gets none).
//!
//! Writes are held (in the shard's hold, bounded by `failover_hold` and `failover_hold_bytes`)
//! from the moment a sentinel announces a failover of the master (`+try-failover`) until the
//! new primary is applied, or every announcing sentinel gives up (`-failover-abort-*`,
//! `+failover-end-for-timeout`), or `failover_hold` passes. A live primary that Sentinel fails
//! over (`SENTINEL FAILOVER`, or a false detection under load) would otherwise acknowledge
//! writes after its replica was promoted, and lose them when it is turned into a replica. On a
//! switch every connection to the old primary is closed. When no sentinel answers, the last
//! topology stays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_config::{SentinelAddr, ServerAddr};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ha::link::{Link, Val};
use crate::handshake::Handshake;
use crate::topology::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardView};

/// What the sentinels say about one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    /// The master's address.
    pub primary: (String, u16),
    /// Its replicas that Sentinel does not consider down.
    pub replicas: Vec<(String, u16)>,
    /// Its replicas that Sentinel considers down (`s_down` or `o_down`), with Sentinel's
    /// flags: they stay in the view, down, so operators see them.
    pub down: Vec<((String, u16), String)>,
    /// Sentinel's config epoch for this master.
    pub epoch: u64,
}

fn fields(v: &Val) -> HashMap<String, String> {
    let items = v.items();
    items
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.text()?, kv.get(1)?.text()?)))
        .collect()
}

/// Parse the replies to `SENTINEL MASTER name` and `SENTINEL REPLICAS name`.
pub fn parse_master(master: &Val, replicas: &Val) -> Option<MasterInfo> {
    let m = fields(master);
    let primary = (m.get("ip")?.clone(), m.get("port")?.parse().ok()?);
    let epoch = m
        .get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut live = Vec::new();
    let mut down = Vec::new();
    for r in replicas.items().iter().map(fields) {
        let Some(addr) = (|| Some((r.get("ip")?.clone(), r.get("port")?.parse().ok()?)))() else {
            continue;
        };
        // Only replicas Sentinel has judged down are taken out (and shown down). A link that
        // is merely `disconnected` is often Sentinel's own connection killed by a promotion
        // (`CLIENT KILL TYPE normal`): taking the node out then would forget its health and
        // make it start down again right when it becomes the primary.
        let flags = r.get("flags").map(String::as_str).unwrap_or("");
        if flags.contains("s_down") || flags.contains("o_down") {
            down.push((addr, flags.to_string()));
        } else {
            live.push(addr);
        }
    }
    Some(MasterInfo {
        primary,
        replicas: live,
        down,
        epoch,
    })
}

/// Follow the sentinels of `pool` until `stop`.
pub async fn follow(pool: Arc<PoolRt>, workers: usize, stop: CancellationToken) {
    let kick = Arc::new(Notify::new());
    let mut sentinels: Vec<SentinelAddr> = pool.conf.sentinels.clone();
    for s in &sentinels {
        tokio::spawn(subscribe(
            Arc::clone(&pool),
            s.clone(),
            Arc::clone(&kick),
            stop.clone(),
        ));
    }
    // A failover hold a reload carried over ends as the previous follower's would have.
    for shard in pool.shards.iter().filter(|s| s.is_failing_over()) {
        if let Some(left) = shard.failover_hold_left(pool.conf.failover_hold) {
            tokio::spawn(expire_later(Arc::clone(&pool), shard.index, left));
        }
    }
    let mut checks: HashMap<u64, CancellationToken> = HashMap::new();
    // Nodes a reload carried over from the previous follower (whose checks ended with it) are
    // checked again at once, with this generation's settings.
    for shard in &pool.shards {
        for n in &shard.view().nodes {
            start_check(&pool, n, &mut checks, &stop);
        }
    }
    let mut rounds = 0u64;
    // Per shard: since when no Sentinel answered about its master, and when that was last said.
    let mut unanswered: Vec<Option<(Instant, Instant)>> = vec![None; pool.shards.len()];
    loop {
        for (shard, silent) in unanswered.iter_mut().enumerate() {
            match ask(&pool, &pool.sentinel_handshake, &sentinels, shard).await {
                Some(info) => {
                    if let Some((since, _)) = silent.take() {
                        tracing::info!(pool = %pool.conf.name, shard = %pool.shards[shard].name, "a Sentinel answers about the master again, after {}", humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())));
                    }
                    apply(&pool, shard, &info, workers, &mut checks, &stop).await;
                }
                None => note_unanswered(&pool, shard, &sentinels, silent),
            }
        }
        // Learn sentinels added after start (every ~10 polls).
        if rounds.is_multiple_of(10) {
            for s in discover(&pool, &sentinels).await {
                if first_announced(&pool.conf.name, &s) {
                    tracing::info!(pool = %pool.conf.name, sentinel = %format!("{}:{}", s.host, s.port), "following a newly discovered sentinel");
                }
                tokio::spawn(subscribe(
                    Arc::clone(&pool),
                    s.clone(),
                    Arc::clone(&kick),
                    stop.clone(),
                ));
                sentinels.push(s);
            }
        }
        rounds += 1;
        tokio::select! {
            _ = tokio::time::sleep(pool.conf.sentinel_poll) => {}
            _ = kick.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Whether discovering sentinel `s` for pool `pool` is news: the follower of every reload
/// discovers again the Sentinels its predecessor had found, which says nothing new. At
/// most [`MAX_SENTINELS`] per pool are remembered (4096 in all, then forgotten at once).
fn first_announced(pool: &str, s: &SentinelAddr) -> bool {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let Ok(mut seen) = SEEN.lock() else {
        return true;
    };
    let seen = seen.get_or_insert_with(Default::default);
    if seen.len() >= 4096 {
        seen.clear();
    }
    seen.insert(format!("{pool}\n{s}"))
}

/// `a:1, b:2`: Sentinel addresses for a log line or an error.
fn listed(sentinels: &[SentinelAddr]) -> String {
    let list: Vec<String> = sentinels.iter().map(ToString::to_string).collect();
    list.join(", ")
}

/// Least time between two warnings that no Sentinel answers about a shard's master.
const UNANSWERED_REMIND: Duration = Duration::from_secs(60);

/// No Sentinel of `sentinels` answered about `shard`'s master this round: warn when that
/// starts and at most once a minute while it lasts (`silent`: since when, last said when),
/// since failovers are not followed meanwhile.
fn note_unanswered(
    pool: &PoolRt,
    shard: usize,
    sentinels: &[SentinelAddr],
    silent: &mut Option<(Instant, Instant)>,
) {
    let now = Instant::now();
    let said = match silent {
        None => {
            *silent = Some((now, now));
            true
        }
        Some((_, last)) if now.duration_since(*last) >= UNANSWERED_REMIND => {
            *last = now;
            true
        }
        Some(_) => false,
    };
    if said {
        let since = silent.map_or(Duration::ZERO, |(s, _)| now.duration_since(s));
        tracing::warn!(pool = %pool.conf.name, shard = %pool.shards[shard].name, "no Sentinel answers about master '{}' (asked {}) for {}: failovers are not followed until one does", pool.shards[shard].name, listed(sentinels), humantime::format_duration(Duration::from_secs(since.as_secs())));
    }
}

/// Before a reload gives `pool` Sentinels it did not follow (a changed `sentinels:` list, or a
/// pool made a Sentinel pool), at least one of them must answer about each master
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`): a list that nobody on it answers would leave the
/// pool without anyone to follow failovers from. Returns each shard's primary as the first
/// Sentinel that knows it names it (the reload measures the keys it would move with them).
///
/// # Errors
/// `pool '<name>': no Sentinel of sentinels: [...] knows master '<m>' (<last error>);
/// nothing changed`.
pub async fn try_sentinels(pool: &PoolRt) -> Result<Vec<ServerAddr>, String> {
    let hs = pool.sentinel_handshake.quiet();
    let limit = pool.timeout().min(Duration::from_secs(2));
    let mut primaries = Vec::with_capacity(pool.shards.len());
    for shard in &pool.shards {
        let name = shard.name.as_bytes();
        let mut why = String::from("no answer");
        let mut known = None;
        for s in &pool.conf.sentinels {
            let Some(mut c) = connect_with(&hs, s, limit).await else {
                why = format!("{s}: no connection");
                continue;
            };
            match c
                .call(&[&[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name]], limit)
                .await
            {
                Ok(r) => {
                    let named = r.first().map(Val::items).unwrap_or_default();
                    let host = named.first().and_then(Val::text);
                    let port = named
                        .get(1)
                        .and_then(Val::text)
                        .and_then(|p| p.parse().ok());
                    if let (Some(h), Some(p)) = (host, port) {
                        known = Some(tcp(&(h, p)));
                        break;
                    }
                    why = format!("{s}: does not monitor it");
                }
                Err(e) => why = format!("{s}: {e}"),
            }
        }
        let Some(primary) = known else {
            return Err(format!(
                "pool '{}': no Sentinel of sentinels: [{}] knows master '{}' ({why}); nothing changed",
                pool.conf.name,
                listed(&pool.conf.sentinels),
                shard.name
            ));
        };
        primaries.push(primary);
    }
    Ok(primaries)
}

/// A connection to sentinel `s`, authenticated with the pool's sentinel credentials.
pub async fn connect(pool: &PoolRt, s: &SentinelAddr, limit: Duration) -> Option<Link> {
    connect_with(&pool.sentinel_handshake, s, limit).await
}

/// [`connect`] with the handshake `hs` (the pool's, or a quiet copy of it).
async fn connect_with(hs: &Handshake, s: &SentinelAddr, limit: Duration) -> Option<Link> {
    let addr = ServerAddr::Tcp {
        host: s.host.clone(),
        port: s.port,
    };
    // A refused password is logged by the handshake, once per episode
    // (`crate::observe::refused`): this runs several times a second.
    let link = Link::open(&addr, hs, limit).await.ok()?;
    // Without a password, a connection that opened (TLS included) is the acceptance.
    hs.note_accepted(&addr);
    Some(link)
}

/// Ask every sentinel; keep the answer with the highest config epoch. At equal epochs an
/// answer that names a new primary wins: the sentinel that leads a failover moves the master
/// to the new epoch at promotion but keeps reporting the old address until the failover ends,
/// while the others report the new one as soon as they announce `+switch-master`.
async fn ask(
    pool: &PoolRt,
    hs: &Handshake,
    sentinels: &[SentinelAddr],
    shard: usize,
) -> Option<MasterInfo> {
    let name = pool.shards[shard].name.as_bytes();
    let current = {
        let view = pool.shards[shard].view();
        view.primary
            .and_then(|i| view.nodes.get(i))
            .map(|n| n.addr.clone())
    };
    let limit = Duration::from_millis(300);
    let mut best: Option<MasterInfo> = None;
    for s in sentinels {
        let Some(mut c) = connect_with(hs, s, limit).await else {
            continue;
        };
        let Ok(r) = c
            .call(
                &[
                    &[b"SENTINEL", b"MASTER", name],
                    &[b"SENTINEL", b"REPLICAS", name],
                    &[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name],
                ],
                limit,
            )
            .await
        else {
            continue;
        };
        if let Some(mut info) = parse_master(&r[0], &r[1]) {
            // The client protocol's address: during a failover it names the promoted replica
            // as soon as that replica took the new configuration, before SENTINEL MASTER does.
            let named = r[2].items();
            if let (Some(h), Some(p)) = (
                named.first().and_then(Val::text),
                named
                    .get(1)
                    .and_then(Val::text)
                    .and_then(|p| p.parse().ok()),
            ) {
                info.primary = (h, p);
                info.replicas.retain(|r| *r != info.primary);
                info.down.retain(|(r, _)| *r != info.primary);
            }
            let moves = current.as_ref() != Some(&tcp(&info.primary));
            let better = match &best {
                None => true,
                Some(b) => {
                    info.epoch > b.epoch
                        || (info.epoch == b.epoch
                            && moves
                            && current.as_ref() == Some(&tcp(&b.primary)))
                }
            };
            if better {
                best = Some(info);
            }
        }
    }
    best
}

/// Most sentinels followed per pool (configured plus discovered).
const MAX_SENTINELS: usize = 16;

/// Sentinels that the known ones report (`SENTINEL SENTINELS`) and that are not followed yet.
async fn discover(pool: &PoolRt, known: &[SentinelAddr]) -> Vec<SentinelAddr> {
    let Some(shard) = pool.shards.first() else {
        return Vec::new();
    };
    let limit = Duration::from_millis(300);
    let mut found: Vec<SentinelAddr> = Vec::new();
    for s in known {
        let Some(mut c) = connect(pool, s, limit).await else {
            continue;
        };
        let Ok(r) = c
            .call(
                &[&[b"SENTINEL", b"SENTINELS", shard.name.as_bytes()]],
                limit,
            )
            .await
        else {
            continue;
        };
        for other in r[0].items().iter().map(fields) {
            let (Some(host), Some(port)) = (
                other.get("ip"),
                other.get("port").and_then(|p| p.parse().ok()),
            ) else {
                continue;
            };
            let new = SentinelAddr {
                host: host.clone(),
                port,
            };
            let seen = known
                .iter()
                .chain(&found)
                .any(|k| k.host == new.host && k.port == new.port);
            if !seen && known.len() + found.len() < MAX_SENTINELS {
                found.push(new);
            }
        }
        break;
    }
    found
}

fn tcp(addr: &(String, u16)) -> ServerAddr {
    ServerAddr::Tcp {
        host: addr.0.clone(),
        port: addr.1,
    }
}

/// Check `node` with the pool's `health_check`, `max_replica_lag`, `max_stale` and handshake until `stop`
/// (or until it leaves the view).
pub fn start_check(
    pool: &PoolRt,
    node: &Arc<NodeRt>,
    checks: &mut HashMap<u64, CancellationToken>,
    stop: &CancellationToken,
) {
    let token = stop.child_token();
    if let Some(old) = checks.insert(node.id, token.clone()) {
        old.cancel();
    }
    tokio::spawn(crate::ha::health::run(
        Arc::clone(node),
        pool.conf.health,
        crate::topology::node::ReplicaRules::of(&pool.conf),
        Arc::clone(&pool.handshake),
        token,
    ));
}

/// Make the shard's view match what Sentinel says.
async fn apply(
    pool: &Arc<PoolRt>,
    shard: usize,
    info: &MasterInfo,
    workers: usize,
    checks: &mut HashMap<u64, CancellationToken>,
    stop: &CancellationToken,
) {
    let rt = &pool.shards[shard];
    let old = rt.view();
    let want_primary = tcp(&info.primary);
    let find = |a: &ServerAddr| old.nodes.iter().find(|n| &n.addr == a).cloned();
    let current_primary = old
        .primary
        .and_then(|i| old.nodes.get(i))
        .map(|n| n.addr.clone());
    let mut wanted: Vec<ServerAddr> = vec![want_primary.clone()];
    wanted.extend(info.replicas.iter().map(tcp).filter(|a| *a != want_primary));
    for (d, _) in &info.down {
        let a = tcp(d);
        if !wanted.contains(&a) {
            wanted.push(a);
        }
    }
    // What Sentinel says of each node now: listed down (its flags) or not.
    let listed = |a: &ServerAddr| {
        info.down
            .iter()
            .find(|(d, _)| tcp(d) == *a && *a != want_primary)
            .map(|(_, flags)| flags.as_str())
    };
    for n in old.nodes.iter() {
        n.set_listed_down(listed(&n.addr));
    }
    let same_nodes = wanted.len() == old.nodes.len()
        && wanted
            .iter()
            .all(|a| old.nodes.iter().any(|n| &n.addr == a));
    if same_nodes && current_primary.as_ref() == Some(&want_primary) {
        return;
    }
    let mut nodes: Vec<Arc<NodeRt>> = Vec::new();
    for a in &wanted {
        let n = find(a).unwrap_or_else(|| {
            let n = Arc::new(NodeRt::new(
                a.clone(),
                a.to_string(),
                (None, 100),
                (pool.conf.name.clone(), rt.name.clone()),
                workers,
                true,
            ));
            n.set_listed_down(listed(a));
            start_check(pool, &n, checks, stop);
            n
        });
        nodes.push(n);
    }
    // Nodes Sentinel no longer lists keep their checks only while they are in the view.
    for n in old.nodes.iter() {
        if !nodes.iter().any(|m| m.id == n.id) {
            if let Some(t) = checks.remove(&n.id) {
                t.cancel();
            }
            n.close_all();
        }
    }
    let switched = current_primary.as_ref() != Some(&want_primary);
    if switched {
        if let Some(old_primary) = old.primary.and_then(|i| old.nodes.get(i)) {
            // HAProxy's shutdown-sessions: nothing more is written to the old primary.
            old_primary.close_all();
        }
        if let Some(p) = nodes.first() {
            confirm(p, pool).await;
        }
        // The first primary Sentinel names (at start, or for a new shard) is not a failover.
        let (kind, what) = if current_primary.is_some() {
            rt.count_failover();
            (crate::observe::events::Kind::Failover, "a new primary")
        } else {
            (crate::observe::events::Kind::Primary, "the primary")
        };
        crate::observe::events::record(
            kind,
            &pool.conf.name,
            &rt.name,
            &format!("{}:{}", info.primary.0, info.primary.1),
            format!("Sentinel names {what} (config epoch {})", info.epoch),
        );
        tracing::warn!(
            pool = %pool.conf.name,
            shard = %rt.name,
            from = %current_primary
                .as_ref()
                .map_or_else(|| "none".to_string(), ToString::to_string),
            to = %format!("{}:{}", info.primary.0, info.primary.1),
            epoch = info.epoch,
            "primary switched"
        );
    }
    let view = ShardView {
        nodes,
        primary: Some(0),
    };
    if switched && current_primary.is_some() {
        // After a failover, writes (PUBLISH among them) wait briefly for the shard's Pub/Sub
        // links to subscribe on the new primary, as after a switchover, so that a message
        // published there is heard by every subscriber.
        pool.fail_over_to(shard, view).await;
    } else {
        rt.set_view(view);
    }
}

/// Give each shard of `pool` (a Sentinel pool a reload adds or makes, not published yet)
/// that has no node yet the nodes its Sentinels name, as the follower's first poll would,
/// so that they can be checked before the pool serves. The checks this starts end here: the
/// pool's follower checks every node of its views from its start.
pub async fn first_views(pool: &Arc<PoolRt>, workers: usize) {
    let stop = CancellationToken::new();
    let mut checks = HashMap::new();
    for shard in 0..pool.shards.len() {
        if !pool.shards[shard].view().nodes.is_empty() {
            continue;
        }
        // Quiet: the running pool's follower may still be refused until the swap.
        let hs = pool.sentinel_handshake.quiet();
        if let Some(info) = ask(pool, &hs, &pool.conf.sentinels, shard).await {
            apply(pool, shard, &info, workers, &mut checks, &stop).await;
        }
    }
    stop.cancel();
}

/// Ask the new primary itself right away instead of waiting for its next health check, so
/// held writes move as soon as it says `role:master`.
async fn confirm(node: &NodeRt, pool: &PoolRt) {
    match says_master(&node.addr, pool).await {
        Some(true) => node.set_checked(Role::Primary, false, node.check_us()),
        Some(false) => node.demote(),
        None => {}
    }
}

/// What the node at `addr` says of itself (`ROLE`, redis.io/docs/latest/commands/role/):
/// `Some(true)` for `master`, `Some(false)` for any other role, `None` when it cannot be
/// reached within the health-check timeout or answers an error (BUSY: a script running says
/// nothing of the role).
pub async fn says_master(addr: &ServerAddr, pool: &PoolRt) -> Option<bool> {
    let limit = pool.conf.health.timeout;
    let mut c = match Link::open(addr, &pool.handshake, limit).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(node = %addr, "cannot ask the node its role: {e}");
            return None;
        }
    };
    let r = c.call(&[&[b"ROLE"]], limit).await.ok()?;
    let role = r
        .first()
        .and_then(|v| v.items().first())
        .and_then(Val::text)?;
    Some(role == "master")
}

/// The channels the follower subscribes to on every sentinel (the events of Sentinel's
/// Pub/Sub API, redis.io/docs/latest/operate/oss_and_stack/management/sentinel/#pubsub-messages).
const CHANNELS: [&[u8]; 12] = [
    b"+switch-master",
    b"+sdown",
    b"-sdown",
    b"+odown",
    b"+convert-to-slave",
    b"+try-failover",
    b"+failover-end",
    b"+failover-end-for-timeout",
    b"-failover-abort-not-elected",
    b"-failover-abort-no-good-slave",
    b"-failover-abort-slave-timeout",
    b"-failover-abort-race",
];

/// The address of the master a `master <name> <ip> <port>` payload is about.
fn event_master_addr(payload: &str) -> Option<ServerAddr> {
    let words: Vec<&str> = payload.split(' ').collect();
    match words.as_slice() {
        ["master", _, ip, port, ..] => Some(tcp(&(ip.to_string(), port.parse().ok()?))),
        _ => None,
    }
}

/// The master name an event's payload is about: `master <name> <ip> <port>` for a master,
/// `<kind> <name> <ip> <port> @ <master> <ip> <port>` for another instance, and
/// `<name> <old ip> <old port> <new ip> <new port>` for `+switch-master`.
fn event_master<'a>(channel: &str, payload: &'a str) -> Option<&'a str> {
    let mut words = payload.split(' ');
    if channel == "+switch-master" {
        return words.next();
    }
    if let Some((_, after)) = payload.split_once(" @ ") {
        return after.split(' ').next();
    }
    words.nth(1)
}

/// Act on one event of sentinel `from` at once, before the follower's next poll: a failover
/// announced for one of the pool's masters holds that shard's writes (see
/// [`crate::topology::ShardRt::failover_started`]); a failover given up releases them.
fn on_event(pool: &Arc<PoolRt>, from: &str, channel: &str, payload: &str) {
    let Some(name) = event_master(channel, payload) else {
        return;
    };
    let Some(shard) = pool.shards.iter().find(|s| s.name == name) else {
        return;
    };
    let limit = pool.conf.failover_hold;
    match channel {
        "+try-failover" if !limit.is_zero() => {
            let Some(addr) = event_master_addr(payload) else {
                return;
            };
            if shard.failover_started(from, &addr) {
                tracing::warn!(pool = %pool.conf.name, shard = %shard.name, sentinel = %from, "Sentinel starts a failover: holding writes until the new primary is applied (at most {})", humantime::format_duration(limit));
                crate::observe::events::record(
                    crate::observe::events::Kind::Failover,
                    &pool.conf.name,
                    &shard.name,
                    from,
                    format!("Sentinel {from} starts a failover; writes are held"),
                );
            }
            tokio::spawn(expire_later(Arc::clone(pool), shard.index, limit));
        }
        "+failover-end-for-timeout"
        | "-failover-abort-not-elected"
        | "-failover-abort-no-good-slave"
        | "-failover-abort-slave-timeout"
        | "-failover-abort-race"
            if shard.failover_ended(from) =>
        {
            tracing::warn!(pool = %pool.conf.name, shard = %shard.name, sentinel = %from, "Sentinel gave up the failover ({channel}): writes go to the primary again");
        }
        _ => {}
    }
}

/// After `after`, end the failover hold of shard `index` if no new primary came within the
/// pool's `failover_hold` of the announcement.
async fn expire_later(pool: Arc<PoolRt>, index: usize, after: std::time::Duration) {
    tokio::time::sleep(after).await;
    let limit = pool.conf.failover_hold;
    let shard = &pool.shards[index];
    if shard.expire_failovers(limit) {
        tracing::warn!(pool = %pool.conf.name, shard = %shard.name, "no new primary within failover_hold of {}: writes go to the primary Sentinel names again", humantime::format_duration(limit));
    }
}

/// Subscribe to one sentinel's events; reconnect with a pause when it goes away.
async fn subscribe(pool: Arc<PoolRt>, s: SentinelAddr, kick: Arc<Notify>, stop: CancellationToken) {
    let mut subscribe: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    subscribe.extend(CHANNELS);
    let from = format!("{}:{}", s.host, s.port);
    loop {
        if let Some(mut c) = connect(&pool, &s, Duration::from_millis(500)).await {
            if c.call(&[&subscribe], Duration::from_millis(500))
                .await
                .is_ok()
            {
                loop {
                    tokio::select! {
                        msg = c.next() => {
                            let Ok(msg) = msg else { break };
                            let items = msg.items();
                            let kind = items.first().and_then(Val::text).unwrap_or_default();
                            if kind == "message" {
                                let channel = items.get(1).and_then(Val::text).unwrap_or_default();
                                let payload = items.get(2).and_then(Val::text).unwrap_or_default();
                                tracing::info!(sentinel = %from, "{channel} {payload}");
                                on_event(&pool, &from, &channel, &payload);
                                kick.notify_one();
                            }
                        }
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Val {
        Val::Arr(
            pairs
                .iter()
                .flat_map(|(k, v)| {
                    [
                        Val::Str(k.as_bytes().to_vec()),
                        Val::Str(v.as_bytes().to_vec()),
                    ]
                })
                .collect(),
        )
    }

    #[test]
    fn master_and_live_replicas_are_read_from_sentinel_replies() {
        let m = kv(&[
            ("name", "m"),
            ("ip", "127.0.0.1"),
            ("port", "7000"),
            ("config-epoch", "3"),
        ]);
        let r = Val::Arr(vec![
            kv(&[("ip", "127.0.0.1"), ("port", "7001"), ("flags", "slave")]),
            kv(&[
                ("ip", "127.0.0.1"),
                ("port", "7002"),
                ("flags", "s_down,slave,disconnected"),
            ]),
            kv(&[
                ("ip", "127.0.0.1"),
                ("port", "7003"),
                ("flags", "slave,disconnected"),
            ]),
        ]);
        let info = parse_master(&m, &r).expect("parsed");
        assert_eq!(info.primary, ("127.0.0.1".to_string(), 7000));
        assert_eq!(
            info.replicas,
            vec![
                ("127.0.0.1".to_string(), 7001),
                ("127.0.0.1".to_string(), 7003)
            ]
        );
        assert_eq!(info.epoch, 3);
        assert_eq!(
            info.down,
            vec![(
                ("127.0.0.1".to_string(), 7002),
                "s_down,slave,disconnected".to_string()
            )]
        );
    }

    #[test]
    fn events_name_their_master() {
        let m = |c, p| event_master(c, p);
        assert_eq!(
            m("+try-failover", "master mymaster 127.0.0.1 6379"),
            Some("mymaster")
        );
        assert_eq!(
            m(
                "+failover-state-send-slaveof-noone",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379"
            ),
            Some("mymaster")
        );
        assert_eq!(
            m("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380"),
            Some("mymaster")
        );
        assert_eq!(
            event_master_addr("master mymaster 127.0.0.1 6379"),
            Some(tcp(&("127.0.0.1".to_string(), 6379)))
        );
        assert_eq!(
            event_master_addr("slave 127.0.0.1:6380 127.0.0.1 6380 @ m 127.0.0.1 1"),
            None
        );
        assert_eq!(event_master_addr("master m 127.0.0.1 notaport"), None);
    }
}
