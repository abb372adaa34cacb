//! Dedicated server connections: one client's command on a connection of its own.
//!
//! A blocking command (BLPOP, XREAD with BLOCK, ...) holds its server connection until data
//! arrives, so it cannot ride a connection other clients share. A session borrows a
//! [`Lease`] from its pool's [`Dedicated`] (one per pool per worker), sends on it, reads the
//! replies in order and gives it back. The rules:
//!
//! - At most `max_dedicated_connections` connections per pool and worker, leased or idle
//!   ([`DedicatedError::Full`] beyond, naming the setting); an idle one of another node is
//!   closed to make room first.
//! - A connection goes back to the idle list only after every reply it owes was read
//!   completely ([`Lease::give_back`]); a lease dropped any other way closes its connection at
//!   once, so a command still blocked in the server dies with it and can never take data for
//!   nobody.
//! - At most [`KEEP_IDLE`] idle connections per pool and worker are kept, each closed after
//!   [`IDLE_TIME`] unused. An idle connection the server closed, or whose node was switched away
//!   from ([`NodeRt::close_all`]), is never reused.
//! - A short control call that must not be refused for want of a connection (CLIENT UNBLOCK
//!   sent to the server a blocked client waits on, whose own connection may be the last one)
//!   takes a [`Spare`] when the bound is reached: at most [`MAX_SPARE`] at once per pool and
//!   worker (the others wait their turn), over the bound, never kept.
//! - Every connection starts with the pool's handshake (AUTH, SELECT), like every other.
//! - A reload that changes how the pool's server connections are opened (`redis_auth`,
//!   `redis_username`, `redis_db`, `backend_tls`, ...; see [`PoolRt::same_connections`])
//!   closes the idle connections made the old way at once ([`Dedicated::adopt`]); one leased
//!   then finishes what it was leased for and is closed instead of going back. One held
//!   between requests (WATCH) serves no further request once the reload changed `redis_db`
//!   or `redis_username` ([`Lease::check`]): its watched keys are in the old database. None
//!   made the old way is leased again, and the bound keeps counting those still leased.
//! - While a reply is awaited, a switch away from the node ([`NodeRt::close_all`]), the end of
//!   the connection or the caller's deadline ends it with an error; nothing is sent again. A
//!   drain of the node ([`NodeRt::drain_all`]: it now says it is a replica) ends it only after
//!   [`DRAIN_LIMIT`], so replies and messages the node already sent are read first; a drained
//!   connection is never reused.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use resp::ReplyDecoder;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use crate::handshake::HandshakeError;
use crate::io::{flush, ReadBuf, Stream};
use crate::topology::node::{NodeRt, DRAIN_LIMIT};
use crate::topology::PoolRt;

/// Idle dedicated connections kept per pool and worker for reuse; more are closed at once.
pub const KEEP_IDLE: usize = 16;
/// How long an idle dedicated connection is kept before it is closed.
pub const IDLE_TIME: Duration = Duration::from_secs(30);
/// Connects (with their handshake) one pool's dedicated connections run at once per worker; the
/// others wait their turn. A crowd of clients blocking at once would otherwise overflow the
/// server's accept queue, and a dropped SYN is retried only after 1 s, past the pool timeout.
pub const MAX_CONNECTING: usize = 32;
/// Spare connections ([`Dedicated::spare`]) one pool's worker holds at once, over
/// `max_dedicated_connections`; further callers wait their turn.
pub const MAX_SPARE: usize = 1;
/// Read buffer capacity a connection keeps between replies: none, since a dedicated connection
/// spends its time waiting (a blocked command holds no buffer until its reply arrives).
const KEEP_BUF: usize = 0;
/// `HELLO 3`, the last step of a RESP3 connection's set-up.
const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// Why a dedicated connection could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DedicatedError {
    /// The pool's `max_dedicated_connections` are all in use on this worker.
    #[error("pool '{pool}' has max_dedicated_connections ({max}) dedicated connections in use on this worker; raise max_dedicated_connections")]
    Full {
        /// The pool's name.
        pool: String,
        /// Its `max_dedicated_connections`.
        max: u32,
    },
    /// The connection failed: connect, handshake, I/O, end of stream or a bad reply.
    #[error("server {0}: {1}")]
    Failed(String, String),
    /// No complete reply before the deadline.
    #[error("server {0}: timed out")]
    Timeout(String),
    /// The node was switched away from (failover, health check) while a reply was awaited.
    #[error("server {0}: node switched away from (failover or health check)")]
    Switched(String),
    /// An ejected server of the pool came back to the ring while a reply was awaited: the
    /// command's key may live on it again, where pushes for it now go, so it was closed.
    #[error("server {0}: an ejected server came back to the ring while the command waited, so its key may live there again; it was ended, not sent again")]
    Moved(String),
    /// A reload changed the pool's `redis_db`, `redis_username` or key placement (shards,
    /// hash, hash tag: applied with `force`) while a reply was awaited: the connection may
    /// see other keys than the pool's connections now do, so it was closed (a blocked
    /// command there would wait for pushes that now go elsewhere).
    #[error("server {0}: the pool was reloaded with another redis_db, redis_username or key placement while the command waited; it was ended, not sent again")]
    Reloaded(String),
}

/// One pool's dedicated connections on one worker: how many are open, and the idle ones.
pub struct Dedicated {
    /// Connections leased or idle.
    open: Cell<usize>,
    /// Idle connections, oldest first.
    idle: RefCell<VecDeque<Idle>>,
    /// The task that closes expired idle connections runs.
    sweeping: Cell<bool>,
    /// Turns to connect (see [`MAX_CONNECTING`]).
    connecting: tokio::sync::Semaphore,
    /// Turns to hold a spare connection (see [`MAX_SPARE`]).
    spare: Arc<tokio::sync::Semaphore>,
    /// The pool generation the worker serves (see [`Dedicated::adopt`]): a connection made
    /// for a pool whose connection settings differ from it is not kept. `None` until adopted.
    current: RefCell<Option<Arc<PoolRt>>>,
    /// Bumped by [`Dedicated::adopt`] when a reload changes what the connections see
    /// (`redis_db`, `redis_username`): a connection awaiting a reply then ends.
    keyspace: watch::Sender<u64>,
}

impl Default for Dedicated {
    fn default() -> Self {
        Dedicated {
            open: Cell::new(0),
            idle: RefCell::new(VecDeque::new()),
            sweeping: Cell::new(false),
            connecting: tokio::sync::Semaphore::new(MAX_CONNECTING),
            spare: Arc::new(tokio::sync::Semaphore::new(MAX_SPARE)),
            current: RefCell::new(None),
            keyspace: watch::channel(0).0,
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An open connection to one node, after its handshake.
struct Conn {
    stream: Stream,
    node: Arc<NodeRt>,
    /// The pool (generation) whose handshake, TLS and keepalive opened it.
    made_for: Arc<PoolRt>,
    closer: watch::Receiver<(u64, bool)>,
    /// Set when its node was drained ([`NodeRt::drain_all`]): replies are still read until
    /// then, and the connection is never reused.
    drain_until: Option<Instant>,
    /// Changes when a reload changes the keys the pool's connections see (see
    /// [`Dedicated::adopt`]).
    keyspace: watch::Receiver<u64>,
    /// Changes when an ejected server of the pool comes back to the ring
    /// ([`PoolRt::placement`]); marked seen at each send.
    placement: watch::Receiver<u64>,
    rbuf: ReadBuf,
    dec: ReplyDecoder,
    /// It said `HELLO 3`: the server shapes its replies for RESP3 clients.
    resp3: bool,
    /// The server's id for this connection (`CLIENT ID`), if the server told it.
    server_id: Option<u64>,
}

impl Dedicated {
    /// Connections leased or idle.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Idle connections.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Follow a reload: `pool` is the worker's new view of the pool. When it opens server
    /// connections otherwise than the generation before (see [`PoolRt::same_connections`]),
    /// the idle connections made the old way are closed now, and those leased now are closed
    /// when given back ([`Lease::give_back`]) instead of being kept. Leased ones keep counting
    /// against `max_dedicated_connections` until they end. When it also sees other keys
    /// (`redis_db`, `redis_username`) or places keys elsewhere (a forced ring change), a
    /// leased one awaiting a reply (a blocked command) ends now with
    /// [`DedicatedError::Reloaded`].
    pub fn adopt(&self, pool: &Arc<PoolRt>) {
        let moved = self
            .current
            .borrow()
            .as_ref()
            .is_some_and(|p| !p.same_keyspace(pool) || !p.same_placement(pool));
        if moved {
            self.keyspace.send_modify(|g| *g = g.wrapping_add(1));
        }
        let mut idle = self.idle.borrow_mut();
        let before = idle.len();
        idle.retain(|i| fits(&i.conn, pool));
        // A lowered max_dedicated_connections: idle ones over it close now.
        let max = pool.conf.max_dedicated_connections.max(1) as usize;
        while self.open.get().saturating_sub(before - idle.len()) > max
            && idle.pop_front().is_some()
        {}
        let closed = before - idle.len();
        drop(idle);
        self.open.set(self.open.get().saturating_sub(closed));
        *self.current.borrow_mut() = Some(Arc::clone(pool));
    }

    /// The `max_dedicated_connections` of the generation adopted last (no bound before one).
    fn max(&self) -> usize {
        self.current.borrow().as_ref().map_or(usize::MAX, |p| {
            p.conf.max_dedicated_connections.max(1) as usize
        })
    }

    /// The pool generation the worker serves now (the last one [`Dedicated::adopt`] was
    /// given), if any.
    pub fn current(&self) -> Option<Arc<PoolRt>> {
        self.current.borrow().clone()
    }

    /// Whether `conn` may be kept for reuse: made the way the adopted generation makes
    /// connections.
    fn keeps(&self, conn: &Conn) -> bool {
        self.current.borrow().as_ref().is_none_or(|p| fits(conn, p))
    }

    /// Whether `conn` sees the keys the adopted generation's connections see: the same
    /// `redis_db` and `redis_username` (a changed password, keepalive or TLS file does not
    /// change what a connection holds).
    fn same_keyspace(&self, conn: &Conn) -> bool {
        self.current
            .borrow()
            .as_ref()
            .is_none_or(|p| conn.made_for.same_keyspace(p))
    }

    /// Borrow a RESP2 connection to `node` of `pool` (see [`Dedicated::lease_for`]).
    ///
    /// # Errors
    /// As [`Dedicated::lease_for`].
    pub fn lease(
        self: &Rc<Self>,
        pool: &Arc<PoolRt>,
        node: &Arc<NodeRt>,
    ) -> Result<Lease, DedicatedError> {
        self.lease_for(pool, node, false)
    }

    /// Borrow a connection to `node` of `pool` that speaks RESP3 when `resp3` (it says
    /// `HELLO 3` after the pool's handshake, so the server shapes replies for a RESP3 client):
    /// an idle one to that node in that protocol when there is one, else a new one, opened on
    /// the first [`Lease::send`].
    ///
    /// # Errors
    /// [`DedicatedError::Full`] when `max_dedicated_connections` are leased (idle ones of
    /// other nodes are closed to make room first).
    pub fn lease_for(
        self: &Rc<Self>,
        pool: &Arc<PoolRt>,
        node: &Arc<NodeRt>,
        resp3: bool,
    ) -> Result<Lease, DedicatedError> {
        let reuse = {
            let mut idle = self.idle.borrow_mut();
            idle.iter()
                .rposition(|i| {
                    i.conn.node.id == node.id && i.conn.resp3 == resp3 && fits(&i.conn, pool)
                })
                .and_then(|at| idle.remove(at))
        };
        if let Some(i) = reuse {
            return Ok(self.lease_with(pool, node, Some(i.conn), resp3));
        }
        let max = pool.conf.max_dedicated_connections.max(1) as usize;
        if self.open.get() >= max {
            // The oldest idle connection (to another node) makes room.
            if self.idle.borrow_mut().pop_front().is_some() {
                self.open.set(self.open.get() - 1);
            }
        }
        if self.open.get() >= max {
            return Err(DedicatedError::Full {
                pool: pool.conf.name.clone(),
                max: pool.conf.max_dedicated_connections,
            });
        }
        self.open.set(self.open.get() + 1);
        Ok(self.lease_with(pool, node, None, resp3))
    }

    /// Borrow a new connection to `node` of `pool` that does not count against
    /// `max_dedicated_connections`: for a caller that bounds its own connections (the
    /// subscriber hub holds at most one per shard). Opened on the first [`Lease::send`], with
    /// the pool's handshake like every other.
    pub fn lease_own(self: &Rc<Self>, pool: &Arc<PoolRt>, node: &Arc<NodeRt>) -> Lease {
        self.open.set(self.open.get() + 1);
        self.lease_with(pool, node, None, false)
    }

    /// A connection to `node` of `pool` for one short call, for a caller that must not be
    /// refused when `max_dedicated_connections` are all in use (CLIENT UNBLOCK: the blocked
    /// clients may hold every one): a lease within the bound when there is room, else a
    /// spare connection over it, at most [`MAX_SPARE`] at once per pool and worker, waiting
    /// for a turn until `until` (`None` then). A spare connection is never kept: it closes
    /// when the [`Spare`] is dropped.
    pub async fn spare(
        self: &Rc<Self>,
        pool: &Arc<PoolRt>,
        node: &Arc<NodeRt>,
        until: Instant,
    ) -> Option<Spare> {
        if let Ok(lease) = self.lease(pool, node) {
            return Some(Spare { lease, turn: None });
        }
        let turn = timeout(
            until.saturating_duration_since(Instant::now()),
            Arc::clone(&self.spare).acquire_owned(),
        )
        .await
        .ok()?
        .ok()?;
        let lease = self.lease_own(pool, node);
        Some(Spare {
            lease,
            turn: Some(turn),
        })
    }

    fn lease_with(
        self: &Rc<Self>,
        pool: &Arc<PoolRt>,
        node: &Arc<NodeRt>,
        conn: Option<Conn>,
        resp3: bool,
    ) -> Lease {
        Lease {
            resp3,
            home: Rc::clone(self),
            pool: Arc::clone(pool),
            node: Arc::clone(node),
            reused: conn.is_some(),
            conn,
            owed: 0,
            returned: false,
        }
    }

    /// Take back a connection that owes nothing (made the way the pool makes them now).
    /// While more are open than the pool's `max_dedicated_connections` (a reload lowered
    /// it), the oldest idle ones close instead.
    fn put_idle(self: &Rc<Self>, conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        let max = self.max();
        while idle.len() > KEEP_IDLE || (self.open.get() > max && !idle.is_empty()) {
            idle.pop_front();
            self.open.set(self.open.get().saturating_sub(1));
        }
        drop(idle);
        if !self.sweeping.replace(true) {
            tokio::task::spawn_local(sweep(Rc::downgrade(self)));
        }
    }
}

/// Whether `conn` was opened the way `pool` opens server connections.
fn fits(conn: &Conn, pool: &Arc<PoolRt>) -> bool {
    Arc::ptr_eq(&conn.made_for, pool) || conn.made_for.same_connections(pool)
}

/// Close idle connections as they expire; ends when none is left.
async fn sweep(home: Weak<Dedicated>) {
    loop {
        let next = {
            let Some(d) = home.upgrade() else { return };
            let now = Instant::now();
            let mut idle = d.idle.borrow_mut();
            while idle.front().is_some_and(|i| i.since + IDLE_TIME <= now) {
                idle.pop_front();
                d.open.set(d.open.get().saturating_sub(1));
            }
            match idle.front() {
                Some(i) => i.since + IDLE_TIME,
                None => {
                    d.sweeping.set(false);
                    return;
                }
            }
        };
        sleep_until(next).await;
    }
}

/// A dedicated connection borrowed by one session. Dropped without [`Lease::give_back`], it
/// closes its connection at once.
pub struct Lease {
    home: Rc<Dedicated>,
    pool: Arc<PoolRt>,
    node: Arc<NodeRt>,
    conn: Option<Conn>,
    /// Requests sent whose replies were not read yet.
    owed: usize,
    /// `conn` came from the idle list and was not checked yet.
    reused: bool,
    /// `conn` went back to the idle list, which counts it.
    returned: bool,
    /// The connection speaks RESP3.
    resp3: bool,
}

/// A connection for one short call (see [`Dedicated::spare`]): within the bound, or a spare
/// one over it, closed when dropped.
pub struct Spare {
    lease: Lease,
    /// The turn of a spare connection over the bound; `None` for a lease within it.
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Spare {
    /// Send `request` and read its reply (see [`Lease::call`]).
    ///
    /// # Errors
    /// As [`Lease::call`].
    pub async fn call(
        &mut self,
        request: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, DedicatedError> {
        self.lease.call(request, deadline).await
    }

    /// Done with it: a lease within the bound goes back for reuse (see
    /// [`Lease::give_back`]); a spare connection closes.
    pub fn done(self) {
        if self.turn.is_none() {
            self.lease.give_back();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.returned {
            self.home.open.set(self.home.open.get().saturating_sub(1));
        }
    }
}

impl Lease {
    /// The node this lease talks to.
    pub fn node(&self) -> &Arc<NodeRt> {
        &self.node
    }

    /// The connection speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// Switch the connection's protocol (`HELLO 2` or `HELLO 3`, keeping what else the
    /// connection holds, such as watched keys), so that replies are shaped for a session
    /// that changed its own; the connection goes back to the idle list of that protocol.
    ///
    /// # Errors
    /// The server refused `HELLO` or the exchange failed; nothing else was sent.
    pub async fn speak(&mut self, resp3: bool, deadline: Instant) -> Result<(), DedicatedError> {
        if resp3 == self.resp3 {
            return Ok(());
        }
        let hello: &[u8] = if resp3 {
            HELLO3
        } else {
            b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n"
        };
        let reply = self.call(hello, Some(deadline)).await?;
        if reply.starts_with(b"-") {
            let why = String::from_utf8_lossy(&reply[1..reply.len().min(129)])
                .trim_end()
                .to_string();
            self.conn = None;
            return Err(DedicatedError::Failed(self.node.label.clone(), why));
        }
        self.resp3 = resp3;
        if let Some(c) = self.conn.as_mut() {
            c.resp3 = resp3;
        }
        Ok(())
    }

    /// The pool (in the generation the lease was taken in) whose handshake opens its
    /// connection.
    pub fn pool(&self) -> &Arc<PoolRt> {
        &self.pool
    }

    /// The server's id for the connection (`CLIENT ID` on it), once connected, if the
    /// server told it.
    pub fn server_id(&self) -> Option<u64> {
        self.conn.as_ref().and_then(|c| c.server_id)
    }

    /// Send one request (its complete RESP encoding), connecting first if needed.
    ///
    /// # Errors
    /// The connect, the handshake or the write failed, or the node was switched away from;
    /// the connection is closed and the lease should be dropped.
    pub async fn send(&mut self, request: &[u8]) -> Result<(), DedicatedError> {
        self.send_expecting(request, 1).await
    }

    /// Send bytes that draw `replies` replies (several requests in one piece, such as a
    /// transaction's `MULTI`, commands and `EXEC`), connecting first if needed.
    ///
    /// # Errors
    /// As [`Lease::send`].
    pub async fn send_expecting(
        &mut self,
        request: &[u8],
        replies: usize,
    ) -> Result<(), DedicatedError> {
        if self.conn.is_none() || self.reused {
            self.ensure().await?;
        }
        let label = self.node.label.clone();
        let Some(c) = self.conn.as_mut() else {
            return Err(DedicatedError::Failed(label, "not connected".into()));
        };
        c.placement.borrow_and_update();
        let r = write_all(&c.stream, request).await;
        if let Err(e) = r {
            self.conn = None;
            return Err(DedicatedError::Failed(label, e.to_string()));
        }
        self.owed += replies;
        Ok(())
    }

    /// Whether the connection, held between requests, still stands as it was: open, its node
    /// not switched away from, in the database and as the user the pool's connections use
    /// now (a reload since may have changed them, see [`Dedicated::adopt`]), and nothing
    /// arrived that nobody asked for. State the server keeps for the connection (WATCH)
    /// holds only then.
    ///
    /// # Errors
    /// Not connected, the node was switched away from, a reload changed `redis_db` or
    /// `redis_username`, or the connection ended (or sent bytes nobody asked for); the
    /// connection is closed and the lease should be dropped.
    /// Whether an ejected server of the pool came back to the ring since this lease last
    /// sent (a watch held here may have its keys elsewhere now).
    pub fn placement_changed(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.placement.has_changed().unwrap_or(false))
    }

    pub fn check(&mut self) -> Result<(), DedicatedError> {
        let label = self.node.label.clone();
        let Some(c) = self.conn.as_mut() else {
            return Err(DedicatedError::Failed(label, "not connected".into()));
        };
        if switched(c) {
            self.conn = None;
            return Err(DedicatedError::Switched(label));
        }
        if c.placement.has_changed().unwrap_or(false) {
            // An ejected server came back: the watched keys may live on it again.
            self.conn = None;
            return Err(DedicatedError::Failed(
                label,
                "an ejected server came back to the ring".into(),
            ));
        }
        if !self.home.same_keyspace(c) {
            // The session's other commands now run in another database (or as another
            // user): what this connection holds (watched keys) is of the old one.
            self.conn = None;
            return Err(DedicatedError::Failed(
                label,
                "a reload changed the pool's redis_db or redis_username".into(),
            ));
        }
        if !c.rbuf.is_empty() || has_input(&c.stream) {
            self.conn = None;
            return Err(DedicatedError::Failed(
                label,
                "connection closed by server".into(),
            ));
        }
        Ok(())
    }

    /// Read the next complete reply, waiting until `deadline` (`None`: for as long as it takes).
    ///
    /// # Errors
    /// The deadline passed, the connection ended or sent a bad reply, or the node was switched
    /// away from; the connection is closed and the lease should be dropped.
    pub async fn reply(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>, DedicatedError> {
        let label = self.node.label.clone();
        let Some(c) = self.conn.as_mut() else {
            return Err(DedicatedError::Failed(label, "not connected".into()));
        };
        match read_reply(c, deadline).await {
            Ok(r) => {
                self.owed = self.owed.saturating_sub(1);
                Ok(r)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Send `request` and read its reply (see [`Lease::send`], [`Lease::reply`]).
    ///
    /// # Errors
    /// As [`Lease::send`] and [`Lease::reply`].
    pub async fn call(
        &mut self,
        request: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, DedicatedError> {
        self.send(request).await?;
        self.answer(deadline).await
    }

    /// Read the reply to the request last sent (see [`Lease::reply`]); a cluster node's
    /// redirection (the slot moved) asks the pool's map to be read again.
    ///
    /// # Errors
    /// As [`Lease::reply`].
    pub async fn answer(&mut self, deadline: Option<Instant>) -> Result<Vec<u8>, DedicatedError> {
        let reply = self.reply(deadline).await?;
        if let Some(c) = &self.pool.cluster {
            // A cluster node redirected a command of a connection of its own (it passes the
            // reply on): the slot moved, so the map is asked for now.
            if crate::upstream::backend::is_redirect(&reply) {
                c.ask_refresh();
            }
        }
        Ok(reply)
    }

    /// Return the connection for reuse when it owes no reply, holds no stray bytes and was
    /// made the way the pool makes connections now (a reload since may have changed it, see
    /// [`Dedicated::adopt`]); otherwise it is closed.
    pub fn give_back(mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.owed == 0
            && conn.rbuf.is_empty()
            && !conn.dec.is_partial()
            && self.home.keeps(&conn)
        {
            self.returned = true;
            self.home.put_idle(conn);
        }
    }

    /// A usable connection: an idle one still open to a node not switched away from, or a new
    /// one after the pool's handshake.
    async fn ensure(&mut self) -> Result<(), DedicatedError> {
        if self.reused {
            self.reused = false;
            if let Some(c) = self.conn.as_mut() {
                let switched = switched(c);
                // Anything readable on an idle connection is its end (or bytes nobody asked
                // for): either way it is not reused.
                let stale = has_input(&c.stream);
                if switched || stale {
                    self.conn = None;
                }
            }
        }
        if self.conn.is_some() {
            return Ok(());
        }
        let label = self.node.label.clone();
        let home = Rc::clone(&self.home);
        // The semaphore is never closed; a turn is taken for the connect and handshake only.
        let _turn = home.connecting.acquire().await.ok();
        let pool = Arc::clone(&self.pool);
        let limit = Instant::now() + pool.timeout();
        let mut closer = self.node.close_watch();
        closer.borrow_and_update();
        let keyspace = home.keyspace.subscribe();
        let placement = pool.placement.subscribe();
        let stream = match timeout(
            pool.timeout(),
            crate::handshake::connect(&self.node.addr, &pool.handshake, pool.conf.tcpkeepalive),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(DedicatedError::Failed(
                    label,
                    format!("connect failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(DedicatedError::Failed(
                    label,
                    "connect failed: timed out".into(),
                ))
            }
        };
        let mut conn = Conn {
            stream,
            node: Arc::clone(&self.node),
            made_for: Arc::clone(&pool),
            closer,
            drain_until: None,
            keyspace,
            placement,
            rbuf: ReadBuf::default(),
            dec: decoder(),
            resp3: self.resp3,
            server_id: None,
        };
        // The handshake, then CLIENT ID: the turn to connect is held until the server has
        // taken the connection and answered on it, so a crowd of new connections never waits
        // in its accept queue. The id is the connection's name for CLIENT UNBLOCK.
        let cmds = pool.handshake.commands();
        let mut all = BytesMut::new();
        for c in cmds {
            all.extend_from_slice(c);
        }
        if self.resp3 {
            all.extend_from_slice(HELLO3);
        }
        all.extend_from_slice(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n");
        write_all(&conn.stream, &all)
            .await
            .map_err(|e| DedicatedError::Failed(label.clone(), e.to_string()))?;
        for step in 0..cmds.len() {
            let reply = read_reply(&mut conn, Some(limit)).await?;
            pool.handshake
                .check_raw(step, &reply)
                .map_err(|e: HandshakeError| {
                    DedicatedError::Failed(label.clone(), e.to_string())
                })?;
        }
        if self.resp3 {
            let hello = read_reply(&mut conn, Some(limit)).await?;
            if !hello.starts_with(b"%") {
                let why = String::from_utf8_lossy(&hello[..hello.len().min(128)])
                    .trim_end()
                    .to_string();
                return Err(DedicatedError::Failed(
                    label,
                    format!("HELLO 3 refused: {why}"),
                ));
            }
        }
        // An error (a backend user without CLIENT ID) leaves the id unknown: the connection
        // serves, only CLIENT UNBLOCK cannot reach it.
        let id = read_reply(&mut conn, Some(limit)).await?;
        conn.server_id = id
            .strip_prefix(b":")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim_end().parse().ok());
        self.conn = Some(conn);
        Ok(())
    }
}

/// Whether `c`'s node was switched away from (closed or drained) since it was opened.
fn switched(c: &Conn) -> bool {
    c.drain_until.is_some() || c.closer.has_changed().unwrap_or(true)
}

/// Whether the socket holds bytes to read or its end (or failed): asked of the socket itself,
/// so the answer is current and costs no wait (a zero timeout on readiness waits for the next
/// timer tick, up to a millisecond, when nothing is there).
fn has_input(stream: &Stream) -> bool {
    stream.has_input()
}

fn decoder() -> ReplyDecoder {
    // Replies have no size bound on the data path either; the client's output limit applies
    // when the reply joins its queue.
    ReplyDecoder::new(resp::Limits {
        max_bulk: usize::MAX,
        ..resp::Limits::default()
    })
}

async fn write_all(stream: &Stream, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::from(bytes);
    while flush(stream, &mut out)? {
        let mut ready = stream.writable().await?;
        ready.clear();
    }
    Ok(())
}

/// Read one complete reply from `c`.
async fn read_reply(c: &mut Conn, deadline: Option<Instant>) -> Result<Vec<u8>, DedicatedError> {
    let label = c.node.label.clone();
    let label = || label.clone();
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let timer = sleep_until(deadline.unwrap_or(far));
    tokio::pin!(timer);
    loop {
        match c.dec.decode(c.rbuf.data()) {
            Ok(Some(n)) => {
                let reply = c.rbuf.data()[..n].to_vec();
                c.rbuf.consume(n);
                c.rbuf.shrink_if_idle(KEEP_BUF);
                return Ok(reply);
            }
            Ok(None) => {}
            Err(e) => {
                return Err(DedicatedError::Failed(
                    label(),
                    format!("unexpected reply: {e}"),
                ))
            }
        }
        tokio::select! {
            biased;
            r = c.closer.changed() => {
                // A drain lets what the node already answered (a PUBLISH's message to a
                // subscriber link, a blocked command's UNBLOCKED error) still be read.
                let drain = r.is_ok() && c.closer.borrow_and_update().1;
                if !drain || c.drain_until.is_some() {
                    return Err(DedicatedError::Switched(label()));
                }
                c.drain_until = Some(Instant::now() + DRAIN_LIMIT);
            }
            _ = sleep_until(c.drain_until.unwrap_or(far)), if c.drain_until.is_some() => {
                return Err(DedicatedError::Switched(label()));
            }
            _ = c.keyspace.changed() => return Err(DedicatedError::Reloaded(label())),
            _ = c.placement.changed() => return Err(DedicatedError::Moved(label())),
            r = c.stream.readable() => {
                let mut ready = r.map_err(|e| DedicatedError::Failed(label(), e.to_string()))?;
                match c.stream.read(&mut ready, c.rbuf.spare(16 * 1024)) {
                    Ok(0) => return Err(DedicatedError::Failed(label(), "connection closed by server".into())),
                    Ok(n) => c.rbuf.filled(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(DedicatedError::Failed(label(), e.to_string())),
                }
            }
            _ = &mut timer => return Err(DedicatedError::Timeout(label())),
        }
    }
}
