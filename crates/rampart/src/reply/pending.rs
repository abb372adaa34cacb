//! The ordered reply queue of one client session.
//!
//! Every request a session accepts takes the next sequence number and a slot here. Backends and
//! local handlers fill slots in any order; replies leave strictly in request order. A reply that
//! completes the head of the queue is copied straight into the session's output buffer, so the
//! common in-order case stores nothing per request. A slot gathering the parts of a fragmented
//! request merges them once the last part arrives.
//!
//! The queue also notes which replies that left were errors, so the session can count error
//! replies per command, pool and node ([`Pending::next_is_error`]) without a record per reply.
//!
//! A large reply may arrive in pieces ([`Pending::append`]): at the head of the queue each piece
//! goes straight to the output buffer, elsewhere it waits in its slot. Every byte held here,
//! in slots or in the output buffer, counts against the client's hard limit
//! ([`Pending::set_limit`]): past it, everything held is dropped at once, later replies are
//! dropped as they arrive, and [`Pending::broken`] tells the session to close the client.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::notify::LocalNotify;
use crate::reply::merge::Merger;

/// The state of one request's reply.
enum Slot {
    /// Sent somewhere, no reply yet.
    Waiting,
    /// The first pieces of a reply. At the head of the queue they went to `out` already and
    /// the buffer stays empty; elsewhere they wait here.
    Partial(BytesMut),
    /// Complete reply, waiting for earlier replies to leave first.
    Ready(Bytes),
    /// Fragments of a split request.
    Gather(Box<Gather>),
    /// No reply will come: once the replies before it have gone to `out`, the client is
    /// closed for this reason ([`Pending::hang_up`], [`Pending::hang_up_for`]).
    HangUp(Broken),
}

struct Gather {
    parts: Vec<Option<Bytes>>,
    /// The first pieces of parts still arriving.
    filling: Vec<BytesMut>,
    remaining: usize,
    merger: Merger,
}

/// Reply queue shared by a session and the backends working for it (same thread).
pub struct Pending {
    slots: RefCell<VecDeque<Slot>>,
    base: Cell<u64>,
    /// Replies ready to be written to the client, in order.
    pub out: RefCell<BytesMut>,
    /// Wakes the session when `out` gained bytes, or the client must be closed.
    pub wake: LocalNotify,
    closed: Cell<bool>,
    /// Replies moved to `out` so far.
    sent: Cell<u64>,
    /// Replies whose verdict [`Pending::next_is_error`] has given so far.
    counted: Cell<u64>,
    /// Positions (in `sent` order) of the error replies not yet counted, oldest first.
    errors: RefCell<VecDeque<u64>>,
    /// The reply whose first pieces went to `out` already (a [`Slot::Partial`] at the head)
    /// is an error.
    head_error: Cell<bool>,
    /// Reply bytes held in slots (not counting `out`).
    held: Cell<usize>,
    /// Most bytes held in slots and `out` together; `usize::MAX` by default.
    limit: Cell<usize>,
    /// Why the client must be closed, once it must.
    broken: Cell<Option<Broken>>,
    /// The next reply accepted is dropped instead of written (`CLIENT REPLY OFF|SKIP`).
    mute: Cell<bool>,
    /// Sequence numbers of the slots whose replies are dropped, oldest first (bounded by the
    /// slots in flight).
    muted: RefCell<VecDeque<u64>>,
    /// A one-slot queue whose reply is looked at before it goes on: a fail-open pool's
    /// guard, which answers for the shard when the reply is a failure.
    guard: Cell<bool>,
    /// The client's pool has `when_down: close` (its statistics slot): a request that fails
    /// because its shard is down closes the client instead of answering
    /// ([`crate::upstream::sink::Sink::fail`]).
    close_when_down: Cell<Option<usize>>,
    /// A request's slot was marked [`Slot::HangUp`]: the session dispatches nothing more
    /// ([`Pending::hanging_up`]), so no later request of the client is sent.
    hanging: Cell<bool>,
}

/// Why a reply queue gave up on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// This many reply bytes were held, more than the hard limit.
    OverLimit(usize),
    /// A reply was cut after its first bytes had gone to the client's output: the client
    /// cannot be told in its own stream.
    Cut,
    /// The connection is to be reset (a fault injected by the operator).
    Reset,
    /// The server connection a reply was awaited on was lost in a way only a closed
    /// connection tells the client ([`Pending::hang_up`]); the replies before it left.
    ServerLost,
    /// A request met a shard that is down, in a pool with `when_down: close`: the client is
    /// closed in that request's turn, as behind a TCP proxy whose server is down; the
    /// replies before it left.
    ShardDown,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            slots: RefCell::default(),
            base: Cell::new(0),
            out: RefCell::default(),
            wake: LocalNotify::default(),
            closed: Cell::new(false),
            held: Cell::new(0),
            limit: Cell::new(usize::MAX),
            broken: Cell::new(None),
            sent: Cell::new(0),
            counted: Cell::new(0),
            errors: RefCell::default(),
            head_error: Cell::new(false),
            mute: Cell::new(false),
            muted: RefCell::default(),
            guard: Cell::new(false),
            close_when_down: Cell::new(None),
            hanging: Cell::new(false),
        }
    }
}

impl Pending {
    /// Mark this queue as a fail-open guard's (see the `guard` field).
    pub fn set_guard(&self) {
        self.guard.set(true);
    }

    /// Whether this queue is a fail-open guard's.
    pub fn is_guard(&self) -> bool {
        self.guard.get()
    }

    /// Follow the pool's `when_down`: `Some(its statistics slot)` for `close`, `None` for
    /// `error` (see the `close_when_down` field).
    pub fn set_close_when_down(&self, pool: Option<usize>) {
        self.close_when_down.set(pool);
    }

    /// Whether a request failed because its shard is down closes the client: the statistics
    /// slot of its pool when it does.
    pub fn closes_when_down(&self) -> Option<usize> {
        self.close_when_down.get()
    }

    /// Whether a request of this queue will close the client in its turn: the session
    /// sends nothing after it.
    pub fn hanging_up(&self) -> bool {
        self.hanging.get()
    }

    /// Whether request `seq` is one whose parts' failures its merge answers itself (INFO's
    /// keyspace over the shards: a shard that cannot answer is left out, not the whole
    /// reply), so a failed part must reach it as its error reply.
    pub fn merges_failures(&self, seq: u64) -> bool {
        let slots = self.slots.borrow();
        seq.checked_sub(self.base.get())
            .and_then(|i| slots.get(i as usize))
            .is_some_and(|s| matches!(s, Slot::Gather(g) if g.merger.keeps_going()))
    }
}

/// Most error positions kept for a session that does not count them.
const MAX_ERRORS_NOTED: usize = 4096;

/// An error reply: RESP `-...` or RESP3 blob error `!...`.
fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

impl Pending {
    /// Requests accepted whose replies have not yet moved to `out`.
    pub fn outstanding(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Note that one more reply moved to `out`.
    fn sent_one(&self, error: bool) {
        let n = self.sent.get();
        self.sent.set(n + 1);
        if error {
            let mut e = self.errors.borrow_mut();
            if e.len() >= MAX_ERRORS_NOTED {
                e.pop_front();
            }
            e.push_back(n);
        }
    }

    /// Whether the next reply not yet counted, in order, was an error. Call once per reply
    /// that left `out`'s queue (the session does, as it counts replies for statistics).
    pub fn next_is_error(&self) -> bool {
        let n = self.counted.get();
        self.counted.set(n + 1);
        let mut e = self.errors.borrow_mut();
        while e.front().is_some_and(|&at| at < n) {
            e.pop_front();
        }
        if e.front() == Some(&n) {
            e.pop_front();
            true
        } else {
            false
        }
    }

    /// Reply bytes held for the client: those waiting in slots plus the output buffer.
    pub fn held(&self) -> usize {
        self.held.get() + self.out.borrow().len()
    }

    /// Sets the most bytes [`Pending::held`] may reach (the pool's `client_output_hard`);
    /// above it the queue gives up on its client (see [`Pending::broken`]).
    pub fn set_limit(&self, bytes: usize) {
        self.limit.set(bytes);
        self.check();
    }

    /// Set once the client must be closed: it was over its hard limit, or one of its replies
    /// was cut after it had started to leave. Everything held was dropped then, and later
    /// replies are dropped as they arrive.
    pub fn broken(&self) -> Option<Broken> {
        self.broken.get()
    }

    /// The reply of the next request accepted (by [`Pending::push_ready`],
    /// [`Pending::push_waiting`] or [`Pending::push_gather`]) is dropped where it would go to
    /// the client, in its turn, so the replies around it keep their order. Lasts until
    /// [`Pending::unmute`].
    pub fn mute_next(&self) {
        self.mute.set(true);
    }

    /// Ends [`Pending::mute_next`].
    pub fn unmute(&self) {
        self.mute.set(false);
    }

    /// Note the slot just pushed (`seq`) as muted when a mute is on.
    fn note_mute(&self, seq: u64) {
        if self.mute.get() {
            self.muted.borrow_mut().push_back(seq);
        }
    }

    /// Whether the reply at the head of the queue is dropped; `done`: it leaves now.
    fn head_muted(&self, done: bool) -> bool {
        let mut m = self.muted.borrow_mut();
        let base = self.base.get();
        while m.front().is_some_and(|&s| s < base) {
            m.pop_front();
        }
        let muted = m.front() == Some(&base);
        if muted && done {
            m.pop_front();
        }
        muted
    }

    /// Drop everything held and have the session close its client at once (an injected
    /// `reset` fault).
    pub fn reset(&self) {
        self.give_up(Broken::Reset);
    }

    /// Request `seq` gets no reply and its client is closed in its turn, as a client of a
    /// server that went away is: the replies before it still go to `out` (the session writes
    /// what the socket takes, then closes), nothing after it does ([`Broken::ServerLost`]).
    /// For a blocking command whose server connection failed: its item may have been popped
    /// with the reply lost, which a client only handles as a lost connection.
    pub fn hang_up(&self, seq: u64) {
        self.hang_up_for(seq, Broken::ServerLost);
    }

    /// As [`Pending::hang_up`], the client closed for `why` ([`Broken::ServerLost`] or
    /// [`Broken::ShardDown`]).
    pub fn hang_up_for(&self, seq: u64, why: Broken) {
        if self.closed.get() {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        match seq.checked_sub(self.base.get()) {
            Some(idx) if (idx as usize) < slots.len() => {
                slots[idx as usize] = Slot::HangUp(why);
                self.hanging.set(true);
                if idx == 0 {
                    self.pump(&mut slots);
                }
            }
            _ => return,
        }
        drop(slots);
        self.wake.notify();
    }

    /// The session is gone: later replies are dropped.
    pub fn close(&self) {
        self.closed.set(true);
        self.muted.borrow_mut().clear();
        self.slots.borrow_mut().clear();
        self.held.set(0);
    }

    /// Reserve a slot for a reply that one backend will deliver; returns its sequence number.
    pub fn push_waiting(&self) -> u64 {
        let mut slots = self.slots.borrow_mut();
        slots.push_back(Slot::Waiting);
        let seq = self.base.get() + slots.len() as u64 - 1;
        self.note_mute(seq);
        seq
    }

    /// Reserve a slot whose reply is merged from `parts` fragments.
    pub fn push_gather(&self, parts: usize, merger: Merger) -> u64 {
        let mut slots = self.slots.borrow_mut();
        slots.push_back(Slot::Gather(Box::new(Gather {
            parts: vec![None; parts],
            filling: (0..parts).map(|_| BytesMut::new()).collect(),
            remaining: parts,
            merger,
        })));
        let seq = self.base.get() + slots.len() as u64 - 1;
        self.note_mute(seq);
        seq
    }

    /// A reply known at once (local commands, errors found before forwarding).
    pub fn push_ready(&self, reply: &[u8]) {
        if self.closed.get() {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        if slots.is_empty() {
            if !self.mute.get() {
                self.out.borrow_mut().extend_from_slice(reply);
            }
            self.sent_one(is_error(reply));
        } else {
            self.held.set(self.held.get() + reply.len());
            slots.push_back(Slot::Ready(Bytes::copy_from_slice(reply)));
            let seq = self.base.get() + slots.len() as u64 - 1;
            self.note_mute(seq);
        }
        drop(slots);
        self.check();
    }

    /// Bytes that answer no request (MONITOR lines), written to the client when no reply is
    /// outstanding; they are not counted as replies. Returns false (and keeps nothing) while
    /// replies are outstanding: the caller offers them again later.
    pub fn push_unsolicited(&self, bytes: &[u8]) -> bool {
        if self.closed.get() {
            return true;
        }
        if !self.slots.borrow().is_empty() {
            return false;
        }
        self.out.borrow_mut().extend_from_slice(bytes);
        self.check();
        true
    }

    /// Bytes that answer no request (Pub/Sub messages), written to the client between two
    /// whole replies: at once, even while replies are outstanding, unless the reply at the
    /// head of the queue is partly written (its first pieces went out already). Returns
    /// false (and keeps nothing) then: the caller offers them again later.
    pub fn push_between(&self, bytes: &[u8]) -> bool {
        if self.closed.get() {
            return true;
        }
        if matches!(self.slots.borrow().front(), Some(Slot::Partial(_))) {
            return false;
        }
        self.out.borrow_mut().extend_from_slice(bytes);
        self.check();
        true
    }

    /// Deliver the reply (or part `part` of it) of request `seq`, or its last piece after
    /// [`Pending::append`].
    pub fn deliver(&self, seq: u64, part: u32, reply: &[u8]) {
        self.put(seq, part, reply, true);
    }

    /// Deliver the first pieces of a reply of request `seq` (part `part`) that is still
    /// arriving; [`Pending::deliver`] gives its last piece.
    pub fn append(&self, seq: u64, part: u32, piece: &[u8]) {
        self.put(seq, part, piece, false);
    }

    /// A reply whose first pieces were appended was cut off: what is held of it is replaced
    /// by `reply`. If some of it already went to the output buffer the client cannot be told
    /// in its own stream, so the queue gives up on it ([`Broken::Cut`]).
    pub fn replace(&self, seq: u64, part: u32, reply: &[u8]) {
        if self.closed.get() {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        let Some(idx) = seq.checked_sub(self.base.get()) else {
            return;
        };
        let Some(slot) = slots.get_mut(idx as usize) else {
            return;
        };
        match slot {
            Slot::Partial(_) if idx == 0 => {
                drop(slots);
                return self.give_up(Broken::Cut);
            }
            Slot::Partial(buf) => {
                self.held.set(self.held.get() - buf.len());
                *slot = Slot::Waiting;
            }
            Slot::Gather(g) => {
                if let Some(f) = g.filling.get_mut(part as usize) {
                    self.held.set(self.held.get() - f.len());
                    *f = BytesMut::new();
                }
            }
            Slot::Waiting | Slot::Ready(_) | Slot::HangUp(_) => {}
        }
        drop(slots);
        self.deliver(seq, part, reply);
    }

    fn put(&self, seq: u64, part: u32, bytes: &[u8], last: bool) {
        if self.closed.get() {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        let Some(idx) = seq.checked_sub(self.base.get()) else {
            return;
        };
        let Some(slot) = slots.get_mut(idx as usize) else {
            return;
        };
        let held = self.held.get();
        match slot {
            // At the head, a partial slot's bytes are already in `out`: so are these.
            Slot::Waiting | Slot::Partial(_) if idx == 0 => {
                if matches!(slot, Slot::Waiting) {
                    self.head_error.set(is_error(bytes));
                }
                if !self.head_muted(last) {
                    self.out.borrow_mut().extend_from_slice(bytes);
                }
                if last {
                    self.sent_one(self.head_error.get());
                    slots.pop_front();
                    self.base.set(self.base.get() + 1);
                    self.pump(&mut slots);
                } else {
                    *slot = Slot::Partial(BytesMut::new());
                }
                self.wake.notify();
            }
            Slot::Waiting if last => {
                self.held.set(held + bytes.len());
                *slot = Slot::Ready(Bytes::copy_from_slice(bytes));
            }
            Slot::Waiting => {
                self.held.set(held + bytes.len());
                *slot = Slot::Partial(BytesMut::from(bytes));
            }
            Slot::Partial(buf) => {
                self.held.set(held + bytes.len());
                buf.extend_from_slice(bytes);
                if last {
                    *slot = Slot::Ready(std::mem::take(buf).freeze());
                }
            }
            Slot::Gather(g) => {
                let (Some(p), Some(f)) = (
                    g.parts.get_mut(part as usize),
                    g.filling.get_mut(part as usize),
                ) else {
                    return;
                };
                if p.is_some() {
                    // A part delivered twice counts once.
                    return;
                }
                self.held.set(held + bytes.len());
                if !last {
                    f.extend_from_slice(bytes);
                } else if f.is_empty() {
                    *p = Some(Bytes::copy_from_slice(bytes));
                } else {
                    f.extend_from_slice(bytes);
                    *p = Some(std::mem::take(f).freeze());
                }
                if last {
                    g.remaining -= 1;
                }
                if g.remaining == 0 {
                    let parts = std::mem::take(&mut g.parts);
                    let was: usize = parts.iter().flatten().map(Bytes::len).sum();
                    let merger = std::mem::replace(&mut g.merger, Merger::First);
                    let merged = merger.merge(parts.into_iter().flatten().collect());
                    self.held.set(self.held.get() - was + merged.len());
                    *slot = Slot::Ready(merged);
                    if idx == 0 {
                        self.pump(&mut slots);
                        self.wake.notify();
                    }
                }
            }
            Slot::Ready(_) | Slot::HangUp(_) => {}
        }
        drop(slots);
        self.check();
    }

    /// Move every complete reply at the head of the queue into `out`, and the first pieces
    /// of a reply still arriving.
    fn pump(&self, slots: &mut VecDeque<Slot>) {
        let mut out = self.out.borrow_mut();
        while let Some(front) = slots.front_mut() {
            match front {
                Slot::Ready(b) => {
                    if !self.head_muted(true) {
                        out.extend_from_slice(b);
                    }
                    self.sent_one(is_error(b));
                    self.held.set(self.held.get() - b.len());
                    slots.pop_front();
                    self.base.set(self.base.get() + 1);
                }
                Slot::Partial(buf) => {
                    self.head_error.set(is_error(buf));
                    if !self.head_muted(false) {
                        out.extend_from_slice(buf);
                    }
                    self.held.set(self.held.get() - buf.len());
                    *buf = BytesMut::new();
                    break;
                }
                Slot::HangUp(why) => {
                    // What is in `out` still leaves; nothing after this slot does.
                    if self.broken.get().is_none() {
                        self.broken.set(Some(*why));
                    }
                    self.closed.set(true);
                    self.muted.borrow_mut().clear();
                    slots.clear();
                    self.held.set(0);
                    break;
                }
                _ => break,
            }
        }
        if slots.is_empty() && slots.capacity() > 256 {
            slots.shrink_to(16);
        }
    }

    /// Give up on the client once it holds more than its limit.
    fn check(&self) {
        let held = self.held();
        if held > self.limit.get() && self.broken.get().is_none() {
            self.give_up(Broken::OverLimit(held));
        }
    }

    /// Drop everything held and ask the session to close the client.
    fn give_up(&self, why: Broken) {
        if self.broken.get().is_none() {
            self.broken.set(Some(why));
        }
        self.close();
        *self.out.borrow_mut() = BytesMut::new();
        self.wake.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_muted_reply_is_dropped_in_its_turn() {
        let p = Pending::default();
        let a = p.push_waiting();
        p.mute_next();
        let b = p.push_waiting();
        p.unmute();
        p.mute_next();
        p.push_ready(b"+local\r\n");
        p.unmute();
        let c = p.push_waiting();
        p.deliver(c, 0, b"+c\r\n");
        p.append(b, 0, b"+b");
        p.deliver(a, 0, b"+a\r\n");
        p.deliver(b, 0, b"\r\n");
        assert_eq!(&p.out.borrow()[..], b"+a\r\n+c\r\n");
        assert_eq!(p.outstanding(), 0);
        p.mute_next();
        p.push_ready(b"+gone\r\n");
        p.unmute();
        p.push_ready(b"+kept\r\n");
        assert_eq!(&p.out.borrow()[..], b"+a\r\n+c\r\n+kept\r\n");
    }

    #[test]
    fn unsolicited_bytes_wait_for_outstanding_replies_and_are_not_counted() {
        let p = Pending::default();
        let a = p.push_waiting();
        assert!(!p.push_unsolicited(b"+line\r\n"));
        p.deliver(a, 0, b"-ERR x\r\n");
        assert!(p.push_unsolicited(b"+line\r\n"));
        p.push_ready(b"+ok\r\n");
        assert_eq!(&p.out.borrow()[..], b"-ERR x\r\n+line\r\n+ok\r\n");
        assert!(p.next_is_error(), "the first reply was the error");
        assert!(!p.next_is_error(), "the line is not a reply");
    }

    #[test]
    fn replies_leave_in_request_order_whatever_order_they_arrive_in() {
        let p = Pending::default();
        let a = p.push_waiting();
        let b = p.push_waiting();
        p.push_ready(b"+local\r\n");
        let c = p.push_waiting();
        p.deliver(c, 0, b"+c\r\n");
        p.deliver(b, 0, b"+b\r\n");
        assert!(
            p.out.borrow().is_empty(),
            "nothing leaves before the first reply"
        );
        p.deliver(a, 0, b"+a\r\n");
        assert_eq!(&p.out.borrow()[..], b"+a\r\n+b\r\n+local\r\n+c\r\n");
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn a_gather_completes_when_its_last_part_arrives() {
        let p = Pending::default();
        let s = p.push_gather(2, Merger::Sum);
        p.deliver(s, 1, b":2\r\n");
        assert!(p.out.borrow().is_empty());
        p.deliver(s, 1, b":5\r\n");
        assert!(
            p.out.borrow().is_empty(),
            "a part delivered twice counts once"
        );
        p.deliver(s, 0, b":3\r\n");
        assert_eq!(&p.out.borrow()[..], b":5\r\n");
    }

    #[test]
    fn error_replies_are_told_in_reply_order() {
        let p = Pending::default();
        let a = p.push_waiting();
        let b = p.push_waiting();
        p.push_ready(b"-ERR local\r\n");
        let c = p.push_waiting();
        p.deliver(c, 0, b"!3\r\nERR\r\n");
        p.deliver(b, 0, b"-WRONGTYPE x\r\n");
        p.deliver(a, 0, b"+a\r\n");
        let d = p.push_gather(2, Merger::First);
        p.deliver(d, 0, b"-ERR part\r\n");
        p.deliver(d, 1, b"+ok\r\n");
        p.push_ready(b":1\r\n");
        let seen: Vec<bool> = (0..6).map(|_| p.next_is_error()).collect();
        assert_eq!(seen, [false, true, true, true, true, false]);
        assert!(!p.next_is_error(), "nothing more was an error");
    }

    #[test]
    fn replies_after_close_are_dropped() {
        let p = Pending::default();
        let a = p.push_waiting();
        p.close();
        p.deliver(a, 0, b"+x\r\n");
        assert!(p.out.borrow().is_empty());
    }

    /// A hang-up behind a reply still waiting closes the client only in its turn: the reply
    /// before it goes out first, nothing after it does.
    #[test]
    fn a_hang_up_closes_the_client_after_the_replies_before_it() {
        let p = Pending::default();
        let a = p.push_waiting();
        let b = p.push_waiting();
        let c = p.push_waiting();
        p.hang_up(b);
        assert_eq!(p.broken(), None, "not before the reply ahead of it");
        p.deliver(c, 0, b"+after\r\n");
        p.deliver(a, 0, b"+before\r\n");
        assert_eq!(p.broken(), Some(Broken::ServerLost));
        assert_eq!(&p.out.borrow()[..], b"+before\r\n");
        p.push_ready(b"+later\r\n");
        assert_eq!(&p.out.borrow()[..], b"+before\r\n", "nothing after it");
    }

    #[test]
    fn pieces_of_a_reply_stream_at_the_head_and_wait_elsewhere() {
        let p = Pending::default();
        let a = p.push_waiting();
        let b = p.push_waiting();
        p.append(b, 0, b"$6\r\nab");
        assert_eq!(p.held(), 6, "a piece behind the head waits and counts");
        p.append(a, 0, b"$3\r\nx");
        assert_eq!(
            &p.out.borrow()[..],
            b"$3\r\nx",
            "a piece at the head leaves"
        );
        p.deliver(a, 0, b"yz\r\n");
        assert_eq!(&p.out.borrow()[..], b"$3\r\nxyz\r\n$6\r\nab");
        p.deliver(b, 0, b"cdef\r\n");
        assert_eq!(&p.out.borrow()[..], b"$3\r\nxyz\r\n$6\r\nabcdef\r\n");
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.held(), p.out.borrow().len(), "nothing left in slots");
    }

    #[test]
    fn replies_held_behind_a_missing_one_count_against_the_limit() {
        let p = Pending::default();
        p.set_limit(10);
        let slow = p.push_waiting();
        let fast = p.push_waiting();
        p.deliver(fast, 0, b"+12345\r\n");
        assert_eq!(p.broken(), None);
        assert_eq!(p.held(), 8);
        let more = p.push_waiting();
        p.append(more, 0, b"$100\r\n");
        assert_eq!(p.broken(), Some(Broken::OverLimit(14)));
        assert_eq!(p.held(), 0, "everything held is dropped at once");
        p.deliver(slow, 0, b"+late\r\n");
        assert!(p.out.borrow().is_empty(), "later replies are dropped");
    }

    #[test]
    fn a_cut_reply_is_replaced_unless_it_started_to_leave() {
        let p = Pending::default();
        let a = p.push_waiting();
        let b = p.push_waiting();
        p.append(b, 0, b"$10\r\n0123");
        p.replace(b, 0, b"-ERR cut\r\n");
        p.deliver(a, 0, b"+a\r\n");
        assert_eq!(&p.out.borrow()[..], b"+a\r\n-ERR cut\r\n");
        assert_eq!(p.broken(), None);
        let c = p.push_waiting();
        p.append(c, 0, b"$10\r\n0123");
        p.replace(c, 0, b"-ERR cut\r\n");
        assert_eq!(
            p.broken(),
            Some(Broken::Cut),
            "the client's stream cannot be mended"
        );
    }
}
