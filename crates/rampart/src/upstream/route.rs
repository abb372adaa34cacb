//! Which node of a shard serves a request: writes go to the primary (or wait in the hold while
//! there is none), reads follow the pool's `read_policy`.
//!
//! Replicas serve reads only while they pass health checks, their replication link is up, and
//! their lag is within `max_replica_lag`, or, stale, while their link has been down for at most
//! `max_stale` (each such read is counted on the node). Nodes in the pool's own `zone` are preferred. The
//! load-aware policies read the worker's own view of each node (requests outstanding on its
//! connections, their latency average), so choosing needs no shared state.

use std::rc::Rc;
use std::sync::Arc;

use rampart_config::ReadPolicy;
use tokio::time::Instant;

use std::time::Duration;

use crate::topology::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardView};
use crate::upstream::error::{Failure, PrimaryDown};
use crate::upstream::hold::{self, Held};
use crate::upstream::pool::WorkerPool;
use crate::upstream::sink::{Resend, Retry, Sink};

/// Reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// May go to a replica.
    Read,
    /// Only to the primary.
    Write,
    /// A read that must see the client's own recent writes: primary.
    ReadPrimary,
}

/// The node a read goes to, never `exclude`.
pub fn pick_read(
    wp: &WorkerPool,
    shard: usize,
    view: &ShardView,
    exclude: Option<u64>,
) -> Option<Arc<NodeRt>> {
    let conf = &wp.rt.conf;
    let primary = view.primary.and_then(|i| view.nodes.get(i));
    let primary_ok = primary.filter(|p| p.is_routable() && Some(p.id) != exclude);
    if conf.read_policy == ReadPolicy::Primary || view.nodes.len() < 2 {
        return primary_ok.cloned();
    }
    let eligible = |n: &&Arc<NodeRt>| {
        Some(n.id) != primary.map(|p| p.id)
            && Some(n.id) != exclude
            && n.is_routable()
            && n.role() == Role::Replica
            && n.replica_ok()
    };
    let mut cands: Vec<&Arc<NodeRt>> = view.nodes.iter().filter(eligible).collect();
    if let Some(zone) = &conf.zone {
        if cands.iter().any(|n| n.zone.as_ref() == Some(zone)) {
            cands.retain(|n| n.zone.as_ref() == Some(zone));
        }
    }
    // A replica busy with a script answers every read BUSY: the others serve meanwhile, or
    // the primary where the policy falls back to it. With nowhere else to go the read goes
    // to it, and the client gets the server's BUSY, as it would directly.
    if cands.iter().any(|n| n.is_busy()) {
        if cands.iter().any(|n| !n.is_busy()) {
            cands.retain(|n| !n.is_busy());
        } else if conf.read_policy != ReadPolicy::Replica && primary_ok.is_some() {
            return primary_ok.cloned();
        }
    }
    if cands.is_empty() {
        if primary_ok.is_none()
            && (wp.rt.shards[shard].is_failing_over() || wp.rt.cluster.is_some())
        {
            // Sentinel (or the cluster) is promoting a replica and the view does not name it
            // yet: the one that already says master has every write the others have. Without
            // it, a read whose replica was just closed by Sentinel's reconfiguration (CLIENT
            // KILL), or whose replica the cluster just promoted, had nowhere to go until the
            // new view was applied.
            let promoted = view.nodes.iter().find(|n| {
                Some(n.id) != primary.map(|p| p.id)
                    && Some(n.id) != exclude
                    && n.is_routable()
                    && n.role() == Role::Primary
            });
            if promoted.is_some() {
                return promoted.cloned();
            }
        }
        return match conf.read_policy {
            ReadPolicy::Replica => None,
            _ => primary_ok.cloned(),
        };
    }
    let ws = &wp.shards[shard];
    let rr = ws.rr.get();
    ws.rr.set(rr.wrapping_add(1));
    let chosen = match conf.read_policy {
        ReadPolicy::LeastOutstanding => {
            // Fewest requests outstanding on this worker, where a node whose health-check
            // round trip is more than four times the fastest one's counts each request (and
            // the one it would get) eight times: it takes reads only when the others are far
            // busier. Without that, a replica 100 times slower still got a read each time it
            // had none outstanding, about one per round trip (1.2 % of reads in the HA test,
            // enough to set the p99). Among equals, lower `priority`, then in turn.
            let fastest = cands.iter().map(|n| n.check_us().max(1)).min().unwrap_or(1);
            let weight = |n: &NodeRt| {
                if n.check_us() > fastest.saturating_mul(4) {
                    8
                } else {
                    1
                }
            };
            let start = rr % cands.len();
            (0..cands.len())
                .map(|i| cands[(start + i) % cands.len()])
                .min_by_key(|n| ((wp.outstanding(shard, n) + 1) * weight(n), n.priority))
        }
        ReadPolicy::Latency if cands.len() > 1 => {
            // Power of two choices: two different random candidates; the one with the lower
            // latency wins, weighted by what this worker already has queued on it. Latency is
            // the node's health-check round trip: it is refreshed every check interval, so a
            // node that slows down, or recovers, is seen within a few checks even while it
            // gets no traffic (a reply average would freeze at its worst value).
            let i = crate::rand::below(cands.len() as u64) as usize;
            let j = (i + 1 + crate::rand::below(cands.len() as u64 - 1) as usize) % cands.len();
            let cost = |n: &NodeRt| {
                let lat = n.check_us().max(1);
                lat * (1 + wp.outstanding(shard, n) as u64)
            };
            let (a, b) = (cands[i], cands[j]);
            Some(if cost(a) <= cost(b) { a } else { b })
        }
        _ => {
            let best = cands.iter().map(|n| n.priority).min().unwrap_or(0);
            let top: Vec<_> = cands.iter().filter(|n| n.priority == best).collect();
            Some(*top[rr % top.len()])
        }
    };
    chosen.cloned()
}

/// Queue `bytes` for the node of `shard` that `access` calls for; returns the id of the node
/// it went to (0 when it was held or failed). On any failure the slot gets an error reply at
/// once.
#[allow(clippy::too_many_arguments)]
pub fn send(
    wp: &Rc<WorkerPool>,
    shard: usize,
    client: u64,
    sink: Sink,
    deadline: Instant,
    bytes: &[u8],
    access: Access,
    exclude: Option<u64>,
) -> u64 {
    let rt = &wp.rt;
    // The client speaks RESP3: a fail-open pool's misses take its types.
    let resp3 = client & crate::upstream::pool::RESP3_CLIENT != 0;
    if rt.conf.fail_open.is_some() && rt.shards[shard].circuit.is_open() {
        let write = access == Access::Write;
        crate::upstream::failopen::answer_open(rt, shard, wp.worker, sink, bytes, write, resp3);
        return 0;
    }
    let view = rt.shards[shard].view();
    let ha = rt.checked;
    // A read behind the client's own held write waits behind it (one connection's order).
    if access != Access::Write {
        let hold = &wp.shards[shard].hold;
        if !hold.is_empty() && hold.holds_client(client) {
            hold_request(wp, shard, sink, bytes, client, false);
            return 0;
        }
    }
    let node = match access {
        Access::Write | Access::ReadPrimary => {
            let hold = &wp.shards[shard].hold;
            let target = match access {
                Access::Write => rt.shards[shard].write_target(&view),
                _ => view.writable_primary(),
            };
            match target {
                Some(p)
                    if (hold.is_empty() && spool_clear(rt, shard))
                        || access == Access::ReadPrimary =>
                {
                    Some(Arc::clone(p))
                }
                _ if access == Access::Write && can_hold(wp) => {
                    hold_request(wp, shard, sink, bytes, client, true);
                    return 0;
                }
                _ if access == Access::ReadPrimary => pick_read(wp, shard, &view, exclude),
                _ => None,
            }
        }
        Access::Read => pick_read(wp, shard, &view, exclude),
    };
    let Some(node) = node else {
        let name = rt.shards[shard].name.clone();
        // A read with no node to go to (its primary dead or failing over, no replica to
        // serve it) waits for the primary, or its successor, as a write does, at most
        // `failover_hold`: a failover shows no error to reads either. A fail-open pool
        // answers its miss at once instead; `read_policy: replica` never reads the primary.
        if access != Access::Write
            && rt.conf.fail_open.is_none()
            && rt.conf.read_policy != rampart_config::ReadPolicy::Replica
            && can_hold(wp)
            && hold_may_help(rt, shard)
        {
            hold_request(wp, shard, sink, bytes, client, false);
            return 0;
        }
        if access == Access::Write {
            // No hold (failover_hold: 0): the spool, if the pool has one, takes it at once.
            let failure = Failure::NoPrimary {
                shard: name,
                cause: None,
            };
            spool_or_fail(wp, shard, sink, bytes, failure);
        } else {
            unserved(
                wp,
                shard,
                sink,
                bytes,
                false,
                resp3,
                Failure::NoReadNode { shard: name },
            );
        }
        return 0;
    };
    let sink = if rt.conf.fail_open.is_some() {
        let write = access == Access::Write;
        crate::upstream::failopen::guard(rt, shard, wp.worker, sink, bytes, write, resp3)
    } else {
        sink
    };
    let sink = if crate::upstream::fault::any() {
        match crate::upstream::fault::find(&rt.conf.name, &rt.shards[shard].name, &node, bytes) {
            Some(f) => match crate::upstream::fault::apply(&f, sink, deadline, &node) {
                Some(s) => s,
                None => return node.id,
            },
            None => sink,
        }
    } else {
        sink
    };
    let sink = if ha {
        with_resend(sink, wp, shard, bytes, access == Access::Write, client)
    } else {
        sink
    };
    if access != Access::Write && node.is_stale() {
        node.count_stale_read(wp.worker);
    }
    let backend = wp.backend(shard, &node, client);
    if let Err((sink, e)) =
        backend.send_or_return(sink, deadline, |out| out.extend_from_slice(bytes))
    {
        // Nothing was sent: a write may wait for the node (or its successor), a read may try
        // another node once.
        match access {
            Access::Write if can_hold(wp) => hold_request(wp, shard, sink, bytes, client, true),
            Access::Write => spool_or_fail(wp, shard, sink, bytes, e),
            Access::Read | Access::ReadPrimary if ha => retry(
                wp,
                Retry {
                    sink,
                    node: node.id,
                    failure: e,
                },
            ),
            _ => sink.fail(e),
        }
        return 0;
    }
    node.id
}

/// Longer than the pause a backend connection takes before reconnecting to a node that
/// closed it (50 ms, jittered to at most 75 ms).
const RECONNECT_PAUSE: Duration = Duration::from_millis(80);

/// Writes of this pool may wait in the failover hold.
fn can_hold(wp: &WorkerPool) -> bool {
    wp.rt.checked && !wp.rt.conf.failover_hold.is_zero()
}

/// Waiting up to `failover_hold` for `shard` to have a writable primary may help: the pool
/// holds writes and holding is not hopeless (see [`hold_is_hopeless`]). What a request that
/// needs the primary's own connection (WATCH, a blocking command) does instead of failing.
pub fn hold_may_help(rt: &PoolRt, shard: usize) -> bool {
    rt.checked && !rt.conf.failover_hold.is_zero() && !hold_is_hopeless(rt, shard)
}

/// Holding a write for `shard` cannot help: a pool without Sentinel never gets a new primary
/// on its own, so while its configured primary fails its health checks writes fail at once
/// (a whole shard down answers fast instead of one timeout per request). A primary that is up
/// but says replica (a DNS endpoint moving, a switchover) is still worth waiting for.
pub fn hold_is_hopeless(rt: &PoolRt, shard: usize) -> bool {
    if rt.conf.is_sentinel() || rt.conf.is_cluster() || rt.shards[shard].is_switching() {
        return false;
    }
    let view = rt.shards[shard].view();
    match view.primary.and_then(|i| view.nodes.get(i)) {
        Some(p) => !p.is_up() && !p.in_maintenance(),
        None => false,
    }
}

/// Why the shard's primary cannot take writes, when its health checks say why: its label
/// and the reason of its last failed check (shown as `127.0.0.1:6379 is down:
/// authentication failed: WRONGPASS ...`). `None` when it is not down by its checks.
pub fn primary_down(rt: &PoolRt, shard: usize) -> Option<PrimaryDown> {
    let view = rt.shards[shard].view();
    let p = view.primary.and_then(|i| view.nodes.get(i))?;
    if p.is_up() || p.is_ejected() {
        return None;
    }
    Some(PrimaryDown {
        node: Some(p.label.clone()),
        reason: p.last_error(),
    })
}

/// A write fails because holding it cannot help (see [`hold_is_hopeless`]).
fn hopeless(rt: &PoolRt, shard: usize) -> Failure {
    Failure::NoPrimary {
        shard: rt.shards[shard].name.clone(),
        cause: Some(primary_down(rt, shard).unwrap_or(PrimaryDown {
            node: None,
            reason: String::new(),
        })),
    }
}

/// Put a write that was not sent into the shard's hold (or fail it when the hold is full, or
/// when holding cannot help); a read (`write` false) only ever waits behind its client's
/// held write, and is never spooled.
fn hold_request(
    wp: &Rc<WorkerPool>,
    shard: usize,
    sink: Sink,
    bytes: &[u8],
    client: u64,
    write: bool,
) {
    let rt = &wp.rt;
    if hold_is_hopeless(rt, shard) {
        if !write {
            return sink.fail(Failure::NoReadNode {
                shard: rt.shards[shard].name.clone(),
            });
        }
        return spool_or_fail(wp, shard, sink, bytes, hopeless(rt, shard));
    }
    let held = Held {
        sink: with_resend(sink, wp, shard, bytes, write, client),
        until: Instant::now() + rt.conf.failover_hold,
    };
    match wp.shards[shard]
        .hold
        .push(held, rt.conf.failover_hold_bytes)
    {
        Ok(()) => ensure_releaser(wp, shard),
        Err(h) => {
            let failure = Failure::HoldFull {
                shard: rt.shards[shard].name.clone(),
            };
            if !h.is_write() {
                return h.fail(failure);
            }
            let bytes = h.bytes().to_vec();
            spool_or_fail(wp, shard, h.sink, &bytes, failure)
        }
    }
}

/// A request `shard` cannot serve now, with nothing sent: in a fail-open pool the shard
/// cannot answer, so a read gets its miss and a write what `fail_open_writes` says
/// (`upstream::failopen::answer_unserved`; the miss in RESP3 for a client that said
/// `HELLO 3`, `resp3`); elsewhere `failure`.
fn unserved(
    wp: &WorkerPool,
    shard: usize,
    sink: Sink,
    bytes: &[u8],
    write: bool,
    resp3: bool,
    failure: Failure,
) {
    crate::upstream::failopen::answer_unserved(
        &wp.rt, shard, wp.worker, sink, bytes, write, resp3, failure,
    );
}

/// Whether writes of `shard` may go to its primary: its spool (if it has one) holds nothing
/// still to replay, so a newer write cannot overtake a spooled one.
pub fn spool_clear(rt: &crate::topology::PoolRt, shard: usize) -> bool {
    rt.shards[shard]
        .spool
        .as_ref()
        .is_none_or(|s| s.waiting() == 0)
}

/// A write that cannot wait for a primary: append it to the shard's spool when the pool
/// spools it (see `durability::reply`), answering its documented reply once it is on disk;
/// otherwise, or if the spool refuses it, answer an error (`failure`, or why the spool
/// refused).
fn spool_or_fail(wp: &Rc<WorkerPool>, shard: usize, sink: Sink, bytes: &[u8], failure: Failure) {
    let rt = &wp.rt;
    let (Some(spool), Some(conf)) = (rt.shards[shard].spool.as_ref(), rt.conf.spool.as_ref())
    else {
        // A dropped write's reply (`+OK`, `:0`) is the same in RESP2 and RESP3.
        return unserved(wp, shard, sink, bytes, true, false, failure);
    };
    let Some(reply) = crate::durability::reply::spooled_reply(bytes, &conf.commands) else {
        if crate::durability::reply::is_transaction(bytes) {
            // The pool spools, so say why this write was not spooled: a transaction goes
            // whole or not at all.
            return sink.fail(Failure::Spool {
                shard: rt.shards[shard].name.clone(),
                reason: "a transaction is spooled only when every command in it is one \
                         spool_commands lists, in a form whose reply the spool can give; \
                         nothing of it was sent"
                    .into(),
            });
        }
        return unserved(wp, shard, sink, bytes, true, false, failure);
    };
    let appended = spool.append(bytes.to_vec());
    let name = rt.shards[shard].name.clone();
    tokio::task::spawn_local(async move {
        match appended.await {
            Ok(_) => sink.deliver(&reply),
            Err(e) => sink.fail(Failure::Spool {
                shard: name,
                reason: e.to_string(),
            }),
        }
    });
}

fn with_resend(
    mut sink: Sink,
    wp: &Rc<WorkerPool>,
    shard: usize,
    bytes: &[u8],
    write: bool,
    client: u64,
) -> Sink {
    if sink.resend.is_none() {
        sink.resend = Some(Box::new(Resend {
            bytes: bytes.to_vec(),
            shard,
            write,
            client,
            retried: false,
            redirects: 0,
            redirected_at: None,
            asking: false,
            queue: Rc::clone(&wp.retries),
        }));
    }
    sink
}

/// Send the requests given back by `wp`'s connections again, as they come; ends when the
/// pool is replaced by a reload.
pub async fn drain_retries(wp: std::rc::Weak<WorkerPool>) {
    loop {
        let Some(queue) = wp.upgrade().map(|p| Rc::clone(&p.retries)) else {
            return;
        };
        if !queue.wait().await {
            return;
        }
        let Some(pool) = wp.upgrade() else {
            return;
        };
        while let Some(r) = queue.pop() {
            retry(&pool, r);
        }
    }
}

/// A read whose connection failed: try once more on another node. A write refused with
/// READONLY (not applied): hold it for the new primary. Anything else: the error stands.
fn retry(wp: &Rc<WorkerPool>, r: Retry) {
    let Retry {
        mut sink,
        node,
        failure,
    } = r;
    if matches!(failure, Failure::Redirect { .. }) {
        return crate::upstream::redirect::follow(
            wp,
            Retry {
                sink,
                node,
                failure,
            },
        );
    }
    let Some(resend) = sink.resend.as_mut() else {
        return sink.fail(failure);
    };
    if resend.retried {
        return sink.fail(failure);
    }
    let (shard, write, client) = (resend.shard, resend.write, resend.client);
    resend.retried = !write;
    let bytes = resend.bytes.clone();
    let deadline = Instant::now() + wp.rt.timeout();
    let access = if write { Access::Write } else { Access::Read };
    if !write
        && failure.closed_by_server()
        && pick_read(wp, shard, &wp.rt.shards[shard].view(), Some(node)).is_none()
    {
        // The node closed its clients' connections (Sentinel reconfiguring a replica does,
        // CLIENT KILL TYPE normal) and no other node can take the read: wait out the pause
        // before reconnecting and send it to any node, that one included, once.
        let wp = Rc::clone(wp);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            send(&wp, shard, client, sink, deadline, &bytes, access, None);
        });
        return;
    }
    send(
        wp,
        shard,
        client,
        sink,
        deadline,
        &bytes,
        access,
        Some(node),
    );
}

/// Make sure a task releases (or expires) the held writes of `shard`.
pub fn ensure_releaser(wp: &Rc<WorkerPool>, shard: usize) {
    if !wp.shards[shard].hold.start_releaser() {
        return;
    }
    tokio::task::spawn_local(release(Rc::clone(wp), shard));
}

async fn release(wp: Rc<WorkerPool>, shard: usize) {
    let tick = Duration::from_millis(2);
    loop {
        tokio::time::sleep(tick).await;
        let hold = &wp.shards[shard].hold;
        let rt = &wp.rt.shards[shard];
        let view = rt.view();
        let target = rt
            .write_target(&view)
            .filter(|_| spool_clear(&wp.rt, shard));
        if let Some(primary) = target {
            let deadline = Instant::now() + wp.rt.timeout();
            while let Some(h) = hold.pop() {
                let backend = wp.backend(shard, primary, h.client());
                // The sink moves into the queue; the bytes stay with it for a later READONLY.
                let bytes = h.bytes().to_vec();
                let Held { sink, until } = h;
                if let Err((sink, _)) =
                    backend.send_or_return(sink, deadline, |out| out.extend_from_slice(&bytes))
                {
                    // The primary is in connect back-off: keep the write, in front, and try
                    // again on a later tick (or fail it when its time is up, below).
                    hold.push_front(Held { sink, until });
                    break;
                }
                hold::count_released(until.checked_sub(wp.rt.conf.failover_hold).unwrap_or(until));
            }
        }
        {
            let now = Instant::now();
            let hopeless = hold_is_hopeless(&wp.rt, shard);
            while hold
                .first_until()
                .is_some_and(|until| hopeless || until <= now)
            {
                if let Some(h) = hold.pop() {
                    let failure = if !h.is_write() {
                        // A read that waited for a primary (or behind its client's write).
                        Failure::NoReadNode {
                            shard: rt.name.clone(),
                        }
                    } else if hopeless {
                        self::hopeless(&wp.rt, shard)
                    } else {
                        Failure::HoldExpired {
                            shard: rt.name.clone(),
                            hold: wp.rt.conf.failover_hold,
                            cause: primary_down(&wp.rt, shard),
                        }
                    };
                    if !h.is_write()
                        || (wp.rt.conf.spool.is_none() && wp.rt.conf.fail_open.is_none())
                    {
                        h.fail(failure);
                    } else {
                        let bytes = h.bytes().to_vec();
                        hold::count_spooled();
                        spool_or_fail(&wp, shard, h.sink, &bytes, failure);
                    }
                }
            }
        }
        if hold.is_empty() {
            hold.stop_releaser();
            return;
        }
    }
}
