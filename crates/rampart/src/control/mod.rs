//! The control plane: listeners ([`listen`]), health checks, Sentinel followers, and
//! configuration reload ([`reload`]).
//!
//! It runs on the main thread's runtime. One acceptor task per listen address enforces the
//! pool's `client_connections` (answering Redis' own error to the one over the limit), backs
//! off when the process runs out of file descriptors instead of spinning, and hands each
//! accepted socket to a worker in turn. A reload (SIGHUP or the admin API) reads the file
//! again, builds and validates a whole new set of pools (nodes that stay keep their state and
//! connections), binds new listeners, and only then publishes it with one atomic swap; any
//! error leaves the running configuration untouched. In the background it checks what the
//! backend user of each pool may run ([`rights`]).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use rampart_config::Listen;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::topology::node::NodeRt;
use crate::topology::PoolRt;
use crate::topology::Shared;

pub mod listen;
pub mod reload;
pub mod rights;

use crate::control::listen::{accept_loop, bind_one, listens, Handoff, Listener, Serves};

/// A listener's accept loop, with its socket and what it serves.
struct Running {
    task: JoinHandle<()>,
    /// The bound socket, shared with the accept loop: a reload that gives the address to
    /// another pool or role restarts the loop on the same socket instead of binding again.
    listener: Arc<Listener>,
    /// The pool and role it accepts for.
    pool: Arc<str>,
    serves: Serves,
}

/// The running control plane, shared by whoever may reload it (the signal handler, the admin
/// API); `None` once shutdown has begun.
pub type Handle = Arc<tokio::sync::Mutex<Option<Control>>>;

/// Everything the control plane started, so a reload can change it.
pub struct Control {
    handoff: Handoff,
    workers: usize,
    stop: CancellationToken,
    /// Listener tasks by address.
    listeners: HashMap<String, Running>,
    /// Client budget per pool name (shared by its listeners, kept across reloads).
    counts: HashMap<String, Arc<AtomicUsize>>,
    /// Health-check tasks by node id (pools without Sentinel), with the pool whose settings
    /// they run with.
    checks: HashMap<u64, (CancellationToken, Arc<PoolRt>)>,
    /// Sentinel followers by pool name.
    followers: HashMap<String, CancellationToken>,
    /// Circuit checks of cache pools that fail open, by pool name.
    circuits: HashMap<String, CancellationToken>,
    /// Spool replayers (one per spooled shard) of the current pool generation.
    replayers: Vec<CancellationToken>,
}

/// A listener a reload wants: (address key, pool, what it serves, the socket bound for it,
/// or `None` when a running listener already holds the address).
type Bound = (String, Arc<str>, Serves, Option<Listener>);

fn listen_key(l: &Listen) -> String {
    format!("{l:?}")
}

impl Control {
    /// Nothing running yet.
    pub fn new(handoff: Handoff, workers: usize, stop: CancellationToken) -> Self {
        Control {
            handoff,
            workers,
            stop,
            listeners: HashMap::new(),
            counts: HashMap::new(),
            checks: HashMap::new(),
            replayers: Vec::new(),
            followers: HashMap::new(),
            circuits: HashMap::new(),
        }
    }

    /// Bind every address of `pools` that no running listener holds (one that does is kept,
    /// whatever pool or role it served); nothing is started, and no running listener is
    /// touched, when one fails.
    ///
    /// # Errors
    /// The address that could not be bound, with its pool.
    fn bind_new(&self, pools: &[Arc<PoolRt>]) -> anyhow::Result<Vec<Bound>> {
        let mut out = Vec::new();
        for p in pools {
            for (l, serves) in listens(p) {
                let key = listen_key(l);
                let socket = if self.listeners.contains_key(&key) {
                    None
                } else {
                    Some(bind_one(p, l)?)
                };
                out.push((key, Arc::from(p.conf.name.as_str()), serves, socket));
            }
        }
        Ok(out)
    }

    /// Make listeners, health checks and followers match `pools` (already published).
    fn sync(&mut self, shared: &Arc<Shared>, pools: &[Arc<PoolRt>], bound: Vec<Bound>) {
        self.listeners.retain(|k, r| {
            let keep = bound.iter().any(|(b, ..)| b == k);
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (key, pool, serves, socket) in bound {
            let listener = match (socket, self.listeners.get(&key)) {
                (Some(l), _) => Arc::new(l),
                // Kept as it was: the same pool and role.
                (None, Some(r)) if r.pool == pool && r.serves == serves => continue,
                // The address now serves another pool or role: a new accept loop on the
                // same socket (an accept in progress is cancelled whole, nothing is lost).
                (None, Some(r)) => {
                    r.task.abort();
                    Arc::clone(&r.listener)
                }
                (None, None) => continue,
            };
            let count = Arc::clone(
                self.counts
                    .entry(pool.to_string())
                    .or_insert_with(|| Arc::new(AtomicUsize::new(0))),
            );
            let task = tokio::spawn(accept_loop(
                (Arc::clone(&pool), serves),
                Arc::clone(&listener),
                count,
                Arc::clone(shared),
                self.handoff.clone(),
            ));
            self.listeners.insert(
                key,
                Running {
                    task,
                    listener,
                    pool,
                    serves,
                },
            );
        }
        // Health checks: every node of a checked pool without Sentinel (Sentinel followers
        // check the nodes they manage).
        let mut nodes: Vec<(Arc<NodeRt>, Arc<PoolRt>)> = Vec::new();
        for p in pools
            .iter()
            .filter(|p| p.checked && !p.conf.is_sentinel() && !p.conf.is_cluster())
        {
            for s in &p.shards {
                for n in &s.view().nodes {
                    nodes.push((Arc::clone(n), Arc::clone(p)));
                }
            }
        }
        // A node that stays keeps its check unless its pool's check settings changed; then
        // the check starts again with the new ones (the node's state carries over).
        self.checks.retain(|id, (t, was)| {
            let keep = nodes.iter().any(|(n, p)| n.id == *id && p.same_checks(was));
            if !keep {
                t.cancel();
            }
            keep
        });
        for (n, p) in nodes {
            if let Some((_, was)) = self.checks.get_mut(&n.id) {
                // Same settings: remember the current generation, not the one it started in.
                *was = Arc::clone(&p);
                continue;
            }
            let token = self.stop.child_token();
            self.checks.insert(n.id, (token.clone(), Arc::clone(&p)));
            tokio::spawn(crate::ha::health::run(
                n,
                p.conf.health,
                crate::topology::node::ReplicaRules::of(&p.conf),
                Arc::clone(&p.handshake),
                token,
            ));
        }
        // Sentinel followers: one per pool generation.
        for (_, t) in self.followers.drain() {
            t.cancel();
        }
        for p in pools.iter().filter(|p| p.conf.is_sentinel()) {
            let token = self.stop.child_token();
            self.followers.insert(p.conf.name.clone(), token.clone());
            tokio::spawn(crate::ha::sentinel::follow(
                Arc::clone(p),
                self.workers,
                token,
            ));
        }
        // Cluster followers: one per pool generation (they check the cluster's nodes too).
        for p in pools.iter().filter(|p| p.conf.is_cluster()) {
            let token = self.stop.child_token();
            self.followers.insert(p.conf.name.clone(), token.clone());
            tokio::spawn(crate::ha::cluster::follow(
                Arc::clone(p),
                self.workers,
                token,
            ));
        }
        // Role followers of checked pools without Sentinel (see `ha::roles`): one per pool
        // generation.
        for p in pools
            .iter()
            .filter(|p| p.checked && !p.conf.is_sentinel() && !p.conf.is_cluster())
        {
            let token = self.stop.child_token();
            self.followers.insert(p.conf.name.clone(), token.clone());
            tokio::spawn(crate::ha::roles::follow(Arc::clone(p), token));
        }
        // Circuit checks: one per cache pool that fails open, per pool generation.
        for (_, t) in self.circuits.drain() {
            t.cancel();
        }
        for p in pools.iter().filter(|p| p.conf.fail_open.is_some()) {
            let token = self.stop.child_token();
            self.circuits.insert(p.conf.name.clone(), token.clone());
            tokio::spawn(crate::ha::circuit::watch(Arc::clone(p), token));
        }
        // Spool replayers: one per spooled shard and pool generation (the spool itself
        // carries over a reload).
        for t in self.replayers.drain(..) {
            t.cancel();
        }
        for p in pools {
            for (i, _) in p
                .shards
                .iter()
                .enumerate()
                .filter(|(_, s)| s.spool.is_some())
            {
                let token = self.stop.child_token();
                self.replayers.push(token.clone());
                tokio::spawn(crate::ha::replay::run(Arc::clone(p), i, token));
            }
        }
    }
}

/// Start the listeners and control tasks of the pools `shared` holds now.
///
/// # Errors
/// A listener cannot be bound.
pub fn start(shared: &Arc<Shared>, control: &mut Control) -> anyhow::Result<()> {
    let pools = shared.pools.load_full();
    let bound = control.bind_new(&pools)?;
    control.sync(shared, &pools, bound);
    rights::check_new(&[], &pools);
    Ok(())
}
