//! Writes held while a shard has no primary that may take them.
//!
//! During a failover there is a window in which the old primary is gone (or demoted) and the
//! new one is not yet confirmed. Writes that arrive then, and writes refused with `READONLY`
//! (which Redis did not apply), wait here in arrival order, bounded by the pool's
//! `failover_hold` time and `failover_hold_bytes`, and are released in order to the new primary
//! as soon as there is one. Past either bound they fail with an error. Writes that may already
//! have reached a server are never held: they fail (see the backend).
//!
//! A read of a client whose write waits here waits behind it (and goes to the primary with
//! it), as one Redis connection runs its commands in order: `SET k v` then `GET k` pipelined
//! during a switchover must not read before the `SET` it follows.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::upstream::error::Failure;
use crate::upstream::sink::Sink;

static ENTERED: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static HELD_US: AtomicU64 = AtomicU64::new(0);

/// Process-wide hold statistics: writes that entered a hold, were released to a primary,
/// failed there (time or bytes bound, or a dead shard), and the total time released writes
/// spent held (µs).
pub fn stats() -> (u64, u64, u64, u64) {
    (
        ENTERED.load(Ordering::Relaxed),
        RELEASED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        HELD_US.load(Ordering::Relaxed),
    )
}

/// One held write. Its bytes and client travel in the sink's [`crate::upstream::sink::Resend`],
/// which every held write has (it may need to be held again on READONLY).
pub struct Held {
    /// Where its reply goes.
    pub sink: Sink,
    /// When it fails if no primary appears.
    pub until: Instant,
}

impl Held {
    /// The request bytes.
    pub fn bytes(&self) -> &[u8] {
        self.sink
            .resend
            .as_ref()
            .map_or(&[], |r| r.bytes.as_slice())
    }
    /// The client (keeps its connection choice).
    pub fn client(&self) -> u64 {
        self.sink.resend.as_ref().map_or(0, |r| r.client)
    }

    /// A write (not a read held behind its client's write).
    pub fn is_write(&self) -> bool {
        self.sink.resend.as_ref().is_none_or(|r| r.write)
    }

    /// The write leaves the hold (or could not enter it) unsent: answer `failure` (a
    /// [`Failure::HoldFull`], [`Failure::HoldExpired`] or [`Failure::NoPrimary`]) and count it.
    pub fn fail(self, failure: Failure) {
        FAILED.fetch_add(1, Ordering::Relaxed);
        self.sink.fail(failure);
    }
}

/// The held writes of one shard on one worker.
#[derive(Default)]
pub struct Hold {
    q: RefCell<VecDeque<Held>>,
    bytes: Cell<usize>,
    running: Cell<bool>,
    /// How many held requests each client has here (a client's later reads wait too).
    clients: RefCell<HashMap<u64, u32>>,
}

impl Hold {
    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.q.borrow().is_empty()
    }

    /// Hold a write; gives it back when the byte bound would be exceeded.
    ///
    /// # Errors
    /// The hold is full; the caller answers an error.
    pub fn push(&self, h: Held, cap: u64) -> Result<(), Held> {
        let n = self.bytes.get() + h.bytes().len();
        if n as u64 > cap {
            return Err(h);
        }
        ENTERED.fetch_add(1, Ordering::Relaxed);
        self.bytes.set(n);
        self.count(h.client(), true);
        self.q.borrow_mut().push_back(h);
        Ok(())
    }

    /// Whether `client` has a request held here.
    pub fn holds_client(&self, client: u64) -> bool {
        self.clients.borrow().contains_key(&client)
    }

    fn count(&self, client: u64, more: bool) {
        let mut c = self.clients.borrow_mut();
        if more {
            *c.entry(client).or_insert(0) += 1;
        } else if let Some(n) = c.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                c.remove(&client);
            }
        }
        if c.is_empty() && c.capacity() > 64 {
            c.shrink_to(0);
        }
    }

    /// Move every held write, in order, behind those `to` holds: `to` is the same shard in
    /// the generation of the pool a reload published, whose view and hold decide from now on
    /// where the writes go (the old generation's view no longer follows failovers).
    pub fn move_to(&self, to: &Hold) {
        let q = std::mem::take(&mut *self.q.borrow_mut());
        to.bytes.set(to.bytes.get() + self.bytes.replace(0));
        for (client, n) in std::mem::take(&mut *self.clients.borrow_mut()) {
            *to.clients.borrow_mut().entry(client).or_insert(0) += n;
        }
        to.q.borrow_mut().extend(q);
    }

    /// Put back a write that could not be released yet, in front.
    pub fn push_front(&self, h: Held) {
        self.bytes.set(self.bytes.get() + h.bytes().len());
        self.count(h.client(), true);
        self.q.borrow_mut().push_front(h);
    }

    /// The oldest held write.
    pub fn pop(&self) -> Option<Held> {
        let h = self.q.borrow_mut().pop_front()?;
        self.bytes
            .set(self.bytes.get().saturating_sub(h.bytes().len()));
        self.count(h.client(), false);
        Some(h)
    }

    /// When the oldest held write fails if no primary appears.
    pub fn first_until(&self) -> Option<Instant> {
        self.q.borrow().front().map(|h| h.until)
    }

    /// Mark the hold as having a releasing task; `false` when one already runs.
    pub fn start_releaser(&self) -> bool {
        !self.running.replace(true)
    }

    /// The releasing task ends (the hold is empty).
    pub fn stop_releaser(&self) {
        self.running.set(false);
    }
}

/// A held write left the hold unsent for the spool (or its error when the spool refused
/// it), or for a fail-open pool's answer.
pub fn count_spooled() {
    FAILED.fetch_add(1, Ordering::Relaxed);
}

/// A held write was released to a primary after waiting since `since`.
pub fn count_released(since: Instant) {
    RELEASED.fetch_add(1, Ordering::Relaxed);
    HELD_US.fetch_add(
        Instant::now().saturating_duration_since(since).as_micros() as u64,
        Ordering::Relaxed,
    );
}
