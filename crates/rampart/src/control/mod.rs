//! The control plane: listeners, health checks, Sentinel followers, and configuration
//! reload.
//!
//! It runs on the main thread's runtime. One acceptor task per listen address enforces the
//! pool's `client_connections` (answering Redis' own error to the one over the limit), backs
//! off when the process runs out of file descriptors instead of spinning, and hands each
//! accepted socket to a worker in turn. A reload (SIGHUP or the admin API) reads the file
//! again, builds and validates a whole new set of pools (nodes that stay keep their state and
//! connections), binds new listeners, and only then publishes it with one atomic swap; any
//! error leaves the running configuration untouched.

use std::collections::HashMap;
use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rampart_config::{Config, Listen};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::topology::node::NodeRt;
use crate::topology::Mode;
use crate::topology::PoolRt;
use crate::topology::Shared;

/// A socket accepted for a pool, on its way to a worker.
pub struct Accepted {
    /// Pool name.
    pub pool: Arc<str>,
    /// What the listener serves.
    pub mode: Mode,
    /// Peer on loopback or a unix socket.
    pub local: bool,
    /// The socket.
    pub conn: RawConn,
    /// Session id.
    pub id: u64,
    /// The pool's connection budget unit.
    pub guard: ConnGuard,
}

/// An accepted socket before a worker's runtime adopts it.
pub enum RawConn {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// Unix.
    Unix(std::os::unix::net::UnixStream),
}

/// Holds one unit of a pool's `client_connections` budget until the session ends.
pub struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How acceptors reach the workers.
#[derive(Clone)]
pub struct Handoff {
    /// One bounded queue per worker.
    pub workers: Vec<mpsc::Sender<Accepted>>,
    next_id: Arc<AtomicU64>,
    next_worker: Arc<AtomicUsize>,
}

impl Handoff {
    /// Over these worker queues.
    pub fn new(workers: Vec<mpsc::Sender<Accepted>>) -> Self {
        Handoff {
            workers,
            next_id: Arc::new(AtomicU64::new(1)),
            next_worker: Arc::new(AtomicUsize::new(0)),
        }
    }
}

struct Running {
    task: JoinHandle<()>,
}

/// The running control plane, shared by whoever may reload it (the signal handler, the admin
/// API); `None` once shutdown has begun.
pub type Handle = Arc<tokio::sync::Mutex<Option<Control>>>;

/// Everything the control plane started, so a reload can change it.
pub struct Control {
    handoff: Handoff,
    workers: usize,
    stop: CancellationToken,
    /// Listener tasks by (pool, mode, address).
    listeners: HashMap<String, Running>,
    /// Client budget per pool name (shared by its listeners, kept across reloads).
    counts: HashMap<String, Arc<AtomicUsize>>,
    /// Health-check tasks by node id (pools without Sentinel).
    checks: HashMap<u64, CancellationToken>,
    /// Sentinel followers by pool name.
    followers: HashMap<String, CancellationToken>,
}

/// A listener bound by a reload, not yet running: (key, pool, mode, socket).
type Bound = (String, Arc<str>, Mode, Listener);

fn listen_key(pool: &str, mode: Mode, l: &Listen) -> String {
    format!("{pool}|{mode:?}|{l:?}")
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
            followers: HashMap::new(),
        }
    }

    /// Bind every listener of `pools` that is not running yet; nothing is started when one
    /// fails.
    ///
    /// # Errors
    /// The address that could not be bound, with its pool.
    fn bind_new(&self, pools: &[Arc<PoolRt>]) -> anyhow::Result<Vec<Bound>> {
        let mut out = Vec::new();
        for p in pools {
            for (l, mode) in listens(p) {
                let key = listen_key(&p.conf.name, mode, l);
                if !self.listeners.contains_key(&key) {
                    out.push((key, Arc::from(p.conf.name.as_str()), mode, bind_one(p, l)?));
                }
            }
        }
        Ok(out)
    }

    /// Make listeners, health checks and followers match `pools` (already published).
    fn sync(&mut self, shared: &Arc<Shared>, pools: &[Arc<PoolRt>], bound: Vec<Bound>) {
        let wanted: Vec<String> = pools
            .iter()
            .flat_map(|p| {
                listens(p)
                    .into_iter()
                    .map(|(l, m)| listen_key(&p.conf.name, m, l))
            })
            .collect();
        self.listeners.retain(|k, r| {
            let keep = wanted.contains(k);
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (key, pool, mode, l) in bound {
            let count = Arc::clone(
                self.counts
                    .entry(pool.to_string())
                    .or_insert_with(|| Arc::new(AtomicUsize::new(0))),
            );
            let task = tokio::spawn(accept_loop(
                (pool, mode),
                l,
                count,
                Arc::clone(shared),
                self.handoff.clone(),
            ));
            self.listeners.insert(key, Running { task });
        }
        // Health checks: every node of a checked pool without Sentinel (Sentinel followers
        // check the nodes they manage).
        let mut nodes: Vec<(Arc<NodeRt>, Arc<PoolRt>)> = Vec::new();
        for p in pools.iter().filter(|p| p.checked && !p.conf.is_sentinel()) {
            for s in &p.shards {
                for n in &s.view().nodes {
                    nodes.push((Arc::clone(n), Arc::clone(p)));
                }
            }
        }
        self.checks.retain(|id, t| {
            let keep = nodes.iter().any(|(n, _)| n.id == *id);
            if !keep {
                t.cancel();
            }
            keep
        });
        for (n, p) in nodes {
            if self.checks.contains_key(&n.id) {
                continue;
            }
            let token = self.stop.child_token();
            self.checks.insert(n.id, token.clone());
            tokio::spawn(crate::ha::health::run(
                n,
                p.conf.health,
                p.conf.max_replica_lag,
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
    }
}

/// Build the pools of `config`, reusing the nodes (state, statistics, connections) and the
/// statistics slot of pools that `old` already has.
pub fn build_pools(
    shared: &Shared,
    config: Config,
    old: &[Arc<PoolRt>],
) -> anyhow::Result<Vec<Arc<PoolRt>>> {
    let mut pools = Vec::new();
    for conf in config.pools {
        let prev = old.iter().find(|p| p.conf.name == conf.name);
        let slot = match prev {
            Some(p) => p.index,
            None => shared.pool_slot(&conf.name)?,
        };
        pools.push(Arc::new(PoolRt::with_nodes(
            slot,
            conf,
            shared.workers,
            prev.map(|p| p.as_ref()),
        )));
    }
    Ok(pools)
}

/// Start the listeners and control tasks of the pools `shared` holds now.
///
/// # Errors
/// A listener cannot be bound.
pub fn start(shared: &Arc<Shared>, control: &mut Control) -> anyhow::Result<()> {
    let pools = shared.pools.load_full();
    let bound = control.bind_new(&pools)?;
    control.sync(shared, &pools, bound);
    Ok(())
}

/// Share of keys (0..1) of a sample that would move to another shard between `a` and `b`.
fn moved_share(a: &PoolRt, b: &PoolRt) -> f64 {
    const SAMPLE: usize = 20_000;
    let mut moved = 0;
    for i in 0..SAMPLE {
        let key = format!("rampart:reload:{i}");
        let sa = a.shard_for_key(key.as_bytes()).map(|s| &a.shards[s].name);
        let sb = b.shard_for_key(key.as_bytes()).map(|s| &b.shards[s].name);
        if sa != sb {
            moved += 1;
        }
    }
    moved as f64 / SAMPLE as f64
}

/// Read the config file again and apply it. A pool whose key placement would change (shards
/// added, removed, renamed or re-weighted, another hash) is applied only when `force` is set
/// or the pool is a cache (`auto_eject_hosts: true`, whose keys may move anyway).
///
/// # Errors
/// Why nothing changed: the file is invalid, a listener cannot be bound, or a ring change
/// was not forced. The running configuration stays as it was.
pub async fn reload(shared: &Arc<Shared>, control: &Handle, force: bool) -> Result<String, String> {
    let result = reload_inner(shared, control, force).await;
    let (kind_msg, ok) = match &result {
        Ok(m) => (m.clone(), true),
        Err(e) => (format!("refused: {e}"), false),
    };
    shared.reloads.fetch_add(1, Ordering::Relaxed);
    if !ok {
        shared.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("reload {kind_msg}");
    } else {
        tracing::info!("reload: {kind_msg}");
    }
    if let Ok(mut last) = shared.last_reload.lock() {
        *last = kind_msg.clone();
    }
    crate::observe::events::record(crate::observe::events::Kind::Reload, "", "", "", kind_msg);
    result
}

async fn reload_inner(
    shared: &Arc<Shared>,
    control: &Handle,
    force: bool,
) -> Result<String, String> {
    let path = shared
        .config_path
        .as_ref()
        .ok_or("rampart was started without a configuration file")?;
    let config = rampart_config::load(path).map_err(|e| e.to_string())?;
    let mut guard = control.lock().await;
    let control = guard.as_mut().ok_or("the control plane is not running")?;
    let old = shared.pools.load_full();
    let new = build_pools(shared, config, &old).map_err(|e| format!("{e:#}"))?;
    let mut moves = Vec::new();
    for p in &new {
        if let Some(o) = old.iter().find(|o| o.conf.name == p.conf.name) {
            let share = moved_share(o, p);
            if share > 0.0 {
                moves.push((p.conf.name.clone(), share, p.conf.auto_eject_hosts));
            }
        }
    }
    let blocked: Vec<String> = moves
        .iter()
        .filter(|(_, _, cache)| !cache && !force)
        .map(|(n, s, _)| format!("pool '{n}' would move {:.1}% of its keys", s * 100.0))
        .collect();
    if !blocked.is_empty() {
        return Err(format!(
            "{}; reload with force to apply (POST /api/reload?force=true)",
            blocked.join(", ")
        ));
    }
    let bound = control.bind_new(&new).map_err(|e| format!("{e:#}"))?;
    shared.pools.store(Arc::new(new.clone()));
    shared.generation.fetch_add(1, Ordering::Release);
    control.sync(shared, &new, bound);
    let names: Vec<&str> = new.iter().map(|p| p.conf.name.as_str()).collect();
    let mut msg = format!("applied {} pool(s): {}", new.len(), names.join(", "));
    for (n, s, _) in &moves {
        msg.push_str(&format!("; pool '{n}' moved {:.1}% of its keys", s * 100.0));
    }
    Ok(msg)
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Every address a pool listens on, with what each serves.
pub fn listens(p: &PoolRt) -> Vec<(&Listen, Mode)> {
    let c = &p.conf;
    let mut v = vec![(&c.listen, Mode::All)];
    if let Some(l) = &c.read_listen {
        v.push((l, Mode::Reads));
    }
    if let Some(l) = &c.write_listen {
        v.push((l, Mode::Writes));
    }
    v
}

fn bind_one(p: &PoolRt, listen: &Listen) -> anyhow::Result<Listener> {
    let c = &p.conf;
    Ok({
        match listen {
            Listen::Tcp { host, port } => {
                let addr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .with_context(|| {
                        format!(
                            "pool '{}': cannot resolve listen address {host}:{port}",
                            c.name
                        )
                    })?
                    .next()
                    .with_context(|| {
                        format!(
                            "pool '{}': listen address {host}:{port} resolves to nothing",
                            c.name
                        )
                    })?;
                let sock = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )?;
                sock.set_reuse_address(true)?;
                if c.reuseport {
                    sock.set_reuse_port(true)?;
                }
                sock.set_nonblocking(true)?;
                sock.bind(&addr.into())
                    .with_context(|| format!("pool '{}': cannot listen on {addr}", c.name))?;
                sock.listen(c.backlog.min(i32::MAX as u32) as i32)?;
                Listener::Tcp(TcpListener::from_std(sock.into())?)
            }
            Listen::Unix { path, mode } => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                let l = UnixListener::bind(path).with_context(|| {
                    format!("pool '{}': cannot listen on {}", c.name, path.display())
                })?;
                if let Some(mode) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
                }
                Listener::Unix(l)
            }
        }
    })
}

async fn accept_loop(
    (pool, mode): (Arc<str>, Mode),
    listener: Listener,
    count: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    handoff: Handoff,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        // The pool's current settings: a reload may have changed them.
        let Some(rt) = shared
            .pools
            .load()
            .iter()
            .find(|p| *p.conf.name == *pool)
            .cloned()
        else {
            return;
        };
        let conf = &rt.conf;
        let limit = conf.client_connections as usize;
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.and_then(|(s, peer)| {
                s.set_nodelay(true)?;
                if conf.tcpkeepalive {
                    socket2::SockRef::from(&s).set_keepalive(true)?;
                }
                Ok((RawConn::Tcp(s.into_std()?), peer.ip().is_loopback()))
            }),
            Listener::Unix(l) => l
                .accept()
                .await
                .and_then(|(s, _)| Ok((RawConn::Unix(s.into_std()?), true))),
        };
        let (conn, local) = match accepted {
            Ok(s) => {
                backoff = Duration::from_millis(10);
                s
            }
            Err(e) => {
                // Out of file descriptors (or another accept error): wait instead of spinning;
                // the pending connection stays in the backlog until a descriptor frees up.
                let what = if is_fd_exhaustion(&e) {
                    "out of file descriptors"
                } else {
                    "accept failed"
                };
                tracing::warn!(pool = %conf.name, "{what}: {e}; retrying in {}", humantime::format_duration(backoff));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = ConnGuard(Arc::clone(&count));
        if limit > 0 && n > limit {
            refuse(conn);
            drop(guard);
            continue;
        }
        let id = handoff.next_id.fetch_add(1, Ordering::Relaxed);
        let workers = &handoff.workers;
        let mut job = Accepted {
            pool: Arc::clone(&pool),
            mode,
            local,
            conn,
            id,
            guard,
        };
        let mut placed = false;
        for _ in 0..workers.len() {
            let w = handoff.next_worker.fetch_add(1, Ordering::Relaxed) % workers.len();
            match workers[w].try_send(job) {
                Ok(()) => {
                    placed = true;
                    break;
                }
                Err(mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j)) => {
                    job = j
                }
            }
        }
        if !placed {
            tracing::warn!(pool = %conf.name, "every worker's hand-off queue is full; dropping a new connection");
        }
    }
}

/// Answer Redis' error to a client over the `client_connections` limit and close it.
fn refuse(conn: RawConn) {
    use std::io::Write;
    const MSG: &[u8] = b"-ERR max number of clients reached\r\n";
    // The socket is non-blocking; a fresh socket's send buffer always takes these few bytes.
    let _ = match conn {
        RawConn::Tcp(mut s) => s.write(MSG),
        RawConn::Unix(mut s) => s.write(MSG),
    };
}

/// Whether an error is the process running out of descriptors.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
