//! What one worker thread owns: its backend connections per pool and shard, held writes, its
//! statistics, a scratch read buffer shared by its sessions, and handles to the process-wide
//! state.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::hold::Hold;
use crate::node::NodeRt;
use crate::stats::{Metrics, WorkerStats};
use crate::topology::PoolRt;

/// Size of the per-worker read buffer that sessions read into when they hold no partial request.
pub const SCRATCH: usize = 64 * 1024;

/// State every worker shares (read-only or atomics).
pub struct Shared {
    /// The pools, in config order.
    pub pools: Vec<Arc<PoolRt>>,
    /// All statistics.
    pub metrics: Arc<Metrics>,
    /// When the process started.
    pub started: Instant,
    /// Cancelled when the process begins a graceful shutdown.
    pub shutdown: CancellationToken,
    /// Number of worker threads.
    pub workers: usize,
}

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
    stats: Arc<WorkerStats>,
}

impl WorkerPool {
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

/// One worker thread's context, shared by its sessions through `Rc`.
pub struct Worker {
    /// Worker number.
    pub id: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This worker's statistics.
    pub stats: Arc<WorkerStats>,
    /// Pools, in config order.
    pub pools: Vec<Rc<WorkerPool>>,
    /// Read buffer for sessions that hold no partial request (so idle sessions hold none).
    pub scratch: RefCell<Vec<u8>>,
}

impl Worker {
    /// Build the worker's view; backend connections open lazily (or at once with `preconnect`),
    /// so this must run inside the worker's `LocalSet`.
    pub fn new(id: usize, shared: Arc<Shared>) -> Rc<Self> {
        let stats = shared.metrics.worker(id);
        let pools: Vec<Rc<WorkerPool>> = shared
            .pools
            .iter()
            .map(|p| {
                Rc::new(WorkerPool {
                    rt: Arc::clone(p),
                    shards: p.shards.iter().map(|_| WorkerShard::default()).collect(),
                    worker: id,
                    stats: Arc::clone(&stats),
                })
            })
            .collect();
        for wp in &pools {
            if wp.rt.conf.preconnect {
                for s in &wp.rt.shards {
                    for n in &s.view().nodes {
                        wp.conns(s.index, n);
                    }
                }
            }
        }
        Rc::new(Worker {
            id,
            shared,
            stats,
            pools,
            scratch: RefCell::new(vec![0; SCRATCH]),
        })
    }
}
