//! A pool as one worker sees it: the worker's connections to each node of each shard, the
//! writes held per shard, the read rotation, and the queue of requests its connections gave
//! back for the router to send again.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::observe::stats::WorkerStats;
use crate::topology::node::NodeRt;
use crate::topology::PoolRt;
use crate::upstream::backend::Backend;
use crate::upstream::dedicated::Dedicated;
use crate::upstream::hold::Hold;
use crate::upstream::sink::Retries;

/// One shard as one worker sees it: its connections to the shard's nodes and its held writes.
#[derive(Default)]
pub struct WorkerShard {
    conns: RefCell<Vec<(u64, Vec<Rc<Backend>>)>>,
    /// Writes waiting for a primary.
    pub hold: Hold,
    /// Round-robin position for reads.
    pub rr: Cell<usize>,
}

/// A pool as one worker sees it.
pub struct WorkerPool {
    /// The shared pool.
    pub rt: Arc<PoolRt>,
    /// Per shard, in pool order.
    pub shards: Vec<WorkerShard>,
    /// The worker's number.
    pub worker: usize,
    /// Requests this pool's connections gave back (drained by `route::drain_retries`).
    pub retries: Rc<Retries>,
    /// Connections sessions borrow for themselves (blocking commands); a reload that keeps
    /// the pool's connections keeps these too.
    pub dedicated: Rc<Dedicated>,
    stats: Arc<WorkerStats>,
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.retries.close();
    }
}

impl WorkerPool {
    /// The worker's view of `rt`, with no connection yet.
    pub fn new(rt: Arc<PoolRt>, worker: usize, stats: Arc<WorkerStats>) -> Self {
        WorkerPool {
            shards: rt.shards.iter().map(|_| WorkerShard::default()).collect(),
            rt,
            worker,
            retries: Rc::default(),
            dedicated: Rc::default(),
            stats,
        }
    }

    /// Take the connections of `shard`, per node id (a reload moves them to the new view).
    pub fn take_conns(&self, shard: usize) -> Vec<(u64, Vec<Rc<Backend>>)> {
        self.shards[shard].conns.take()
    }

    /// Give `shard` the connections `conns` to node `node` (moved from an older view).
    pub fn put_conns(&self, shard: usize, node: u64, conns: Vec<Rc<Backend>>) {
        self.shards[shard].conns.borrow_mut().push((node, conns));
    }

    /// The connections of this worker to `node` of `shard`, opened on first use.
    pub fn conns(&self, shard: usize, node: &Arc<NodeRt>) -> Vec<Rc<Backend>> {
        let ws = &self.shards[shard];
        if let Some((_, v)) = ws.conns.borrow().iter().find(|(id, _)| *id == node.id) {
            return v.clone();
        }
        let n = self.rt.conf.server_connections.max(1) as usize;
        let v: Vec<Rc<Backend>> = (0..n)
            .map(|_| {
                Backend::new(
                    Arc::clone(&self.rt),
                    shard,
                    Arc::clone(node),
                    self.worker,
                    Arc::clone(&self.stats),
                )
            })
            .collect();
        ws.conns.borrow_mut().push((node.id, v.clone()));
        v
    }

    /// The connection a client uses for `node`: always the same one for the same client, so
    /// its requests to one node stay in order.
    pub fn backend(&self, shard: usize, node: &Arc<NodeRt>, client: u64) -> Rc<Backend> {
        let ws = &self.shards[shard];
        if let Some((_, v)) = ws.conns.borrow().iter().find(|(id, _)| *id == node.id) {
            return Rc::clone(&v[client as usize % v.len()]);
        }
        let v = self.conns(shard, node);
        Rc::clone(&v[client as usize % v.len()])
    }

    /// Requests this worker has queued or in flight to `node` (for load-aware reads).
    pub fn outstanding(&self, shard: usize, node: &NodeRt) -> usize {
        self.shards[shard]
            .conns
            .borrow()
            .iter()
            .find(|(id, _)| *id == node.id)
            .map(|(_, v)| v.iter().map(|b| b.outstanding()).sum())
            .unwrap_or(0)
    }
}
