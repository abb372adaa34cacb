//! Listeners: one acceptor task per listen address enforces the pool's `client_connections`
//! (answering Redis' own error to the one over the limit), backs off when the process runs
//! out of file descriptors instead of spinning, and hands each accepted socket to a worker in
//! turn.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rampart_config::Listen;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

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
    /// Accepted on `tls_listen`: the worker runs the TLS handshake before the session.
    pub tls: bool,
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

pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// What one listener serves: its pool's requests in a mode, over TLS or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serves {
    /// Which requests.
    pub mode: Mode,
    /// Clients speak TLS (`tls_listen`).
    pub tls: bool,
}

/// Every address a pool listens on, with what each serves.
pub fn listens(p: &PoolRt) -> Vec<(&Listen, Serves)> {
    let c = &p.conf;
    let plain = |mode| Serves { mode, tls: false };
    let mut v = vec![(&c.listen, plain(Mode::All))];
    if let Some(l) = &c.read_listen {
        v.push((l, plain(Mode::Reads)));
    }
    if let Some(l) = &c.write_listen {
        v.push((l, plain(Mode::Writes)));
    }
    if let Some(l) = &c.tls_listen {
        v.push((
            l,
            Serves {
                mode: Mode::All,
                tls: true,
            },
        ));
    }
    v
}

pub(crate) fn bind_one(p: &PoolRt, listen: &Listen) -> anyhow::Result<Listener> {
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

/// A socket just accepted, before the pool's settings are applied to it.
enum Arrived {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

pub(crate) async fn accept_loop(
    (pool, serves): (Arc<str>, Serves),
    listener: Arc<Listener>,
    count: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    handoff: Handoff,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = match listener.as_ref() {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Arrived::Tcp(s, peer)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Arrived::Unix(s)),
        };
        // The pool's settings when the client arrived: a reload may have changed them while
        // this loop waited (the first client after it must not get the old limit).
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
        let accepted = accepted.and_then(|a| match a {
            Arrived::Tcp(s, peer) => {
                s.set_nodelay(true)?;
                if conf.tcpkeepalive {
                    socket2::SockRef::from(&s).set_keepalive(true)?;
                }
                Ok((RawConn::Tcp(s.into_std()?), is_loopback(peer.ip())))
            }
            Arrived::Unix(s) => Ok((RawConn::Unix(s.into_std()?), true)),
        });
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
            // A TLS client could not read the plaintext error; it is just closed.
            if !serves.tls {
                refuse(conn);
            }
            drop(guard);
            continue;
        }
        let id = handoff.next_id.fetch_add(1, Ordering::Relaxed);
        let workers = &handoff.workers;
        let mut job = Accepted {
            pool: Arc::clone(&pool),
            mode: serves.mode,
            local,
            tls: serves.tls,
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

/// A client address on the loopback network: `127.0.0.0/8` or `::1`, also when an IPv4
/// client reaches a dual-stack (`[::]`) listener and arrives as `::ffff:127.x.y.z`. Such
/// clients may run the operator commands in pools without users (docs/SECURITY.md).
fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_on_loopback() {
        for yes in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(yes.parse().unwrap()), "{yes}");
        }
        for no in ["10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "::"] {
            assert!(!is_loopback(no.parse().unwrap()), "{no}");
        }
    }
}
