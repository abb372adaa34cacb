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
use crate::upstream::subscriber::Hub;

/// The bit of a client key (see [`client_key`]) that says the client speaks RESP3.
pub const RESP3_CLIENT: u64 = 1 << 63;

/// The key a session routes by: its id, with [`RESP3_CLIENT`] set when it speaks RESP3.
/// The id picks the connection among `server_connections`; the bit picks the connections
/// that said `HELLO 3`, so Redis shapes the replies for the protocol the client speaks.
pub fn client_key(id: u64, resp3: bool) -> u64 {
    if resp3 {
        id | RESP3_CLIENT
    } else {
        id & !RESP3_CLIENT
    }
}

/// Connections per node id: `server_connections` of them for each node.
type NodeConns = RefCell<Vec<(u64, Vec<Rc<Backend>>)>>;

/// One shard as one worker sees it: its connections to the shard's nodes and its held writes.
#[derive(Default)]
pub struct WorkerShard {
    conns: NodeConns,
    /// RESP3 connections (`HELLO 3`) per node, opened only when a RESP3 client needs one.
    conns3: NodeConns,
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
    /// Connections sessions borrow for themselves (WATCH, blocking commands); kept across
    /// reloads, which close those made with settings of the pool that changed (see
    /// [`Dedicated::adopt`]).
    pub dedicated: Rc<Dedicated>,
    /// The worker's Pub/Sub subscriptions for this pool and their subscriber connections;
    /// kept across reloads (it follows the newest view of the pool).
    pub pubsub: Rc<Hub>,
    stats: Arc<WorkerStats>,
}

impl WorkerShard {
    fn list(&self, resp3: bool) -> &NodeConns {
        if resp3 {
            &self.conns3
        } else {
            &self.conns
        }
    }
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
            pubsub: Rc::default(),
            stats,
        }
    }

    /// Take the connections of `shard` (RESP3 ones with `resp3`), per node id (a reload
    /// moves them to the new view).
    pub fn take_conns(&self, shard: usize, resp3: bool) -> Vec<(u64, Vec<Rc<Backend>>)> {
        self.shards[shard].list(resp3).take()
    }

    /// Give `shard` the connections `conns` to node `node` (moved from an older view).
    pub fn put_conns(&self, shard: usize, node: u64, conns: Vec<Rc<Backend>>, resp3: bool) {
        self.shards[shard]
            .list(resp3)
            .borrow_mut()
            .push((node, conns));
    }

    /// The connections of this worker to `node` of `shard` (RESP3 ones with `resp3`),
    /// opened on first use.
    pub fn conns(&self, shard: usize, node: &Arc<NodeRt>, resp3: bool) -> Vec<Rc<Backend>> {
        let list = self.shards[shard].list(resp3);
        if let Some((_, v)) = list.borrow().iter().find(|(id, _)| *id == node.id) {
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
                    resp3,
                )
            })
            .collect();
        list.borrow_mut().push((node.id, v.clone()));
        v
    }

    /// The connection a client uses for `node`: always the same one for the same client key
    /// ([`client_key`]), so its requests to one node stay in order.
    pub fn backend(&self, shard: usize, node: &Arc<NodeRt>, client: u64) -> Rc<Backend> {
        let resp3 = client & RESP3_CLIENT != 0;
        let slot = |v: &[Rc<Backend>]| Rc::clone(&v[(client & !RESP3_CLIENT) as usize % v.len()]);
        let list = self.shards[shard].list(resp3);
        if let Some((_, v)) = list.borrow().iter().find(|(id, _)| *id == node.id) {
            return slot(v);
        }
        slot(&self.conns(shard, node, resp3))
    }

    /// Requests this worker has queued or in flight to `node`, both protocols (for
    /// load-aware reads).
    pub fn outstanding(&self, shard: usize, node: &NodeRt) -> usize {
        let ws = &self.shards[shard];
        [&ws.conns, &ws.conns3]
            .iter()
            .flat_map(|l| {
                l.borrow()
                    .iter()
                    .filter(|(id, _)| *id == node.id)
                    .map(|(_, v)| v.iter().map(|b| b.outstanding()).sum::<usize>())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}
