//! Where the subscriber hub's messages go: one subscribing session ([`Listener`]: its reply
//! queue, the messages held behind its replies, its Pub/Sub output limits), and the replies of
//! a subscribe command that wait for the server's confirmations ([`Waiter`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::reply::pending::Pending;

/// One subscribing session as the hub sees it: where its messages go and how many are held.
pub struct Listener {
    pending: Rc<Pending>,
    pub(super) resp3: Cell<bool>,
    /// Messages waiting behind the session's outstanding replies, oldest first.
    queue: RefCell<VecDeque<Bytes>>,
    /// Bytes in `queue`.
    queued: Cell<usize>,
    /// Since when the held bytes are above the soft limit.
    soft_since: Cell<Option<Instant>>,
    /// Held bytes when the client went over a limit (it is closed); `None` while it is not.
    over: Cell<Option<usize>>,
    /// `(hard, soft, soft time)`: the pool's `pubsub_output_*`.
    limits: (usize, usize, Duration),
}

impl Listener {
    /// A listener writing to `pending`, bounded by the pool's Pub/Sub output limits.
    pub fn new(pending: &Rc<Pending>, resp3: bool, conf: &rampart_config::PubSub) -> Rc<Self> {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Rc::new(Listener {
            pending: Rc::clone(pending),
            resp3: Cell::new(resp3),
            queue: RefCell::default(),
            queued: Cell::new(0),
            soft_since: Cell::new(None),
            over: Cell::new(None),
            limits: (
                size(conf.output_hard),
                size(conf.output_soft),
                conf.output_soft_time,
            ),
        })
    }

    /// The session switched protocol (`HELLO`): later messages are framed for it.
    pub fn set_resp3(&self, resp3: bool) {
        self.resp3.set(resp3);
    }

    /// Held message bytes over which the client was found (it must be closed), once it was.
    pub fn over_limit(&self) -> Option<usize> {
        self.over.get()
    }

    /// Move queued messages to the session's output, between whole replies (never inside a
    /// reply that is partly written). Returns whether any moved.
    pub fn drain(&self) -> bool {
        let mut moved = false;
        let mut q = self.queue.borrow_mut();
        while let Some(m) = q.front() {
            if !self.pending.push_between(m) {
                break;
            }
            self.queued.set(self.queued.get().saturating_sub(m.len()));
            q.pop_front();
            moved = true;
        }
        moved
    }

    /// One message for this client (`resp2` and `resp3` framings of the same message).
    pub(super) fn offer(&self, resp2: &Bytes, resp3: &Bytes) {
        if self.over.get().is_some() {
            return;
        }
        let m = if self.resp3.get() { resp3 } else { resp2 };
        if self.queued.get() > 0 || !self.pending.push_between(m) {
            self.queue.borrow_mut().push_back(m.clone());
            self.queued.set(self.queued.get() + m.len());
        }
        self.pending.wake.notify();
        let held = self.pending.held() + self.queued.get();
        let (hard, soft, soft_time) = self.limits;
        let over = if held > hard {
            true
        } else if held > soft {
            let now = Instant::now();
            let since = *self.soft_since.get().get_or_insert(now);
            self.soft_since.set(Some(since));
            now.saturating_duration_since(since) >= soft_time
        } else {
            self.soft_since.set(None);
            false
        };
        if over {
            self.over.set(Some(held));
            self.queue.borrow_mut().clear();
            self.queued.set(0);
        }
    }
}

/// A subscribe command's replies, delivered once the server took every subscription it
/// asked for (so a PUBLISH the client sends after reading them reaches it).
pub struct Waiter {
    pending: Rc<Pending>,
    seq: u64,
    reply: RefCell<Option<BytesMut>>,
    pub(super) left: Cell<usize>,
}

impl Waiter {
    /// A waiter for the reply slot `seq` of `pending`.
    pub fn new(pending: &Rc<Pending>, seq: u64) -> Rc<Self> {
        Rc::new(Waiter {
            pending: Rc::clone(pending),
            seq,
            reply: RefCell::new(None),
            left: Cell::new(0),
        })
    }

    /// The replies are known: delivered now if nothing is awaited, else when the last
    /// confirmation arrives.
    pub fn arm(&self, reply: BytesMut) {
        *self.reply.borrow_mut() = Some(reply);
        if self.left.get() == 0 {
            self.fire();
        }
    }

    pub(super) fn confirmed(&self) {
        self.left.set(self.left.get().saturating_sub(1));
        if self.left.get() == 0 {
            self.fire();
        }
    }

    fn fire(&self) {
        if let Some(r) = self.reply.borrow_mut().take() {
            self.pending.deliver(self.seq, 0, &r);
        }
    }
}
