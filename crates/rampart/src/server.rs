//! Listeners, worker threads, connection limits and graceful shutdown.
//!
//! One acceptor task per listen address runs on the main thread's runtime. It enforces the
//! pool's `client_connections` (answering Redis' own error to the one over the limit), backs
//! off when the process runs out of file descriptors instead of spinning, and hands each
//! accepted socket to a worker thread in turn. Each worker runs a single-threaded runtime that
//! owns its sessions and its backend connections, so the request path takes no lock.
//! SIGTERM or SIGINT stops the acceptors, lets every session finish the requests it has in
//! flight (bounded by the drain timeout), and returns.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rampart_config::{Config, Listen};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Mode;
use crate::io::Stream;
use crate::stats::Metrics;
use crate::topology::PoolRt;
use crate::worker::{Shared, Worker};

/// Options that do not come from the config file.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads.
    pub workers: usize,
    /// Address of the twemproxy-style stats listener, if any.
    pub stats_addr: Option<String>,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// A socket accepted for a pool, on its way to a worker.
struct Accepted {
    pool: usize,
    mode: Mode,
    local: bool,
    conn: RawConn,
    id: u64,
    guard: ConnGuard,
}

/// An accepted socket before a worker's runtime adopts it.
enum RawConn {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// Holds one unit of a pool's `client_connections` budget until the session ends.
struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Every address a pool listens on, with what each serves.
fn listens(p: &PoolRt) -> Vec<(&Listen, Mode)> {
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

/// Bind every pool's listeners; errors name the pool and the address.
fn bind(pools: &[Arc<PoolRt>]) -> anyhow::Result<Vec<(usize, Mode, Listener)>> {
    let mut out = Vec::new();
    for p in pools {
        for (listen, mode) in listens(p) {
            out.push((p.index, mode, bind_one(p, listen)?));
        }
    }
    Ok(out)
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

/// Run the proxy until SIGTERM/SIGINT (or `stop` is cancelled); returns after the drain.
///
/// # Errors
/// A listener cannot be bound or a thread cannot be started.
pub fn run(config: Config, opts: Options, stop: CancellationToken) -> anyhow::Result<()> {
    let workers = opts.workers.max(1);
    let pools: Vec<Arc<PoolRt>> = config
        .pools
        .into_iter()
        .enumerate()
        .map(|(i, p)| Arc::new(PoolRt::new(i, p, workers)))
        .collect();
    let shared = Arc::new(Shared {
        metrics: Arc::new(Metrics::new(workers, pools.len())),
        pools,
        started: Instant::now(),
        shutdown: stop.clone(),
        workers,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listeners = rt.block_on(async { bind(&shared.pools) })?;
    let stats_listener = match &opts.stats_addr {
        Some(a) => Some(
            rt.block_on(TcpListener::bind(a))
                .with_context(|| format!("cannot listen for stats on {a}"))?,
        ),
        None => None,
    };

    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for id in 0..workers {
        let (tx, rx) = mpsc::channel::<Accepted>(1024);
        senders.push(tx);
        let shared = Arc::clone(&shared);
        let drain = opts.drain_timeout;
        threads.push(
            std::thread::Builder::new()
                .name(format!("rampart-w{id}"))
                .spawn(move || worker_main(id, shared, rx, drain))?,
        );
    }

    rt.block_on(async {
        let next_id = Arc::new(AtomicU64::new(1));
        let next_worker = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let counts: Vec<Arc<AtomicUsize>> = shared
            .pools
            .iter()
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        for (pool, mode, l) in listeners {
            tasks.push(tokio::spawn(accept_loop(
                (pool, mode),
                l,
                Arc::clone(&counts[pool]),
                Arc::clone(&shared),
                senders.clone(),
                Arc::clone(&next_id),
                Arc::clone(&next_worker),
            )));
        }
        start_control(&shared, workers, &stop);
        if let Some(l) = stats_listener {
            tasks.push(tokio::spawn(crate::stats_server::serve(
                l,
                Arc::clone(&shared),
            )));
        }
        wait_for_signal(&stop).await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        stop.cancel();
        for t in tasks {
            t.abort();
        }
    });
    drop(senders);
    for t in threads {
        let _ = t.join();
    }
    for p in &shared.pools {
        for (listen, _) in listens(p) {
            if let Listen::Unix { path, .. } = listen {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(())
}

/// Health checks of every node of pools that have them, and a Sentinel follower per
/// Sentinel pool; all stop with `stop`.
fn start_control(shared: &Shared, workers: usize, stop: &CancellationToken) {
    for p in &shared.pools {
        if p.conf.is_sentinel() {
            tokio::spawn(crate::sentinel::follow(
                Arc::clone(p),
                workers,
                stop.clone(),
            ));
        } else if p.checked {
            for s in &p.shards {
                for n in &s.view().nodes {
                    tokio::spawn(crate::health::run(
                        Arc::clone(n),
                        p.conf.health,
                        p.conf.max_replica_lag,
                        stop.clone(),
                    ));
                }
            }
        }
    }
}

async fn wait_for_signal(stop: &CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return stop.cancelled().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = stop.cancelled() => {}
    }
}

async fn accept_loop(
    (pool, mode): (usize, Mode),
    listener: Listener,
    count: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    workers: Vec<mpsc::Sender<Accepted>>,
    next_id: Arc<AtomicU64>,
    next_worker: Arc<AtomicUsize>,
) {
    let conf = &shared.pools[pool].conf;
    let limit = conf.client_connections as usize;
    let mut backoff = Duration::from_millis(10);
    loop {
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
                tracing::warn!(pool = %conf.name, "{what}: {e}; retrying in {backoff:?}");
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
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let mut job = Accepted {
            pool,
            mode,
            local,
            conn,
            id,
            guard,
        };
        let mut placed = false;
        for _ in 0..workers.len() {
            let w = next_worker.fetch_add(1, Ordering::Relaxed) % workers.len();
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

fn worker_main(id: usize, shared: Arc<Shared>, mut rx: mpsc::Receiver<Accepted>, drain: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {id}: cannot start its runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Worker::new(id, Arc::clone(&shared));
        let stop = shared.shutdown.clone();
        loop {
            tokio::select! {
                job = rx.recv() => {
                    let Some(job) = job else { break };
                    let stream = match job.conn {
                        RawConn::Unix(u) => Stream::unix(u),
                        RawConn::Tcp(t) => Stream::tcp(t),
                    };
                    match stream {
                        Ok(stream) => {
                            let pool = std::rc::Rc::clone(&worker.pools[job.pool]);
                            let w = std::rc::Rc::clone(&worker);
                            let guard = job.guard;
                            tokio::task::spawn_local(async move {
                                crate::client::serve(w, pool, stream, job.id, (job.mode, job.local)).await;
                                drop(guard);
                            });
                        }
                        Err(e) => tracing::warn!("worker {id}: cannot adopt a connection: {e}"),
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        let until = Instant::now() + drain;
        while worker.stats.curr_connections.get() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Whether an error is the process running out of descriptors.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
