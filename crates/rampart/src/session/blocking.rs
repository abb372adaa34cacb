//! Blocking commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD with BLOCK, ...): each runs on a
//! dedicated server connection to its shard's primary (`upstream::dedicated`), so it never
//! stalls the connections other clients share.
//!
//! As in Redis, a session runs one blocking command at a time and in order: the command waits
//! for the replies to the session's earlier requests (so it sees the client's own writes), and
//! nothing the client sends after it is run before its reply. The command's deadline is its
//! own block timeout plus the pool `timeout` (none for a timeout of 0). If the client leaves
//! while blocked, its dedicated connection is closed at once, so the server never hands it data
//! that nobody would read.
//!
//! A list pop that finds data does not block, so it need not cost a connection of its own:
//! BLPOP, BRPOP, BLMPOP, BLMOVE and BRPOPLPUSH are first sent on the shard's shared
//! connection in their non-blocking form (LMPOP, LMOVE, RPOPLPUSH: the same pop, Redis 7.0's
//! own commands, see [`at_once`]). When that pop answers with data, the client gets it in the
//! blocking command's reply shape; only when it finds every list empty (or the server refuses
//! it) does the blocking command itself go to a dedicated connection, exactly as the client
//! sent it. The session is held meanwhile, so nothing it sent later runs first.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::notify::LocalNotify;
use crate::reply::pending::Pending;
use crate::session::primary::LeaseSoon;
use crate::upstream::dedicated::Lease;
use crate::upstream::error::Failure;
use crate::upstream::sink::Sink;

/// Why a blocking command ends when its client closed its side of the connection: as Redis
/// frees such a client, the command gets no reply (nothing is written to a client that left),
/// and nothing it sent after the command runs.
pub const CLIENT_LEFT: &str = "the client left";

/// Give `sink` what a blocking command that ended with `failure` answers: nothing when the
/// client left ([`CLIENT_LEFT`]); when its server connection failed (closed, reset, timed
/// out, switched away from in a failover, or ended by a reload), no reply either: the
/// client is closed, as a client of that server, or of a TCP proxy in front of it, would
/// see. Client libraries take a closed connection as "reconnect and try again" (RQ, Celery
/// and ioredis worker loops do), where an error reply ends them; and the command may have
/// popped an item whose reply was lost, which only a lost connection tells. Any other
/// failure (nothing was sent) is the failure's error.
pub fn end(sink: Sink, failure: Failure) {
    match failure {
        Failure::Ended(CLIENT_LEFT) => sink.deliver(b""),
        f if f.shard_down() => {
            tracing::info!("closing a blocked client: its blocking command's {f}");
            sink.hang_up();
        }
        f => sink.fail(f),
    }
}

/// A session's blocking command in progress, if any, and whether the client is gone.
#[derive(Default)]
pub struct Blocked {
    running: Cell<bool>,
    /// The session's registry entry while blocked, for CLIENT LIST's `b` flag.
    entry: RefCell<Option<Arc<crate::observe::clients::Entry>>>,
    left: Cell<Option<&'static str>>,
    wake: LocalNotify,
    /// The session speaks RESP3 (the null a `CLIENT UNBLOCK` before sending answers).
    resp3: Cell<bool>,
    /// The blocking command is `WAIT` (a `CLIENT UNBLOCK ... TIMEOUT` before sending
    /// answers a count, not a null).
    counting: Cell<bool>,
}

impl Blocked {
    /// A blocking command of this session is waiting for its reply.
    pub fn is_running(&self) -> bool {
        self.running.get()
    }

    /// The client is gone (or the process stops): a blocked command ends now, with `why` as
    /// its error, and its dedicated connection is closed.
    pub fn leave(&self, why: &'static str) {
        if self.left.get().is_none() {
            self.left.set(Some(why));
            self.wake.notify();
        }
    }

    /// The blocking command was sent on `lease`'s connection: `CLIENT UNBLOCK` of this
    /// session reaches it there (see `observe::clients::Entry::blocked_on`).
    fn waits_on(&self, lease: &crate::upstream::dedicated::Lease) {
        if let (Some(e), Some(id)) = (self.entry.borrow().as_ref(), lease.server_id()) {
            e.add_blocked_on(lease.node().id, id);
        }
    }

    /// The session speaks RESP3 (`true`) or RESP2, and the command is `WAIT` (`counting`):
    /// set before each blocking command.
    pub fn set_kind(&self, resp3: bool, counting: bool) {
        self.resp3.set(resp3);
        self.counting.set(counting);
    }

    /// The connection `lease` gives, or, when `CLIENT UNBLOCK` comes while it is still
    /// awaited (the shard's writes held, its spool replaying), the reply Redis gives an
    /// unblocked command: the null of a timeout (`TIMEOUT`) or the `UNBLOCKED` error
    /// (`ERROR`). Nothing was sent then.
    async fn connection(&self, lease: LeaseSoon) -> Result<Result<Lease, Vec<u8>>, Failure> {
        let entry = self.entry.borrow().clone();
        let Some(entry) = entry else {
            return lease.await.map(Ok);
        };
        entry.wait_early();
        let mut lease = lease;
        let got = tokio::select! {
            biased;
            r = &mut lease => Some(r),
            _ = entry.unblocked_early() => None,
        };
        match (entry.end_early(), got) {
            (Some(reason), _) => Ok(Err(unblocked_reply(
                reason,
                self.resp3.get(),
                self.counting.get(),
            ))),
            (None, Some(r)) => r.map(Ok),
            // Woken with no reason left: cannot be, but then the wait goes on.
            (None, None) => lease.await.map(Ok),
        }
    }

    async fn left(&self) -> &'static str {
        loop {
            if let Some(why) = self.left.get() {
                return why;
            }
            self.wake.notified().await;
        }
    }
}

/// What a blocking command ended by `CLIENT UNBLOCK` before it was sent answers, as Redis
/// answers one unblocked in the server: `TIMEOUT`, the null array of a timeout (Redis 7.0
/// answers every blocking list, sorted-set and stream command so), or for `WAIT`
/// (`counting`) the replicas known to have the writes: none was asked, so 0; `ERROR`, the
/// `UNBLOCKED` error.
fn unblocked_reply(reason: u8, resp3: bool, counting: bool) -> Vec<u8> {
    match (reason, resp3, counting) {
        (crate::observe::clients::EARLY_ERROR, _, _) => {
            b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n".to_vec()
        }
        (_, _, true) => b":0\r\n".to_vec(),
        (_, true, false) => b"_\r\n".to_vec(),
        (_, false, false) => b"*-1\r\n".to_vec(),
    }
}

/// How long a blocking call may block, read from its arguments as Redis reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFor {
    /// A timeout of 0: until data arrives.
    Ever,
    /// At most this long.
    Up(Duration),
    /// The timeout cannot be read; Redis answers such a call with an error at once.
    Unknown,
}

/// The block timeout of a call of the blocking command `name` (lowercase, as in the command
/// table): seconds (a float) for the list and sorted-set commands, milliseconds after `BLOCK`
/// for XREAD and XREADGROUP.
pub fn block_for(name: &str, argv: &[&[u8]]) -> BlockFor {
    let secs = |a: Option<&&[u8]>| {
        let Some(v) = a.and_then(|a| std::str::from_utf8(a).ok()) else {
            return BlockFor::Unknown;
        };
        match v.parse::<f64>() {
            Ok(0.0) => BlockFor::Ever,
            Ok(s) if s > 0.0 && s.is_finite() => {
                BlockFor::Up(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
            }
            _ => BlockFor::Unknown,
        }
    };
    match name {
        "blmpop" | "bzmpop" => secs(argv.get(1)),
        "xread" | "xreadgroup" => {
            let mut i = 1;
            while let Some(w) = argv.get(i) {
                if w.eq_ignore_ascii_case(b"streams") {
                    break;
                }
                if w.eq_ignore_ascii_case(b"group") {
                    i += 3;
                    continue;
                }
                if w.eq_ignore_ascii_case(b"block") {
                    let ms = argv
                        .get(i + 1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|a| a.parse::<i64>().ok());
                    return match ms {
                        Some(0) => BlockFor::Ever,
                        Some(ms) if ms > 0 => BlockFor::Up(Duration::from_millis(ms as u64)),
                        _ => BlockFor::Unknown,
                    };
                }
                i += 1;
            }
            BlockFor::Unknown
        }
        _ => secs(argv.last()),
    }
}

/// The reply of a non-blocking pop as the blocking command shapes it (see [`at_once`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The same reply (LMPOP for BLMPOP, LMOVE for BLMOVE, RPOPLPUSH for BRPOPLPUSH).
    Same,
    /// LMPOP's `[key, [element]]` becomes BLPOP's and BRPOP's `[key, element]`.
    Pair,
}

/// The non-blocking form of a call of the list pop `name` (lowercase) with `argv`, as RESP,
/// and how its reply becomes the blocking command's; `None` for the other blocking commands
/// and for a call whose timeout Redis would refuse (the blocking command then gets Redis' own
/// error). The pop is the same one Redis runs when the blocking command finds data at once:
/// BLPOP and BRPOP pop from the first non-empty key in order, as `LMPOP numkeys key...
/// LEFT|RIGHT` does (Redis 7.0 `LMPOP`); BLMPOP is LMPOP; BLMOVE is LMOVE; BRPOPLPUSH is
/// RPOPLPUSH.
pub fn at_once(name: &str, argv: &[&[u8]]) -> Option<(Vec<u8>, Shape)> {
    // A timeout Redis would refuse, or so long it may be out of Redis' range: the blocking
    // command goes as sent, for Redis' own answer.
    match block_for(name, argv) {
        BlockFor::Ever => {}
        BlockFor::Up(d) if d < Duration::from_secs(365 * 24 * 3600) => {}
        _ => return None,
    }
    // Room for the whole call at once: the pop's own name and count, and each argument with
    // its `$len` line.
    let size = 32 + argv.iter().map(|a| a.len() + 16).sum::<usize>();
    let mut out = bytes::BytesMut::with_capacity(size);
    let n = argv.len();
    let shape = match name {
        "blpop" | "brpop" if n >= 3 => {
            let keys = &argv[1..n - 1];
            let count = keys.len().to_string();
            let side: &[u8] = if name == "blpop" { b"LEFT" } else { b"RIGHT" };
            let mut call: Vec<&[u8]> = Vec::with_capacity(keys.len() + 3);
            call.push(b"LMPOP");
            call.push(count.as_bytes());
            call.extend_from_slice(keys);
            call.push(side);
            resp::encode::command(&mut out, &call);
            Shape::Pair
        }
        "blmpop" if n >= 5 => {
            let mut call: Vec<&[u8]> = Vec::with_capacity(n - 1);
            call.push(b"LMPOP");
            call.extend_from_slice(&argv[2..]);
            resp::encode::command(&mut out, &call);
            Shape::Same
        }
        "blmove" if n == 6 => {
            resp::encode::command(&mut out, &[b"LMOVE", argv[1], argv[2], argv[3], argv[4]]);
            Shape::Same
        }
        "brpoplpush" if n == 4 => {
            resp::encode::command(&mut out, &[b"RPOPLPUSH", argv[1], argv[2]]);
            Shape::Same
        }
        _ => return None,
    };
    Some((Vec::from(out), shape))
}

/// What the non-blocking pop answered, for [`pop_or_block`].
enum Popped {
    /// Data: this is the reply.
    Answer(Vec<u8>),
    /// Every list was empty, or the server refused the pop: the blocking command runs.
    Block,
    /// rampart's own error (the pop may have reached the server, so nothing is sent again):
    /// the client is closed.
    HangUp,
}

fn popped(reply: &[u8], shape: Shape) -> Popped {
    // rampart's own error for the pop (its server connection failed or could not be made,
    // no primary): the pop may have run, or the shard cannot serve now; the client is
    // closed, as a blocked one whose server failed is.
    if reply.starts_with(b"-ERR rampart: ") {
        return Popped::HangUp;
    }
    let nil = matches!(reply, b"*-1\r\n" | b"$-1\r\n" | b"_\r\n");
    let server_error = matches!(reply.first(), Some(b'-' | b'!'));
    if nil || server_error {
        return Popped::Block;
    }
    match shape {
        Shape::Same => Popped::Answer(reply.to_vec()),
        Shape::Pair => Popped::Answer(pair(reply).unwrap_or_else(|| reply.to_vec())),
    }
}

/// `*2 $key *1 $element` (LMPOP's reply, one element) as `*2 $key $element` (BLPOP's).
fn pair(reply: &[u8]) -> Option<Vec<u8>> {
    let rest = reply.strip_prefix(b"*2\r\n$")?;
    let eol = memchr::memchr(b'\r', rest)?;
    let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
    // "*2\r\n$" + digits + "\r\n" + key + "\r\n"
    let at = 5 + eol + 2 + len + 2;
    if reply.get(at..at + 4)? != b"*1\r\n" {
        return None;
    }
    let mut out = Vec::with_capacity(reply.len() - 4);
    out.extend_from_slice(&reply[..at]);
    out.extend_from_slice(&reply[at + 4..]);
    Some(out)
}

/// A list pop sent in its non-blocking form (see [`at_once`]) whose reply lands in `pen`:
/// with data, `sink` gets it in `shape`; when it found nothing, the blocking `request` runs
/// on the connection `block` leases (with the deadline it gives, and in a cluster pool what
/// follows its slot after `MOVED`), as [`run`] does. The
/// session is held throughout (`blocked` is running) but counts as blocked only once the
/// blocking command is sent.
pub async fn pop_or_block(
    pen: Rc<Pending>,
    shape: Shape,
    block: impl FnOnce() -> Result<(LeaseSoon, Option<Instant>, Option<Again>), Failure>,
    request: Vec<u8>,
    sink: Sink,
    blocked: Rc<Blocked>,
    entry: Option<Arc<crate::observe::clients::Entry>>,
) {
    let arrived = tokio::select! {
        biased;
        why = blocked.left() => Err(why),
        () = async {
            while pen.outstanding() > 0 {
                pen.wake.notified().await;
            }
        } => Ok(()),
    };
    let reply = pen.out.borrow_mut().split();
    let step = match arrived {
        Err(CLIENT_LEFT) => Popped::Answer(Vec::new()),
        Err(why) => Popped::Answer(Failure::Ended(why).reply()),
        Ok(()) => popped(&reply, shape),
    };
    drop(pen);
    match step {
        Popped::Answer(r) => {
            sink.deliver(&r);
            blocked.running.set(false);
        }
        Popped::HangUp => {
            tracing::info!(
                "closing a blocked client: its pop failed: {}",
                String::from_utf8_lossy(reply.strip_prefix(b"-").unwrap_or(&reply)).trim_end()
            );
            sink.hang_up();
            blocked.running.set(false);
        }
        Popped::Block => match block() {
            Ok((lease, deadline, again)) => {
                count(&blocked, entry.as_ref());
                // Boxed: the task is spawned for every pop, most of which find data, so it
                // should not carry the blocking command's state inline.
                Box::pin(run(lease, request, sink, deadline, blocked, again)).await;
            }
            Err(f) => {
                end(sink, f);
                blocked.running.set(false);
            }
        },
    }
}

/// Run one blocking request on the connection `lease` gives and answer `sink`; the
/// session's `blocked` state is running until then. The connection goes back for reuse only
/// after a complete reply.
pub async fn run(
    lease: LeaseSoon,
    request: Vec<u8>,
    sink: Sink,
    deadline: Option<Instant>,
    blocked: Rc<Blocked>,
    again: Option<Again>,
) {
    let mut lease = lease;
    let mut moved = 0;
    // The node leased is importing the key's slot (it was named by ASK).
    let mut asking = false;
    // When the first `TRYAGAIN` came (its keys split by a migration): sent again after a
    // pause until the pool `timeout` has passed since.
    let mut tryagain: Option<Instant> = None;
    loop {
        let result = tokio::select! {
            biased;
            why = blocked.left() => Err(Failure::Ended(why)),
            r = async {
                let mut lease = match blocked.connection(lease).await? {
                    Ok(lease) => lease,
                    Err(unblocked) => return Ok((None, unblocked)),
                };
                if asking {
                    let mut both = crate::upstream::redirect::ASKING.to_vec();
                    both.extend_from_slice(&request);
                    lease.send_expecting(&both, 2).await?;
                    let asked = lease.reply(deadline).await?;
                    if asked.starts_with(b"-") {
                        lease.reply(deadline).await?;
                        return Ok((Some(lease), asked));
                    }
                } else {
                    lease.send(&request).await?;
                }
                blocked.waits_on(&lease);
                match lease.answer(deadline).await {
                    Ok(reply) => Ok((Some(lease), reply)),
                    Err(e) => Err(Failure::from(e)),
                }
            } => r,
        };
        match result {
            Ok((None, unblocked)) => sink.deliver(&unblocked),
            Ok((Some(done), reply)) => {
                let ask = reply.starts_with(b"-ASK ") && moved < MAX_MOVED;
                let from = ask.then(|| done.node().label.clone());
                done.give_back();
                if let Some(from) = from {
                    // The slot is migrating and the key is not on this node: the command
                    // runs on the importing node, after ASKING (it did not run here).
                    if let Some(next) = again.as_ref().and_then(|a| a.ask(&reply, &from)) {
                        moved += 1;
                        asking = true;
                        lease = next;
                        continue;
                    }
                }
                asking = false;
                if reply.starts_with(b"-TRYAGAIN") {
                    // The keys are split between the two nodes of a migrating slot: the node
                    // ran nothing. Once the migration moves the rest (or ends), the same
                    // command runs, as for any other request of a cluster pool.
                    let first = *tryagain.get_or_insert_with(Instant::now);
                    if let Some(next) = again.as_ref().and_then(|a| a.later(first.elapsed())) {
                        lease = next;
                        continue;
                    }
                }
                if reply.starts_with(b"-MOVED ") && moved < MAX_MOVED {
                    // The node did not run it: its slot moved. Once the map names the new
                    // owner, lease its primary and send the command again.
                    if let Some(next) = again.as_ref().and_then(Again::next) {
                        moved += 1;
                        lease = next;
                        continue;
                    }
                }
                if reply.starts_with(DEMOTED) {
                    // The node stopped being a primary (a switchover, a failover, REPLICAOF):
                    // the command did not run. Its client is closed, as for a node that went
                    // away, so a worker loop reconnects and blocks on the new primary, where
                    // the error ends it (RQ, ioredis, a redis-py XREAD loop).
                    tracing::info!(
                        "closing a blocked client: its server stopped being a primary while the command waited (Redis answered UNBLOCKED)"
                    );
                    sink.hang_up();
                    break;
                }
                sink.deliver(&reply);
            }
            Err(why) => {
                // The lease was dropped, which closes its connection: a command still
                // blocked in the server goes with it.
                end(sink, why);
            }
        }
        break;
    }
    finish(&blocked);
}

/// What Redis answers a command blocked on a primary that turns replica
/// (`disconnectAllBlockedClients` in Redis' `blocked.c`); `CLIENT UNBLOCK ... ERROR` gives
/// another `UNBLOCKED` message, which goes to the client as it is.
const DEMOTED: &[u8] = b"-UNBLOCKED force unblock from blocking operation, instance state changed";

/// Most `MOVED` and `ASK` replies a blocking command of a cluster pool follows.
const MAX_MOVED: u32 = 3;

/// What a blocking command of a cluster pool needs to be sent again after `MOVED`: its
/// pool, its (first) key and its protocol.
pub struct Again {
    /// The worker's pool.
    pub pool: Rc<crate::upstream::pool::WorkerPool>,
    /// The command's first key (all its keys share its slot).
    pub key: Vec<u8>,
    /// The session speaks RESP3.
    pub resp3: bool,
}

impl Again {
    /// A lease on the node an `ASK` reply (`-ASK slot host:port`, from the node labelled
    /// `from`) names, in the session's protocol; `None` when the reply names none.
    fn ask(&self, reply: &[u8], from: &str) -> Option<LeaseSoon> {
        use crate::upstream::redirect::{node_at, parse, Redirect};
        let text = std::str::from_utf8(reply.get(1..)?).ok()?.trim_end();
        let from_host = from.rsplit_once(':').map_or("", |(h, _)| h);
        let Some(Redirect::Ask(addr)) = parse(text, from_host) else {
            return None;
        };
        let pool = &self.pool;
        let shard = pool
            .rt
            .slot_of(&self.key)
            .and_then(|s| pool.rt.shard_for_slot(s))
            .unwrap_or(0);
        let (_, node) = node_at(pool, &addr, shard);
        let lease = pool
            .dedicated
            .lease_for(&pool.rt, &node, self.resp3)
            .map_err(Failure::from);
        Some(Box::pin(std::future::ready(lease)))
    }

    /// After a `TRYAGAIN` first met `spent` ago: a lease on the primary the map names for the
    /// key now, taken after the pause any request of the pool waits before it is sent again
    /// (`upstream::redirect::retry_pause`); `None` once the pool `timeout` has passed since
    /// (the client then gets the `TRYAGAIN`) or when the pool is not a cluster pool.
    fn later(&self, spent: Duration) -> Option<LeaseSoon> {
        let rt = &self.pool.rt;
        let slot = rt.slot_of(&self.key)?;
        let timeout = rt.timeout();
        if spent >= timeout {
            return None;
        }
        let pause = crate::upstream::redirect::retry_pause(spent, timeout);
        let pool = Rc::clone(&self.pool);
        let resp3 = self.resp3;
        Some(Box::pin(async move {
            tokio::time::sleep(pause).await;
            primary_of(&pool, pool.rt.shard_for_slot(slot), slot, resp3).await
        }))
    }

    /// A lease on the primary of the shard the map names for the key once it changes (the
    /// `MOVED` asked for a refresh), waiting at most the pool `timeout`; `None` when the
    /// pool is not a cluster pool.
    fn next(&self) -> Option<LeaseSoon> {
        let rt = &self.pool.rt;
        let slot = rt.slot_of(&self.key)?;
        let was = rt.shard_for_slot(slot);
        let pool = Rc::clone(&self.pool);
        let resp3 = self.resp3;
        Some(Box::pin(async move {
            let until = Instant::now() + pool.rt.timeout();
            let mut shard = was;
            while shard == was && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
                shard = pool.rt.shard_for_slot(slot);
            }
            primary_of(&pool, shard, slot, resp3).await
        }))
    }
}

/// A lease on the primary of `shard`, the shard of `slot` (none: no shard serves it).
fn primary_of(
    pool: &Rc<crate::upstream::pool::WorkerPool>,
    shard: Option<usize>,
    slot: u16,
    resp3: bool,
) -> LeaseSoon {
    match shard {
        Some(s) => {
            let mut node = 0;
            match crate::session::primary::lease_primary(pool, s, resp3, &mut node) {
                Ok((l, _)) => l,
                Err(f) => Box::pin(std::future::ready(Err(f))),
            }
        }
        None => Box::pin(std::future::ready(Err(Failure::NoPrimary {
            shard: format!("of slot {slot}"),
            cause: None,
        }))),
    }
}

/// The channel of the message `WAIT` publishes first (see [`wait`]).
pub const WAIT_CHANNEL: &str = "__rampart__:wait";

/// `WAIT numreplicas timeout` for a client whose writes went over shared connections, on
/// every shard of the pool at once (one connection of its own per shard's primary, `leases`).
///
/// Redis' `WAIT` counts the replicas that have every write of *its own connection*; a
/// dedicated connection has written nothing, so it would count replicas that have nothing.
/// So each connection first publishes an empty message on [`WAIT_CHANNEL`] (Redis replicates
/// `PUBLISH`): its replication offset then covers every write the primary applied before,
/// this client's included, and `WAIT` there counts the replicas that have them all. The
/// reply is the smallest count over the shards (the first error, if any), so `WAIT 2 100`
/// answering 2 means every shard's primary has two replicas with the client's writes.
/// `request` is the `PUBLISH` and the client's `WAIT`, as RESP.
pub async fn wait(
    leases: Vec<LeaseSoon>,
    request: Vec<u8>,
    sink: Sink,
    deadline: Option<Instant>,
    blocked: Rc<Blocked>,
) {
    let result = tokio::select! {
        biased;
        why = blocked.left() => Err(Failure::Ended(why)),
        r = wait_all(leases, &request, deadline, &blocked) => r,
    };
    match result {
        Ok(reply) => sink.deliver(&reply),
        Err(why) => end(sink, why),
    }
    finish(&blocked);
}

async fn wait_all(
    leases: Vec<LeaseSoon>,
    request: &[u8],
    deadline: Option<Instant>,
    blocked: &Blocked,
) -> Result<Vec<u8>, Failure> {
    // Sent on every shard before any reply is awaited: the waits run side by side.
    let mut sent = Vec::with_capacity(leases.len());
    for lease in leases {
        let mut lease = match blocked.connection(lease).await? {
            Ok(lease) => lease,
            // CLIENT UNBLOCK while a shard's connection was awaited: what was sent on the
            // others goes with their leases (closed), and its reply is the answer.
            Err(unblocked) => return Ok(unblocked),
        };
        lease.send(request).await?;
        blocked.waits_on(&lease);
        sent.push(lease);
    }
    let mut least: Option<(i64, Vec<u8>)> = None;
    for mut lease in sent {
        let published = lease.reply(deadline).await?;
        let reply = lease.reply(deadline).await?;
        lease.give_back();
        if published.first() == Some(&b'-') {
            return Ok(published);
        }
        if reply.first() != Some(&b':') {
            return Ok(reply);
        }
        let n = std::str::from_utf8(&reply[1..])
            .ok()
            .and_then(|t| t.trim_end().parse::<i64>().ok())
            .unwrap_or(0);
        if least.as_ref().is_none_or(|(m, _)| n < *m) {
            least = Some((n, reply));
        }
    }
    Ok(least.map_or_else(|| b":0\r\n".to_vec(), |(_, r)| r))
}

/// The session's blocking command ended.
fn finish(blocked: &Blocked) {
    BLOCKED.fetch_sub(1, Ordering::Relaxed);
    blocked.running.set(false);
    if let Some(e) = blocked.entry.borrow_mut().take() {
        e.set_flag(crate::observe::clients::FLAG_BLOCKED, false);
        e.clear_blocked_on();
        e.end_early();
    }
}

/// Sessions blocked in a command right now, process-wide (INFO's `blocked_clients`).
static BLOCKED: AtomicU64 = AtomicU64::new(0);

/// How many sessions are blocked in a command (BLPOP and the like, WAIT) right now.
pub fn blocked_clients() -> u64 {
    BLOCKED.load(Ordering::Relaxed)
}

/// Mark the session's blocking command as started.
pub fn start(blocked: &Blocked, entry: Option<&Arc<crate::observe::clients::Entry>>) {
    blocked.running.set(true);
    count(blocked, entry);
}

/// Hold the session for a pop that may block (see [`pop_or_block`]): nothing it sent later
/// runs first, but it counts as blocked only once the blocking command is sent.
pub fn hold(blocked: &Blocked) {
    blocked.running.set(true);
}

/// Count the session as blocked (INFO's `blocked_clients`, CLIENT LIST's `b` flag).
fn count(blocked: &Blocked, entry: Option<&Arc<crate::observe::clients::Entry>>) {
    BLOCKED.fetch_add(1, Ordering::Relaxed);
    if let Some(e) = entry {
        e.set_flag(crate::observe::clients::FLAG_BLOCKED, true);
        *blocked.entry.borrow_mut() = Some(Arc::clone(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pop_with_data_answers_in_the_blocking_commands_shape() {
        let r = |b: &[u8]| match popped(b, Shape::Pair) {
            Popped::Answer(a) => Some(a),
            Popped::Block | Popped::HangUp => None,
        };
        assert_eq!(
            r(b"*2\r\n$3\r\nkey\r\n*1\r\n$2\r\nv1\r\n").as_deref(),
            Some(&b"*2\r\n$3\r\nkey\r\n$2\r\nv1\r\n"[..])
        );
        for empty in [&b"*-1\r\n"[..], b"_\r\n", b"-WRONGTYPE x\r\n"] {
            assert!(r(empty).is_none());
        }
        let ours = b"-ERR rampart: server 127.0.0.1:1: timed out\r\n";
        assert!(matches!(popped(ours, Shape::Pair), Popped::HangUp));
        let (req, shape) = at_once("brpop", &argv("BRPOP a b 0")).unwrap();
        assert_eq!(shape, Shape::Pair);
        assert_eq!(
            req,
            b"*5\r\n$5\r\nLMPOP\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\nb\r\n$5\r\nRIGHT\r\n"
        );
        assert!(at_once("blpop", &argv("BLPOP a -1")).is_none());
        assert!(at_once("bzpopmin", &argv("BZPOPMIN z 0")).is_none());
    }

    fn argv(s: &str) -> Vec<&[u8]> {
        s.split(' ').map(str::as_bytes).collect()
    }

    #[test]
    fn reads_each_commands_timeout() {
        let up = |ms| BlockFor::Up(Duration::from_millis(ms));
        assert_eq!(block_for("blpop", &argv("BLPOP a b 2")), up(2000));
        assert_eq!(block_for("brpop", &argv("BRPOP a 0")), BlockFor::Ever);
        assert_eq!(
            block_for("blmove", &argv("BLMOVE a b LEFT RIGHT 0.5")),
            up(500)
        );
        assert_eq!(block_for("blmpop", &argv("BLMPOP 1.5 1 a LEFT")), up(1500));
        assert_eq!(
            block_for("bzmpop", &argv("BZMPOP 0 1 a MIN")),
            BlockFor::Ever
        );
        assert_eq!(
            block_for("xread", &argv("XREAD COUNT 1 BLOCK 250 STREAMS s $")),
            up(250)
        );
        assert_eq!(
            block_for(
                "xreadgroup",
                &argv("XREADGROUP GROUP block c BLOCK 0 STREAMS s >")
            ),
            BlockFor::Ever
        );
        assert_eq!(block_for("blpop", &argv("BLPOP a -1")), BlockFor::Unknown);
        assert_eq!(block_for("blpop", &argv("BLPOP a x")), BlockFor::Unknown);
    }
}
