//! How every connection rampart opens to a Redis server introduces itself: [`connect`] (TCP
//! or a Unix socket, then TLS when the pool has `backend_tls`), `AUTH` (a password, with an
//! ACL user name when one is configured) and `SELECT` (a database other than 0).
//!
//! Every server connection (requests, dedicated and subscriber connections, health checks,
//! Sentinel, switchover, spool replay) is opened by [`connect`] with its pool's handshake, so
//! TLS applies to all of them alike, and its handshake time counts inside the caller's
//! connect timeout.
//!
//! One [`Handshake`] is built per pool from its config for the data nodes (`redis_username`,
//! `redis_auth`, `redis_db`) and one for its Sentinels (`sentinel_username`, `sentinel_password`, no
//! database). Request connections, health checks, the Sentinel follower's ROLE confirmation,
//! and switchover all send its commands first and judge the replies with
//! [`Handshake::check`], so a refused password reads the same everywhere:
//! `authentication failed: WRONGPASS invalid username-password pair or user is disabled.`

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rampart_config::{Pool, ServerAddr};

use crate::io::Stream;
use crate::observe::refused::{self, Creds, Peer};
use crate::tls::{Connector, Outcome};

/// One command of a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Auth,
    Select(u32),
    /// `READONLY`: a Redis Cluster replica serves reads of its slots on this connection
    /// (a primary ignores it).
    ReadOnly,
}

/// The commands a new connection sends before anything else, encoded once.
///
/// Its `Debug` output never shows the password.
#[derive(Clone, Default)]
pub struct Handshake {
    steps: Vec<Step>,
    /// One encoded command per step, in order.
    encoded: Vec<Bytes>,
    user: Option<String>,
    /// TLS to the server (`backend_tls`), with the pool's statistics slot for its counts.
    tls: Option<(Arc<Connector>, usize)>,
    /// The pool and the kind of server it introduces rampart to, for refused credentials
    /// ([`crate::observe::refused`]), and when this handshake was built; `None`: refusals
    /// are not followed.
    peer: Option<(Arc<str>, Peer, u64)>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("steps", &self.steps)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a handshake, or a command on a connection that needs one, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The server refused the credentials (`WRONGPASS`, or `AUTH` to a server without a
    /// password); the server's own words follow.
    #[error("authentication failed: {0}")]
    Refused(String),
    /// The server asks for a password and none was sent (`NOAUTH`).
    #[error("authentication required ({0})")]
    Required(String),
    /// `SELECT` was refused (for example a database beyond the server's `databases`).
    #[error("SELECT {0} failed: {1}")]
    Select(u32, String),
    /// A reply that is neither OK nor an error.
    #[error("unexpected reply to the connection set-up: {0}")]
    Unexpected(String),
    /// The server answered `BUSY` (a script or function running past its
    /// `busy-reply-threshold`): alive, but running nothing else until the script ends; the
    /// server's own words.
    #[error("{0}")]
    Busy(String),
}

impl HandshakeError {
    /// Whether the server answered `BUSY` (see [`HandshakeError::Busy`]).
    pub fn is_busy(&self) -> bool {
        matches!(self, HandshakeError::Busy(_))
    }
}

impl HandshakeError {
    /// Whether the server refused the credentials ([`HandshakeError::Refused`],
    /// [`HandshakeError::Required`]), as opposed to another step of the set-up.
    pub fn is_credentials(&self) -> bool {
        matches!(
            self,
            HandshakeError::Refused(_) | HandshakeError::Required(_)
        )
    }
}

impl Handshake {
    /// AUTH with `password` (and `user` when given; a user without a password sends
    /// nothing), then SELECT `db` unless it is 0.
    pub fn new(user: Option<&str>, password: Option<&str>, db: u32) -> Handshake {
        let mut steps = Vec::new();
        let mut encoded = Vec::new();
        if let Some(pass) = password {
            let mut out = BytesMut::new();
            let auth: &[u8] = b"AUTH";
            match user {
                Some(u) => resp::encode::command(&mut out, &[auth, u.as_bytes(), pass.as_bytes()]),
                None => resp::encode::command(&mut out, &[auth, pass.as_bytes()]),
            }
            steps.push(Step::Auth);
            encoded.push(out.freeze());
        }
        if db != 0 {
            let mut out = BytesMut::new();
            let n = db.to_string();
            let select: &[u8] = b"SELECT";
            resp::encode::command(&mut out, &[select, n.as_bytes()]);
            steps.push(Step::Select(db));
            encoded.push(out.freeze());
        }
        Handshake {
            steps,
            encoded,
            user: password.and(user).map(str::to_string),
            tls: None,
            peer: None,
        }
    }

    /// The same, for the servers of kind `peer` of pool `pool`: credentials they refuse are
    /// counted and logged once per episode ([`crate::observe::refused`]).
    pub fn for_peer(mut self, pool: &str, peer: Peer) -> Handshake {
        static BUILT: AtomicU64 = AtomicU64::new(0);
        self.peer = Some((Arc::from(pool), peer, BUILT.fetch_add(1, Relaxed) + 1));
        self
    }

    /// Which credentials this handshake presents, for [`crate::observe::refused`]: when it
    /// was built and a digest of its commands and TLS (kept in memory only).
    fn creds(&self, built: u64) -> Creds {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.encoded.hash(&mut h);
        self.tls.is_some().hash(&mut h);
        Creds {
            built,
            digest: h.finish(),
        }
    }

    /// The same, with refusals and acceptances not followed: a trial before a reload is
    /// applied, while the running pool's own connections may still be refused.
    pub fn quiet(&self) -> Handshake {
        Handshake {
            peer: None,
            ..self.clone()
        }
    }

    /// Report that `addr` refused this handshake's credentials, `why` in words (the
    /// server's reply or the TLS failure; never the password).
    pub fn note_refused(&self, addr: &ServerAddr, why: &str) {
        if let Some((pool, peer, built)) = &self.peer {
            refused::refused(pool, *peer, &addr.to_string(), self.creds(*built), why);
        }
    }

    /// Report that `addr` accepted this handshake (a refusal episode, if any, ends).
    pub fn note_accepted(&self, addr: &ServerAddr) {
        if !refused::any() {
            return;
        }
        if let Some((pool, peer, built)) = &self.peer {
            refused::accepted(pool, *peer, &addr.to_string(), self.creds(*built));
        }
    }

    /// The same, opening TLS with `tls` first (`None`: plaintext); failed TLS handshakes
    /// are counted for the pool in statistics slot `pool`.
    pub fn with_tls(mut self, tls: Option<Arc<Connector>>, pool: usize) -> Handshake {
        self.tls = tls.map(|c| (c, pool));
        self
    }

    /// Whether connections open TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// For the pool's data nodes: `redis_username`, `redis_auth`, `redis_db`; in a cluster
    /// pool, then
    /// `READONLY`, so a replica answers reads of its slots instead of redirecting them.
    pub fn data(conf: &Pool) -> Handshake {
        let mut h = Handshake::new(
            conf.redis_username.as_deref(),
            conf.redis_auth.as_deref(),
            conf.redis_db,
        );
        if conf.is_cluster() {
            let mut out = BytesMut::new();
            resp::encode::command(&mut out, &[&b"READONLY"[..]]);
            h.steps.push(Step::ReadOnly);
            h.encoded.push(out.freeze());
        }
        h.for_peer(&conf.name, Peer::Node)
    }

    /// The same with its AUTH only (TLS kept): for a connection that ends a running script
    /// (`SCRIPT KILL`, `FUNCTION KILL`), which a busy server lets through where it answers
    /// `SELECT` and `READONLY` with `BUSY`, and which needs neither.
    pub fn auth_only(&self) -> Handshake {
        let mut h = self.clone();
        let keep: Vec<bool> = h.steps.iter().map(|s| *s == Step::Auth).collect();
        let mut k = keep.iter();
        h.steps.retain(|_| k.next().copied().unwrap_or(false));
        let mut k = keep.iter();
        h.encoded.retain(|_| k.next().copied().unwrap_or(false));
        h
    }

    /// For the pool's Sentinels: `sentinel_username`, `sentinel_password`, database 0.
    pub fn sentinel(conf: &Pool) -> Handshake {
        Handshake::new(
            conf.sentinel_username.as_deref(),
            conf.sentinel_password.as_deref(),
            0,
        )
        .for_peer(&conf.name, Peer::Sentinel)
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The encoded commands, in the order they must be sent; each is answered by one reply.
    pub fn commands(&self) -> &[Bytes] {
        &self.encoded
    }

    /// Judge the reply to command `step` (its index in [`Handshake::commands`]): `Ok` with a
    /// status or bulk reply's payload, `Err` with an error reply's text.
    ///
    /// # Errors
    /// The reply is an error or not OK; the error names what failed in words.
    pub fn check(&self, step: usize, reply: Result<&[u8], &str>) -> Result<(), HandshakeError> {
        let what = self.steps.get(step).copied().unwrap_or(Step::Auth);
        match reply {
            Ok(b"OK") => Ok(()),
            Ok(other) => Err(HandshakeError::Unexpected(
                String::from_utf8_lossy(other).into_owned(),
            )),
            Err(e) if e.starts_with("BUSY ") => Err(HandshakeError::Busy(e.to_string())),
            Err(e) => Err(match what {
                Step::Auth => {
                    auth_error(e).unwrap_or_else(|| HandshakeError::Refused(e.to_string()))
                }
                Step::Select(db) => {
                    auth_error(e).unwrap_or_else(|| HandshakeError::Select(db, e.to_string()))
                }
                Step::ReadOnly => auth_error(e)
                    .unwrap_or_else(|| HandshakeError::Unexpected(format!("READONLY: {e}"))),
            }),
        }
    }

    /// [`Handshake::check`] of one raw RESP reply (`+OK\r\n`, `-ERR ...\r\n`, ...).
    ///
    /// # Errors
    /// As [`Handshake::check`].
    pub fn check_raw(&self, step: usize, raw: &[u8]) -> Result<(), HandshakeError> {
        let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        match body.split_first() {
            Some((b'+', rest)) => self.check(step, Ok(rest)),
            Some((b'-', rest)) => self.check(step, Err(&String::from_utf8_lossy(rest))),
            _ => self.check(step, Ok(body)),
        }
    }
}

/// The authentication failure an error reply reports, if it is one: `NOAUTH` (a password is
/// needed and none was given) or `WRONGPASS`. Any command's reply may say so, for example
/// the health check's PING to a server whose password the pool does not have.
pub fn auth_error(reply: &str) -> Option<HandshakeError> {
    if reply.starts_with("NOAUTH") {
        Some(HandshakeError::Required(reply.to_string()))
    } else if reply.starts_with("WRONGPASS") {
        Some(HandshakeError::Refused(reply.to_string()))
    } else {
        None
    }
}

/// Open a connection to `addr`: TCP (no delay; keepalive with `keepalive`) or a Unix socket,
/// then TLS when `hs` has it. The caller bounds it in time (the pool timeout, a health
/// check's timeout), TLS handshake included. The commands of `hs` are not sent here.
///
/// # Errors
/// The connect or the TLS handshake failed; a refused TLS handshake is counted and logged
/// as refused credentials ([`crate::observe::refused`]: once when it starts, then at most
/// once a minute) and its error says why in words, naming the node.
pub async fn connect(
    addr: &ServerAddr,
    hs: &Handshake,
    keepalive: bool,
) -> std::io::Result<Stream> {
    let (sock, host) = match addr {
        ServerAddr::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            if keepalive {
                socket2::SockRef::from(&s).set_keepalive(true)?;
            }
            (Stream::tcp(s.into_std()?)?, host.as_str())
        }
        ServerAddr::Unix(path) => (
            Stream::unix(tokio::net::UnixStream::connect(path).await?.into_std()?)?,
            "localhost",
        ),
    };
    let Some((tls, pool)) = &hs.tls else {
        return Ok(sock);
    };
    match tls.connect(sock, host).await {
        Ok(s) => Ok(s),
        Err(e) => {
            crate::tls::count(*pool, Outcome::BackendFailed);
            let why = format!("{addr}: {e}");
            match &hs.peer {
                Some(_) if refused_tls(&e) => hs.note_refused(addr, &e.to_string()),
                // The connection ended under the handshake (the server died or restarted):
                // a failed connection like any other, not refused credentials.
                Some(_) => {}
                None => crate::tls::log_backend_failure(&addr.to_string(), &e.to_string()),
            }
            Err(std::io::Error::new(e.kind(), why))
        }
    }
}

/// Whether a failed TLS handshake is a refusal (an alert, a certificate or name rejected,
/// no common version or cipher, not TLS at all: rustls' errors, kind `InvalidData`), as
/// opposed to the connection ending under it (end of stream, reset, timeout), which a
/// server that died or restarted causes as well.
fn refused_tls(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tls_level_failure_counts_as_refused() {
        use std::io::{Error, ErrorKind};
        assert!(refused_tls(&Error::new(ErrorKind::InvalidData, "alert")));
        for kind in [
            ErrorKind::UnexpectedEof,
            ErrorKind::ConnectionReset,
            ErrorKind::TimedOut,
            ErrorKind::BrokenPipe,
        ] {
            assert!(!refused_tls(&Error::new(kind, "gone")), "{kind:?}");
        }
    }

    #[test]
    fn auth_only_keeps_the_auth_and_drops_select() {
        let h = Handshake::new(Some("app"), Some("pw"), 3).auth_only();
        assert_eq!(h.commands().len(), 1);
        assert!(h.commands()[0].starts_with(b"*3\r\n$4\r\nAUTH\r\n"));
        assert!(Handshake::new(None, None, 3).auth_only().is_empty());
    }

    #[test]
    fn commands_are_auth_then_select() {
        let h = Handshake::new(Some("app"), Some("pw"), 3);
        let cmds: Vec<&[u8]> = h.commands().iter().map(|b| &b[..]).collect();
        assert_eq!(
            cmds,
            vec![
                &b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n"[..],
                &b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"[..],
            ]
        );
        assert!(Handshake::new(None, None, 0).is_empty());
        let only_db = Handshake::new(Some("app"), None, 1);
        assert_eq!(only_db.commands().len(), 1, "a user alone sends no AUTH");
        assert!(!format!("{h:?}").contains("pw"), "{h:?}");
    }

    #[test]
    fn refusals_are_named_in_words() {
        let h = Handshake::new(None, Some("pw"), 9);
        assert_eq!(h.check_raw(0, b"+OK\r\n"), Ok(()));
        let wrong = "WRONGPASS invalid username-password pair or user is disabled.";
        assert_eq!(
            h.check(0, Err(wrong)).map_err(|e| e.to_string()),
            Err(format!("authentication failed: {wrong}"))
        );
        assert_eq!(
            h.check_raw(1, b"-ERR DB index is out of range\r\n")
                .map_err(|e| e.to_string()),
            Err("SELECT 9 failed: ERR DB index is out of range".into())
        );
        assert_eq!(
            auth_error("NOAUTH Authentication required.").map(|e| e.to_string()),
            Some("authentication required (NOAUTH Authentication required.)".into())
        );
        assert_eq!(auth_error("LOADING Redis is loading"), None);
        assert!(matches!(
            h.check_raw(0, b"$-1\r\n"),
            Err(HandshakeError::Unexpected(_))
        ));
    }
}
