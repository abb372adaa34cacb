//! WATCH: a session's watched keys, held on a dedicated server connection of its own.
//!
//! Redis keeps watched keys per connection, so a session that says `WATCH` leases a
//! dedicated connection (`upstream::dedicated`) to the primary of the keys' shard and sends
//! `WATCH` there. Every watched key must live on that one shard. While it watches, the
//! session's other requests still ride the shared connections (so its own writes reach the
//! server and touch watched keys, as in Redis); only the transaction changes course: at
//! `EXEC`, `MULTI`, the queued commands and `EXEC` go in one piece on the leased connection
//! and only `EXEC`'s reply reaches the client (an array, or nil when a watched key changed).
//!
//! `EXEC` ends the watch (Redis forgets watched keys there) and the connection goes back for
//! reuse after its complete replies; `DISCARD`, `UNWATCH` and `RESET` end it too, sending
//! `UNWATCH` first so the connection goes back clean. A client that leaves drops the lease:
//! its connection is closed. If the connection breaks or its node is switched away from while
//! the session watches, the watch is lost: nothing of the transaction is sent and `EXEC`
//! answers nil ([`lost`]), as when a watched key changed, so the client's retry watches
//! again (an error would end it: redis-py's `transaction()` retries only `WatchError`).
//!
//! `EXEC` is a write: while the shard's writes are held (a switchover, or a Sentinel failover
//! from `+try-failover` on), it waits as a held write does, at most the pool's
//! `failover_hold`, so a primary about to be demoted acknowledges no transaction its
//! successor lacks; once the shard switched, the watch is found lost and nothing is sent.
//!
//! A session runs one watch step (`WATCH`, `EXEC`) at a time and nothing after it until it is
//! answered: both wait for the replies to the session's earlier requests, so they follow the
//! client's own writes, as on one Redis connection.
//!
//! In a cluster pool the slot may have moved since the map was read. While nothing is
//! watched yet, a `WATCH` answered `MOVED` goes, on a connection to the named node, there;
//! one answered `ASK` (the slot migrating, the key already on the importing node) goes there
//! after `ASKING`, and so does the transaction at `EXEC`; `TRYAGAIN` is sent again after a
//! pause (at most [`MAX_REDIRECTS`] redirections, within the pool timeout). A slot that moves
//! between `WATCH` and `EXEC` takes the watched keys' state with it: the node that holds the
//! watch answers the queued commands `MOVED` and `EXEC` `EXECABORT`, so nothing ran, and
//! `EXEC` answers nil, as when a watched key changed (the client's retry watches again, on
//! the new node).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use crate::session::primary::LeaseSoon;
use crate::upstream::dedicated::Lease;
use crate::upstream::error::Failure;
use crate::upstream::pool::WorkerPool;
use crate::upstream::redirect::{self, Redirect, MAX_REDIRECTS};
use crate::upstream::sink::Sink;

/// The `UNWATCH` request, as RESP.
const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";

/// The reply to `WATCH` of keys on more than one shard (nothing is watched).
pub const CROSS_SHARD: &str = "ERR rampart: the keys of WATCH live on different shards and a transaction runs on one; give them a common hash tag (e.g. {user1}:a and {user1}:b) to put them on one shard";
/// The reply to `WATCH` of keys on another shard than the keys the session already watches.
pub const OTHER_SHARD: &str = "ERR rampart: these keys live on another shard than the keys already watched, and a transaction runs on one; give them a common hash tag (e.g. {user1}:a and {user1}:b) to put them on one shard, or UNWATCH first";

/// `EXEC`'s reply when the watch was lost (its connection broke, its node was switched away
/// from or ejected) or its slot moved: nothing ran, and the watched keys cannot be checked,
/// so the transaction is aborted as when one of them changed: nil (RESP3: null), which every
/// client library takes as "retry the transaction" (redis-py's `transaction()` raises
/// `WatchError` and runs it again). `why` is logged (debug), not sent.
pub fn lost(why: &str, resp3: bool) -> Vec<u8> {
    tracing::debug!("EXEC answered nil: the watch was lost ({why}); nothing ran");
    if resp3 {
        b"_\r\n".to_vec()
    } else {
        b"*-1\r\n".to_vec()
    }
}

/// A session's watch: its shard and the leased connection that holds the watched keys.
pub struct Watch {
    /// The shard of every watched key, an index into the pool's shards (in a cluster pool,
    /// the shard of the node a redirection led to).
    shard: Cell<usize>,
    /// A cluster pool's slots of the watched keys (at most the 16384 slots, each once).
    slots: std::cell::RefCell<Vec<u16>>,
    /// The watch is on a node importing its slot (`ASK`): `EXEC` goes there after `ASKING`.
    asking: Cell<bool>,
    /// The pool, to follow a cluster's redirections (cluster pools only).
    pool: Option<Rc<WorkerPool>>,
    /// The pool's generation at `WATCH`, whose placement put the keys on `shard`.
    placed_by: Arc<crate::topology::PoolRt>,
    /// The leased connections speak RESP3 (EXEC's nil is `_`).
    resp3: bool,
    /// The leased connection; taken by the step in progress, gone once lost.
    lease: Cell<Option<Lease>>,
    /// The connection the first `WATCH` awaits (see [`LeaseSoon`]), until it takes it.
    coming: Cell<Option<LeaseSoon>>,
    /// Why the lease was lost, once it was.
    lost: Cell<Option<String>>,
    /// A WATCH succeeded on the server: something is watched.
    watched: Cell<bool>,
    /// A step (`WATCH`, `EXEC`) is in progress.
    busy: Cell<bool>,
}

impl Watch {
    /// A watch about to start on the connection `lease` gives, for keys of `shard` as
    /// `placed_by` (the pool's generation now) places them; in a cluster pool, `pool` lets it
    /// follow redirections. `resp3`: the lease's protocol.
    pub fn new(
        shard: usize,
        lease: LeaseSoon,
        (pool, placed_by): (Option<Rc<WorkerPool>>, Arc<crate::topology::PoolRt>),
        resp3: bool,
    ) -> Rc<Self> {
        Rc::new(Watch {
            shard: Cell::new(shard),
            slots: std::cell::RefCell::default(),
            asking: Cell::new(false),
            pool,
            placed_by,
            resp3,
            lease: Cell::new(None),
            coming: Cell::new(Some(lease)),
            lost: Cell::new(None),
            watched: Cell::new(false),
            busy: Cell::new(false),
        })
    }

    /// Whether `now` (the pool's generation at `EXEC`) places keys as the one at `WATCH`
    /// did: a reload applied with `force` may have moved the watched keys to another shard.
    pub fn same_placement(&self, now: &crate::topology::PoolRt) -> bool {
        self.placed_by.same_placement(now)
    }

    /// Whether an ejected server came back to the ring since the last `WATCH` was sent (its
    /// keys may live on it again: the watch cannot be checked where it is held).
    pub fn placement_moved(&self) -> bool {
        let lease = self.lease.take();
        let moved = lease.as_ref().is_some_and(Lease::placement_changed);
        self.lease.set(lease);
        moved
    }

    /// The shard of the watched keys (see [`Watch::new`]).
    pub fn shard(&self) -> usize {
        self.shard.get()
    }

    /// Whether keys of `slot` are watched (cluster pools).
    pub fn holds_slot(&self, slot: u16) -> bool {
        self.slots.borrow().contains(&slot)
    }

    /// A step is in progress: the session runs nothing else until it is answered.
    pub fn is_busy(&self) -> bool {
        self.busy.get()
    }

    /// Nothing is watched and nothing was lost (the first `WATCH` failed): the session is
    /// back to no watch.
    pub fn is_void(&self) -> bool {
        !self.busy.get() && !self.watched.get() && !self.is_lost()
    }

    /// The watch was lost (connection broken, node switched away from).
    pub fn is_lost(&self) -> bool {
        let why = self.lost.take();
        let lost = why.is_some();
        self.lost.set(why);
        lost
    }

    fn lose(&self, why: String) {
        self.lease.set(None);
        if self.watched.get() {
            self.lost.set(Some(why));
        }
    }
}

/// Send `WATCH` (its RESP `request`, its keys in `slot` in a cluster pool) on the watch's
/// connection and answer `sink` with the server's reply. A failure loses the watch (an
/// earlier `WATCH` included).
pub fn watch(w: &Rc<Watch>, request: Vec<u8>, slot: Option<u16>, sink: Sink, deadline: Instant) {
    w.busy.set(true);
    tokio::task::spawn_local(watch_step(Rc::clone(w), request, slot, sink, deadline));
}

async fn watch_step(
    w: Rc<Watch>,
    request: Vec<u8>,
    slot: Option<u16>,
    sink: Sink,
    deadline: Instant,
) {
    let lease = match (w.lease.take(), w.coming.take()) {
        (Some(lease), _) => Ok(lease),
        (None, Some(coming)) => coming.await,
        (None, None) => Err(Failure::Ended(
            "the connection that held the watch was lost",
        )),
    };
    let result = match lease {
        Ok(lease) => watch_on(&w, lease, &request, deadline).await,
        Err(f) => Err(f),
    };
    // Cleared before the reply wakes the session, which then runs its next request.
    w.busy.set(false);
    match result {
        Ok((lease, reply)) => {
            if reply.starts_with(b"+") {
                w.watched.set(true);
                let mut slots = w.slots.borrow_mut();
                if let Some(s) = slot.filter(|s| !slots.contains(s)) {
                    slots.push(s);
                }
            }
            if w.watched.get() {
                w.lease.set(Some(lease));
            } else {
                // The server refused the first WATCH: nothing is watched, and the connection
                // goes back at once instead of waiting for the session's next step.
                lease.give_back();
            }
            sink.deliver(&reply);
        }
        Err(f) => {
            w.lose(f.to_string());
            sink.fail(f);
        }
    }
}

/// `WATCH` on `lease`; in a cluster pool with nothing watched yet, a redirection is
/// followed (see the module documentation). The reply and the lease it came on.
async fn watch_on(
    w: &Watch,
    mut lease: Lease,
    request: &[u8],
    deadline: Instant,
) -> Result<(Lease, Vec<u8>), Failure> {
    let first = Instant::now();
    let mut redirects = 0;
    loop {
        let reply = if w.asking.get() {
            let mut both = redirect::ASKING.to_vec();
            both.extend_from_slice(request);
            lease.send_expecting(&both, 2).await?;
            let asked = lease.reply(Some(deadline)).await?;
            let reply = lease.reply(Some(deadline)).await?;
            if asked.starts_with(b"-") {
                asked
            } else {
                reply
            }
        } else {
            lease.call(request, Some(deadline)).await?
        };
        let Some(pool) = w
            .pool
            .as_ref()
            .filter(|_| crate::upstream::backend::is_redirect(&reply))
        else {
            return Ok((lease, reply));
        };
        let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
        let label = lease.node().label.clone();
        let from_host = label.rsplit_once(':').map_or("", |(h, _)| h);
        let timeout = pool.rt.timeout();
        let give_up = |tries| Failure::Redirect {
            node: label.clone(),
            reply: text.clone(),
            tries,
        };
        if first.elapsed() >= timeout {
            lease.give_back();
            return Err(give_up(redirects));
        }
        let (addr, ask) = match redirect::parse(&text, from_host) {
            Some(Redirect::Moved(addr)) => (addr, false),
            Some(Redirect::Ask(addr)) => (addr, true),
            Some(Redirect::Later) => {
                tokio::time::sleep(redirect::retry_pause(first.elapsed(), timeout)).await;
                continue;
            }
            None => return Ok((lease, reply)),
        };
        if w.watched.get() {
            // Keys already watched on this connection: the watch cannot move to these.
            return Ok((lease, format!("-{OTHER_SHARD}\r\n").into_bytes()));
        }
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            lease.give_back();
            return Err(give_up(redirects - 1));
        }
        // Nothing is watched on this connection (the node ran nothing): it goes back, and
        // the watch moves to the named node.
        let (shard, node) = redirect::node_at(pool, &addr, w.shard.get());
        let next = pool.dedicated.lease_for(&pool.rt, &node, w.resp3)?;
        lease.give_back();
        lease = next;
        w.shard.set(shard);
        w.asking.set(ask);
    }
}

/// `EXEC` of a watching session: `run` (`MULTI`, the commands, `EXEC`; `skip` replies before
/// `EXEC`'s) goes on the watch's connection unless the watch was lost, in the protocol the
/// session speaks now (`resp3`; a session that said HELLO since WATCH has the connection
/// switched first, watched keys kept), and only `EXEC`'s
/// reply answers `sink`, each reply awaited for at most `timeout` (the pool's). With `acks`
/// (the pool's `min_replica_acks` and its timeout), a transaction that ran is answered only
/// after `WAIT` on the same connection counted that many replicas, else with the same
/// "may not be durable" error a write on a shared connection gets. The connection goes back
/// for reuse after complete replies. The watch ends.
pub fn exec(
    w: &Rc<Watch>,
    (run, skip): (Vec<u8>, u32),
    sink: Sink,
    timeout: Duration,
    acks: Option<(u32, Duration)>,
    resp3: bool,
) {
    w.busy.set(true);
    let w = Rc::clone(w);
    tokio::task::spawn_local(async move {
        let result = exec_on(&w, &run, skip, timeout, acks, resp3).await;
        w.busy.set(false);
        match result {
            Ok(reply) => sink.deliver(&reply),
            Err(Ok(abort)) => sink.deliver(format!("-{abort}\r\n").as_bytes()),
            Err(Err(f)) => sink.fail(f),
        }
    });
}

/// How often an `EXEC` waiting for the shard's held writes looks again (as the hold's
/// releaser does).
const HOLD_POLL: Duration = Duration::from_millis(2);

/// Wait while `shard`'s writes are held, at most the pool's `failover_hold`; the error is
/// `EXEC`'s reply when the hold outlasts it (nothing was sent).
async fn held_writes(lease: &Lease, shard: usize) -> Result<(), String> {
    let rt = lease.pool();
    let Some(s) = rt.shards.get(shard) else {
        return Ok(());
    };
    let until = Instant::now() + rt.conf.failover_hold;
    while s.writes_held() {
        if Instant::now() >= until {
            return Err(format!(
                "EXECABORT Transaction discarded: shard '{}' is switching its primary and held its writes past failover_hold ({} ms); nothing ran",
                s.name,
                rt.conf.failover_hold.as_millis()
            ));
        }
        tokio::time::sleep(HOLD_POLL).await;
    }
    Ok(())
}

/// `EXEC`'s reply; `Err(Ok(_))`: nothing was sent (the reply is an error message), `Err(Err(_))`:
/// the connection failed once the run may have reached the server (never sent again).
async fn exec_on(
    w: &Watch,
    run: &[u8],
    skip: u32,
    timeout: Duration,
    acks: Option<(u32, Duration)>,
    resp3: bool,
) -> Result<Vec<u8>, Result<String, Failure>> {
    let Some(mut lease) = w.lease.take() else {
        let why = w.lost.take().unwrap_or_else(|| "closed".into());
        return Ok(lost(&why, resp3));
    };
    held_writes(&lease, w.shard.get()).await.map_err(Ok)?;
    if let Err(e) = lease.check() {
        return Ok(lost(&e.to_string(), resp3));
    }
    if let Err(e) = lease.speak(resp3, Instant::now() + timeout).await {
        return Ok(lost(&e.to_string(), resp3));
    }
    let node = lease.node().label.clone();
    // On a node importing the slot (the watch followed `ASK`), ASKING first: it holds for
    // every command of the transaction.
    let asking = u32::from(w.asking.get());
    let mut bytes = Vec::with_capacity(run.len() + redirect::ASKING.len());
    if asking == 1 {
        bytes.extend_from_slice(redirect::ASKING);
    }
    bytes.extend_from_slice(run);
    let skip = skip + asking;
    lease
        .send_expecting(&bytes, skip as usize + 1)
        .await
        .map_err(|e| Err(Failure::from(e)))?;
    let (mut refused, mut redirected) = (false, false);
    for i in 0..skip {
        let r = lease
            .reply(Some(Instant::now() + timeout))
            .await
            .map_err(|e| Err(Failure::from(e)))?;
        refused |= i == asking && r.starts_with(b"-");
        redirected |= crate::upstream::backend::is_redirect(&r);
    }
    let reply = lease
        .reply(Some(Instant::now() + timeout))
        .await
        .map_err(|e| Err(Failure::from(e)))?;
    if refused {
        lease.give_back();
        return Err(Err(Failure::MultiRefused { node }));
    }
    let redirected_exec = crate::upstream::backend::is_redirect(&reply);
    if (redirected && reply.starts_with(b"-EXECABORT")) || redirected_exec {
        // The slot moved since WATCH (the node redirected the queued commands, so nothing
        // ran), or EXEC itself was redirected (on a node importing the slot, keys of the
        // transaction still on the other node: TRYAGAIN; nothing ran either, and the
        // server forgot the watched keys): they cannot be checked here. As when a watched
        // key changed, the transaction is aborted; the client's retry watches again.
        if let Some(c) = w.pool.as_ref().and_then(|p| p.rt.cluster.as_ref()) {
            c.ask_refresh();
        }
        lease.give_back();
        return Ok(lost("the slot moved since WATCH", resp3));
    }
    if let Some((wanted, within)) = acks.filter(|_| ran(&reply)) {
        let mut wait = BytesMut::new();
        crate::upstream::acks::push_wait(&mut wait, wanted, within);
        let confirmed = lease
            .call(&wait, Some(Instant::now() + within + timeout))
            .await
            .map_err(|e| Err(crate::upstream::acks::lost(&node, &e.to_string(), 1)))?;
        if let Some(f) = crate::upstream::acks::judge(&confirmed, wanted, within, &node, 1) {
            lease.give_back();
            return Err(Err(f));
        }
    }
    lease.give_back();
    Ok(reply)
}

/// Whether `EXEC`'s reply says the transaction ran (an array; not nil for a touched watched
/// key, nor an error).
fn ran(reply: &[u8]) -> bool {
    reply.starts_with(b"*") && !reply.starts_with(b"*-1")
}

/// End a watch the session no longer needs (`UNWATCH`, `DISCARD`, `RESET`): `UNWATCH` on its
/// connection, which goes back for reuse after the reply (closed if anything else happens).
pub fn end(w: &Watch, timeout: Duration) {
    let Some(lease) = w.lease.take() else {
        return;
    };
    tokio::task::spawn_local(unwatch(lease, timeout));
}

async fn unwatch(mut lease: Lease, timeout: Duration) {
    if lease.check().is_err() {
        return;
    }
    if let Ok(reply) = lease.call(UNWATCH, Some(Instant::now() + timeout)).await {
        if reply == b"+OK\r\n" {
            lease.give_back();
        }
    }
}
