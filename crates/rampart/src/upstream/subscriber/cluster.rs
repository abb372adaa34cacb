//! The hub in a Redis Cluster pool: shard channels move with their slot (a node that
//! loses a slot drops its shard channels and says `sunsubscribe` on its own; the hub
//! subscribes them again where the map, read again, places the slot), so do keyspace
//! notification channels (their key's node alone sends them), and channels leave a
//! shard whose node is gone for one that has a node (the cluster broadcasts `PUBLISH` to
//! every node). A pattern is subscribed on every shard (keyspace notifications are each
//! node's own), so a broadcast message matching it arrives once per shard: only one link,
//! the hub's home, passes those on.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{notification, placement, run_link, Hub, Kind, Placement};

/// How often a hub waiting for a new slot table looks (see `Hub::follow_soon`).
const SOON: std::time::Duration = std::time::Duration::from_millis(10);

impl Hub {
    /// Whether a `pmessage` for `channel` read on `shard`'s link goes to the listeners: in
    /// a cluster pool, a notification channel's (`__keyspace@`, `__keyevent@`: sent by one
    /// node only) from any link, any other channel's (broadcast to every node) only from
    /// the home link.
    pub(super) fn passes_pmessage(&self, shard: usize, channel: &[u8]) -> bool {
        let cluster = self
            .pool
            .borrow()
            .upgrade()
            .is_some_and(|wp| wp.rt.cluster.is_some());
        !cluster
            || notification(channel, b"__keyspace@").is_some()
            || notification(channel, b"__keyevent@").is_some()
            || self.home.get() == Some(shard)
    }

    /// `shard`'s link is connected: the home if there is none.
    pub(super) fn link_up(&self, shard: usize) {
        if self.home.get().is_none() {
            self.home.set(Some(shard));
        }
    }

    /// `shard`'s link lost its connection (or ended): another connected link becomes the
    /// home, if any (else the next to connect).
    pub(super) fn link_down(&self, shard: usize) {
        if self.home.get() == Some(shard) {
            let links = self.links.borrow();
            self.home
                .set((0..links.len()).find(|&s| s != shard && links[s].connected.get()));
        }
    }

    /// Ask a cluster pool's follower to read the map again.
    pub(super) fn ask_refresh(&self) {
        if let Some(wp) = self.pool.borrow().upgrade() {
            if let Some(c) = &wp.rt.cluster {
                c.ask_refresh();
            }
        }
    }

    /// A node dropped a shard channel on its own: note the slot table it happened under.
    pub(super) fn note_dropped(&self) {
        if let Some(wp) = self.pool.borrow().upgrade() {
            if let Some(c) = &wp.rt.cluster {
                *self.dropped_under.borrow_mut() = Arc::downgrade(&c.table());
                self.dropped_at.set(Some(std::time::Instant::now()));
            }
        }
    }

    /// `shard`'s node dropped a shard channel on its own: the shard's writes wait until the
    /// dropped channels are subscribed again where the new map places them and confirmed
    /// there ([`crate::topology::PoolRt::hold_while`]); one wait per shard at a time, however
    /// many channels the node dropped.
    pub(super) fn hold_until_resubscribed(self: &Rc<Self>, shard: usize) {
        let Some(wp) = self.pool.borrow().upgrade() else {
            return;
        };
        if !self.holding.borrow_mut().insert(shard) {
            return;
        }
        let rt = Arc::clone(&wp.rt);
        let hub = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            let unplaced = || hub.upgrade().is_some_and(|h| h.shard_channels_unplaced());
            rt.hold_while(shard, unplaced).await;
            if let Some(h) = hub.upgrade() {
                h.holding.borrow_mut().remove(&shard);
            }
        });
    }

    /// Some shard channel of this worker waits to be subscribed again (dropped by its
    /// node) or for its server's confirmation.
    fn shard_channels_unplaced(&self) -> bool {
        self.subs
            .borrow()
            .iter()
            .any(|((kind, _), e)| *kind == Kind::Shard && (e.dropped || !e.unconfirmed.is_empty()))
    }

    /// `shard`'s server redirected a shard channel (`MOVED <slot> ...`, `ASK <slot> ...`;
    /// or said `TRYAGAIN`, `CLUSTERDOWN`): the shard channels of that slot (of every slot
    /// without one) on `shard` are placed again once the map is read again.
    pub(super) fn redirected(self: &Rc<Self>, shard: usize, text: &str) {
        let slot: Option<u16> = text.split(' ').nth(1).and_then(|s| s.parse().ok());
        for ((kind, name), e) in self.subs.borrow_mut().iter_mut() {
            if *kind == Kind::Shard
                && e.shards.contains(&shard)
                && slot.is_none_or(|s| s == hashkit::cluster_slot(name))
            {
                e.dropped = true;
            }
        }
        self.replace.set(true);
        self.ask_refresh();
        self.follow_soon();
    }

    /// Whether the slot table changed since the shard channels were last placed.
    fn table_changed(&self) -> bool {
        let Some(wp) = self.pool.borrow().upgrade() else {
            return false;
        };
        wp.rt.cluster.as_ref().is_some_and(|c| {
            !std::ptr::eq(self.placed_by.borrow().as_ptr(), Arc::as_ptr(&c.table()))
        })
    }

    /// A shard channel was dropped or redirected and the map asked for: place the shard
    /// channels again as soon as the table changes (looked at every [`SOON`], for at most
    /// the pool timeout), rather than at a link's next check, so fewer messages are lost.
    pub(super) fn follow_soon(self: &Rc<Self>) {
        if self.following.replace(true) {
            return;
        }
        let Some(timeout) = self.pool.borrow().upgrade().map(|wp| wp.rt.timeout()) else {
            self.following.set(false);
            return;
        };
        let hub = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            let until = tokio::time::Instant::now() + timeout;
            loop {
                tokio::time::sleep(SOON).await;
                let Some(h) = hub.upgrade() else { return };
                if h.table_changed() || tokio::time::Instant::now() >= until {
                    h.following.set(false);
                    h.follow_slots();
                    return;
                }
            }
        });
    }

    /// In a cluster pool, place the shard channels and the keyspace notification channels
    /// (`__keyspace@<db>__:<key>`, sent only by the key's node) again when the slot table
    /// changed (or a server dropped or redirected one): a channel whose slot now lives on another shard
    /// is subscribed there and left on the old one (unless its node dropped it already);
    /// one dropped by a node that still serves its slot is subscribed there again. A
    /// channel of an uncovered slot stays where it is. One pointer comparison when nothing
    /// changed. In other pools, [`Hub::follow_ring`].
    pub(super) fn follow_slots(self: &Rc<Self>) {
        let Some(wp) = self.pool.borrow().upgrade() else {
            return;
        };
        let Some(cluster) = &wp.rt.cluster else {
            return self.follow_ring(&wp.rt);
        };
        if !self.table_changed() && !self.replace.get() {
            return;
        }
        let table = cluster.table();
        *self.placed_by.borrow_mut() = Arc::downgrade(&table);
        self.replace.set(false);
        // A node drops a shard channel when it loses the slot: placed by the table it was
        // dropped under, it would go back to that node (a replica after a failover, which
        // still takes it and would pass on what the new primary sends the shard, twice with
        // the new primary's own copy). So it waits for a newer table, or the pool timeout.
        let new_table = !std::ptr::eq(self.dropped_under.borrow().as_ptr(), Arc::as_ptr(&table));
        let waited = self
            .dropped_at
            .get()
            .is_none_or(|t| t.elapsed() >= wp.rt.timeout());
        let shard_of = |k: &[u8]| table.shard(hashkit::cluster_slot(k));
        let mut subs = self.subs.borrow_mut();
        for ((kind, name), e) in subs.iter_mut() {
            // Shard channels, and keyspace notification channels (only their key's node
            // sends them), follow their slot; classic channels are heard on any node.
            let keyspace = *kind == Kind::Channel && notification(name, b"__keyspace@").is_some();
            if *kind != Kind::Shard && !keyspace {
                continue;
            }
            let Some(Placement::One(to)) = placement(*kind, name, shard_of) else {
                continue;
            };
            let from = e.shards.first().copied();
            if from == Some(to) {
                if e.dropped && !new_table && !waited {
                    self.replace.set(true);
                } else if std::mem::take(&mut e.dropped) {
                    self.link(to).push(*kind, name.clone(), true);
                    e.unconfirmed = vec![to];
                }
                continue;
            }
            if let Some(f) = from {
                let old = self.link(f);
                old.keys.set(old.keys.get().saturating_sub(1));
                if e.dropped {
                    old.wake.notify();
                } else {
                    old.push(*kind, name.clone(), false);
                }
            }
            tracing::debug!(from, to, "pub/sub: a channel follows its slot");
            e.shards = vec![to];
            e.unconfirmed = vec![to];
            e.dropped = false;
            self.place(to, *kind, name);
        }
    }

    /// Subscribe `name` on `shard`'s link (one more subscription placed there), starting
    /// the link if it is not running.
    pub(super) fn place(self: &Rc<Self>, shard: usize, kind: Kind, name: &Bytes) {
        let link = self.link(shard);
        link.keys.set(link.keys.get() + 1);
        link.push(kind, name.clone(), true);
        if !link.running.replace(true) {
            tokio::task::spawn_local(run_link(Rc::downgrade(self), link, shard));
        }
    }

    /// In a cluster pool, `from`'s link has no node to connect to (its primary killed, the
    /// cluster not yet failed over): its channels go to the link of another shard that has
    /// one, since every node of a cluster hears every `PUBLISH`. Keyspace notification
    /// channels stay (only their key's node sends them), as do shard channels and patterns.
    pub(super) fn relocate_channels(self: &Rc<Self>, from: usize) {
        let Some(wp) = self.pool.borrow().upgrade() else {
            return;
        };
        if wp.rt.cluster.is_none() {
            return;
        }
        let n = wp.rt.shards.len();
        let Some(to) = (1..n)
            .map(|i| (from + i) % n)
            .find(|&s| self.target(s).is_some())
        else {
            return;
        };
        let mut moved = Vec::new();
        for ((kind, name), e) in self.subs.borrow_mut().iter_mut() {
            if *kind == Kind::Channel
                && e.shards == [from]
                && notification(name, b"__keyspace@").is_none()
            {
                e.shards = vec![to];
                e.unconfirmed.clear();
                moved.push(name.clone());
            }
        }
        if moved.is_empty() {
            return;
        }
        let old = self.link(from);
        old.keys.set(old.keys.get().saturating_sub(moved.len()));
        tracing::info!(
            pool = %wp.rt.conf.name,
            from = %wp.rt.shards.get(from).map_or("", |s| s.name.as_str()),
            to = %wp.rt.shards.get(to).map_or("", |s| s.name.as_str()),
            channels = moved.len(),
            "pub/sub: channels moved to a shard with a node (the cluster broadcasts PUBLISH)"
        );
        for name in &moved {
            self.place(to, Kind::Channel, name);
        }
    }
}
