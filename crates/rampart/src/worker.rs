//! What one worker thread owns: its backend connections per pool, its statistics, a scratch
//! read buffer shared by its sessions, and the handles to the process-wide state.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
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

/// A pool as one worker sees it: the shared pool plus this worker's connections to its servers.
pub struct WorkerPool {
    /// The shared pool.
    pub rt: Arc<PoolRt>,
    /// `backends[server][i]`, `server_connections` per server.
    pub backends: Vec<Vec<Rc<Backend>>>,
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
        let pools = shared
            .pools
            .iter()
            .map(|p| {
                let conns = p.conf.server_connections.max(1) as usize;
                Rc::new(WorkerPool {
                    rt: Arc::clone(p),
                    backends: (0..p.servers.len())
                        .map(|s| {
                            (0..conns)
                                .map(|_| Backend::new(Arc::clone(p), s, Arc::clone(&stats)))
                                .collect()
                        })
                        .collect(),
                })
            })
            .collect();
        Rc::new(Worker {
            id,
            shared,
            stats,
            pools,
            scratch: RefCell::new(vec![0; SCRATCH]),
        })
    }
}
