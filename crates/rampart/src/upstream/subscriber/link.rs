//! One shard's subscriber connection of a worker's [`Hub`]: its state, shared with the hub,
//! and its task (connect to the node that serves the shard, subscribe everything, read and
//! fan out messages, send changes, follow the shard's node; see the parent module).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep, Instant};

use super::{Hub, Kind, MAX_OPS, NO_NODE_POLL, RECHECK, RETRY_MAX, RETRY_MIN};
use crate::notify::LocalNotify;
use crate::topology::node::NodeRt;
use crate::topology::PoolRt;
use crate::upstream::dedicated::Lease;

/// One shard's subscriber connection, as state shared with its task.
#[derive(Default)]
pub(super) struct Link {
    /// Subscriptions placed on this shard.
    pub(super) keys: Cell<usize>,
    /// Subscribe (`true`) and unsubscribe changes not yet sent, oldest first (bounded by the
    /// subscriptions and their changes since the last write; cleared on every connect).
    pub(super) ops: RefCell<VecDeque<(Kind, Bytes, bool)>>,
    pub(super) wake: LocalNotify,
    pub(super) running: Cell<bool>,
    /// Changes were dropped (over [`MAX_OPS`]): the connection must start again.
    pub(super) resync: Cell<bool>,
    /// Confirmations (one per name of each command sent) the server still owes.
    pub(super) owed: Cell<usize>,
    /// The names of the subscribe commands sent (one name each) and not answered yet,
    /// oldest first: a server's error answers the first. Cleared on every connect.
    pub(super) asked: RefCell<VecDeque<(Kind, Bytes)>>,
    /// When the server last made progress on `owed` (or it became non-zero).
    pub(super) owed_since: Cell<Option<Instant>>,
    /// Shard channels whose `SUNSUBSCRIBE` was sent and not confirmed yet, with how many
    /// times: a `sunsubscribe` for any other is the server's own (it lost the slot). Cleared
    /// on every connect.
    pub(super) leaving: RefCell<HashMap<Bytes, u32>>,
    /// Connected to its node, everything subscribed.
    pub(super) connected: Cell<bool>,
    /// This link's id in its shard's list of Pub/Sub links
    /// ([`crate::topology::ShardRt::pubsub_link_at`]).
    pub(super) id: u64,
    /// The pool generation whose shard lists this link, with the shard's index.
    pub(super) listed: RefCell<Option<(Arc<PoolRt>, usize)>>,
    /// The node whose confirmations of everything subscribed on connect are awaited: once
    /// none is owed, the shard's list says the link is subscribed there.
    pub(super) awaiting: Cell<Option<u64>>,
}

/// Ids of links, unique in the process.
static NEXT_LINK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Link {
    /// A link with an id of its own and nothing subscribed.
    pub(super) fn new() -> Link {
        Link {
            id: NEXT_LINK.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Link::default()
        }
    }

    /// `n` more confirmations are owed.
    pub(super) fn expect(&self, n: usize) {
        if n > 0 && self.owed.get() == 0 {
            self.owed_since.set(Some(Instant::now()));
        }
        self.owed.set(self.owed.get() + n);
    }

    /// One confirmation arrived.
    pub(super) fn confirmed(&self) {
        self.owed.set(self.owed.get().saturating_sub(1));
        self.owed_since
            .set((self.owed.get() > 0).then(Instant::now));
        if self.owed.get() == 0 {
            self.subscribed();
        }
    }

    /// Connected to `node` of `rt`'s shard `shard`, everything sent: listed there as
    /// subscribing (and taken off the list of an older generation's shard).
    pub(super) fn subscribing(&self, rt: &Arc<PoolRt>, shard: usize, node: u64) {
        let mut listed = self.listed.borrow_mut();
        if let Some((old, i)) = listed.as_ref() {
            if !Arc::ptr_eq(old, rt) || *i != shard {
                if let Some(s) = old.shards.get(*i) {
                    s.pubsub_link_gone(self.id);
                }
            }
        }
        if let Some(s) = rt.shards.get(shard) {
            s.pubsub_link_at(self.id, None);
        }
        *listed = Some((Arc::clone(rt), shard));
        drop(listed);
        self.awaiting.set(Some(node));
        if self.owed.get() == 0 {
            self.subscribed();
        }
    }

    /// Every subscription sent on connect is answered: the shard's list says so.
    pub(super) fn subscribed(&self) {
        let Some(node) = self.awaiting.take() else {
            return;
        };
        if let Some((rt, i)) = self.listed.borrow().as_ref() {
            if let Some(s) = rt.shards.get(*i) {
                s.pubsub_link_at(self.id, Some(node));
            }
        }
    }

    /// Not subscribed anywhere now (its connection failed or broke).
    pub(super) fn unsubscribed(&self) {
        self.awaiting.set(None);
        if let Some((rt, i)) = self.listed.borrow().as_ref() {
            if let Some(s) = rt.shards.get(*i) {
                s.pubsub_link_at(self.id, None);
            }
        }
    }

    /// A new connection owes nothing yet.
    pub(super) fn reset(&self) {
        self.owed.set(0);
        self.owed_since.set(None);
        self.resync.set(false);
        self.leaving.borrow_mut().clear();
        self.asked.borrow_mut().clear();
    }

    /// Whether a `sunsubscribe` for `name` answers one this link sent (else the server
    /// sent it on its own); an answer is counted off.
    pub(super) fn left(&self, name: &[u8]) -> bool {
        let mut leaving = self.leaving.borrow_mut();
        match leaving.get_mut(name) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                leaving.remove(name);
            }
            None => return false,
        }
        true
    }

    /// Queue a change for the server (bounded, see [`MAX_OPS`]).
    pub(super) fn push(&self, kind: Kind, name: Bytes, on: bool) {
        let mut ops = self.ops.borrow_mut();
        if ops.len() >= MAX_OPS {
            ops.clear();
            self.resync.set(true);
        } else if !self.resync.get() {
            ops.push_back((kind, name, on));
        }
        self.wake.notify();
    }

    /// The server owes confirmations and sent none for `limit`: it is stuck.
    pub(super) fn is_stuck(&self, limit: Duration) -> bool {
        self.owed_since.get().is_some_and(|t| t.elapsed() >= limit)
    }
}

/// How a connected link stopped.
enum Stop {
    /// Nothing is subscribed on the shard any more.
    Idle,
    /// The connection failed or its node no longer serves the shard.
    Lost(String),
}

/// One shard's subscriber connection: connect to the node serving the shard, subscribe
/// everything, then read messages and send changes until it breaks or the node is switched
/// away from, and start again; ends when nothing is subscribed on the shard.
pub(super) async fn run_link(hub: Weak<Hub>, link: Rc<Link>, shard: usize) {
    // However the task ends, the link leaves its shard's list.
    struct Unlist(Rc<Link>);
    impl Drop for Unlist {
        fn drop(&mut self) {
            if let Some((rt, i)) = self.0.listed.take() {
                if let Some(s) = rt.shards.get(i) {
                    s.pubsub_link_gone(self.0.id);
                }
            }
        }
    }
    let _unlist = Unlist(Rc::clone(&link));
    let mut delay = RETRY_MIN;
    let mut served = false;
    // While the shard has no node: when the waiting subscriptions were last answered.
    let mut settled: Option<Instant> = None;
    loop {
        let Some(h) = hub.upgrade() else {
            link.running.set(false);
            return;
        };
        if link.keys.get() == 0 {
            link.running.set(false);
            return;
        }
        h.follow_slots();
        let Some((rt, node)) = h.target(shard) else {
            // Looked for often (a look costs no I/O), so the link subscribes on a new
            // primary within a few milliseconds of it being named, before most of the
            // writes held for it (PUBLISH among them) are released there.
            if settled.is_none_or(|t| t.elapsed() >= delay) {
                h.settle_shard(shard);
                h.relocate_channels(shard);
                settled = Some(Instant::now());
                delay = (delay * 2).min(RETRY_MAX);
            }
            drop(h);
            sleep(NO_NODE_POLL).await;
            continue;
        };
        settled = None;
        let mut lease = h.conns.lease_own(&rt, &node);
        link.reset();
        let all = h.everything_on(shard, &link);
        drop(h);
        if let Err(e) = lease.send(&all).await {
            link.unsubscribed();
            tracing::debug!(shard, node = %node.label, "pub/sub: connect failed: {e}");
            if let Some(h) = hub.upgrade() {
                h.settle_shard(shard);
                h.relocate_channels(shard);
            }
            // Tried again after `delay`, or as soon as another node serves the shard (the
            // failed one was a primary a failover is replacing).
            let until = Instant::now() + delay;
            while Instant::now() < until {
                sleep(NO_NODE_POLL).await;
                let moved = hub
                    .upgrade()
                    .and_then(|h| h.target(shard))
                    .is_some_and(|(_, n)| n.id != node.id);
                if moved {
                    break;
                }
            }
            delay = (delay * 2).min(RETRY_MAX);
            continue;
        }
        delay = RETRY_MIN;
        link.subscribing(&rt, shard, node.id);
        if served {
            if let Some(s) = rt.shards.get(shard) {
                s.count_resubscription();
            }
            tracing::info!(
                pool = %rt.conf.name,
                shard = %rt.shards.get(shard).map_or("", |s| s.name.as_str()),
                node = %node.label,
                "pub/sub: resubscribed"
            );
        }
        served = true;
        link.connected.set(true);
        if let Some(h) = hub.upgrade() {
            h.link_up(shard);
        }
        let stop = serve(&hub, &link, shard, &mut lease, &node).await;
        link.connected.set(false);
        link.unsubscribed();
        if let Some(h) = hub.upgrade() {
            h.link_down(shard);
        }
        match stop {
            Stop::Idle => {
                link.running.set(false);
                return;
            }
            Stop::Lost(why) => {
                tracing::info!(shard, node = %node.label, "pub/sub: subscriber connection lost: {why}");
                if let Some(h) = hub.upgrade() {
                    h.settle_shard(shard);
                }
            }
        }
    }
}

/// Read and fan out messages, send queued changes, watch the node.
async fn serve(
    hub: &Weak<Hub>,
    link: &Link,
    shard: usize,
    lease: &mut Lease,
    node: &Arc<NodeRt>,
) -> Stop {
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = link.wake.notified() => {
                if link.resync.get() {
                    return Stop::Lost(format!("more than {MAX_OPS} changes queued; subscribing the current set again"));
                }
                let Some(h) = hub.upgrade() else { return Stop::Idle };
                let out = h.changes(link);
                drop(h);
                if !out.is_empty() {
                    if let Err(e) = lease.send(&out).await {
                        return Stop::Lost(e.to_string());
                    }
                }
                if link.keys.get() == 0 {
                    return Stop::Idle;
                }
            }
            r = lease.reply(None) => match r {
                Ok(frame) => match hub.upgrade() {
                    Some(h) => h.on_frame(shard, frame),
                    None => return Stop::Idle,
                },
                Err(e) => return Stop::Lost(e.to_string()),
            },
            _ = recheck.tick() => {
                let Some(h) = hub.upgrade() else { return Stop::Idle };
                h.follow_slots();
                match h.target(shard) {
                    Some((rt, n)) if n.id == node.id => {
                        if link.is_stuck(rt.timeout()) {
                            return Stop::Lost("no confirmation from the server within the pool timeout".into());
                        }
                        // A reload changed how server connections are opened (AUTH, SELECT,
                        // TLS): request connections were replaced, and so is this one.
                        if !Arc::ptr_eq(&rt, lease.pool()) && !rt.same_connections(lease.pool()) {
                            return Stop::Lost("a reload changed the pool's server connection settings".into());
                        }
                    }
                    _ => return Stop::Lost("its node no longer serves the shard".into()),
                }
            }
        }
    }
}
