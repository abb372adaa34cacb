//! Writes held while a shard has no primary that may take them.
//!
//! During a failover there is a window in which the old primary is gone (or demoted) and the
//! new one is not yet confirmed. Writes that arrive then, and writes refused with `READONLY`
//! (which Redis did not apply), wait here in arrival order, bounded by the pool's
//! `failover_hold` time and `failover_hold_bytes`, and are released in order to the new primary
//! as soon as there is one. Past either bound they fail with an error. Writes that may already
//! have reached a server are never held: they fail (see the backend).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::backend::Sink;
use crate::worker::WorkerPool;

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

/// A write left the hold with an error.
pub fn count_failed() {
    FAILED.fetch_add(1, Ordering::Relaxed);
}

/// One held write. Its bytes and client travel in the sink's [`crate::backend::Resend`],
/// which every held write has (it may need to be held again on READONLY).
pub struct Held {
    /// Where its reply goes.
    pub sink: Sink,
    /// When it fails if no primary appears.
    pub until: Instant,
}

impl Held {
    /// The request bytes.
    fn bytes(&self) -> &[u8] {
        self.sink
            .resend
            .as_ref()
            .map_or(&[], |r| r.bytes.as_slice())
    }
    /// The client (keeps its connection choice).
    fn client(&self) -> u64 {
        self.sink.resend.as_ref().map_or(0, |r| r.client)
    }
}

/// The held writes of one shard on one worker.
#[derive(Default)]
pub struct Hold {
    q: RefCell<VecDeque<Held>>,
    bytes: Cell<usize>,
    running: Cell<bool>,
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
        self.q.borrow_mut().push_back(h);
        Ok(())
    }

    fn push_front(&self, h: Held) {
        self.bytes.set(self.bytes.get() + h.bytes().len());
        self.q.borrow_mut().push_front(h);
    }

    fn pop(&self) -> Option<Held> {
        let h = self.q.borrow_mut().pop_front()?;
        self.bytes
            .set(self.bytes.get().saturating_sub(h.bytes().len()));
        Some(h)
    }
}

/// Make sure a task releases (or expires) the held writes of `shard`.
pub fn ensure_releaser(wp: &Rc<WorkerPool>, shard: usize) {
    let hold = &wp.shards[shard].hold;
    if hold.running.replace(true) {
        return;
    }
    tokio::task::spawn_local(release(Rc::clone(wp), shard));
}

async fn release(wp: Rc<WorkerPool>, shard: usize) {
    let tick = Duration::from_millis(2);
    loop {
        tokio::time::sleep(tick).await;
        let hold = &wp.shards[shard].hold;
        let rt = &wp.rt.shards[shard];
        let view = rt.view();
        if let Some(primary) = rt.write_target(&view) {
            let deadline = Instant::now() + wp.rt.timeout();
            while let Some(h) = hold.pop() {
                let backend = wp.backend(shard, primary, h.client());
                // The sink moves into the queue; the bytes stay with it for a later READONLY.
                let bytes = h.bytes().to_vec();
                let Held { sink, until } = h;
                if let Err((sink, _)) =
                    backend.send_or_return(sink, deadline, |out| out.extend_from_slice(&bytes))
                {
                    // The primary is in connect back-off: keep the write, in front, and try
                    // again on a later tick (or fail it when its time is up, below).
                    hold.push_front(Held { sink, until });
                    break;
                }
                RELEASED.fetch_add(1, Ordering::Relaxed);
                let since = until.checked_sub(wp.rt.conf.failover_hold).unwrap_or(until);
                HELD_US.fetch_add(
                    Instant::now().saturating_duration_since(since).as_micros() as u64,
                    Ordering::Relaxed,
                );
            }
        }
        {
            let now = Instant::now();
            let hopeless = crate::route::hold_is_hopeless(&wp, shard);
            while hold
                .q
                .borrow()
                .front()
                .is_some_and(|h| hopeless || h.until <= now)
            {
                if let Some(h) = hold.pop() {
                    FAILED.fetch_add(1, Ordering::Relaxed);
                    let down = crate::route::primary_down(&wp.rt, shard);
                    let msg = if hopeless {
                        format!(
                            "-ERR rampart: shard '{}' has no primary available: {}; the write was not sent\r\n",
                            rt.name,
                            down.as_deref().unwrap_or("it is down")
                        )
                    } else {
                        format!(
                            "-ERR rampart: shard '{}' has no primary; the write was not sent (failover_hold {:?} passed{})\r\n",
                            rt.name,
                            wp.rt.conf.failover_hold,
                            down.map(|d| format!("; {d}")).unwrap_or_default()
                        )
                    };
                    h.sink
                        .pending
                        .deliver(h.sink.seq, h.sink.part, msg.as_bytes());
                }
            }
        }
        if hold.is_empty() {
            hold.running.set(false);
            return;
        }
    }
}
