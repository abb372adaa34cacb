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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::notify::LocalNotify;
use crate::reply::merge::Merger;

/// The state of one request's reply.
enum Slot {
    /// Sent somewhere, no reply yet.
    Waiting,
    /// Complete reply, waiting for earlier replies to leave first.
    Ready(Bytes),
    /// Fragments of a split request.
    Gather(Box<Gather>),
}

struct Gather {
    parts: Vec<Option<Bytes>>,
    remaining: usize,
    merger: Merger,
}

/// Reply queue shared by a session and the backends working for it (same thread).
#[derive(Default)]
pub struct Pending {
    slots: RefCell<VecDeque<Slot>>,
    base: Cell<u64>,
    /// Replies ready to be written to the client, in order.
    pub out: RefCell<BytesMut>,
    /// Wakes the session when `out` gained bytes.
    pub wake: LocalNotify,
    closed: Cell<bool>,
    /// Replies moved to `out` so far.
    sent: Cell<u64>,
    /// Replies whose verdict [`Pending::next_is_error`] has given so far.
    counted: Cell<u64>,
    /// Positions (in `sent` order) of the error replies not yet counted, oldest first.
    errors: RefCell<VecDeque<u64>>,
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
    fn sent_one(&self, reply: &[u8]) {
        let n = self.sent.get();
        self.sent.set(n + 1);
        if is_error(reply) {
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

    /// The session is gone: later replies are dropped.
    pub fn close(&self) {
        self.closed.set(true);
        self.slots.borrow_mut().clear();
    }

    /// Reserve a slot for a reply that one backend will deliver; returns its sequence number.
    pub fn push_waiting(&self) -> u64 {
        let mut slots = self.slots.borrow_mut();
        slots.push_back(Slot::Waiting);
        self.base.get() + slots.len() as u64 - 1
    }

    /// Reserve a slot whose reply is merged from `parts` fragments.
    pub fn push_gather(&self, parts: usize, merger: Merger) -> u64 {
        let mut slots = self.slots.borrow_mut();
        slots.push_back(Slot::Gather(Box::new(Gather {
            parts: vec![None; parts],
            remaining: parts,
            merger,
        })));
        self.base.get() + slots.len() as u64 - 1
    }

    /// A reply known at once (local commands, errors found before forwarding).
    pub fn push_ready(&self, reply: &[u8]) {
        let mut slots = self.slots.borrow_mut();
        if slots.is_empty() {
            self.out.borrow_mut().extend_from_slice(reply);
            self.sent_one(reply);
        } else {
            slots.push_back(Slot::Ready(Bytes::copy_from_slice(reply)));
        }
    }

    /// Deliver the reply (or part `part` of it) of request `seq`.
    pub fn deliver(&self, seq: u64, part: u32, reply: &[u8]) {
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
            Slot::Waiting if idx == 0 => {
                self.out.borrow_mut().extend_from_slice(reply);
                self.sent_one(reply);
                slots.pop_front();
                self.base.set(self.base.get() + 1);
                self.pump(&mut slots);
                self.wake.notify();
            }
            Slot::Waiting => *slot = Slot::Ready(Bytes::copy_from_slice(reply)),
            Slot::Gather(g) => {
                let Some(p) = g.parts.get_mut(part as usize) else {
                    return;
                };
                if p.is_none() {
                    *p = Some(Bytes::copy_from_slice(reply));
                    g.remaining -= 1;
                }
                if g.remaining == 0 {
                    let parts = std::mem::take(&mut g.parts);
                    let merger = std::mem::replace(&mut g.merger, Merger::First);
                    let merged = merger.merge(parts.into_iter().flatten().collect());
                    *slot = Slot::Ready(merged);
                    if idx == 0 {
                        self.pump(&mut slots);
                        self.wake.notify();
                    }
                }
            }
            Slot::Ready(_) => {}
        }
    }

    /// Move every complete reply at the head of the queue into `out`.
    fn pump(&self, slots: &mut VecDeque<Slot>) {
        let mut out = self.out.borrow_mut();
        while let Some(Slot::Ready(b)) = slots.front() {
            out.extend_from_slice(b);
            self.sent_one(b);
            slots.pop_front();
            self.base.set(self.base.get() + 1);
        }
        if slots.is_empty() && slots.capacity() > 256 {
            slots.shrink_to(16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
