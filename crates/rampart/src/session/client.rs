//! One client session: read, dispatch every complete request, write replies back in order.
//!
//! The session reads into the worker's scratch buffer when it holds no partial request, so an
//! idle client keeps no read buffer. Complete requests are dispatched at once (pipelines are the
//! norm); a partial one is copied into the session's own buffer until it completes. Reading
//! stops while the session has `max_inflight` requests outstanding or more than the soft limit
//! of reply bytes held (backpressure): replies waiting behind a slow one count as much as those
//! being written. Past the hard limit the client is disconnected (the reply queue drops what it
//! holds at once, see `reply::pending`). A protocol error is answered in Redis' words after the earlier replies, then the
//! connection closes; nothing else on the worker notices.

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use resp::{Request, RequestDecoder};

use crate::io::{flush, release_if_idle, ReadBuf, Ready, Stream};
use crate::observe::stats::PoolStat;
use crate::reply::pending::{Broken, Pending};
use crate::session::dispatch::Session;
use crate::topology::Mode;
use crate::upstream::pool::WorkerPool;
use crate::upstream::worker::Worker;

/// Output buffer capacity a session keeps once its replies are written (more is freed).
const OUT_KEEP: usize = 64 * 1024;
/// Most reply bytes held back to leave with the replies still due for the same read.
const COALESCE_MAX: usize = 16 * 1024;

/// How a session ended, for the pool's `client_eof` / `client_err` counters.
enum End {
    Eof,
    Err,
}

/// Serve one client until it leaves, breaks the protocol, or the process shuts down.
pub async fn serve(
    worker: Rc<Worker>,
    pool: Rc<WorkerPool>,
    stream: Stream,
    id: u64,
    (mode, local): (Mode, bool),
) {
    let pidx = pool.rt.index;
    let cells = &worker.stats.pools[pidx];
    cells.pool(PoolStat::ClientConnections).add(1);
    worker.stats.curr_connections.add(1);
    worker.stats.total_connections.add(1);
    let pending = Rc::new(Pending::default());
    pending.set_close_when_down(
        (pool.rt.conf.when_down == rampart_config::WhenDown::Close).then_some(pool.rt.index),
    );
    let mut ctx = Session::new(
        Rc::clone(&worker),
        Rc::clone(&pool),
        Rc::clone(&pending),
        id,
    );
    ctx.mode = mode;
    ctx.client.local = local;
    ctx.client.addr = peer(&stream, &pool);
    let registered = crate::observe::clients::register(
        id,
        ctx.client.addr.clone(),
        local_addr(&stream, &pool),
        pool.rt.conf.name.clone(),
        local,
    );
    ctx.client.entry = Some(Arc::clone(registered.entry()));
    // `tls.auth_clients_user: CN`: a verified client certificate names the user.
    if pool.rt.conf.tls.as_ref().is_some_and(|t| t.user_from_cn) {
        if let Some(cn) = crate::tls::peer_common_name(&stream) {
            match pool.rt.conf.users.iter().find(|u| u.name == cn) {
                Some(u) if u.rules.enabled => {
                    ctx.client.user = Some(Arc::clone(u));
                    ctx.client.authed = true;
                }
                _ => {
                    tracing::debug!(pool = %pool.rt.conf.name, "TLS client certificate names {cn:?}, not an enabled user: the client starts unauthenticated")
                }
            }
        }
    }
    if let Some(u) = &ctx.client.user {
        registered.entry().set_user(Some(u.name.clone()));
    }
    let end = run(&worker, &mut ctx, &stream).await;
    ctx.blocked.leave(crate::session::blocking::CLIENT_LEFT);
    ctx.leave_pubsub();
    drop(registered);
    if ctx.client.monitoring {
        crate::observe::monitor::prune();
    }
    pending.close();
    let cells = &worker.stats.pools[pidx];
    cells.pool(PoolStat::ClientConnections).add(-1);
    worker.stats.curr_connections.add(-1);
    match end {
        End::Eof => cells.pool(PoolStat::ClientEof).add(1),
        End::Err => cells.pool(PoolStat::ClientErr).add(1),
    }
}

async fn run(worker: &Rc<Worker>, ctx: &mut Session, stream: &Stream) -> End {
    let limits = ctx.pool.rt.conf.limits;
    let mut dec = RequestDecoder::new(ctx.decoder_limits());
    let mut rbuf = ReadBuf::default();
    let pending = Rc::clone(&ctx.pending);
    // Created once: a cancellation future registers with the token when first polled, so
    // making a new one on every loop turn would take the token's lock per request.
    let shutdown = worker.shared.shutdown.clone();
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut eof = false;
    let entry = ctx.client.entry.clone();
    // A kill or a reload (taken at the top of the loop). Made again only after it fires:
    // waiting registers with the entry's wake-up.
    let mut notice = Box::pin(noticed(entry.as_deref()));
    let mut monitor: Option<crate::observe::monitor::Monitor> = None;
    // Set by a read whose own replies are partly held for the rest (see `hold` below): the
    // number of requests then on their way to a server.
    let mut coalesce: Option<usize> = None;
    loop {
        // Also checked here: a busy session may not reach the wake-up branch below.
        if entry.as_ref().is_some_and(|e| e.is_killed()) {
            return End::Eof;
        }
        // A reload applies before anything else leaves, so a subscriber or a MONITOR that
        // lost its rights hears nothing more.
        if entry.as_ref().is_some_and(|e| e.take_reload()) {
            ctx.follow_reload();
        }
        if monitor.is_none() {
            monitor = ctx.client.monitor.take();
        } else if !ctx.client.monitoring {
            // RESET leaves MONITOR mode.
            monitor = None;
            if let Some(e) = &entry {
                e.set_flag(crate::observe::clients::FLAG_MONITOR, false);
            }
            crate::observe::monitor::prune();
        }
        // Requests left unparsed by backpressure resume as soon as there is room again.
        if !rbuf.is_empty() && ctx.can_dispatch() {
            let used = dispatch(ctx, &mut dec, rbuf.data());
            rbuf.consume(used);
        }
        // Reloads may change the limit; the queue enforces it as replies arrive.
        pending.set_limit(usize::try_from(limits.client_output_hard).unwrap_or(usize::MAX));
        if let Some(why) = pending.broken() {
            if matches!(why, Broken::ServerLost | Broken::ShardDown) {
                // The replies before the lost one all go out first (the queue holds nothing
                // more, so at most client_output_hard bytes; a shutdown bounds it by its
                // drain timeout), then the end, read by the client after them.
                drain(stream, &pending.out).await;
                linger(stream).await;
            }
            closing_log(ctx.client.id, why, limits.client_output_hard);
            return End::Err;
        }
        // Pub/Sub messages wait for the replies before them; a client over its Pub/Sub
        // output limit is closed (the shared subscriber connection never waits for it).
        if let Some(l) = ctx.subs.listener() {
            if let Some(held) = l.over_limit() {
                tracing::info!(
                    client = ctx.client.id,
                    "closing client: {held} Pub/Sub message bytes held, over pubsub_output_hard or over pubsub_output_soft for pubsub_output_soft_time"
                );
                return End::Err;
            }
            if l.lost() {
                tracing::info!(
                    client = ctx.client.id,
                    "closing client: a server refused one of its subscriptions when its subscriber connection subscribed them again"
                );
                return End::Err;
            }
            l.drain();
        }
        // Counted before they are written, so a client that reads a reply and then asks for
        // the statistics (INFO, /metrics) always finds it counted.
        record_latency(&worker.stats, ctx, pending.outstanding());
        // Replies rampart gave itself to one read's requests (MULTI's +OK, each +QUEUED) wait
        // for the server's replies to the rest of that read (EXEC's), so they leave in one
        // write, as Redis answers a whole read at once: one wake-up of the client, not two.
        // Held only while those requests are on their way and never behind a blocking
        // command, whose earlier replies Redis sends before it blocks.
        let hold = coalesce.is_some_and(|n| {
            pending.outstanding() == n
                && !ctx.blocked.is_running()
                && !ctx.client.closing
                && !eof
                && pending.out.borrow().len() < COALESCE_MAX
        });
        if !hold {
            coalesce = None;
        }
        let blocked = !hold && {
            let mut out = pending.out.borrow_mut();
            let blocked = match flush(stream, &mut out) {
                Ok(b) => b,
                Err(_) => return End::Err,
            };
            // Kept up to 64 KiB (as the read buffer): freeing a smaller one after every reply
            // cost an allocation per 16 KiB reply (GET 16 KiB at P1 fell to 0.90x
            // twemproxy); a burst's larger buffer still goes back.
            release_if_idle(&mut out, OUT_KEEP);
            blocked
        };
        if (ctx.client.closing || eof) && pending.outstanding() == 0 && !blocked {
            return if ctx.client.closing && !eof && ctx.errored {
                End::Err
            } else {
                End::Eof
            };
        }
        let held = ctx.client.held;
        let auth_held = ctx.client.auth_held;
        // A blocked client is still read (its requests wait in the buffer, bounded by
        // client_input_max), so its leaving is seen at once.
        let can_read = !ctx.client.closing
            && !eof
            && held.is_none()
            && auth_held.is_none()
            && (ctx.can_dispatch() || ctx.blocked.is_running())
            && (pending.held() as u64) < limits.client_output_soft;
        // MONITOR lines go between replies, never among them.
        let watching = monitor.is_some()
            && pending.outstanding() == 0
            && (pending.held() as u64) < limits.client_output_soft;
        tokio::select! {
            biased;
            _ = pending.wake.notified() => {}
            r = stream.writable(), if blocked => {
                let Ok(mut ready) = r else { return End::Err };
                match flush(stream, &mut pending.out.borrow_mut()) {
                    Ok(true) => ready.clear(),
                    Ok(false) => {}
                    Err(_) => return End::Err,
                }
            }
            r = stream.readable(), if can_read => {
                let Ok(mut ready) = r else { return End::Err };
                let answered = !pending.out.borrow().is_empty();
                match read(worker, ctx, &mut dec, &mut rbuf, stream, &mut ready) {
                    Ok(true) => {
                        // Only a read that found nothing waiting holds its replies: one more
                        // read while they are held sends them at once.
                        coalesce = (!answered
                            && !pending.out.borrow().is_empty()
                            && pending.outstanding() > 0
                            && ctx.subs.listener().is_none())
                        .then(|| pending.outstanding());
                    }
                    Ok(false) => {
                        // As Redis frees a client that closes its side while blocked: its
                        // blocked command ends without a reply, what it sent after that
                        // command never runs, and its connection closes.
                        eof = true;
                        if ctx.blocked.is_running() {
                            rbuf = ReadBuf::default();
                        }
                        ctx.blocked.leave(crate::session::blocking::CLIENT_LEFT);
                    }
                    Err(_) => return End::Err,
                }
                if rbuf.len() > limits.client_input_max as usize {
                    ctx.reply_error("ERR Protocol error: client query buffer exceeds its limit");
                    ctx.client.closing = true;
                    ctx.errored = true;
                    rbuf = ReadBuf::default();
                }
            }
            _ = &mut cancelled, if !ctx.client.closing => {
                ctx.client.closing = true;
                ctx.blocked.leave("rampart is shutting down");
            }
            _ = &mut notice => notice = Box::pin(noticed(entry.as_deref())),
            _ = pause_over(ctx.pool.rt.index, held), if held.is_some() => {
                ctx.client.held = None;
            }
            _ = until(auth_held), if auth_held.is_some() => {
                ctx.client.auth_held = None;
                ctx.client.auth_waited = true;
            }
            line = next_line(&mut monitor), if watching => match line {
                Some(l) => {
                    pending.push_unsolicited(&l);
                }
                None => {
                    tracing::info!(client = ctx.client.id, "closing client: its MONITOR fell behind");
                    return End::Err;
                }
            },
        }
    }
}

/// Resolves when the CLIENT PAUSE holding the session ends or `held` passes; never when
/// `held` is `None`. `select!` builds every branch's future on every turn, even a disabled one:
/// as an `async fn` this costs nothing until polled (no clock read, no timer).
async fn pause_over(pool: usize, held: Option<std::time::Instant>) {
    match held {
        Some(end) => crate::session::pause::wait(pool, end).await,
        None => std::future::pending().await,
    }
}

/// Resolves at `at`; never when it is `None` (see [`pause_over`] for why it is an `async fn`).
async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the session is killed (`CLIENT KILL`) or marked by a reload; never without
/// a registry entry.
async fn noticed(entry: Option<&crate::observe::clients::Entry>) {
    match entry {
        Some(e) => e.noticed().await,
        None => std::future::pending().await,
    }
}

/// The next MONITOR line; `None` once the monitor was dropped for falling behind.
async fn next_line(monitor: &mut Option<crate::observe::monitor::Monitor>) -> Option<bytes::Bytes> {
    match monitor {
        Some(m) => m.recv().await,
        None => std::future::pending().await,
    }
}

/// Write all of `out` to the client, waiting for the socket as long as it takes; returns at
/// once when the connection fails.
async fn drain(stream: &Stream, out: &std::cell::RefCell<bytes::BytesMut>) {
    loop {
        match flush(stream, &mut out.borrow_mut()) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        match stream.writable().await {
            Ok(mut ready) => match flush(stream, &mut out.borrow_mut()) {
                Ok(true) => ready.clear(),
                Ok(false) | Err(_) => return,
            },
            Err(_) => return,
        }
    }
}

/// How long a client closed by rampart (its server lost, its shard down) is still read, its
/// bytes dropped, after the end was sent: closing a socket that holds unread bytes sends a
/// reset, which makes the client drop the replies it has not read yet.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// End the sending side and read (dropping it) what the client still sends, until it closes
/// its side or [`LINGER`] passes, so the close reaches it after every reply (see
/// [`Stream::shutdown_write`]). As HAProxy and nginx close a connection they refuse.
async fn linger(stream: &Stream) {
    if stream.shutdown_write().is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = stream.readable() => {
                let Ok(mut ready) = r else { return };
                match stream.read(&mut ready, &mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Say why a client is closed by its reply queue.
fn closing_log(client: u64, why: Broken, hard: u64) {
    match why {
        Broken::OverLimit(held) => tracing::info!(
            client,
            "closing client: {held} reply bytes held, over the client_output_hard limit of {hard}"
        ),
        Broken::Cut => tracing::info!(
            client,
            "closing client: a reply was cut off by its server connection after it had started"
        ),
        Broken::Reset => tracing::info!(client, "closing client: an injected reset fault"),
        // The blocking command said why when it ended.
        Broken::ServerLost => tracing::debug!(
            client,
            "closing client: the server connection of its blocking command failed"
        ),
        // The failure was logged (at a bounded rate) where it closed the client.
        Broken::ShardDown => tracing::debug!(
            client,
            "closing client: a request met a shard that is down (when_down: close)"
        ),
    }
}

/// Count the requests whose replies left the reply queue since the last call, with their
/// latency (one clock read per call, not per request).
fn record_latency(
    stats: &crate::observe::stats::WorkerStats,
    ctx: &mut Session,
    outstanding: usize,
) {
    let done = ctx.timing.len().saturating_sub(outstanding);
    if done == 0 {
        return;
    }
    let now = tokio::time::Instant::now();
    for _ in 0..done {
        let Some(t) = ctx.timing.pop_front() else {
            break;
        };
        let us = now.saturating_duration_since(t.start).as_micros() as u64;
        let error = ctx.pending.next_is_error();
        let bucket = crate::observe::stats::bucket(us);
        let count = |c: &crate::observe::stats::CommandCells| {
            c.record_in(bucket, us);
            if error {
                c.count_error();
            }
        };
        if let Some(c) = stats.by_command.get(t.cmd as usize) {
            count(c);
        }
        if let Some(p) = stats.pools.get(ctx.pool.rt.index) {
            count(&p.replies);
        }
        // A request one node served alone counts for that node too (a look at its shard's
        // current view: a few nodes); split ones and local answers do not.
        if t.node != 0 && t.node != u64::MAX {
            if let Some(shard) = ctx.pool.rt.shards.get(t.shard as usize) {
                let view = shard.view();
                if let Some(n) = view.nodes.iter().find(|n| n.id == t.node) {
                    if let Some(c) = n.replies.get(ctx.pool.worker) {
                        count(c);
                    }
                }
            }
        }
        if crate::observe::slowlog::is_slow(us) && t.args_len > 0 {
            let args = crate::observe::slowlog::take(&mut ctx.slow_args, t.args_len);
            slow(ctx, &t, us, args);
        } else {
            crate::observe::slowlog::skip(&mut ctx.slow_args, t.args_len);
        }
    }
}

/// Put a slow request in the SLOWLOG (rare: only then is the node's name looked up).
fn slow(ctx: &Session, t: &crate::session::dispatch::Timed, us: u64, args: Vec<Vec<u8>>) {
    let node = match t.node {
        0 => String::new(),
        u64::MAX => "several".to_string(),
        id => ctx
            .pool
            .rt
            .shards
            .iter()
            .flat_map(|s| s.view().nodes.clone())
            .find(|n| n.id == id)
            .map(|n| n.label.clone())
            .unwrap_or_default(),
    };
    let name = ctx
        .client
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    crate::observe::slowlog::record(
        &ctx.pool.rt.conf.name,
        us,
        args,
        (ctx.client.addr.clone(), name),
        node,
    );
}

/// The client's address as Redis shows it: `ip:port`, or for a unix socket the listener's
/// path followed by `:0`.
fn peer(stream: &Stream, pool: &WorkerPool) -> String {
    match stream.tcp_socket() {
        Some(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        None => format!("{}:0", pool.rt.conf.listen),
    }
}

/// The address the client connected to, as Redis shows it (`laddr`): `ip:port`, or for a
/// unix socket the listener's path followed by `:0`.
fn local_addr(stream: &Stream, pool: &WorkerPool) -> String {
    match stream.tcp_socket() {
        Some(s) => s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        None => format!("{}:0", pool.rt.conf.listen),
    }
}

/// Read once and dispatch what is complete. Returns false on end of stream.
fn read(
    worker: &Worker,
    ctx: &mut Session,
    dec: &mut RequestDecoder,
    rbuf: &mut ReadBuf,
    stream: &Stream,
    ready: &mut Ready<'_>,
) -> io::Result<bool> {
    // A session without a buffer of its own reads into the worker's scratch buffer and keeps
    // only a partial request; one that has needed a buffer (large or fragmented requests)
    // keeps it, up to 64 KiB, and reads straight into it (no copy, no allocation per request).
    if rbuf.is_empty() && rbuf.capacity() == 0 {
        let mut scratch = worker.scratch.borrow_mut();
        let n = match stream.read(ready, &mut scratch) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        };
        let used = dispatch(ctx, dec, &scratch[..n]);
        if used < n {
            rbuf.extend(&scratch[used..n]);
        }
    } else {
        match stream.read(ready, rbuf.spare(16 * 1024)) {
            Ok(0) => return Ok(false),
            Ok(n) => rbuf.filled(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
        let used = dispatch(ctx, dec, rbuf.data());
        rbuf.consume(used);
        rbuf.shrink_if_idle(64 * 1024);
    }
    Ok(true)
}

/// Whether `CLIENT PAUSE` holds this request (and every later one): it stays unparsed in the
/// session's buffer and the session waits ([`crate::session::pause::wait`]).
#[inline]
fn held_by_pause(ctx: &mut Session, argv: &[&[u8]]) -> bool {
    let pool = ctx.pool.rt.index;
    if !crate::session::pause::active(pool) || argv.is_empty() {
        return false;
    }
    // A renamed command is paused as the command it is.
    let cmd = match ctx.pool.rt.policy.lookup(argv[0]) {
        crate::topology::policy::Named::Table(c) => c,
        crate::topology::policy::Named::Renamed(c) => Some(c),
    };
    ctx.client.held = crate::session::pause::holds(pool, cmd, argv);
    ctx.client.held.is_some()
}

/// Whether the failed-AUTH back-off holds this request: an `AUTH` (or `HELLO ... AUTH`)
/// from an address with recent failures stays unparsed in the session's buffer until its
/// wait is over (`session::backoff`), and the session reads nothing meanwhile.
fn held_by_backoff(ctx: &mut Session, argv: &[&[u8]]) -> bool {
    let auth = match argv {
        [c, ..] if c.eq_ignore_ascii_case(b"auth") => true,
        [c, rest @ ..] if c.eq_ignore_ascii_case(b"hello") => {
            rest.iter().any(|a| a.eq_ignore_ascii_case(b"auth"))
        }
        _ => false,
    };
    if !auth {
        return false;
    }
    if ctx.client.auth_held.is_some() {
        return true;
    }
    if std::mem::take(&mut ctx.client.auth_waited) {
        return false;
    }
    let ip = crate::session::backoff::ip_of(&ctx.client.addr);
    match crate::session::backoff::delay(ip) {
        Some(d) => {
            ctx.client.auth_held = Some(std::time::Instant::now() + d);
            true
        }
        None => false,
    }
}

/// Dispatch every complete request at the front of `buf`; returns the bytes consumed.
fn dispatch(ctx: &mut Session, dec: &mut RequestDecoder, buf: &[u8]) -> usize {
    let mut off = 0;
    let mut argv: Vec<&[u8]> = Vec::new();
    ctx.begin_batch();
    while off < buf.len() && ctx.can_dispatch() && !ctx.client.closing {
        // Until AUTH, only small requests (Redis' limits); AUTH or RESET may change it.
        dec.set_unauthenticated(!ctx.client.authed);
        match dec.decode(&buf[off..]) {
            Ok(Some(Request::Multibulk { len, args })) => {
                argv.clear();
                argv.extend(args.iter().map(|r| &buf[off + r.start..off + r.end]));
                if held_by_pause(ctx, &argv) || held_by_backoff(ctx, &argv) {
                    break;
                }
                if !argv.is_empty() && !ctx.handle(&argv, Some(&buf[off..off + len])) {
                    // A blocking command waits for the earlier replies.
                    break;
                }
                off += len;
            }
            Ok(Some(Request::Inline { len, args })) => {
                let inline: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                if held_by_pause(ctx, &inline) || held_by_backoff(ctx, &inline) {
                    break;
                }
                if !inline.is_empty() && !ctx.handle(&inline, None) {
                    break;
                }
                off += len;
            }
            Ok(None) => break,
            Err(e) => {
                ctx.reply_error(&format!("ERR {e}"));
                ctx.client.closing = true;
                ctx.errored = true;
                return buf.len();
            }
        }
    }
    off
}
