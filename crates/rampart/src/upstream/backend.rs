//! A pipelined connection from one worker to one node.
//!
//! Sessions append request bytes to the connection's output buffer and a waiter to its queue;
//! the connection task writes everything queued in one go and matches replies to waiters
//! first-in-first-out. The connection times out when requests are outstanding and the server
//! made no progress for the pool timeout: no reply bytes arrived (and it took none of a request
//! the socket could not hold) for that long since the later of the oldest request's arrival and
//! the last progress. A queue behind a large reply that is still arriving never times out; a
//! server that stopped does. On a timeout, a broken connection, or a node switched away from (a
//! failover closes every connection to the old primary), every waiter gets an error reply and
//! the connection is closed: a late reply must never answer the next request.
//!
//! A reply is framed as it arrives and never limited in size or depth: once a reply in progress
//! fills [`STREAM_BYTES`], its framed bytes go on to its client's reply queue, so the
//! connection's buffer stays small whatever the reply, and whatever one reply is, only its own
//! client can see an error (its reply queue may be over its limit; other clients on the
//! connection never notice). Reads of pools with replicas are
//! retried once on another node instead; writes are never retried once they may have reached
//! a server. A failed connect puts the connection in a short, jittered, growing back-off during
//! which requests fail at once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use resp::ReplyDecoder;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use crate::handshake::HandshakeError;
use crate::io::{flush, release_if_idle, ReadBuf, Ready, Stream};
use crate::notify::LocalNotify;
use crate::observe::stats::{PoolStat, ServerStat, WorkerStats};
use crate::topology::node::{NodeRt, DRAIN_LIMIT};
use crate::topology::PoolRt;
use crate::upstream::acks;
use crate::upstream::error::{ConnFailure, Failure};
use crate::upstream::sink::Sink;

/// Most requests one connection holds (queued or in flight) before new ones are refused.
pub const MAX_WAITERS: usize = 64 * 1024;
/// Most request bytes one connection buffers before new requests are refused.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;
/// While a batch is in flight, new requests wait until its replies start to arrive and then
/// leave together (unless this many bytes gather first). Redis pays for each wake-up (a read,
/// a turn of its event loop, a write) far more than for each command in it: one write per round
/// trip instead of one per ready client halved the shard's wake-ups and cut its CPU by a third
/// at `redis-benchmark -c 50 -P 1` (see bench/README.md). Redis runs one command at a time, so
/// the waiting requests would have queued behind the batch inside the server anyway.
const BATCH_BYTES: usize = 64 * 1024;
/// How many times a request that finds its connection idle lets the worker poll its sockets
/// before it is written, so the requests other clients sent meanwhile join it (each turn is one
/// non-blocking poll, a microsecond or two).
const GATHER_YIELDS: usize = 3;
/// A reply in progress holding this many bytes in the connection's read buffer hands what of
/// it is framed to its client's reply queue; the buffer stays about this size.
pub const STREAM_BYTES: usize = 256 * 1024;
/// Buffer capacity a connection keeps while it has nothing to write or read (more is freed).
const KEEP_BUF: usize = 64 * 1024;
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

struct Waiter {
    /// `None` for the connection's own set-up commands (AUTH, SELECT), which must say OK.
    sink: Option<Sink>,
    deadline: Instant,
    len: u32,
    /// The first bytes of its reply went to its sink already.
    streamed: bool,
    /// Replies still to be dropped before the one for the sink (see [`Sink::skip`]).
    skip: u32,
    /// A dropped reply was `-READONLY`: a transaction queued on a node that is no longer
    /// the primary, which then refuses the whole of it with `-EXECABORT`.
    readonly: bool,
    /// The first dropped reply, a transaction's `MULTI`, was an error (an ACL that denies
    /// it): the server ran the commands one by one, and the client must hear of it.
    multi_refused: bool,
    /// A write whose reply waits for the `WAIT` of its batch (`min_replica_acks`).
    held: bool,
    /// The connection's own `WAIT` after a batch of writes (its `sink` is `None`).
    wait: bool,
    /// A dropped reply was a cluster redirection (`MOVED`, `ASK`, `TRYAGAIN`,
    /// `CLUSTERDOWN`): a transaction queued on a node that does not serve its slot, which
    /// then refuses the whole of it with `-EXECABORT`. The first such reply.
    redirect: Option<Box<[u8]>>,
}

/// One connection slot of one node, owned by one worker.
pub struct Backend {
    /// The pool generation it serves; a reload moves the connection to the new one.
    pool: RefCell<Arc<PoolRt>>,
    shard: Cell<usize>,
    retired: Cell<bool>,
    node: Arc<NodeRt>,
    worker: usize,
    stats: Arc<WorkerStats>,
    out: RefCell<BytesMut>,
    waiters: RefCell<VecDeque<Waiter>>,
    /// Requests (and bytes) in `out` not yet written.
    unsent: Cell<(i64, i64)>,
    /// Reply bytes arrived since the last write: the server is done with that batch.
    replied: Cell<bool>,
    /// When the server last showed progress: reply bytes arrived, or it took request bytes
    /// after the socket had been full.
    progress: Cell<Instant>,
    /// The last write stopped because the socket was full.
    write_blocked: Cell<bool>,
    wake: LocalNotify,
    /// Until when requests are refused unsent, and why.
    down: RefCell<Option<(Instant, ConnFailure)>>,
    streak: Cell<u32>,
    running: Cell<bool>,
    /// Replies to the handshake read so far on this connection.
    setup_replies: Cell<usize>,
    /// A reload gave this connection a new pool (its timeout may differ): re-arm the timer.
    rearm: Cell<bool>,
    /// The connection says `HELLO 3` after the pool's handshake: it serves RESP3 clients, and
    /// Redis shapes its replies for them.
    resp3: bool,
    /// Writes queued (with `min_replica_acks`) since the last `WAIT` was queued.
    writes_unwaited: Cell<u32>,
    /// Write replies that arrived and wait for their batch's `WAIT` reply: at most one
    /// connection's queue ([`MAX_WAITERS`]).
    held: RefCell<Vec<(Sink, Vec<u8>)>>,
}

/// `HELLO 3`, the last command of a RESP3 connection's set-up.
const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

impl Backend {
    /// A connection slot; it connects on first use (or at once with `preconnect`). With
    /// `resp3` it speaks RESP3 (`HELLO 3` after the pool's AUTH and SELECT).
    pub fn new(
        pool: Arc<PoolRt>,
        shard: usize,
        node: Arc<NodeRt>,
        worker: usize,
        stats: Arc<WorkerStats>,
        resp3: bool,
    ) -> Rc<Self> {
        let b = Rc::new(Backend {
            pool: RefCell::new(pool),
            shard: Cell::new(shard),
            retired: Cell::new(false),
            node,
            worker,
            stats,
            out: RefCell::new(BytesMut::new()),
            waiters: RefCell::new(VecDeque::new()),
            unsent: Cell::new((0, 0)),
            replied: Cell::new(false),
            progress: Cell::new(Instant::now()),
            write_blocked: Cell::new(false),
            wake: LocalNotify::default(),
            down: RefCell::new(None),
            streak: Cell::new(0),
            running: Cell::new(false),
            setup_replies: Cell::new(0),
            rearm: Cell::new(false),
            resp3,
            writes_unwaited: Cell::new(0),
            held: RefCell::new(Vec::new()),
        });
        if b.pool().conf.preconnect {
            b.start();
        }
        b
    }

    fn pool(&self) -> Arc<PoolRt> {
        Arc::clone(&self.pool.borrow())
    }

    /// A reload kept this node: serve the new pool generation from now on.
    pub fn adopt(&self, pool: Arc<PoolRt>, shard: usize) {
        *self.pool.borrow_mut() = pool;
        self.shard.set(shard);
        // The connection's timer may sit one old timeout ahead; a shorter new one must hold
        // for the requests queued from now on.
        self.rearm.set(true);
        self.wake.notify();
    }

    /// A reload removed this node: finish what is queued, then close.
    pub fn retire(&self) {
        self.retired.set(true);
        self.wake.notify();
    }

    fn label(&self) -> &str {
        &self.node.label
    }

    fn cell(&self, s: ServerStat) -> &crate::observe::stats::Cell {
        self.node.cell(self.worker, s)
    }

    /// Requests queued or in flight.
    pub fn outstanding(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn start(self: &Rc<Self>) {
        if !self.running.replace(true) {
            tokio::task::spawn_local(Rc::clone(self).run());
        }
    }

    /// Queue one request: `write` appends its bytes; the reply goes to `sink`.
    ///
    /// # Errors
    /// The node is in connect back-off ([`Failure::NodeDown`]), or the queue is full
    /// ([`Failure::QueueFull`]); nothing was queued and the sink comes back with the failure.
    pub fn send_or_return(
        self: &Rc<Self>,
        sink: Sink,
        deadline: Instant,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), (Sink, Failure)> {
        if let Some((until, why)) = &*self.down.borrow() {
            if Instant::now() < *until {
                // Refused unsent: the node's connection just failed (or was closed by it).
                if !self.node.is_checked() && !self.node.is_traffic_down() {
                    self.node
                        .traffic_failed(&format!("connection failed: {why}"));
                }
                let failure = Failure::NodeDown {
                    node: self.label().to_string(),
                    reason: why.clone(),
                };
                return Err((sink, failure));
            }
        }
        let mut out = self.out.borrow_mut();
        let mut waiters = self.waiters.borrow_mut();
        if waiters.len() >= MAX_WAITERS || out.len() >= MAX_QUEUED_BYTES {
            let failure = Failure::QueueFull {
                node: self.label().to_string(),
            };
            return Err((sink, failure));
        }
        let before = out.len();
        write(&mut out);
        let len = (out.len() - before) as i64;
        let skip = sink.skip;
        let held = self.pool.borrow().conf.min_replica_acks > 0
            && sink.resend.as_ref().is_some_and(|r| r.write);
        if held {
            self.writes_unwaited.set(self.writes_unwaited.get() + 1);
        }
        waiters.push_back(Waiter {
            sink: Some(sink),
            deadline,
            len: len as u32,
            streamed: false,
            skip,
            readonly: false,
            multi_refused: false,
            held,
            wait: false,
            redirect: None,
        });
        self.cell(ServerStat::Requests).add(1);
        self.cell(ServerStat::RequestBytes).add(len);
        self.queued(1, len);
        drop((out, waiters));
        if self.running.get() {
            self.wake.notify();
        } else {
            self.start();
        }
        Ok(())
    }

    /// Like [`Backend::send_or_return`], answering the error itself.
    ///
    /// # Errors
    /// As [`Backend::send_or_return`]; the sink already got the error reply.
    pub fn send(
        self: &Rc<Self>,
        sink: Sink,
        deadline: Instant,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), Failure> {
        self.send_or_return(sink, deadline, write)
            .map_err(|(sink, e)| {
                sink.fail(e.clone());
                e
            })
    }

    async fn run(self: Rc<Self>) {
        let preconnect = self.pool().conf.preconnect;
        loop {
            if !preconnect || self.retired.get() {
                while self.waiters.borrow().is_empty() {
                    if self.retired.get() {
                        self.running.set(false);
                        return;
                    }
                    self.wake.notified().await;
                }
            }
            let err = match self.connect().await {
                Ok(stream) => {
                    self.streak.set(0);
                    *self.down.borrow_mut() = None;
                    self.cell(ServerStat::ServerConnections).add(1);
                    let err = self.serve(&stream).await;
                    self.cell(ServerStat::ServerConnections).add(-1);
                    drop(stream);
                    match &err {
                        ConnFailure::Timeout => self.cell(ServerStat::ServerTimedout).add(1),
                        ConnFailure::Eof => self.cell(ServerStat::ServerEof).add(1),
                        _ => self.cell(ServerStat::ServerErr).add(1),
                    }
                    tracing::debug!(server = %self.label(), "backend connection closed: {err}");
                    // A set-up answered BUSY is not a node going away: no pause, so each
                    // request meanwhile gets the server's BUSY, as it would directly.
                    if matches!(
                        err,
                        ConnFailure::Eof | ConnFailure::Io(_) | ConnFailure::Setup(_)
                    ) && !err.is_busy()
                    {
                        // The server closed or reset the connection: it is likely going away.
                        // Reconnecting at once can reach a dying listener that completes the
                        // handshake and then resets, failing the requests written meanwhile;
                        // wait a short jittered moment first (requests meanwhile are refused
                        // unsent, so reads retry elsewhere and writes may be held). A refused
                        // AUTH or SELECT would be refused again at once: the same pause.
                        let until = Instant::now() + crate::rand::jitter(BACKOFF_BASE);
                        *self.down.borrow_mut() = Some((until, err.clone()));
                    }
                    err
                }
                Err(e) => {
                    self.cell(ServerStat::ServerErr).add(1);
                    let streak = self.streak.get().saturating_add(1);
                    self.streak.set(streak);
                    let backoff = BACKOFF_BASE
                        .saturating_mul(1u32 << streak.min(8))
                        .min(BACKOFF_CAP);
                    let until = Instant::now() + crate::rand::jitter(backoff);
                    *self.down.borrow_mut() = Some((until, e.clone()));
                    tracing::debug!(server = %self.label(), "connect failed: {e}");
                    e
                }
            };
            let connect_failed = self.streak.get() > 0;
            let affected = self.fail_all(&err, connect_failed);
            let counts = affected > 0 || !matches!(err, ConnFailure::Eof | ConnFailure::Closed);
            if counts {
                self.count_failure(&err, connect_failed);
            }
            let until = self.down.borrow().as_ref().map(|(t, _)| *t);
            if let Some(until) = until {
                sleep_until(until).await;
            }
            if err.is_busy() {
                // Connect again for the next request only, even with `preconnect`: a
                // busy server would otherwise be asked as fast as it answers.
                while self.waiters.borrow().is_empty() && !self.retired.get() {
                    self.wake.notified().await;
                }
            }
        }
    }

    /// Feed a failure to twemproxy-style ejection (plain pools) or passive node ejection
    /// (pools with health checks). A node without health checks takes it as its state.
    fn count_failure(&self, err: &ConnFailure, connect_failed: bool) {
        if err.is_busy() {
            // Busy with a script, not failing: as a health check answered BUSY.
            return;
        }
        let pool = self.pool();
        let conf = &pool.conf;
        let why = match err {
            _ if connect_failed => format!("connect failed: {err}"),
            ConnFailure::Timeout => "a request timed out".to_string(),
            _ => format!("connection failed: {err}"),
        };
        self.node.traffic_failed(&why);
        if let Some(c) = &pool.cluster {
            // A node of a cluster failing may be a failover starting: look at the map soon.
            c.ask_refresh();
        }
        if pool.checked {
            self.node
                .passive_failure(conf.eject_after, conf.eject_time, conf.eject_time_max);
        } else if pool.shard_failed(self.shard.get()) {
            self.stats.pools[pool.index]
                .pool(PoolStat::ServerEjects)
                .add(1);
        }
    }

    async fn connect(&self) -> Result<Stream, ConnFailure> {
        let pool = self.pool();
        let limit = pool.timeout();
        let fut =
            crate::handshake::connect(&self.node.addr, &pool.handshake, pool.conf.tcpkeepalive);
        match timeout(limit, fut).await {
            Ok(Ok(s)) => {
                if pool.handshake.is_empty() && pool.handshake.is_tls() {
                    // TLS without AUTH: the handshake that completed is the acceptance.
                    pool.handshake.note_accepted(&self.node.addr);
                }
                Ok(s)
            }
            Ok(Err(e)) => Err(ConnFailure::from(e)),
            Err(_) => Err(ConnFailure::Timeout),
        }
    }

    /// Put the pool's handshake (AUTH, SELECT, then `HELLO 3` on a RESP3 connection) in
    /// front of whatever is queued.
    fn queue_setup(&self) {
        self.setup_replies.set(0);
        let pool = self.pool();
        let mut cmds: Vec<&[u8]> = pool.handshake.commands().iter().map(|c| &c[..]).collect();
        if self.resp3 {
            cmds.push(HELLO3);
        }
        if cmds.is_empty() {
            return;
        }
        let deadline = Instant::now() + pool.timeout();
        let mut setup = BytesMut::new();
        let mut waiters = self.waiters.borrow_mut();
        // Ahead of every queued request, in the order they are written.
        for (i, c) in cmds.iter().enumerate() {
            setup.extend_from_slice(c);
            let len = c.len() as u32;
            waiters.insert(
                i,
                Waiter {
                    sink: None,
                    deadline,
                    len,
                    streamed: false,
                    skip: 0,
                    readonly: false,
                    multi_refused: false,
                    held: false,
                    wait: false,
                    redirect: None,
                },
            );
        }
        // Queued like any request (gauges, the unsent count), ahead of everything else.
        self.queued(cmds.len() as i64, setup.len() as i64);
        let mut out = self.out.borrow_mut();
        setup.extend_from_slice(&out);
        *out = setup;
    }

    async fn serve(&self, s: &Stream) -> ConnFailure {
        let mut closer = self.node.close_watch();
        closer.borrow_and_update();
        self.queue_setup();
        let mut rbuf = ReadBuf::default();
        // No bound on a reply's size: it streams through (see STREAM_BYTES), and a bound
        // here would close a connection whose other requests were applied.
        let mut dec = ReplyDecoder::new(resp::Limits {
            max_bulk: usize::MAX,
            ..resp::Limits::default()
        });
        self.write_blocked.set(false);
        // One timer for the connection, re-armed only when it fires. A request's deadline is
        // "now + timeout" when queued and progress only moves the moment it is due later, so
        // the timer never sits later than it: when it fires it either finds the connection due
        // or moves to that moment; with nothing queued it comes back one timeout later.
        // The pool's timeout is read when it is needed: a reload may change it.
        let timer = tokio::time::sleep_until(Instant::now() + self.period());
        tokio::pin!(timer);
        loop {
            if self.retired.get() && self.waiters.borrow().is_empty() {
                return ConnFailure::Closed;
            }
            let blocked = if self.gathering() {
                false
            } else {
                let had = !self.out.borrow().is_empty();
                if had {
                    self.replied.set(false);
                }
                match self.write_out(s) {
                    Ok(blocked) => {
                        if had && !blocked {
                            self.sent_all();
                        }
                        blocked
                    }
                    Err(e) => return e.into(),
                }
            };
            tokio::select! {
                biased;
                r = closer.changed() => {
                    if r.is_ok() && closer.borrow_and_update().1 {
                        return self.drain(s, &mut rbuf, &mut dec, &mut closer).await;
                    }
                    return ConnFailure::Closed;
                }
                r = s.readable() => {
                    let mut ready = match r {
                        Ok(g) => g,
                        Err(e) => return e.into(),
                    };
                    if let Err(e) = self.read_replies(s, &mut ready, &mut rbuf, &mut dec) {
                        return e;
                    }
                }
                r = s.writable(), if blocked => {
                    let mut ready = match r {
                        Ok(g) => g,
                        Err(e) => return e.into(),
                    };
                    match self.write_out(s) {
                        Ok(true) => ready.clear(),
                        Ok(false) => self.sent_all(),
                        Err(e) => return e.into(),
                    }
                }
                _ = self.wake.notified() => {
                    if self.rearm.take() {
                        let next = Instant::now() + self.period();
                        let front = self.waiters.borrow().front().map(|w| w.deadline);
                        timer.as_mut().reset(front.map_or(next, |d| d.min(next)));
                    }
                    if self.in_flight() == 0 {
                        // The request found the connection idle: let the worker poll its
                        // sockets a few more times so the requests of other clients that are
                        // ready now go out in the same write.
                        for _ in 0..GATHER_YIELDS {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    match self.due(self.period()) {
                        Some(d) if d <= now => {
                            tracing::debug!(
                                server = %self.label(),
                                "no progress for {:?} with {} requests outstanding",
                                now - self.progress.get(),
                                self.waiters.borrow().len()
                            );
                            return ConnFailure::Timeout;
                        }
                        Some(d) => timer.as_mut().reset(d),
                        None => timer.as_mut().reset(now + self.period()),
                    }
                }
            }
        }
    }

    /// Closed by [`NodeRt::drain_all`]: write nothing more and read the replies of what was
    /// sent, then close (requests not yet written are given back unsent by the caller's
    /// `fail_all`). Ends at once on a plain close or a failure, and after
    /// [`DRAIN_LIMIT`] or the pool's timeout.
    async fn drain(
        &self,
        s: &Stream,
        rbuf: &mut ReadBuf,
        dec: &mut ReplyDecoder,
        closer: &mut watch::Receiver<(u64, bool)>,
    ) -> ConnFailure {
        let until = Instant::now() + DRAIN_LIMIT.min(self.period());
        while self.in_flight() > 0 {
            tokio::select! {
                biased;
                r = closer.changed() => {
                    if r.is_err() || !closer.borrow_and_update().1 {
                        break;
                    }
                }
                r = s.readable() => {
                    let mut ready = match r {
                        Ok(g) => g,
                        Err(e) => return e.into(),
                    };
                    if let Err(e) = self.read_replies(s, &mut ready, rbuf, dec) {
                        return e;
                    }
                }
                () = sleep_until(until) => break,
            }
        }
        ConnFailure::Closed
    }

    /// When the connection times out: `period` after the later of the oldest request's
    /// arrival and the server's last progress; `None` with nothing outstanding.
    fn due(&self, period: Duration) -> Option<Instant> {
        let oldest = self.waiters.borrow().front().map(|w| w.deadline)?;
        Some(oldest.max(self.progress.get() + period))
    }

    /// Write what the socket takes now; true when it is full. Bytes taken after the socket
    /// was full show the server reading (progress); the first bytes of a write do not, since
    /// the kernel takes them from a frozen server too.
    fn write_out(&self, s: &Stream) -> io::Result<bool> {
        self.queue_wait();
        let mut out = self.out.borrow_mut();
        let before = out.len();
        let blocked = flush(s, &mut out)?;
        if self.write_blocked.get() && out.len() < before {
            self.progress.set(Instant::now());
        }
        self.write_blocked.set(blocked);
        release_if_idle(&mut out, KEEP_BUF);
        Ok(blocked)
    }

    /// With `min_replica_acks`, put `WAIT <n> <timeout ms>` after the writes about to be
    /// written, so their replies are released only once enough replicas have them. One
    /// `WAIT` per batch: a batch of 100 pipelined writes costs one more round trip, not 100.
    fn queue_wait(&self) {
        if self.writes_unwaited.get() == 0 {
            return;
        }
        self.writes_unwaited.set(0);
        let (n, within) = {
            let pool = self.pool.borrow();
            (
                pool.conf.min_replica_acks,
                pool.conf.min_replica_acks_timeout,
            )
        };
        let mut out = self.out.borrow_mut();
        let before = out.len();
        acks::push_wait(&mut out, n, within);
        let len = out.len() - before;
        drop(out);
        self.waiters.borrow_mut().push_back(Waiter {
            sink: None,
            deadline: Instant::now() + self.period(),
            len: len as u32,
            streamed: false,
            skip: 0,
            readonly: false,
            multi_refused: false,
            held: false,
            wait: true,
            redirect: None,
        });
        self.queued(1, len as i64);
    }

    /// How long the server may make no progress before the connection times out: the pool
    /// timeout, plus the longest a `WAIT` may block the connection.
    fn period(&self) -> Duration {
        let pool = self.pool.borrow();
        let conf = &pool.conf;
        let wait = if conf.min_replica_acks > 0 {
            conf.min_replica_acks_timeout
        } else {
            Duration::ZERO
        };
        pool.timeout() + wait
    }

    /// The reply to the connection's `WAIT`: release the held write replies when enough
    /// replicas have them, else answer each with an error saying so (they were applied on
    /// the primary and are never resent).
    fn acks_arrived(&self, reply: &[u8]) {
        let held = std::mem::take(&mut *self.held.borrow_mut());
        let (wanted, within) = {
            let pool = self.pool.borrow();
            (
                pool.conf.min_replica_acks,
                pool.conf.min_replica_acks_timeout,
            )
        };
        let failure = acks::judge(reply, wanted, within, self.label(), held.len());
        for (sink, bytes) in held {
            match &failure {
                None => sink.deliver(&bytes),
                Some(f) => sink.fail(f.clone()),
            }
        }
    }

    /// Requests written whose replies have not all arrived.
    fn in_flight(&self) -> usize {
        let unsent = usize::try_from(self.unsent.get().0).unwrap_or(0);
        self.waiters.borrow().len().saturating_sub(unsent)
    }

    /// Whether new requests wait for the server to answer the batch in flight (see
    /// [`BATCH_BYTES`]). Once its first reply bytes are in, the server has run the batch and
    /// is free: the next one leaves while the rest of the replies are read.
    fn gathering(&self) -> bool {
        let queued = self.out.borrow().len();
        queued > 0 && queued < BATCH_BYTES && self.in_flight() > 0 && !self.replied.get()
    }

    /// `n` requests of `bytes` bytes joined the output buffer.
    fn queued(&self, n: i64, bytes: i64) {
        let (un, ub) = self.unsent.get();
        self.unsent.set((un + n, ub + bytes));
        self.cell(ServerStat::InQueue).add(n);
        self.cell(ServerStat::InQueueBytes).add(bytes);
    }

    /// Everything queued has been written: move the in-queue gauges to the out-queue ones.
    fn sent_all(&self) {
        let (n, b) = self.unsent.replace((0, 0));
        self.cell(ServerStat::InQueue).add(-n);
        self.cell(ServerStat::InQueueBytes).add(-b);
        self.cell(ServerStat::OutQueue).add(n);
        self.cell(ServerStat::OutQueueBytes).add(b);
    }

    fn read_replies(
        &self,
        s: &Stream,
        ready: &mut Ready<'_>,
        rbuf: &mut ReadBuf,
        dec: &mut ReplyDecoder,
    ) -> Result<(), ConnFailure> {
        match s.read(ready, rbuf.spare(16 * 1024)) {
            Ok(0) => return Err(ConnFailure::Eof),
            Ok(n) => {
                rbuf.filled(n);
                self.replied.set(true);
                self.progress.set(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let mut replies = 0i64;
        let mut bytes = 0i64;
        let mut req_bytes = 0i64;
        loop {
            let n = match dec.decode(rbuf.data()) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return Err(ConnFailure::Protocol(e.to_string())),
            };
            if self.skipped(&rbuf.data()[..n])? {
                bytes += n as i64;
                rbuf.consume(n);
                continue;
            }
            let Some(w) = self.waiters.borrow_mut().pop_front() else {
                return Err(ConnFailure::Protocol("reply without a request".into()));
            };
            let reply = &rbuf.data()[..n];
            let refused =
                reply.starts_with(b"-READONLY") || (w.readonly && reply.starts_with(b"-EXECABORT"));
            let redirect = if is_redirect(reply) {
                Some(reply)
            } else if reply.starts_with(b"-EXECABORT") {
                w.redirect.as_deref()
            } else {
                None
            };
            match w.sink {
                Some(sink)
                    if !w.streamed
                        && redirect.is_some()
                        && sink.resend.is_some()
                        && self.pool.borrow().cluster.is_some() =>
                {
                    // Not run by this node: the router sends it where the cluster says.
                    let text = redirect.unwrap_or_default();
                    let text = text.strip_prefix(b"-").unwrap_or(text);
                    let text = text.strip_suffix(b"\r\n").unwrap_or(text);
                    let failure = Failure::Redirect {
                        node: self.label().to_string(),
                        reply: String::from_utf8_lossy(text).into_owned(),
                        tries: 0,
                    };
                    sink.give_back(self.node.id, failure);
                }
                Some(sink) if w.multi_refused && !w.streamed => sink.fail(Failure::MultiRefused {
                    node: self.label().to_string(),
                }),
                Some(sink)
                    if !w.streamed && refused && sink.resend.as_ref().is_some_and(|r| r.write) =>
                {
                    // Not applied by a node that is no longer the primary: hold it for the
                    // new one and stop sending writes here.
                    self.node.demote();
                    let failure = Failure::ReadOnly {
                        node: self.label().to_string(),
                    };
                    sink.give_back(self.node.id, failure);
                }
                Some(sink) if w.held && !w.streamed => {
                    self.held.borrow_mut().push((sink, reply.to_vec()));
                }
                Some(sink) => sink.pending.deliver(sink.seq, sink.part, reply),
                None if w.wait => self.acks_arrived(reply),
                None => {
                    let step = self.setup_replies.replace(self.setup_replies.get() + 1);
                    let pool = self.pool.borrow();
                    let steps = pool.handshake.commands().len();
                    if step < steps {
                        let hs = &pool.handshake;
                        match hs.check_raw(step, reply) {
                            Err(e) if e.is_credentials() => {
                                hs.note_refused(&self.node.addr, &e.to_string());
                                return Err(e.into());
                            }
                            Err(e) => return Err(e.into()),
                            Ok(()) if step + 1 == steps => hs.note_accepted(&self.node.addr),
                            Ok(()) => {}
                        }
                    } else {
                        check_hello(reply)?;
                    }
                }
            }
            replies += 1;
            bytes += n as i64;
            req_bytes += w.len as i64;
            rbuf.consume(n);
        }
        if rbuf.len() >= STREAM_BYTES {
            bytes += self.stream_partial(rbuf, dec)? as i64;
        }
        if replies > 0 {
            self.cell(ServerStat::Responses).add(replies);
            self.cell(ServerStat::ResponseBytes).add(bytes);
            self.cell(ServerStat::OutQueue).add(-replies);
            self.cell(ServerStat::OutQueueBytes).add(-req_bytes);
            self.pool.borrow().shard_ok(self.shard.get());
            self.node.passive_ok();
        }
        // Between replies the buffer goes back to its idle size; a reply in progress keeps
        // room for one streamed piece (or a long line, which cannot be streamed).
        let keep = if dec.is_partial() {
            2 * STREAM_BYTES
        } else {
            KEEP_BUF
        };
        rbuf.shrink_if_idle(keep);
        Ok(())
    }

    /// Whether `reply` is one the front request drops (see [`Sink::skip`]); counts it.
    fn skipped(&self, reply: &[u8]) -> Result<bool, ConnFailure> {
        let mut waiters = self.waiters.borrow_mut();
        let Some(w) = waiters.front_mut() else {
            return Err(ConnFailure::Protocol("reply without a request".into()));
        };
        if w.skip == 0 {
            return Ok(false);
        }
        let first = w.sink.as_ref().is_some_and(|s| s.skip == w.skip);
        w.skip -= 1;
        w.readonly |= reply.starts_with(b"-READONLY");
        if w.redirect.is_none() && is_redirect(reply) {
            w.redirect = Some(reply.into());
        }
        w.multi_refused |= first && reply.starts_with(b"-");
        Ok(true)
    }

    /// The reply in progress fills the read buffer: what of it is framed goes on to its
    /// client now (or is dropped, when the front request drops it). Returns the bytes
    /// handed on.
    fn stream_partial(
        &self,
        rbuf: &mut ReadBuf,
        dec: &mut ReplyDecoder,
    ) -> Result<usize, ConnFailure> {
        let mut waiters = self.waiters.borrow_mut();
        let Some(w) = waiters.front_mut() else {
            return Err(ConnFailure::Protocol("reply without a request".into()));
        };
        let Some(sink) = &w.sink else {
            // Set-up commands answer +OK, never this much.
            return Err(ConnFailure::Protocol(format!(
                "a reply of more than {STREAM_BYTES} bytes to a set-up command"
            )));
        };
        let n = dec.consume_framed();
        if n > 0 && w.skip > 0 {
            rbuf.consume(n);
        } else if n > 0 {
            w.streamed = true;
            sink.pending.append(sink.seq, sink.part, &rbuf.data()[..n]);
            rbuf.consume(n);
        }
        Ok(n)
    }

    /// Answer every queued and in-flight request with an error (reads of pools with replicas
    /// are retried once on another node) and drop what was not sent. Returns how many client
    /// requests were affected.
    fn fail_all(&self, err: &ConnFailure, connect_failed: bool) -> usize {
        let failure = |sent: bool| Failure::Connection {
            node: self.label().to_string(),
            pool: self.pool.borrow().conf.name.clone(),
            kind: err.clone(),
            sent,
        };
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        let (n, b) = self.unsent.replace((0, 0));
        self.writes_unwaited.set(0);
        // Applied on the primary, their WAIT unanswered: never resent.
        let held = std::mem::take(&mut *self.held.borrow_mut());
        let lost = acks::lost(self.label(), &err.to_string(), held.len());
        for (sink, _) in held {
            sink.fail(lost.clone());
        }
        // Requests whose bytes never left: all of them when the connect failed; the last `n`
        // when nothing of their batch was written yet. Those may be sent again; any other may
        // already have reached the server.
        let unsent_from = if connect_failed {
            0
        } else if self.out.borrow().len() as i64 == b {
            waiters.len().saturating_sub(n as usize)
        } else {
            waiters.len()
        };
        let clients = waiters.iter().filter(|w| w.sink.is_some()).count();
        // A WAIT of ours was queued and counted like a request.
        let waits = waiters.iter().filter(|w| w.wait).count();
        let inflight_bytes: i64 = waiters.iter().map(|w| w.len as i64).sum::<i64>() - b;
        self.cell(ServerStat::InQueue).add(-n);
        self.cell(ServerStat::InQueueBytes).add(-b);
        self.cell(ServerStat::OutQueue)
            .add(-((clients + waits) as i64 - n));
        self.cell(ServerStat::OutQueueBytes).add(-inflight_bytes);
        self.out.borrow_mut().clear();
        release_if_idle(&mut self.out.borrow_mut(), KEEP_BUF);
        for (i, w) in waiters.into_iter().enumerate() {
            if let Some(sink) = w.sink {
                let failure = failure(i < unsent_from);
                match &sink.resend {
                    // Part of its reply went on already: it cannot go anywhere else.
                    _ if w.streamed => {
                        sink.pending.replace(sink.seq, sink.part, &failure.reply());
                    }
                    // The server answered BUSY to the set-up (and so to this request): the
                    // client gets that, as it would directly, wherever it was sent.
                    _ if err.is_busy() => sink.fail(failure),
                    Some(r) if !r.write || failure.may_retry() => {
                        sink.give_back(self.node.id, failure)
                    }
                    _ => sink.fail(failure),
                }
            }
        }
        clients
    }
}

/// Whether `reply` is a Redis Cluster redirection or a "try again": the node did not run the
/// command (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`).
pub fn is_redirect(reply: &[u8]) -> bool {
    [&b"-MOVED "[..], b"-ASK ", b"-TRYAGAIN", b"-CLUSTERDOWN"]
        .iter()
        .any(|p| reply.starts_with(p))
}

/// Judge the reply to `HELLO 3`: a map says the server speaks RESP3; an error (a server
/// older than Redis 6 answers `ERR unknown command`) fails the connection with its words.
fn check_hello(reply: &[u8]) -> Result<(), HandshakeError> {
    let text = || {
        String::from_utf8_lossy(reply.get(1..).unwrap_or_default())
            .trim_end()
            .to_string()
    };
    match reply.first() {
        Some(b'%') => Ok(()),
        Some(b'-') => Err(crate::handshake::auth_error(&text())
            .unwrap_or_else(|| HandshakeError::Unexpected(format!("HELLO 3 refused: {}", text())))),
        _ => Err(HandshakeError::Unexpected(
            String::from_utf8_lossy(reply).trim_end().to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_3_needs_a_map() {
        assert_eq!(check_hello(b"%1\r\n$5\r\nproto\r\n:3\r\n"), Ok(()));
        assert_eq!(
            check_hello(b"-ERR unknown command 'HELLO'\r\n").map_err(|e| e.to_string()),
            Err("unexpected reply to the connection set-up: HELLO 3 refused: ERR unknown command 'HELLO'".into())
        );
        assert!(matches!(
            check_hello(b"-NOAUTH HELLO must be called with the client already authenticated\r\n"),
            Err(HandshakeError::Required(_))
        ));
        assert!(matches!(
            check_hello(b"*14\r\n"),
            Err(HandshakeError::Unexpected(_))
        ));
    }
}
