//! Where the subscriber hub's messages go: one subscribing session ([`Listener`]: its reply
//! queue, the messages held behind its replies, its Pub/Sub output limits, the subscriptions
//! a server refused), and the replies of a subscribe command that wait for the server's
//! confirmations ([`Waiter`]: the server's error instead, when it refused one).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::reply::pending::Pending;
use crate::upstream::subscriber::Kind;

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
    /// Subscriptions of a command whose error the client got (a server refused one of
    /// them): the session takes them back before its next command.
    refused: RefCell<Vec<(Kind, Bytes)>>,
    /// A server refused a subscription the client was told it holds (subscribed again on a
    /// new connection): the client is closed.
    lost: Cell<bool>,
    /// Subscribe commands whose servers have not all answered yet.
    unsettled: Cell<usize>,
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
            refused: RefCell::default(),
            lost: Cell::new(false),
            unsettled: Cell::new(0),
        })
    }

    /// Whether a subscribe command of the session waits for its servers: until they
    /// answer, the session does not know whether it holds those subscriptions (a refused
    /// command subscribes nothing), so commands whose answer depends on that wait too.
    pub fn unsettled(&self) -> bool {
        self.unsettled.get() > 0
    }

    /// The subscriptions to take back: those of commands a server refused (their error
    /// went to the client), at most the names of those commands. Empty most of the time.
    pub fn take_refused(&self) -> Vec<(Kind, Bytes)> {
        std::mem::take(&mut *self.refused.borrow_mut())
    }

    /// Whether the subscription `(kind, name)` is one of a command the client got an error
    /// for, not yet taken back: its messages are not the client's.
    pub(super) fn refuses(&self, kind: Kind, name: &[u8]) -> bool {
        let refused = self.refused.borrow();
        !refused.is_empty() && refused.iter().any(|(k, n)| *k == kind && n == name)
    }

    /// Whether a server refused a subscription the client holds, which it could not be
    /// told of (it must be closed, as Redis 7 closes a subscriber whose channels its user
    /// may no longer use).
    pub fn lost(&self) -> bool {
        self.lost.get()
    }

    /// See [`Listener::lost`]; wakes the session.
    pub(super) fn lose(&self) {
        self.lost.set(true);
        self.pending.wake.notify();
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
/// asked for (so a PUBLISH the client sends after reading them reaches it); or, when a
/// server refused one (`NOPERM` for the servers' user, say), that server's error, as Redis
/// refuses the whole command, and the command's subscriptions are taken back.
pub struct Waiter {
    pending: Rc<Pending>,
    seq: u64,
    reply: RefCell<Option<BytesMut>>,
    pub(super) left: Cell<usize>,
    pub(super) listener: Rc<Listener>,
    /// The subscriptions this command added to its session.
    added: RefCell<Vec<(Kind, Bytes)>>,
    /// A server's refusal of one of them (a whole error frame).
    refusal: RefCell<Option<Bytes>>,
    /// Armed while servers were still to answer: counted in the listener's `unsettled`.
    counted: Cell<bool>,
}

impl Waiter {
    /// A waiter for the reply slot `seq` of `pending`, for a command of `listener`'s session.
    pub fn new(pending: &Rc<Pending>, seq: u64, listener: &Rc<Listener>) -> Rc<Self> {
        Rc::new(Waiter {
            pending: Rc::clone(pending),
            seq,
            reply: RefCell::new(None),
            left: Cell::new(0),
            listener: Rc::clone(listener),
            added: RefCell::default(),
            refusal: RefCell::new(None),
            counted: Cell::new(false),
        })
    }

    /// The command added `(kind, name)` to its session (taken back if a server refuses
    /// one of the command's subscriptions).
    pub fn added(&self, kind: Kind, name: Bytes) {
        self.added.borrow_mut().push((kind, name));
    }

    /// A server refused one of the command's subscriptions with `error` (a whole error
    /// frame): that is the command's reply. Counts as its answer.
    pub(super) fn refuse(&self, error: &[u8]) {
        self.refusal
            .borrow_mut()
            .get_or_insert_with(|| Bytes::copy_from_slice(error));
        self.confirmed();
    }

    /// The replies are known: delivered now if nothing is awaited, else when the last
    /// confirmation arrives.
    pub fn arm(&self, reply: BytesMut) {
        *self.reply.borrow_mut() = Some(reply);
        if self.left.get() == 0 {
            self.fire();
        } else {
            self.counted.set(true);
            let u = &self.listener.unsettled;
            u.set(u.get() + 1);
        }
    }

    pub(super) fn confirmed(&self) {
        self.left.set(self.left.get().saturating_sub(1));
        if self.left.get() == 0 {
            self.fire();
        }
    }

    fn fire(&self) {
        let Some(r) = self.reply.borrow_mut().take() else {
            return;
        };
        if self.counted.replace(false) {
            let u = &self.listener.unsettled;
            u.set(u.get().saturating_sub(1));
        }
        match self.refusal.borrow_mut().take() {
            Some(e) => {
                let added = std::mem::take(&mut *self.added.borrow_mut());
                self.listener.refused.borrow_mut().extend(added);
                self.pending.deliver(self.seq, 0, &e);
            }
            None => self.pending.deliver(self.seq, 0, &r),
        }
    }
}
