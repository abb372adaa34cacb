//! Planned switchover of one shard's primary, started by an admin command.
//!
//! 1. Hold the shard's writes on every worker (new writes wait in the failover hold).
//! 2. Let writes already sent finish, then wait until the chosen replica's replication offset
//!    equals the primary's.
//! 3. Promote it: `FAILOVER TO host port` on the primary (Redis pauses its own writers and
//!    checks offsets once more), or `SENTINEL FAILOVER` when Sentinel manages the shard.
//! 4. Confirm with ROLE on the new primary, make it the shard's primary (every connection to
//!    the old one is closed; writes it refused with READONLY were not applied and are held),
//!    and release the held writes to it, in order.
//!
//! No acknowledged write is lost: nothing is written to the old primary after the offsets
//! matched. Progress shows in `INFO pools` and in the log.

use std::sync::Arc;
use std::time::Duration;

use rampart_config::ServerAddr;
use tokio::time::Instant;

use crate::ctl::{CtlConn, Val};
use crate::events::Kind;
use crate::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardView};

const STEP_TIMEOUT: Duration = Duration::from_secs(5);

fn field(info: &Val, name: &str) -> Option<String> {
    let text = info.text()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

async fn call(addr: &ServerAddr, cmd: &[&[u8]]) -> Result<Val, String> {
    let mut c = CtlConn::connect(addr, Duration::from_secs(1))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut r = c
        .call(&[cmd], Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    match r.pop() {
        Some(Val::Err(e)) => Err(e),
        Some(v) => Ok(v),
        None => Err("no reply".into()),
    }
}

async fn offset(addr: &ServerAddr, key: &str) -> Result<u64, String> {
    let info = call(addr, &[b"INFO", b"replication"]).await?;
    field(&info, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {key} in INFO replication"))
}

async fn role(addr: &ServerAddr) -> Option<String> {
    let r = call(addr, &[b"ROLE"]).await.ok()?;
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
    if !rt.begin_switch() {
        return Err(format!(
            "a switchover of shard '{}' is already running",
            rt.name
        ));
    }
    let started = Instant::now();
    let result = steps(&pool, shard, target).await;
    rt.end_switch();
    let took = started.elapsed();
    match result {
        Ok(to) => {
            let msg = format!(
                "shard '{}' switched to {to}; writes held {} ms",
                rt.name,
                took.as_millis()
            );
            rt.set_switch_state(format!("done: {msg}"));
            crate::events::record(Kind::Switchover, &pool.conf.name, &rt.name, &to, &msg);
            Ok(msg)
        }
        Err(e) => {
            rt.set_switch_state(format!("failed after {} ms: {e}", took.as_millis()));
            let msg = format!("failed: {e}");
            crate::events::record(Kind::Switchover, &pool.conf.name, &rt.name, "", msg);
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
        None => replicas
            .into_iter()
            .filter(|n| n.replica_ok())
            .min_by_key(|n| (n.priority, n.lag_ms()))
            .ok_or("the shard has no healthy replica to promote")?,
    };
    Ok((primary, Arc::clone(chosen)))
}

async fn steps(pool: &Arc<PoolRt>, shard: usize, target: Option<String>) -> Result<String, String> {
    let rt = &pool.shards[shard];
    let view = rt.view();
    let (old, new) = pick(&view, target.as_deref())?;
    let (host, port) =
        host_port(&new.addr).ok_or("unix-socket nodes cannot be promoted by address")?;
    rt.set_switch_state(format!(
        "holding writes; waiting for {} to catch up with {}",
        new.label, old.label
    ));
    // Writes sent before the hold finish within the pool timeout at most; once the primary's
    // offset stops moving, every acknowledged write is in it.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = offset(&old.addr, "master_repl_offset").await?;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = offset(&old.addr, "master_repl_offset").await?;
        let caught = offset(&new.addr, "slave_repl_offset").await.unwrap_or(0);
        if now == last && caught >= now {
            break;
        }
        last = now;
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not catch up (offset {caught} of {now})",
                new.label
            ));
        }
    }
    if pool.conf.is_sentinel() {
        rt.set_switch_state("replicas caught up; asking Sentinel to fail over");
    } else {
        rt.set_switch_state(format!("promoting {}", new.label));
    }
    let new = if pool.conf.is_sentinel() {
        promote_with_sentinel(pool, shard, &old).await?
    } else {
        let port_s = port.to_string();
        call(
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
        let deadline = Instant::now() + STEP_TIMEOUT;
        while role(&new.addr).await.as_deref() != Some("master") {
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
        new
    };
    new.set_checked(Role::Primary, false, 0, new.check_us());
    old.demote();
    old.close_all();
    Ok(new.label.clone())
}

/// The replica the failover leader advertises through GET-MASTER-ADDR-BY-NAME, once the
/// replica accepted the new configuration. (Acting on the `promoted` flag earlier is unsafe:
/// until Sentinel names the replica, the follower keeps the old primary, so writes would go
/// back to it and be lost when Sentinel demotes it.)
async fn sentinel_choice(leader: &ServerAddr, name: &[u8], old: &NodeRt) -> Option<ServerAddr> {
    let named = call(leader, &[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name])
        .await
        .ok()?;
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
    old: &Arc<NodeRt>,
) -> Result<Arc<NodeRt>, String> {
    let rt = &pool.shards[shard];
    let name = rt.name.as_bytes();
    let mut last_err = String::from("no sentinel answered");
    let mut leader = None;
    for s in &pool.conf.sentinels {
        let addr = ServerAddr::Tcp {
            host: s.host.clone(),
            port: s.port,
        };
        match call(&addr, &[b"SENTINEL", b"FAILOVER", name]).await {
            Ok(_) => {
                leader = Some(addr);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let Some(leader) = leader else {
        return Err(last_err);
    };
    // Sentinel picks the replica. Ask the sentinel running the failover often which one it
    // names, and switch the shard's view to it once the node's own ROLE says master; the
    // follower would get there too, later. Sentinel names it only after it saw the promotion
    // on its 1 s INFO cycle, which bounds the pause.
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
        if let Some(named) = sentinel_choice(&leader, name, old).await {
            let view = rt.view();
            if let Some(idx) = view.nodes.iter().position(|n| n.addr == named) {
                let node = Arc::clone(&view.nodes[idx]);
                if node.is_up() && role(&node.addr).await.as_deref() == Some("master") {
                    node.set_checked(Role::Primary, false, 0, node.check_us());
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
