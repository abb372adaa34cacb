//! Planned switchover of one shard's primary, started by an admin command.
//!
//! 1. Hold the shard's writes on every worker (new writes wait in the failover hold). Under
//!    Sentinel, first wait for the point of Sentinel's INFO cycle that lets it notice the
//!    promotion soonest (see `INFO_WINDOW_MS`).
//! 2. Let writes already sent finish, then wait until the chosen replica's replication offset
//!    equals the primary's (under Sentinel: every replica Sentinel might pick).
//! 3. Promote it: `FAILOVER TO host port` on the primary (Redis pauses its own writers and
//!    checks offsets once more), `CLUSTER FAILOVER` on the replica in a cluster pool (Redis
//!    Cluster refuses `FAILOVER`), or `SENTINEL FAILOVER` when Sentinel manages the shard. A
//!    target Sentinel would not pick is refused: `SENTINEL FAILOVER` cannot name one.
//! 4. Confirm with ROLE on the new primary, make it the shard's primary (every connection to
//!    the old one is closed; writes it refused with READONLY were not applied and are held),
//!    wait (at most 1 s: `PoolRt::pubsub_subscribed_on`) until every worker's Pub/Sub
//!    connection of the shard has subscribed on it, and release the held writes to it, in
//!    order: a held PUBLISH is heard by every subscriber.
//!
//! No acknowledged write is lost: nothing is written to the old primary after the offsets
//! matched. Progress shows in `INFO pools` and in the log.

use std::sync::Arc;
use std::time::Duration;

use rampart_config::ServerAddr;
use tokio::time::Instant;

use crate::ha::link::{Link, Val};
use crate::handshake::Handshake;
use crate::observe::events::Kind;
use crate::topology::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardView};

const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Switchovers and reloads exclude each other. A switchover holds the writes of, and names
/// the new primary in, the shard of the pool generation it started in; a reload publishing
/// another generation meanwhile would release those writes to the old primary while it is
/// being demoted (under Sentinel they are then lost). A switchover holds the gate shared
/// (shards may switch at once), a reload holds it alone ([`exclusive`]).
static GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Wait until no switchover runs, at most `limit`, and keep new ones from starting while the
/// guard lives (a reload or a cluster reshape holds it from before it builds the new pools
/// until they are published). `None`: a switchover still runs after `limit`.
pub async fn exclusive(limit: Duration) -> Option<tokio::sync::RwLockWriteGuard<'static, ()>> {
    tokio::time::timeout(limit, GATE.write()).await.ok()
}

/// [`exclusive`] without waiting: `None` while a switchover runs.
pub fn try_exclusive() -> Option<tokio::sync::RwLockWriteGuard<'static, ()>> {
    GATE.try_write().ok()
}

fn field(info: &Val, name: &str) -> Option<String> {
    let text = info.text()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Why a command to a data node gave no usable reply.
#[derive(Debug)]
enum Failed {
    /// The server answered with an error (`BUSY`, `LOADING`, ...): asking again at once
    /// gets the same.
    Refused(String),
    /// No reply: connecting, the handshake or the exchange failed.
    Io(String),
}

impl From<Failed> for String {
    fn from(f: Failed) -> String {
        match f {
            Failed::Refused(e) | Failed::Io(e) => e,
        }
    }
}

/// One command on a new connection to a data node, after the pool's handshake.
async fn call(hs: &Handshake, addr: &ServerAddr, cmd: &[&[u8]]) -> Result<Val, String> {
    Ok(ask(hs, addr, cmd).await?)
}

/// [`call`], telling a server's error reply from no reply.
async fn ask(hs: &Handshake, addr: &ServerAddr, cmd: &[&[u8]]) -> Result<Val, Failed> {
    let mut c = Link::open(addr, hs, Duration::from_secs(1))
        .await
        .map_err(|e| Failed::Io(format!("{addr}: {e}")))?;
    let mut r = c
        .call(&[cmd], Duration::from_secs(2))
        .await
        .map_err(|e| Failed::Io(e.to_string()))?;
    match r.pop() {
        Some(Val::Err(e)) => Err(Failed::Refused(e)),
        Some(v) => Ok(v),
        None => Err(Failed::Io("no reply".into())),
    }
}

async fn offset(hs: &Handshake, addr: &ServerAddr, key: &str) -> Result<u64, String> {
    Ok(offset_of(hs, addr, key).await?)
}

/// The replication offset `key` of INFO replication at `addr`.
async fn offset_of(hs: &Handshake, addr: &ServerAddr, key: &str) -> Result<u64, Failed> {
    let info = ask(hs, addr, &[b"INFO", b"replication"]).await?;
    field(&info, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failed::Refused(format!("no {key} in INFO replication")))
}

/// Before any write is held: every replica to wait for must report its offset. One that
/// answers with an error (a script running: `BUSY`; `LOADING`) or does not answer (frozen,
/// unreachable) could neither catch up nor be promoted while the writes wait, so the
/// switchover stops here and the writes go on to the primary.
async fn ready(hs: &Handshake, replicas: &[Arc<NodeRt>]) -> Result<(), String> {
    for r in replicas {
        match offset_of(hs, &r.addr, "slave_repl_offset").await {
            Ok(_) => {}
            Err(Failed::Refused(e)) => {
                return Err(format!(
                    "{} cannot be promoted now: it answers {e}; no write was held",
                    r.label
                ))
            }
            Err(Failed::Io(e)) => {
                return Err(format!(
                    "{} cannot be promoted now: {e}; no write was held",
                    r.label
                ))
            }
        }
    }
    Ok(())
}

/// How long a switchover waits for the replicas to catch up while it holds the writes: half
/// the pool's `failover_hold` (the rest is for the promotion), at most 5 s; past it the
/// switchover stops and the held writes go to the primary they were meant for, before any
/// of them could expire in the hold.
fn catch_up_limit(pool: &PoolRt) -> Duration {
    let hold = pool.conf.failover_hold;
    if hold.is_zero() {
        STEP_TIMEOUT
    } else {
        STEP_TIMEOUT.min(hold / 2)
    }
}

async fn role(hs: &Handshake, addr: &ServerAddr) -> Option<String> {
    let r = call(hs, addr, &[b"ROLE"]).await.ok()?;
    r.items().first().and_then(Val::text)
}

fn host_port(addr: &ServerAddr) -> Option<(String, u16)> {
    match addr {
        ServerAddr::Tcp { host, port } => Some((host.clone(), *port)),
        ServerAddr::Unix(_) => None,
    }
}

/// Switch `shard` of `pool` to `target` (or the best healthy replica). Returns a summary.
///
/// A reload asked for meanwhile waits until it ends (see [`exclusive`]).
///
/// # Errors
/// Why the switchover did not happen or did not finish; held writes are released either way.
pub async fn run(
    pool: Arc<PoolRt>,
    shard: usize,
    target: Option<String>,
) -> Result<String, String> {
    let rt = &pool.shards[shard];
    if pool.conf.failover_hold.is_zero() {
        return Err(
            "failover_hold is 0 in this pool, so writes cannot be held during a switchover".into(),
        );
    }
    // Waits while a reload is being applied; the pool it was asked in may be replaced then.
    let _gate = GATE.read().await;
    if pool.is_retired() {
        return Err(
            "the configuration was reloaded since the switchover was asked for; nothing was done, ask again"
                .into(),
        );
    }
    if !rt.begin_switch() {
        return Err(format!(
            "a switchover of shard '{}' is already running",
            rt.name
        ));
    }
    let started = Instant::now();
    let result = steps(&pool, shard, target).await;
    if let Ok((_, new)) = &result {
        pool.pubsub_subscribed_on(shard, *new).await;
    }
    let result = result.map(|(label, _)| label);
    let held = rt.end_switch();
    let took = started.elapsed();
    match result {
        Ok(to) => {
            let msg = format!(
                "shard '{}' switched to {to}; writes held {} ms",
                rt.name,
                held.as_millis()
            );
            rt.set_switch_state(format!("done: {msg}"));
            rt.count_switchover();
            crate::observe::events::record(Kind::Switchover, &pool.conf.name, &rt.name, &to, &msg);
            Ok(msg)
        }
        Err(e) => {
            rt.set_switch_state(format!("failed after {} ms: {e}", took.as_millis()));
            let msg = format!("failed: {e}");
            crate::observe::events::record(Kind::Switchover, &pool.conf.name, &rt.name, "", msg);
            Err(e)
        }
    }
}

fn pick(view: &ShardView, target: Option<&str>) -> Result<(Arc<NodeRt>, Arc<NodeRt>), String> {
    let primary = view
        .writable_primary()
        .cloned()
        .ok_or("the shard has no healthy primary to switch from")?;
    let replicas = view
        .nodes
        .iter()
        .filter(|n| n.id != primary.id && n.is_routable() && n.role() == Role::Replica);
    let chosen = match target {
        Some(t) => replicas
            .into_iter()
            .find(|n| n.label == t)
            .ok_or_else(|| format!("'{t}' is not a healthy replica of this shard"))?,
        None => {
            let ok: Vec<&Arc<NodeRt>> = replicas.filter(|n| n.replica_ok()).collect();
            match ok.iter().filter(|n| !n.is_busy()).min_by_key(|n| (n.priority, n.lag_ms())) {
                Some(n) => *n,
                None if !ok.is_empty() => {
                    return Err("the shard's replicas answer BUSY (a script running); none can be promoted now, no write was held".into())
                }
                None => return Err("the shard has no healthy replica to promote".into()),
            }
        }
    };
    Ok((primary, Arc::clone(chosen)))
}

/// The switchover itself; returns the new primary's label and id.
async fn steps(
    pool: &Arc<PoolRt>,
    shard: usize,
    target: Option<String>,
) -> Result<(String, u64), String> {
    let rt = &pool.shards[shard];
    let view = rt.view();
    let (old, new) = if pool.conf.is_sentinel() {
        let (leader, old, new) = prepare_sentinel(pool, shard, &view, target.as_deref()).await?;
        rt.set_switch_state(format!(
            "replicas caught up; asking Sentinel to fail over (it should pick {})",
            new.label
        ));
        promote_with_sentinel(pool, shard, leader, &old)
            .await
            .map(|new| (old, new))?
    } else {
        let (old, new) = pick(&view, target.as_deref())?;
        let (host, port) =
            host_port(&new.addr).ok_or("unix-socket nodes cannot be promoted by address")?;
        ready(&pool.handshake, std::slice::from_ref(&new)).await?;
        rt.hold_writes(true);
        rt.set_switch_state(format!(
            "holding writes; waiting for {} to catch up with {}",
            new.label, old.label
        ));
        let limit = catch_up_limit(pool);
        catch_up(&pool.handshake, &old, std::slice::from_ref(&new), limit).await?;
        rt.set_switch_state(format!("promoting {}", new.label));
        if pool.conf.is_cluster() {
            // Redis Cluster refuses FAILOVER: the replica runs a manual failover itself (it
            // has its primary pause writers, waits for its offset, then takes the slots with
            // a new epoch); the follower's next map names it, matched to this shard by id.
            call(&pool.handshake, &new.addr, &[b"CLUSTER", b"FAILOVER"]).await?;
        } else {
            let port_s = port.to_string();
            call(
                &pool.handshake,
                &old.addr,
                &[
                    b"FAILOVER",
                    b"TO",
                    host.as_bytes(),
                    port_s.as_bytes(),
                    b"TIMEOUT",
                    b"3000",
                ],
            )
            .await?;
        }
        let deadline = Instant::now() + STEP_TIMEOUT;
        while role(&pool.handshake, &new.addr).await.as_deref() != Some("master") {
            if Instant::now() > deadline {
                return Err(format!("{} did not become master", new.label));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let idx = view
            .nodes
            .iter()
            .position(|n| n.id == new.id)
            .ok_or("node vanished")?;
        rt.set_view(ShardView {
            nodes: view.nodes.clone(),
            primary: Some(idx),
        });
        (old, new)
    };
    new.set_checked(Role::Primary, false, new.check_us());
    old.demote();
    old.drain_all();
    Ok((new.label.clone(), new.id))
}

/// Wait until the primary's offset stops moving and every replica in `replicas` has it.
/// Writes sent before the hold finish within the pool timeout at most; once the primary's
/// offset stops moving, every acknowledged write is in it.
async fn catch_up(
    hs: &Handshake,
    old: &NodeRt,
    replicas: &[Arc<NodeRt>],
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let late = || {
        format!(
            "gave up after {} ms; the held writes go to {}",
            limit.as_millis(),
            old.label
        )
    };
    let mut last = offset(hs, &old.addr, "master_repl_offset").await?;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = offset(hs, &old.addr, "master_repl_offset").await?;
        let mut behind = None;
        for r in replicas {
            // Each question ends by the deadline: a frozen replica does not stretch the hold.
            let asked =
                tokio::time::timeout_at(deadline, offset_of(hs, &r.addr, "slave_repl_offset"));
            let caught = match asked.await {
                Ok(Ok(o)) => Some(o),
                // Held writes would wait out the whole step for nothing.
                Ok(Err(Failed::Refused(e))) => {
                    return Err(format!("{} stopped answering its offset: {e}", r.label))
                }
                Ok(Err(Failed::Io(_))) | Err(_) => None,
            };
            if caught.is_none_or(|c| c < now) {
                behind = Some((r, caught));
                break;
            }
        }
        match behind {
            None if now == last => return Ok(()),
            Some((r, Some(caught))) if Instant::now() >= deadline => {
                return Err(format!(
                    "{} did not catch up (offset {caught} of {now}); {}",
                    r.label,
                    late()
                ))
            }
            Some((r, None)) if Instant::now() >= deadline => {
                return Err(format!("{} did not answer its offset; {}", r.label, late()))
            }
            _ if Instant::now() >= deadline => {
                return Err(format!("{}'s offset kept moving; {}", old.label, late()))
            }
            _ => last = now,
        }
    }
}

/// One replica as a sentinel reports it in `SENTINEL REPLICAS`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SentinelReplica {
    addr: ServerAddr,
    flags: String,
    priority: i64,
    offset: i64,
    runid: String,
    /// Milliseconds since the sentinel last had an INFO reply from this replica.
    info_refresh: u64,
}

fn parse_replicas(v: &Val) -> Vec<SentinelReplica> {
    v.items()
        .iter()
        .filter_map(|r| {
            let kv = r.items();
            let get = |k: &str| {
                kv.chunks(2)
                    .find(|p| p[0].text().as_deref() == Some(k))
                    .and_then(|p| p.get(1)?.text())
            };
            let num = |k: &str| get(k).and_then(|x| x.parse::<i64>().ok());
            Some(SentinelReplica {
                addr: ServerAddr::Tcp {
                    host: get("ip")?,
                    port: get("port")?.parse().ok()?,
                },
                flags: get("flags").unwrap_or_default(),
                priority: num("slave-priority").unwrap_or(100),
                offset: num("slave-repl-offset").unwrap_or(0),
                runid: get("runid").unwrap_or_default(),
                info_refresh: num("info-refresh").and_then(|x| u64::try_from(x).ok())?,
            })
        })
        .collect()
}

/// The replicas Sentinel may promote, best first, ordered as Sentinel orders them: lowest
/// replica-priority, then highest replication offset (as of its last INFO), then the
/// smallest run id. Replicas that are down, disconnected or have priority 0 are never chosen.
fn sentinel_candidates(all: &[SentinelReplica]) -> Vec<&SentinelReplica> {
    let mut c: Vec<_> = all
        .iter()
        .filter(|r| {
            r.priority != 0
                && !r
                    .flags
                    .split(',')
                    .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
        })
        .collect();
    c.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.offset.cmp(&a.offset))
            .then_with(|| (a.runid.is_empty(), &a.runid).cmp(&(b.runid.is_empty(), &b.runid)))
    });
    c
}

/// Where, in Sentinel's INFO cycle of the replica it will promote, the hold may begin.
///
/// Sentinel notices a promotion only on its next INFO to the promoted replica, sent once the
/// previous reply is 1 s old while a failover runs (10 s otherwise). Started when that age is
/// above 1 s, the failover's first step refreshes INFO right before `REPLICAOF NO ONE`, and the
/// promotion is seen a full second later. Started when the last reply is a third to a half
/// of a second old, the promotion (two or three timer ticks of at most 100 ms after the
/// command) lands before the next INFO, which then reports it: the pause is about 0.5-0.7 s
/// instead of 1.1 s. Missing the window costs time, never a write: the promotion is then seen
/// one INFO later.
const INFO_WINDOW_MS: std::ops::RangeInclusive<u64> = 380..=560;
/// The latest age of that INFO reply at which `SENTINEL FAILOVER` may still be sent.
const INFO_LATEST_MS: u64 = 640;
/// How long to wait for the window: Sentinel's INFO period outside a failover, and a margin.
const INFO_WAIT: Duration = Duration::from_secs(11);

/// The first sentinel that answers `SENTINEL REPLICAS`, with its connection and the answer.
async fn ask_replicas(pool: &PoolRt, name: &[u8]) -> Result<(Link, Vec<SentinelReplica>), String> {
    let mut last_err = String::from("no sentinel answered");
    for s in &pool.conf.sentinels {
        let Some(mut c) = crate::ha::sentinel::connect(pool, s, Duration::from_secs(1)).await
        else {
            last_err = format!("sentinel {s} did not answer");
            continue;
        };
        match c
            .call(&[&[b"SENTINEL", b"REPLICAS", name]], Duration::from_secs(1))
            .await
            .map(|mut r| r.pop())
        {
            Ok(Some(Val::Err(e))) => last_err = format!("sentinel {s}: {e}"),
            Ok(Some(v)) => return Ok((c, parse_replicas(&v))),
            Ok(None) => last_err = format!("sentinel {s}: no reply"),
            Err(e) => last_err = format!("sentinel {s}: {e}"),
        }
    }
    Err(last_err)
}

/// The node of our view that Sentinel would promote, refusing a `target` Sentinel would not
/// pick (SENTINEL FAILOVER cannot name a replica), plus the replicas that must catch up: every
/// candidate with the same priority (the order between them depends on offsets).
fn sentinel_pick(
    view: &ShardView,
    replicas: &[SentinelReplica],
    target: Option<&str>,
) -> Result<(Arc<NodeRt>, Vec<Arc<NodeRt>>), String> {
    let cands = sentinel_candidates(replicas);
    let best = cands
        .first()
        .ok_or("Sentinel has no replica it could promote (all down or replica-priority 0)")?;
    let node_of = |r: &SentinelReplica| {
        view.nodes
            .iter()
            .find(|n| n.addr == r.addr)
            .cloned()
            .ok_or_else(|| format!("Sentinel's replica {} is not in the shard", r.addr))
    };
    let chosen = node_of(best)?;
    if let Some(t) = target {
        if chosen.label != t {
            return Err(format!(
                "Sentinel would promote {}, not '{t}': it picks the replica with the lowest \
                 replica-priority, then the highest offset; set replica-priority or omit the target",
                chosen.label
            ));
        }
    }
    let mut wait = Vec::new();
    for r in cands.iter().filter(|r| r.priority == best.priority) {
        let n = node_of(r)?;
        if !n.is_routable() || n.role() != Role::Replica {
            return Err(format!(
                "{} is a candidate for Sentinel but not a healthy replica here",
                n.label
            ));
        }
        wait.push(n);
    }
    Ok((chosen, wait))
}

/// Hold the shard's writes at a good point of Sentinel's INFO cycle and wait until every
/// replica Sentinel might promote has caught up. Returns the sentinel to ask for the failover
/// (the one whose timing was read), the old primary and the expected new one.
async fn prepare_sentinel(
    pool: &Arc<PoolRt>,
    shard: usize,
    view: &ShardView,
    target: Option<&str>,
) -> Result<(Link, Arc<NodeRt>, Arc<NodeRt>), String> {
    let rt = &pool.shards[shard];
    let name = rt.name.as_bytes();
    let old = view
        .writable_primary()
        .cloned()
        .ok_or("the shard has no healthy primary to switch from")?;
    let (mut leader, mut replicas) = ask_replicas(pool, name).await?;
    let (mut chosen, _) = sentinel_pick(view, &replicas, target)?;
    for attempt in 0..3 {
        rt.set_switch_state(format!(
            "waiting for Sentinel's next INFO to {} (at most {} s) before holding writes",
            chosen.label,
            INFO_WAIT.as_secs()
        ));
        // When Sentinel's last INFO reply from the replica it will promote arrived.
        let mut last_info = None;
        let deadline = Instant::now() + INFO_WAIT;
        while Instant::now() < deadline {
            let asked = Instant::now();
            let reply = leader
                .call(&[&[b"SENTINEL", b"REPLICAS", name]], Duration::from_secs(1))
                .await
                .map_err(|e| format!("sentinel: {e}"))?;
            replicas = parse_replicas(reply.first().unwrap_or(&Val::Nil));
            let refresh = sentinel_candidates(&replicas)
                .first()
                .map(|r| r.info_refresh);
            if let Some(ms) = refresh.filter(|ms| INFO_WINDOW_MS.contains(ms)) {
                last_info = asked.checked_sub(Duration::from_millis(ms));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (c, wait) = sentinel_pick(view, &replicas, target)?;
        chosen = c;
        ready(&pool.handshake, &wait).await?;
        rt.hold_writes(true);
        rt.set_switch_state(format!(
            "holding writes; waiting for {} to catch up with {}",
            wait.iter()
                .map(|n| n.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            old.label
        ));
        catch_up(&pool.handshake, &old, &wait, catch_up_limit(pool)).await?;
        let late = last_info.is_some_and(|t| t.elapsed() > Duration::from_millis(INFO_LATEST_MS));
        if !late || attempt == 2 {
            return Ok((leader, old, chosen));
        }
        // Too close to Sentinel's next INFO: the promotion would be seen a second later.
        // Let the writes go and wait for the next cycle.
        rt.hold_writes(false);
    }
    unreachable!("the last attempt returns")
}

/// The replica the failover leader advertises through GET-MASTER-ADDR-BY-NAME, once the
/// replica accepted the new configuration. (Acting on the `promoted` flag earlier is unsafe:
/// until Sentinel names the replica, the follower keeps the old primary, so writes would go
/// back to it and be lost when Sentinel demotes it.)
async fn sentinel_choice(leader: &mut Link, name: &[u8], old: &NodeRt) -> Option<ServerAddr> {
    let named = leader
        .call(
            &[&[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name]],
            Duration::from_secs(1),
        )
        .await
        .ok()?
        .pop()?;
    let host = named.items().first().and_then(Val::text)?;
    let port = named
        .items()
        .get(1)
        .and_then(Val::text)
        .and_then(|p| p.parse::<u16>().ok())?;
    let addr = ServerAddr::Tcp { host, port };
    (addr != old.addr).then_some(addr)
}

async fn promote_with_sentinel(
    pool: &Arc<PoolRt>,
    shard: usize,
    mut leader: Link,
    old: &Arc<NodeRt>,
) -> Result<Arc<NodeRt>, String> {
    let rt = &pool.shards[shard];
    let name = rt.name.as_bytes();
    match leader
        .call(&[&[b"SENTINEL", b"FAILOVER", name]], Duration::from_secs(2))
        .await
        .map_err(|e| format!("sentinel: {e}"))?
        .pop()
    {
        Some(Val::Err(e)) => return Err(format!("SENTINEL FAILOVER: {e}")),
        Some(_) => {}
        None => return Err("SENTINEL FAILOVER: no reply".into()),
    }
    // Ask the sentinel running the failover often which replica it names, and switch the
    // shard's view to it once the node's own ROLE says master; the follower would get there
    // too, later.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        {
            let view = rt.view();
            if let Some(p) = view.primary.and_then(|i| view.nodes.get(i)) {
                if p.addr != old.addr && p.role() == Role::Primary && p.is_routable() {
                    return Ok(Arc::clone(p));
                }
            }
        }
        if let Some(named) = sentinel_choice(&mut leader, name, old).await {
            let view = rt.view();
            if let Some(idx) = view.nodes.iter().position(|n| n.addr == named) {
                let node = Arc::clone(&view.nodes[idx]);
                if node.is_up()
                    && role(&pool.handshake, &node.addr).await.as_deref() == Some("master")
                {
                    node.set_checked(Role::Primary, false, node.check_us());
                    rt.set_view(ShardView {
                        nodes: view.nodes.clone(),
                        primary: Some(idx),
                    });
                    return Ok(node);
                }
            }
        }
        if Instant::now() > deadline {
            return Err("Sentinel did not complete the failover in 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(port: u16, flags: &str, priority: i64, offset: i64, runid: &str) -> SentinelReplica {
        SentinelReplica {
            addr: ServerAddr::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            flags: flags.into(),
            priority,
            offset,
            runid: runid.into(),
            info_refresh: 0,
        }
    }

    #[test]
    fn candidates_follow_sentinels_order() {
        let all = vec![
            replica(1, "slave", 100, 500, "b"),
            replica(2, "slave", 100, 500, "a"),
            replica(3, "slave", 100, 900, "z"),
            replica(4, "slave", 50, 10, "y"),
            replica(5, "s_down,slave,disconnected", 1, 999, "c"),
            replica(6, "slave", 0, 999, "d"),
            replica(7, "slave", 100, 500, ""),
        ];
        let order: Vec<u16> = sentinel_candidates(&all)
            .iter()
            .map(|r| match &r.addr {
                ServerAddr::Tcp { port, .. } => *port,
                ServerAddr::Unix(_) => 0,
            })
            .collect();
        assert_eq!(order, vec![4, 3, 2, 1, 7]);
    }

    #[test]
    fn parses_sentinel_replicas_reply() {
        let s = |x: &str| Val::Str(x.as_bytes().to_vec());
        let reply = Val::Arr(vec![Val::Arr(vec![
            s("name"),
            s("127.0.0.1:7302"),
            s("ip"),
            s("127.0.0.1"),
            s("port"),
            s("7302"),
            s("runid"),
            s("346b"),
            s("flags"),
            s("slave"),
            s("info-refresh"),
            s("487"),
            s("slave-priority"),
            s("100"),
            s("slave-repl-offset"),
            s("1574"),
        ])]);
        let got = parse_replicas(&reply);
        assert_eq!(
            got,
            vec![SentinelReplica {
                info_refresh: 487,
                ..replica(7302, "slave", 100, 1574, "346b")
            }]
        );
    }
}
