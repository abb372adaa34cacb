//! The admin listener's accept loop, bounded so that it can never hold the file descriptors
//! the proxy needs for its clients:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once; one more is answered `503` and closed
//!   at once;
//! - a connection must send each request header within [`HEADER_TIMEOUT`] (also while it
//!   waits between requests), else it is closed;
//! - a connection lives at most [`MAX_CONNECTION_AGE`]: then it finishes the request in
//!   progress and closes (a client that stops reading a reply cannot keep its slot);
//! - the body limits are the guard's ([`super::guard`]).
//!
//! It runs hyper's HTTP/1 connection builder itself because `axum::serve` cannot set a
//! header read timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::guard::{LocalAddr, PeerAddr};

/// Connections served at once (32); more are refused until one closes.
pub const MAX_CONNECTIONS: usize = 32;

/// Time to send a whole request header, from the connection's start or the end of its
/// previous reply (5 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Age after which a connection is closed once its current request is answered (60 s).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// Time an ageing or stopping connection gets to finish its reply before it is dropped (5 s).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Largest request header, in bytes (hyper's read buffer; 16 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Minimum time between two log lines about refused connections or accept errors.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The answer to a connection over the cap.
fn busy() -> String {
    let body = format!(
        "the admin interface has {MAX_CONNECTIONS} connections open, its limit; try again shortly\n"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The admin listener's TLS and what tells it a reload happened.
pub type Tls = (Arc<super::tls::AdminTls>, Arc<crate::topology::Shared>);

/// Accept and serve connections to `app` until `stop` is cancelled; then every connection
/// gets `CLOSE_GRACE` to finish its reply. With `tls`, each connection's TLS handshake must
/// complete within [`HEADER_TIMEOUT`], with the certificate current at its arrival.
pub async fn run(listener: TcpListener, app: Router, stop: CancellationToken, tls: Option<Tls>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut last_log: Option<Instant> = None;
    let mut quiet = |what: &str| {
        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            last_log = Some(Instant::now());
            tracing::warn!("admin interface: {what}");
        }
    };
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let sock = match accepted {
            Ok((sock, _)) => sock,
            Err(e) => {
                // Out of file descriptors, most often: wait instead of spinning.
                quiet(&format!("cannot accept a connection: {e}"));
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            quiet(&format!(
                "{MAX_CONNECTIONS} connections are open, refusing more until one closes"
            ));
            // One non-blocking write; the socket closes when dropped here.
            let _ = sock.try_write(busy().as_bytes());
            continue;
        };
        let app = match sock.local_addr() {
            Ok(local) => app.clone().layer(Extension(LocalAddr(local))),
            Err(_) => app.clone(),
        };
        let app = match sock.peer_addr() {
            Ok(peer) => app.layer(Extension(PeerAddr(peer))),
            Err(_) => app,
        };
        match &tls {
            None => {
                conns.spawn(serve_one(sock, app, stop.clone(), slot));
            }
            Some((t, shared)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(t.config(shared));
                let stop = stop.clone();
                conns.spawn(async move {
                    let peer = peer_of(&sock);
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => serve_one(s, app, stop, slot).await,
                        Ok(Err(e)) => {
                            tracing::debug!("admin TLS handshake from {peer} failed: {e}")
                        }
                        Err(_) => tracing::debug!("admin TLS handshake from {peer} timed out"),
                    }
                });
            }
        }
    }
    while conns.join_next().await.is_some() {}
}

fn peer_of(sock: &TcpStream) -> String {
    sock.peer_addr()
        .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string())
}

/// The TCP socket under a connection, plain or TLS.
trait Socket: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn serve_one<S: Socket>(
    sock: S,
    app: Router,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let peer = peer_of(sock.tcp());
    let _ = sock.tcp().set_nodelay(true);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let conn = http.serve_connection(TokioIo::new(sock), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("admin connection from {peer} closed: {e}");
            }
            return;
        }
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}
