//! What one worker thread owns: its backend connections per pool and shard, held writes, its
//! statistics, a scratch read buffer shared by its sessions, and handles to the process-wide
//! state.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::observe::stats::WorkerStats;
use crate::topology::Shared;
use crate::upstream::pool::WorkerPool;

/// Size of the per-worker read buffer that sessions read into when they hold no partial request.
pub const SCRATCH: usize = 64 * 1024;

/// One worker thread's context, shared by its sessions through `Rc`.
pub struct Worker {
    /// Worker number.
    pub id: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This worker's statistics.
    pub stats: Arc<WorkerStats>,
    pools: RefCell<Vec<Rc<WorkerPool>>>,
    generation: Cell<u64>,
    /// Read buffer for sessions that hold no partial request (so idle sessions hold none).
    pub scratch: RefCell<Vec<u8>>,
}

impl Worker {
    /// Build the worker's view; backend connections open lazily (or at once with `preconnect`),
    /// so this must run inside the worker's `LocalSet`.
    pub fn new(id: usize, shared: Arc<Shared>) -> Rc<Self> {
        let stats = shared.metrics.worker(id);
        let w = Rc::new(Worker {
            id,
            shared,
            stats,
            pools: RefCell::new(Vec::new()),
            generation: Cell::new(u64::MAX),
            scratch: RefCell::new(vec![0; SCRATCH]),
        });
        w.refresh();
        w
    }

    /// The configuration generation this worker serves.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// A reload published pools this worker has not adopted yet.
    #[inline]
    pub fn is_stale(&self) -> bool {
        self.shared.generation.load(Ordering::Acquire) != self.generation.get()
    }

    /// The worker's view of the pool called `name` in the current generation.
    pub fn pool(&self, name: &str) -> Option<Rc<WorkerPool>> {
        self.pools
            .borrow()
            .iter()
            .find(|p| p.rt.conf.name == name)
            .cloned()
    }

    /// Catch up with a reload: new pool views; connections to nodes that stayed move over
    /// (a client keeps its connections and their order); the others finish and close.
    pub fn refresh(&self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g == self.generation.get() {
            return;
        }
        let current = self.shared.pools.load_full();
        let old = self.pools.take();
        let mut built = Vec::with_capacity(current.len());
        for p in current.iter() {
            let mut wp = WorkerPool::new(Arc::clone(p), self.id, Arc::clone(&self.stats));
            // Connections move over only when they were opened the way this generation opens
            // them (same AUTH, database, keepalive, count); otherwise they finish what is
            // queued and close, and new ones open on first use.
            let same = |o: &&Rc<WorkerPool>| o.rt.conf.name == p.conf.name;
            // Subscriptions outlive reloads: the hub follows the new view. So do dedicated
            // connections and their count, but only those opened the way this generation
            // opens them serve again (the others close, idle ones now).
            if let Some(o) = old.iter().find(same) {
                wp.pubsub = Rc::clone(&o.pubsub);
                wp.dedicated = Rc::clone(&o.dedicated);
            }
            wp.dedicated.adopt(p);
            if let Some(o) = old.iter().find(same).filter(|o| o.rt.same_connections(p)) {
                for os in 0..o.shards.len() {
                    for resp3 in [false, true] {
                        for (node, conns) in o.take_conns(os, resp3) {
                            let home = p
                                .shards
                                .iter()
                                .position(|s| s.view().nodes.iter().any(|n| n.id == node));
                            match home {
                                Some(si) => {
                                    for b in &conns {
                                        b.adopt(Arc::clone(p), si);
                                    }
                                    wp.put_conns(si, node, conns, resp3);
                                }
                                None => conns.iter().for_each(|b| b.retire()),
                            }
                        }
                    }
                }
            }
            if wp.rt.conf.preconnect {
                for s in &wp.rt.shards {
                    for n in &s.view().nodes {
                        wp.conns(s.index, n, false);
                    }
                }
            }
            // Writes held for a primary wait in the new generation, which follows failovers
            // from now on; left in the old one they would go to its last view's primary.
            let mut held = Vec::new();
            if let Some(o) = old.iter().find(same) {
                for (si, s) in p.shards.iter().enumerate() {
                    if let Some(os) = o.rt.shards.iter().position(|x| x.name == s.name) {
                        if !o.shards[os].hold.is_empty() {
                            o.shards[os].hold.move_to(&wp.shards[si].hold);
                            held.push(si);
                        }
                    }
                }
            }
            let wp = Rc::new(wp);
            for si in held {
                crate::upstream::route::ensure_releaser(&wp, si);
            }
            wp.pubsub.adopt(Rc::downgrade(&wp));
            tokio::task::spawn_local(crate::upstream::route::drain_retries(Rc::downgrade(&wp)));
            built.push(wp);
        }
        for o in &old {
            for os in 0..o.shards.len() {
                for resp3 in [false, true] {
                    for (_, conns) in o.take_conns(os, resp3) {
                        conns.iter().for_each(|b| b.retire());
                    }
                }
            }
        }
        *self.pools.borrow_mut() = built;
        self.generation.set(g);
    }
}
