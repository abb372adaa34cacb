//! [`FaultLink`]: a TCP forwarder from a loopback port to a target whose behaviour can
//! be switched while tests run: pass, delay, blackhole, reset.
//!
//! ```text
//!  client ──> 127.0.0.1:link ──[pump: client -> target]──> target
//!         <──                <──[pump: target -> client]──
//! ```
//! Each accepted connection gets two pump threads. Pumps read with a short timeout so
//! they notice mode changes, `close_all`, and the link being dropped within ~20 ms.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::SockRef;

/// How often idle pumps and the acceptor look at the flags.
const TICK: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the link does with traffic. A change applies to existing connections too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes unchanged.
    Pass,
    /// Hold every chunk for this long before forwarding it, in both directions.
    Delay(Duration),
    /// Accept and read, but forward nothing and answer nothing. Connections accepted
    /// in this mode are never connected to the target, and stay sinks after the mode
    /// changes back (a new connection is needed to get through again).
    Blackhole,
    /// Close every connection with a TCP RST (SO_LINGER 0); new connections are accepted
    /// by the kernel and then reset at once, so the client's first read fails.
    Reset,
}

/// Control handles of one proxied connection, kept so the link can close it.
struct ConnCtl {
    client: TcpStream,
    upstream: Option<TcpStream>,
    closed: Arc<AtomicBool>,
}

impl ConnCtl {
    /// Closes both sides: with RST when `rst`, else with a FIN.
    fn close(&self, rst: bool) {
        self.closed.store(true, Ordering::SeqCst);
        for s in std::iter::once(&self.client).chain(self.upstream.as_ref()) {
            if rst {
                // Linger 0 makes the last close of the socket send RST; the pumps drop
                // their handles within one tick.
                let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
            } else {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

struct Shared {
    target: SocketAddr,
    mode: Mutex<Mode>,
    shutdown: AtomicBool,
    conns: Mutex<HashMap<u64, ConnCtl>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    accepted: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    fn close_all(&self, rst: bool) {
        for (_, conn) in lock(&self.conns).drain() {
            conn.close(rst);
        }
    }

    fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(thread::spawn(f));
    }
}

/// A fault-injecting TCP forwarder on `127.0.0.1:<free port>`. All its threads stop
/// and all its connections close when it is dropped.
pub struct FaultLink {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultLink")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .field("mode", &self.shared.mode())
            .finish()
    }
}

impl FaultLink {
    /// Starts forwarding from a new loopback port to `target` (for example
    /// `redis.addr()`) in [`Mode::Pass`]. The listener stays open for the link's whole
    /// life, so there is no port race.
    ///
    /// # Panics
    /// If `target` does not resolve or the listener cannot be set up.
    pub fn start(target: &str) -> FaultLink {
        let target = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("FaultLink: cannot resolve target {target:?}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("FaultLink: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("FaultLink: local_addr: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("FaultLink: set_nonblocking: {e}"));
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(Mode::Pass),
            shutdown: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(&listener, &shared))
        };
        FaultLink {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// The link's listen port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `"127.0.0.1:PORT"` of the link, to give to the proxy instead of the target.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Switches the mode; [`Mode::Reset`] also resets every open connection at once.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        if mode == Mode::Reset {
            self.shared.close_all(true);
        }
    }

    /// Shorthand for `set_mode(Mode::Pass)`.
    pub fn pass(&self) {
        self.set_mode(Mode::Pass);
    }

    /// Shorthand for `set_mode(Mode::Delay(d))`.
    pub fn delay(&self, d: Duration) {
        self.set_mode(Mode::Delay(d));
    }

    /// Shorthand for `set_mode(Mode::Blackhole)`.
    pub fn blackhole(&self) {
        self.set_mode(Mode::Blackhole);
    }

    /// Shorthand for `set_mode(Mode::Reset)`.
    pub fn reset(&self) {
        self.set_mode(Mode::Reset);
    }

    /// Closes every open connection (both sides, with a FIN) without changing the mode.
    pub fn close_all(&self) {
        self.shared.close_all(false);
    }

    /// How many client connections the link has accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are currently open through the link.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }
}

impl Drop for FaultLink {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.close_all(false);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let shared2 = Arc::clone(shared);
                shared.spawn(move || serve(client, &shared2));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(TICK / 2),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Runs one accepted connection: connects upstream (unless blackholed or reset) and
/// pumps both directions until both end.
fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let mode = shared.mode();
    if mode == Mode::Reset || client.set_nonblocking(false).is_err() {
        let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
        return;
    }
    let upstream = if mode == Mode::Blackhole {
        None
    } else {
        match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
            Ok(s) => Some(s),
            Err(_) => {
                // The target refuses: pass the refusal on as a reset.
                let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
                return;
            }
        }
    };
    let Some(ctl) = register(shared, &client, upstream.as_ref()) else {
        return;
    };
    let (id, closed) = ctl;
    match upstream {
        None => pump(&client, None, shared, &closed),
        Some(up) => {
            let back = {
                let (shared, closed) = (Arc::clone(shared), Arc::clone(&closed));
                let (from, to) = (up.try_clone(), client.try_clone());
                thread::spawn(move || {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        pump(&from, Some(&to), &shared, &closed);
                    }
                })
            };
            pump(&client, Some(&up), shared, &closed);
            let _ = back.join();
        }
    }
    lock(&shared.conns).remove(&id);
}

/// Puts the connection's control handles into the registry; `None` if the sockets
/// cannot be configured (the connection is then simply dropped).
fn register(
    shared: &Shared,
    client: &TcpStream,
    upstream: Option<&TcpStream>,
) -> Option<(u64, Arc<AtomicBool>)> {
    for s in std::iter::once(client).chain(upstream) {
        s.set_read_timeout(Some(TICK)).ok()?;
        s.set_write_timeout(Some(TICK)).ok()?;
        let _ = s.set_nodelay(true);
    }
    let closed = Arc::new(AtomicBool::new(false));
    let ctl = ConnCtl {
        client: client.try_clone().ok()?,
        upstream: match upstream {
            Some(u) => Some(u.try_clone().ok()?),
            None => None,
        },
        closed: Arc::clone(&closed),
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    lock(&shared.conns).insert(id, ctl);
    Some((id, closed))
}

/// Copies `from` -> `to` by the current mode until EOF, an error, or a close.
fn pump(mut from: &TcpStream, to: Option<&TcpStream>, shared: &Shared, closed: &AtomicBool) {
    let stop = || closed.load(Ordering::SeqCst) || shared.shutdown.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop() {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // Pass the half-close on; the other direction keeps running.
                if let Some(to) = to {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(e) if is_tick(&e) => continue,
            Err(_) => break,
        };
        let Some(to) = to else { continue };
        match shared.mode() {
            Mode::Pass => {}
            Mode::Delay(d) => {
                if !sleep_unless(d, &stop) {
                    return;
                }
            }
            Mode::Blackhole => continue,
            Mode::Reset => return,
        }
        if write_all(to, &buf[..n], &stop).is_err() {
            break;
        }
    }
    // An error or a close on one side ends the whole connection.
    closed.store(true, Ordering::SeqCst);
}

fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// Sleeps for `d` in ticks; false if `stop` became true meanwhile.
fn sleep_unless(d: Duration, stop: &impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if stop() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(TICK));
    }
}

/// Writes everything, retrying write timeouts so a stop request is still noticed.
fn write_all(mut to: &TcpStream, mut data: &[u8], stop: &impl Fn() -> bool) -> io::Result<()> {
    while !data.is_empty() {
        if stop() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        match to.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if is_tick(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
