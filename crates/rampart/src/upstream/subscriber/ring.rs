//! The hub in a pool placed by its ring: with `auto_eject_hosts`, an ejected server's keys
//! live on another server until it is put back, and so do the channels named like them (a
//! reload may move them too). A subscription whose place changed is subscribed on its new
//! shard and left on the old one, so PUBLISH, placed by the same ring, still meets it.

use std::rc::Rc;
use std::sync::Arc;

use super::{placement, Hub, Kind, Placement};
use crate::topology::PoolRt;

impl Hub {
    /// Place channels and shard channels again when `rt`'s ring changed since they were
    /// last placed. One pointer comparison when it did not.
    pub(super) fn follow_ring(self: &Rc<Self>, rt: &PoolRt) {
        if rt.conf.distribution == hashkit::Distribution::Random {
            // Every channel is on every shard (see `session::pubsub`).
            return;
        }
        let ring = rt.ring();
        if std::ptr::eq(self.placed_ring.borrow().as_ptr(), Arc::as_ptr(&ring)) {
            return;
        }
        *self.placed_ring.borrow_mut() = Arc::downgrade(&ring);
        let shard_of = |k: &[u8]| ring.dispatch(rt.key_hash(k));
        let mut moves = Vec::new();
        for ((kind, name), e) in self.subs.borrow_mut().iter_mut() {
            if *kind == Kind::Pattern || e.shards.len() != 1 {
                continue;
            }
            let Some(Placement::One(to)) = placement(*kind, name, shard_of) else {
                continue;
            };
            let from = e.shards[0];
            if from == to {
                continue;
            }
            e.shards = vec![to];
            e.unconfirmed.clear();
            moves.push((*kind, name.clone(), from, to));
        }
        if !moves.is_empty() {
            tracing::info!(
                pool = %rt.conf.name,
                subscriptions = moves.len(),
                "pub/sub: subscriptions follow the ring to their keys' new servers"
            );
        }
        for (kind, name, from, to) in moves {
            let old = self.link(from);
            old.keys.set(old.keys.get().saturating_sub(1));
            old.push(kind, name.clone(), false);
            self.place(to, kind, &name);
        }
    }
}
