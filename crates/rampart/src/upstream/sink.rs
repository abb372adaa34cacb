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
use crate::reply::pending::Pending;

/// What a request needs to be sent again elsewhere (pools with checked nodes only).
pub struct Resend {
    /// The request.
    pub bytes: Vec<u8>,
    /// The shard, an index into the pool of `queue`.
    pub shard: usize,
    /// A write (held on READONLY) or a read (retried once on another node).
    pub write: bool,
    /// The client, for its connection choice.
    pub client: u64,
    /// A read already retried once.
    pub retried: bool,
    /// The retry queue of the worker's pool that sent it.
    pub queue: Rc<Retries>,
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

    /// Answer with `reply` (one complete RESP value).
    pub fn deliver(self, reply: &[u8]) {
        self.pending.deliver(self.seq, self.part, reply);
    }

    /// Answer with `-ERR rampart: <why>`.
    pub fn fail(self, why: &str) {
        let msg = format!("-ERR rampart: {why}\r\n");
        self.deliver(msg.as_bytes());
    }

    /// Give the request back for the router to send again (a read to another node, a write
    /// to the hold); without a [`Resend`] the error `why` stands.
    pub fn give_back(self, node: u64, why: &str) {
        match self.resend.as_ref().map(|r| Rc::clone(&r.queue)) {
            Some(q) => q.push(Retry {
                sink: self,
                node,
                why: why.to_string(),
            }),
            None => self.fail(why),
        }
    }
}

/// A request given back by a connection.
pub struct Retry {
    /// The request's sink, with its [`Resend`].
    pub sink: Sink,
    /// The node that failed it (not tried again for a read).
    pub node: u64,
    /// Why it failed there: the error its client gets if it cannot be sent again.
    pub why: String,
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
            let why = format!("{} (the pool was reloaded meanwhile)", r.why);
            return r.sink.fail(&why);
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
            let why = format!("{} (the pool was reloaded meanwhile)", r.why);
            r.sink.fail(&why);
        }
        self.wake.notify();
    }
}
