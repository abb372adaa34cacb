//! Where a reply goes ([`Sink`]), what a request needs to be sent again ([`Resend`]), and the
//! queue through which a backend connection gives such a request back ([`Retries`]).
//!
//! A connection never calls the router: a read whose connection failed, or a write refused
//! with `READONLY` (not applied), goes into its pool's [`Retries`] and the router's drain task
//! (`route::drain_retries`) sends it again. The queue needs no bound of its own: each entry is
//! a request that was already counted against its client's `max_inflight_per_client` and its
//! connection's queue bound, and it leaves the queue on the worker's next turn.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::notify::LocalNotify;
use crate::reply::pending::{Broken, Pending};
use crate::upstream::error::Failure;

/// What a request needs to be sent again elsewhere (pools with checked nodes only).
pub struct Resend {
    /// The request.
    pub bytes: Vec<u8>,
    /// The shard, an index into the pool of `queue`.
    pub shard: usize,
    /// A write (held on READONLY) or a read (retried once on another node).
    pub write: bool,
    /// The client key ([`crate::upstream::pool::client_key`]): its connection and protocol.
    pub client: u64,
    /// A read already retried once.
    pub retried: bool,
    /// The retry queue of the worker's pool that sent it.
    pub queue: Rc<Retries>,
    /// Cluster pools: redirections (`MOVED`, `ASK`) and retries (`TRYAGAIN`, `CLUSTERDOWN`)
    /// followed so far, and when the first came (the request's time is bounded from it).
    pub redirects: u32,
    /// When the first redirection came.
    pub redirected_at: Option<tokio::time::Instant>,
    /// The last send put `ASKING` in front (its reply is skipped: [`Sink::skip`] is one more).
    pub asking: bool,
}

/// Where a reply goes.
pub struct Sink {
    /// The session's reply queue.
    pub pending: Rc<Pending>,
    /// Sequence number of the request in that queue.
    pub seq: u64,
    /// Part of a fragmented request (0 otherwise).
    pub part: u32,
    /// Set when the request may be sent again (see [`Resend`]).
    pub resend: Option<Box<Resend>>,
    /// Replies the request's bytes draw before the one that goes to the slot: 0 for one
    /// command; a transaction sent as `MULTI`, its N commands and `EXEC` in one piece skips
    /// N + 1 (`+OK`, the `+QUEUED`s) and delivers only the `EXEC` reply.
    pub skip: u32,
}

impl Sink {
    /// A sink for part `part` of request `seq`.
    pub fn new(pending: &Rc<Pending>, seq: u64, part: u32) -> Self {
        Sink {
            pending: Rc::clone(pending),
            seq,
            part,
            resend: None,
            skip: 0,
        }
    }

    /// A sink into a reply queue of its own with one slot, standing in for this one (same
    /// `skip`, no resend), so its reply can be looked at, held or dropped before it goes on:
    /// the queue and the stand-in.
    pub fn side(&self) -> (Rc<Pending>, Sink) {
        let pen = Rc::new(Pending::default());
        if self.guarded() {
            pen.set_guard();
        }
        let seq = pen.push_waiting();
        let inner = Sink {
            pending: Rc::clone(&pen),
            seq,
            part: 0,
            resend: None,
            skip: self.skip,
        };
        (pen, inner)
    }

    /// The reply goes to a fail-open pen (`upstream::failopen::guard`), or to a stand-in of
    /// one, whose task answers for the shard when it holds a failure: a failure must reach
    /// it as one, not as the miss or dropped write that task gives.
    pub fn guarded(&self) -> bool {
        self.pending.is_guard()
    }

    /// Answer with `reply` (one complete RESP value).
    pub fn deliver(self, reply: &[u8]) {
        self.pending.deliver(self.seq, self.part, reply);
    }

    /// Answer with the failure's reply (`-ERR rampart: <message>`, see [`Failure::reply`]);
    /// in a pool with `when_down: close`, a failure that says the shard is down
    /// ([`Failure::shard_down`]) closes the client in this request's turn instead, as a TCP
    /// proxy in front of a dead server does ([`Broken::ShardDown`]).
    pub fn fail(self, failure: Failure) {
        if let Some(pool) = self.pending.closes_when_down() {
            if failure.shard_down() && !self.pending.merges_failures(self.seq) {
                return close_when_down(&self.pending, pool, self.seq, &failure);
            }
        }
        self.deliver(&failure.reply());
    }
    /// No reply: the client is closed in this request's turn ([`Pending::hang_up`]).
    pub fn hang_up(self) {
        self.pending.hang_up(self.seq);
    }

    /// Give the request back for the router to send again (a read to another node, a write
    /// to the hold); without a [`Resend`] the `failure` stands.
    pub fn give_back(self, node: u64, failure: Failure) {
        match self.resend.as_ref().map(|r| Rc::clone(&r.queue)) {
            Some(q) => q.push(Retry {
                sink: self,
                node,
                failure,
            }),
            None => self.fail(failure),
        }
    }
}

/// Close the client of `pending` in request `seq`'s turn because its shard is down
/// (`when_down: close`, see [`Sink::fail`]), logging `why` at a bounded rate and counting it
/// for the pool in statistics slot `pool` ([`closed_when_down`]).
pub fn close_when_down(pending: &Pending, pool: usize, seq: u64, why: &dyn std::fmt::Display) {
    if let Some(c) = CLOSED_WHEN_DOWN.get(pool) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    static LINES: crate::observe::loglines::Lines = crate::observe::loglines::Lines::new();
    if let Some(left_out) = LINES.admit() {
        tracing::info!(
            "closing a client (when_down: close): {why}{}",
            crate::observe::loglines::more(left_out, "closings")
        );
    }
    pending.hang_up_for(seq, Broken::ShardDown);
}

/// Clients closed by [`close_when_down`], per pool statistics slot.
static CLOSED_WHEN_DOWN: [std::sync::atomic::AtomicU64; crate::observe::stats::MAX_POOLS] =
    [const { std::sync::atomic::AtomicU64::new(0) }; crate::observe::stats::MAX_POOLS];

/// Clients of the pool in statistics slot `pool` closed because a request met a shard that
/// was down (`when_down: close`), since start.
pub fn closed_when_down(pool: usize) -> u64 {
    CLOSED_WHEN_DOWN
        .get(pool)
        .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
}

/// A request given back by a connection.
pub struct Retry {
    /// The request's sink, with its [`Resend`].
    pub sink: Sink,
    /// The node that failed it (not tried again for a read).
    pub node: u64,
    /// Why it failed there: its client's error if it cannot be sent again.
    pub failure: Failure,
}

impl Retry {
    /// Its pool was replaced while it waited: it fails with why it had to be sent again.
    fn fail_reloaded(self) {
        self.sink.fail(Failure::Reloaded {
            cause: Box::new(self.failure),
        });
    }
}

/// Requests given back by the connections of one worker's pool, drained by the router.
#[derive(Default)]
pub struct Retries {
    q: RefCell<VecDeque<Retry>>,
    wake: LocalNotify,
    closed: Cell<bool>,
}

impl Retries {
    fn push(&self, r: Retry) {
        if self.closed.get() {
            return r.fail_reloaded();
        }
        self.q.borrow_mut().push_back(r);
        self.wake.notify();
    }

    /// The oldest request given back.
    pub fn pop(&self) -> Option<Retry> {
        self.q.borrow_mut().pop_front()
    }

    /// Wait until a request is given back or the queue is closed; `false` once closed.
    pub async fn wait(&self) -> bool {
        while self.q.borrow().is_empty() && !self.closed.get() {
            self.wake.notified().await;
        }
        !self.closed.get()
    }

    /// The pool is gone (a reload replaced it): what is queued and what comes later fails.
    pub fn close(&self) {
        self.closed.set(true);
        while let Some(r) = self.pop() {
            r.fail_reloaded();
        }
        self.wake.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::error::ConnFailure;

    fn timeout(sent: bool) -> Failure {
        Failure::Connection {
            node: "127.0.0.1:6379".into(),
            pool: "demo".into(),
            kind: ConnFailure::Timeout,
            sent,
        }
    }

    fn resendable(pending: &Rc<Pending>, queue: &Rc<Retries>) -> Sink {
        let mut sink = Sink::new(pending, pending.push_waiting(), 0);
        sink.resend = Some(Box::new(Resend {
            bytes: b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
            shard: 0,
            write: false,
            client: 1,
            retried: false,
            redirects: 0,
            redirected_at: None,
            asking: false,
            queue: Rc::clone(queue),
        }));
        sink
    }

    #[test]
    fn a_request_given_back_keeps_its_failure_kind() {
        let pending = Rc::new(Pending::default());
        let queue = Rc::new(Retries::default());
        resendable(&pending, &queue).give_back(7, timeout(false));
        let r = queue.pop().expect("the request is queued for the router");
        assert_eq!(r.node, 7);
        assert!(
            matches!(
                r.failure,
                Failure::Connection {
                    kind: ConnFailure::Timeout,
                    sent: false,
                    ..
                }
            ),
            "{:?}",
            r.failure
        );
        assert!(pending.out.borrow().is_empty(), "no reply yet");
    }

    #[test]
    fn the_failure_is_written_only_when_the_request_cannot_be_sent_again() {
        let pending = Rc::new(Pending::default());
        let queue = Rc::new(Retries::default());
        // No Resend: the failure stands at once.
        Sink::new(&pending, pending.push_waiting(), 0).give_back(7, timeout(true));
        assert_eq!(
            &pending.out.borrow()[..],
            b"-ERR rampart: server 127.0.0.1:6379 (demo): timed out\r\n"
        );
        pending.out.borrow_mut().clear();
        // Given back, then its pool is replaced by a reload before the router sends it.
        resendable(&pending, &queue).give_back(7, timeout(false));
        queue.close();
        assert_eq!(
            &pending.out.borrow()[..],
            &b"-ERR rampart: server 127.0.0.1:6379 (demo): timed out (the pool was reloaded \
               meanwhile)\r\n"[..]
        );
    }
}
