//! What one worker thread owns: its backend connections per pool and shard, held writes, its
//! statistics, a scratch read buffer shared by its sessions, and handles to the process-wide
//! state.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::hold::Hold;
use crate::node::NodeRt;
use crate::stats::{Metrics, WorkerStats};
use crate::topology::PoolRt;

/// Size of the per-worker read buffer that sessions read into when they hold no partial request.
pub const SCRATCH: usize = 64 * 1024;

/// State every worker shares (read-only, atomics, or published snapshots).
pub struct Shared {
    /// The pools of the current configuration, in config order; replaced whole by a reload.
    pub pools: ArcSwap<Vec<Arc<PoolRt>>>,
    /// Bumped after each reload publishes new pools; workers compare it once per read batch.
    pub generation: AtomicU64,
    /// The configuration file, for reloads.
    pub config_path: Option<PathBuf>,
    /// Listeners, health checks and Sentinel followers, changed by reloads.
    pub control: tokio::sync::Mutex<Option<crate::control::Control>>,
    /// Statistics slot of each pool name ever configured (index = slot).
    pub slots: std::sync::Mutex<Vec<String>>,
    /// Reloads attempted.
    pub reloads: AtomicU64,
    /// Reloads refused (invalid file, bind error, unforced ring change).
    pub reload_failures: AtomicU64,
    /// Outcome of the last reload.
    pub last_reload: std::sync::Mutex<String>,
    /// All statistics.
    pub metrics: Arc<Metrics>,
    /// When the process started.
    pub started: Instant,
    /// Cancelled when the process begins a graceful shutdown.
    pub shutdown: CancellationToken,
    /// Number of worker threads.
    pub workers: usize,
}

impl Shared {
    /// The statistics slot of pool `name` (a new one for a name never seen).
    ///
    /// # Errors
    /// More than [`crate::stats::MAX_POOLS`] pool names over the life of the process.
    pub fn pool_slot(&self, name: &str) -> anyhow::Result<usize> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| anyhow::anyhow!("slot table poisoned"))?;
        if let Some(i) = slots.iter().position(|n| n == name) {
            return Ok(i);
        }
        if slots.len() >= crate::stats::MAX_POOLS {
            anyhow::bail!(
                "more than {} pools over the life of the process",
                crate::stats::MAX_POOLS
            );
        }
        slots.push(name.to_string());
        Ok(slots.len() - 1)
    }
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
            let wp = WorkerPool {
                rt: Arc::clone(p),
                shards: p.shards.iter().map(|_| WorkerShard::default()).collect(),
                worker: self.id,
                stats: Arc::clone(&self.stats),
            };
            if let Some(o) = old.iter().find(|o| o.rt.conf.name == p.conf.name) {
                for os in &o.shards {
                    for (node, conns) in os.conns.take() {
                        let home = p
                            .shards
                            .iter()
                            .position(|s| s.view().nodes.iter().any(|n| n.id == node));
                        match home {
                            Some(si) => {
                                for b in &conns {
                                    b.adopt(Arc::clone(p), si);
                                }
                                wp.shards[si].conns.borrow_mut().push((node, conns));
                            }
                            None => conns.iter().for_each(|b| b.retire()),
                        }
                    }
                }
            }
            if wp.rt.conf.preconnect {
                for s in &wp.rt.shards {
                    for n in &s.view().nodes {
                        wp.conns(s.index, n);
                    }
                }
            }
            built.push(Rc::new(wp));
        }
        for o in &old {
            for os in &o.shards {
                for (_, conns) in os.conns.take() {
                    conns.iter().for_each(|b| b.retire());
                }
            }
        }
        *self.pools.borrow_mut() = built;
        self.generation.set(g);
    }
}
