//! Start-up, worker threads, signals and graceful shutdown.
//!
//! The main thread runs the control plane ([`crate::control`]: listeners, health checks,
//! Sentinel followers, reload) on a single-threaded runtime. Each worker thread runs its own
//! single-threaded runtime that owns its sessions and its backend connections, so the request
//! path takes no lock. SIGHUP reloads the configuration (and the admin token file). SIGTERM or SIGINT stops the
//! acceptors, lets every session finish the requests it has in flight (bounded by the drain
//! timeout), and returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rampart_config::{Config, Listen};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::listen::{Accepted, Handoff, RawConn};
use crate::control::{self, Control};
use crate::io::Stream;
use crate::topology::Shared;
use crate::upstream::worker::Worker;

/// Options that do not come from the config file.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads.
    pub workers: usize,
    /// Address of the twemproxy-style stats listener, if any.
    pub stats_addr: Option<String>,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// The configuration file (read again on reload).
    pub config_path: Option<PathBuf>,
    /// The admin HTTP interface (metrics, API, page), if enabled.
    pub admin: Option<crate::admin::AdminOptions>,
}

/// The slot table and node ids per shard of a cluster pool's first map.
type FirstMap = (
    Option<crate::topology::cluster::SlotTable>,
    Vec<Vec<String>>,
);

/// Read the first slot map of every cluster pool from its seeds and fill its shards; the
/// table and ids of each pool, in pool order (`None` for other pools).
///
/// # Errors
/// A cluster pool whose seeds do not answer.
fn discover_clusters(
    shared: &Shared,
    mut config: Config,
) -> anyhow::Result<(Config, Vec<FirstMap>)> {
    let mut maps = Vec::new();
    if !config.pools.iter().any(|p| p.is_cluster()) {
        let none = vec![(None, Vec::new()); config.pools.len()];
        return Ok((config, none));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for p in &mut config.pools {
        // Every pool takes its statistics slot in file order, as `build_pools` would.
        let slot = shared.pool_slot(&p.name)?;
        if !p.is_cluster() {
            maps.push((None, Vec::new()));
            continue;
        }
        let (shards, table, ids) = rt.block_on(crate::ha::cluster::discover(p, slot))?;
        tracing::info!(pool = %p.name, shards = shards.len(), "cluster slot map read");
        p.shards = shards;
        maps.push((Some(table), ids));
    }
    Ok((config, maps))
}

/// Run the proxy until SIGTERM/SIGINT (or `stop` is cancelled); returns after the drain.
///
/// # Errors
/// A listener cannot be bound or a thread cannot be started.
pub fn run(config: Config, opts: Options, stop: CancellationToken) -> anyhow::Result<()> {
    let workers = opts.workers.max(1);
    let shared = Arc::new(Shared::new(workers, opts.config_path.clone(), stop.clone()));
    let (config, maps) = discover_clusters(&shared, config)?;
    let pools = control::reload::build_pools(&shared, config, &[])?;
    for (p, (table, ids)) in pools.iter().zip(maps) {
        if let (Some(c), Some(table)) = (&p.cluster, table) {
            if let Ok(mut g) = c.ids.lock() {
                *g = ids;
            }
            c.publish(table);
        }
    }
    shared.pools.store(Arc::new(pools));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Before any listener is bound: a signal sent once the proxy answers must find its
    // handler (SIGUSR2, SIGTTIN and SIGTTOU would otherwise kill or stop the process).
    let signals = rt.block_on(async { Signals::install() });
    let stats_listener = match &opts.stats_addr {
        Some(a) => Some(
            rt.block_on(TcpListener::bind(a))
                .with_context(|| format!("cannot listen for stats on {a}"))?,
        ),
        None => None,
    };
    let admin_listener = match &opts.admin {
        Some(a) => rt.block_on(crate::admin::bind(a))?,
        None => None,
    };
    let admin_token = admin_listener.as_ref().map(crate::admin::Bound::token);

    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel::<Accepted>(1024);
        senders.push(tx);
        receivers.push(rx);
    }
    let mut control = Control::new(Handoff::new(senders), workers, stop.clone());
    rt.block_on(async { control::start(&shared, &mut control) })?;
    let control: control::Handle = Arc::new(tokio::sync::Mutex::new(Some(control)));

    let mut threads = Vec::new();
    for (id, rx) in receivers.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let drain = opts.drain_timeout;
        threads.push(
            std::thread::Builder::new()
                .name(format!("rampart-w{id}"))
                .spawn(move || worker_main(id, shared, rx, drain))?,
        );
    }

    rt.block_on(async {
        let mut tasks = Vec::new();
        if let Some(l) = stats_listener {
            tasks.push(tokio::spawn(crate::admin::stats_port::serve(
                l,
                Arc::clone(&shared),
            )));
        }
        if let Some(a) = admin_listener {
            tasks.push(tokio::spawn(crate::admin::serve(
                a,
                Arc::clone(&shared),
                Arc::clone(&control),
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(reshape_clusters(
            Arc::clone(&shared),
            Arc::clone(&control),
        )));
        wait_for_signals(&shared, &control, admin_token.as_deref(), &stop, signals).await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        stop.cancel();
        for t in tasks {
            t.abort();
        }
        // Dropping the control plane stops the acceptors and closes the hand-off queues.
        control.lock().await.take();
    });
    for t in threads {
        let _ = t.join();
    }
    for p in shared.pools.load().iter() {
        for (listen, _) in control::listen::listens(p) {
            if let Listen::Unix { path, .. } = listen {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(())
}

/// The signals rampart handles, registered at start.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    ttin: Signal,
    ttou: Signal,
}

impl Signals {
    /// Registers every handler; `None` (after logging why) if one cannot be.
    fn install() -> Option<Signals> {
        let kinds = [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
            SignalKind::from_raw(libc::SIGTTIN),
            SignalKind::from_raw(libc::SIGTTOU),
        ];
        let mut streams = Vec::with_capacity(kinds.len());
        for kind in kinds {
            match signal(kind) {
                Ok(s) => streams.push(s),
                Err(e) => {
                    tracing::warn!("cannot install signal handlers ({e}); stop with SIGKILL");
                    return None;
                }
            }
        }
        let mut it = streams.into_iter();
        Some(Signals {
            term: it.next()?,
            int: it.next()?,
            hup: it.next()?,
            usr1: it.next()?,
            usr2: it.next()?,
            ttin: it.next()?,
            ttou: it.next()?,
        })
    }
}

/// Serves signals until one asks to stop. nutcracker's meanings are kept, so its start and
/// logrotate scripts work unchanged: SIGTTIN / SIGTTOU raise / lower the log level one step,
/// SIGUSR2 is logged and otherwise ignored, SIGHUP reopens the log file (and, rampart's
/// addition, reloads the configuration and reads the admin token file again), SIGUSR1
/// reopens the log file; SIGTERM and SIGINT return (drain and exit). Without handlers it
/// waits for `stop`.
async fn wait_for_signals(
    shared: &Arc<Shared>,
    control: &control::Handle,
    admin_token: Option<&crate::admin::token::AdminToken>,
    stop: &CancellationToken,
    signals: Option<Signals>,
) {
    let Some(mut s) = signals else {
        return stop.cancelled().await;
    };
    // The reload a SIGHUP started runs beside this loop, so SIGTERM is served at once even
    // while a reload waits (for a switchover, or a node that does not answer its trial
    // connection); shutting down abandons it. SIGHUPs that arrive meanwhile make one more
    // reload after it, as the signal itself coalesces.
    let mut reloading: Option<tokio::task::JoinHandle<()>> = None;
    let mut again = false;
    loop {
        tokio::select! {
            _ = s.term.recv() => return,
            _ = s.int.recv() => return,
            _ = stop.cancelled() => return,
            _ = s.usr1.recv() => reopen_log("SIGUSR1"),
            _ = s.usr2.recv() => tracing::info!("SIGUSR2 received; it has no meaning here and is ignored"),
            _ = s.ttin.recv() => step_log_level("SIGTTIN", crate::logfile::Step::Up),
            _ = s.ttou.recv() => step_log_level("SIGTTOU", crate::logfile::Step::Down),
            _ = async { reloading.as_mut().expect("guarded by the condition").await }, if reloading.is_some() => {
                reloading = std::mem::take(&mut again).then(|| spawn_reload(shared, control));
            }
            _ = s.hup.recv() => {
                reopen_log("SIGHUP");
                // The token and the configuration are independent (either may fail alone);
                // errors are logged and counted by the reloads themselves.
                if let Some(t) = admin_token {
                    let _ = t.reload();
                }
                if reloading.is_some() {
                    tracing::info!("SIGHUP: a reload is running; the configuration is reloaded again after it");
                    again = true;
                } else {
                    reloading = Some(spawn_reload(shared, control));
                }
            }
        }
    }
}

/// A reload of the configuration file (SIGHUP) on a task of its own.
fn spawn_reload(shared: &Arc<Shared>, control: &control::Handle) -> tokio::task::JoinHandle<()> {
    tracing::info!("SIGHUP: reloading the configuration");
    let (shared, control) = (Arc::clone(shared), Arc::clone(control));
    tokio::spawn(async move {
        let _ = control::reload::reload(&shared, &control, false).await;
    })
}

/// Every 250 ms, give cluster pools the shards their followers asked for (primaries added to
/// the cluster since start), and take away those that serve no slot any more.
async fn reshape_clusters(shared: Arc<Shared>, control: control::Handle) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let wanted = shared
            .pools
            .load()
            .iter()
            .any(|p| p.cluster.as_ref().is_some_and(|c| c.has_shard_changes()));
        if wanted {
            control::reload::reshape_clusters(&shared, &control).await;
        }
    }
}

/// Reopens the `-o` log file on `signal`, saying so in the log; without `-o` there is
/// nothing to reopen and nothing is logged.
fn reopen_log(signal: &str) {
    if !crate::logfile::has_file() {
        return;
    }
    match crate::logfile::reopen() {
        Ok(()) => tracing::info!("{signal}: log file reopened"),
        Err(e) => tracing::error!("{signal}: cannot reopen the log file: {e}"),
    }
}

/// Moves the log level one step on `signal` and logs the new level, at a level the new
/// filter lets through.
fn step_log_level(signal: &str, step: crate::logfile::Step) {
    use tracing_subscriber::filter::LevelFilter;
    match crate::logfile::step_level(step) {
        Ok(level) if level == LevelFilter::ERROR => {
            tracing::error!("{signal}: log level is now error")
        }
        Ok(level) if level == LevelFilter::WARN => {
            tracing::warn!("{signal}: log level is now warn")
        }
        Ok(level) => tracing::info!("{signal}: log level is now {level}"),
        Err(e) => tracing::error!("{signal}: {e}"),
    }
}

/// How long a client of a `tls_listen` address has to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the TLS handshake of a client accepted on `tls_listen`, with the pool's current
/// certificate (a reload's renewed one from then on); `None` (counted and logged with the
/// peer and the reason) when it fails.
async fn accept_tls(pool: &crate::upstream::pool::WorkerPool, stream: Stream) -> Option<Stream> {
    let rt = &pool.rt;
    let peer = stream
        .tcp_socket()
        .and_then(|s| s.peer_addr().ok())
        .map_or_else(|| "unix socket".to_string(), |a| a.to_string());
    let Some(config) = rt.tls.server.clone() else {
        tracing::warn!(pool = %rt.conf.name, peer, "TLS client refused: the pool has no tls: certificate any more");
        return None;
    };
    let outcome =
        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, crate::tls::accept(&config, stream)).await;
    let why = match outcome {
        Ok(Ok(s)) => {
            crate::tls::count(rt.index, crate::tls::Outcome::Accepted);
            if let Some(subject) = crate::tls::peer_subject(&s) {
                tracing::debug!(pool = %rt.conf.name, peer, "TLS client certificate: {subject}");
            }
            return Some(s);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {}s", TLS_HANDSHAKE_TIMEOUT.as_secs()),
    };
    crate::tls::count(rt.index, crate::tls::Outcome::Refused);
    // Anyone who reaches the port can cause this line: its rate is bounded.
    static LINES: crate::observe::loglines::Lines = crate::observe::loglines::Lines::new();
    if let Some(left_out) = LINES.admit() {
        let more = crate::observe::loglines::more(left_out, "refusals");
        tracing::warn!(pool = %rt.conf.name, peer, "TLS client refused: {peer}: {why}{more}");
    }
    None
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
                    worker.refresh();
                    let Some(pool) = worker.pool(&job.pool) else { continue };
                    let stream = match job.conn {
                        RawConn::Unix(u) => Stream::unix(u),
                        RawConn::Tcp(t) => Stream::tcp(t),
                    };
                    match stream {
                        Ok(stream) => {
                            let w = std::rc::Rc::clone(&worker);
                            let guard = job.guard;
                            let tls = job.tls;
                            tokio::task::spawn_local(async move {
                                let stream = if tls {
                                    match accept_tls(&pool, stream).await {
                                        Some(s) => s,
                                        None => return,
                                    }
                                } else {
                                    stream
                                };
                                crate::session::client::serve(w, pool, stream, job.id, (job.mode, job.local)).await;
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
