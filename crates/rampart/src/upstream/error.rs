//! Why a request could not be served by a node, kept as a value until its reply is written.
//!
//! A [`Failure`] is made where the failure is seen (routing, the hold, a connection), travels
//! by value with the request (through a retry or the hold) and becomes the client's error reply
//! only in [`crate::upstream::sink::Sink::fail`]. Until then it keeps its kind: a timed-out
//! connection is `Failure::Connection { kind: ConnFailure::Timeout, .. }`, not a sentence, and
//! it knows whether the request may be sent again ([`Failure::may_retry`]).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::handshake::HandshakeError;

/// Why a connection to a node ended, or could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnFailure {
    /// The server made no progress for the pool `timeout` with requests outstanding, or the
    /// connect took longer than that.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection.
    #[error("connection closed by server")]
    Eof,
    /// A socket error (a refused or reset connection, ...); the error keeps its
    /// [`io::ErrorKind`].
    #[error("{0}")]
    Io(Arc<io::Error>),
    /// The server sent something that is not a reply to a request of ours.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The connection's set-up (AUTH, SELECT) was refused. (Boxed: the rarest kind need not
    /// make every failure larger.)
    #[error("{0}")]
    Setup(Box<HandshakeError>),
    /// rampart closed it: the node was switched away from (failover, health check) or a
    /// reload retired it.
    #[error("node switched away from (failover or health check)")]
    Closed,
}

impl ConnFailure {
    /// The server answered `BUSY` to the connection's set-up: it is alive, busy with a
    /// script, and this says nothing against its health.
    pub fn is_busy(&self) -> bool {
        matches!(self, ConnFailure::Setup(e) if e.is_busy())
    }
}

impl From<HandshakeError> for ConnFailure {
    fn from(e: HandshakeError) -> Self {
        ConnFailure::Setup(Box::new(e))
    }
}

impl From<io::Error> for ConnFailure {
    fn from(e: io::Error) -> Self {
        ConnFailure::Io(Arc::new(e))
    }
}

/// A shard's primary that cannot take writes, as its health checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryDown {
    /// The primary's label (its address, or name where configured); `None` when the shard
    /// has no primary to name.
    pub node: Option<String>,
    /// The reason of its last failed check; empty when none is known (an ejected node).
    pub reason: String,
}

impl fmt::Display for PrimaryDown {
    /// `127.0.0.1:6379 is down: <reason>`, `127.0.0.1:6379 is down`, or `it is down`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            None => f.write_str("it is down"),
            Some(n) if self.reason.is_empty() => write!(f, "{n} is down"),
            Some(n) => write!(f, "{n} is down: {}", self.reason),
        }
    }
}

/// Why a request (or one part of a split request) failed between rampart and the nodes.
///
/// Its `Display` is the message of the client's error reply, [`Failure::reply`] the whole
/// reply (`-ERR rampart: <message>\r\n`). Shards and nodes are named by their labels.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// A write found no primary to take it and waiting cannot help. `cause`: why the
    /// configured primary is out (its health checks), when the write was refused for that
    /// reason rather than because the shard names no writable primary at all.
    #[error("shard '{shard}' has no primary available{}", no_primary_cause(.cause))]
    NoPrimary {
        /// The shard's name.
        shard: String,
        /// Why its primary is out, as its checks saw it.
        cause: Option<PrimaryDown>,
    },
    /// A read found no node that may serve it (by the pool's `read_policy`).
    #[error("shard '{shard}' has no node available for reads")]
    NoReadNode {
        /// The shard's name.
        shard: String,
    },
    /// A write could not wait for a primary: the shard's held writes are at
    /// `failover_hold_bytes`. The write was not sent.
    #[error("shard '{shard}' has no primary and its failover_hold_bytes are full")]
    HoldFull {
        /// The shard's name.
        shard: String,
    },
    /// A held write waited `failover_hold` and no primary appeared. The write was not sent.
    #[error(
        "shard '{shard}' has no primary; the write was not sent (failover_hold of {} passed{})",
        humantime::format_duration(*.hold),
        hold_expired_cause(.cause)
    )]
    HoldExpired {
        /// The shard's name.
        shard: String,
        /// The pool's `failover_hold`.
        hold: Duration,
        /// Why its primary is out, when its checks say so.
        cause: Option<PrimaryDown>,
    },
    /// A command that needs a connection of its own (a blocking command, WATCH, WAIT) waited
    /// for the shard's spool to be replayed, so as not to overtake the writes in it, and the
    /// spool still held some after `waited`. It was not sent.
    #[error(
        "shard '{shard}' is still replaying its spool; the command was not sent (waited {})",
        humantime::format_duration(*.waited)
    )]
    SpoolBusy {
        /// The shard's name.
        shard: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A dedicated connection (blocking commands) could not serve the request; it is never
    /// sent again.
    #[error("{0}")]
    Dedicated(#[from] crate::upstream::dedicated::DedicatedError),
    /// The session ended the request itself (its client left, rampart is shutting down).
    #[error("{0}")]
    Ended(&'static str),
    /// The server refused `MULTI` (an ACL that denies it to rampart's user, say), so it ran
    /// the transaction's commands one by one: they cannot be undone, and are never resent.
    #[error("server {node} refused MULTI, so it ran the transaction's commands one by one, not as a transaction")]
    MultiRefused {
        /// The node's label.
        node: String,
    },
    /// A cluster node redirected the request (`MOVED`, `ASK`) or asked for it again later
    /// (`TRYAGAIN`, `CLUSTERDOWN`): it did not run it. The client sees this only when the
    /// request cannot be sent again (redirections or retries used up, its deadline passed).
    #[error("the cluster still answers {reply} (from {node}; {tries} redirections followed); the command was not run")]
    Redirect {
        /// The node's label.
        node: String,
        /// The server's error reply (`MOVED 3999 127.0.0.1:6381`).
        reply: String,
        /// `MOVED`/`ASK` redirections followed so far (`TRYAGAIN`/`CLUSTERDOWN` retries
        /// within the pool timeout are not counted).
        tries: u32,
    },
    /// The node's connection is in back-off after a failed connect (or was just closed by
    /// the node): the request was refused unsent.
    #[error("server {node} is down: {reason}")]
    NodeDown {
        /// The node's label.
        node: String,
        /// What ended its last connection (or connect).
        reason: ConnFailure,
    },
    /// The node's connection holds [`crate::upstream::backend::MAX_WAITERS`] requests or
    /// [`crate::upstream::backend::MAX_QUEUED_BYTES`] bytes: the request was refused unsent.
    #[error("server {node} has too many queued requests")]
    QueueFull {
        /// The node's label.
        node: String,
    },
    /// The connection that carried the request failed.
    #[error("server {node} ({pool}): {kind}")]
    Connection {
        /// The node's label.
        node: String,
        /// The pool's name.
        pool: String,
        /// How the connection failed.
        kind: ConnFailure,
        /// Whether the request's bytes may have reached the server (then a write may have
        /// been applied and is never sent again).
        sent: bool,
    },
    /// A node that is no longer the primary refused the write with `READONLY`; Redis did not
    /// apply it.
    #[error("server {node} answered READONLY: it is no longer the primary")]
    ReadOnly {
        /// The node's label.
        node: String,
    },
    /// A shard of a cache pool that fails open cannot answer, and the request has no miss
    /// reply (or the pool's writes get errors): its circuit is open, or no reply came within
    /// `fail_open_timeout`.
    #[error("shard '{shard}' cannot answer: {why}")]
    CacheShardDown {
        /// The shard's name.
        shard: String,
        /// Why.
        why: &'static str,
    },
    /// A write the primary applied, whose `WAIT` (the pool's `min_replica_acks`) counted
    /// fewer replicas than required within `min_replica_acks_timeout`. It is never resent.
    #[error(
        "write applied on the primary but acknowledged by only {acked} of {wanted} replicas \
         within {}; it may not be durable",
        humantime::format_duration(*.within)
    )]
    NotDurable {
        /// How many replicas `WAIT` counted.
        acked: i64,
        /// The pool's `min_replica_acks`.
        wanted: u32,
        /// The pool's `min_replica_acks_timeout`.
        within: Duration,
    },
    /// A write the primary applied whose acknowledgement by replicas could not be counted:
    /// `WAIT` failed (`reason`: its error reply, or what ended the connection). It is never
    /// resent.
    #[error(
        "write applied on the primary but server {node} could not count the replicas that \
         have it ({reason}); it may not be durable"
    )]
    AcksUnknown {
        /// The primary's label.
        node: String,
        /// Why.
        reason: String,
    },
    /// A write that found no primary could not be spooled: the spool is full, stopped, or
    /// its disk failed. It was not sent and is not acknowledged.
    #[error("shard '{shard}' has no primary and the write could not be spooled: {reason}")]
    Spool {
        /// The shard's name.
        shard: String,
        /// Why the spool refused it (names the spool's directory).
        reason: String,
    },
    /// The request was waiting to be sent again when a reload replaced its pool.
    #[error("{cause} (the pool was reloaded meanwhile)")]
    Reloaded {
        /// Why it had to be sent again.
        cause: Box<Failure>,
    },
}

impl Failure {
    /// Whether this says the request's shard could not serve it because it is down or
    /// unreachable: no primary (or none in time: the hold expired or is full), no node for
    /// a read, a server connection refused, lost or timed out (or a node switched away
    /// from), a shard still replaying its spool or whose spool refused a write it had no
    /// primary for, a cluster that still answers `CLUSTERDOWN`. A client of a pool with
    /// `when_down: close` is closed for these, and a blocked client always is
    /// (`session::blocking::end`). Not: rampart's own limits (`QueueFull`), a server's answer
    /// (`MultiRefused`, `NotDurable`, `AcksUnknown`, a `MOVED`/`ASK`/`TRYAGAIN` `Redirect`), a
    /// fail-open pool's refusal (`CacheShardDown`) or the session ending it (`Ended`).
    pub fn shard_down(&self) -> bool {
        use crate::upstream::dedicated::DedicatedError as D;
        match self {
            Failure::NoPrimary { .. }
            | Failure::NoReadNode { .. }
            | Failure::HoldFull { .. }
            | Failure::HoldExpired { .. }
            | Failure::SpoolBusy { .. }
            | Failure::Spool { .. }
            | Failure::NodeDown { .. }
            | Failure::Connection { .. } => true,
            Failure::Dedicated(d) => matches!(
                d,
                D::Failed(..) | D::Timeout(_) | D::Switched(_) | D::Reloaded(_) | D::Moved(_)
            ),
            Failure::Reloaded { cause } => cause.shard_down(),
            // The cluster says it is down (a primary lost, full coverage required).
            Failure::Redirect { reply, .. } => reply.starts_with("CLUSTERDOWN"),
            Failure::QueueFull { .. }
            | Failure::Ended(_)
            | Failure::MultiRefused { .. }
            | Failure::ReadOnly { .. }
            | Failure::CacheShardDown { .. }
            | Failure::NotDurable { .. }
            | Failure::AcksUnknown { .. } => false,
        }
    }
}

fn no_primary_cause(cause: &Option<PrimaryDown>) -> String {
    cause
        .as_ref()
        .map(|d| format!(": {d}; the write was not sent"))
        .unwrap_or_default()
}

fn hold_expired_cause(cause: &Option<PrimaryDown>) -> String {
    cause.as_ref().map(|d| format!("; {d}")).unwrap_or_default()
}

impl Failure {
    /// The node closed the connection that carried (or would have carried) the request: it
    /// broke with EOF, or is in the short pause before reconnecting that follows one.
    pub fn closed_by_server(&self) -> bool {
        matches!(
            self,
            Failure::Connection {
                kind: ConnFailure::Eof,
                ..
            } | Failure::NodeDown {
                reason: ConnFailure::Eof,
                ..
            }
        )
    }

    /// The client's error reply: `-ERR rampart: <message>\r\n`.
    pub fn reply(&self) -> Vec<u8> {
        match self {
            // The server answered BUSY to the set-up, and so to the requests behind it: the
            // client gets the server's own error, as it would directly.
            Failure::Connection {
                kind: ConnFailure::Setup(e),
                ..
            } if e.is_busy() => format!("-{e}\r\n").into_bytes(),
            _ => format!("-ERR rampart: {self}\r\n").into_bytes(),
        }
    }

    /// Whether no server can have carried out the request, so sending it again (to another
    /// node, or to a new primary) cannot apply it twice. False only for a request whose
    /// bytes may have reached a server before its connection failed.
    pub fn may_retry(&self) -> bool {
        match self {
            Failure::Connection { sent, .. } => !sent,
            Failure::MultiRefused { .. }
            | Failure::Dedicated(_)
            | Failure::Ended(_)
            | Failure::CacheShardDown { .. }
            | Failure::NotDurable { .. }
            | Failure::AcksUnknown { .. }
            | Failure::Spool { .. } => false,
            Failure::Reloaded { cause } => cause.may_retry(),
            Failure::NoPrimary { .. }
            | Failure::NoReadNode { .. }
            | Failure::HoldFull { .. }
            | Failure::HoldExpired { .. }
            | Failure::SpoolBusy { .. }
            | Failure::NodeDown { .. }
            | Failure::QueueFull { .. }
            | Failure::Redirect { .. }
            | Failure::ReadOnly { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(reason: &str) -> Option<PrimaryDown> {
        Some(PrimaryDown {
            node: Some("127.0.0.1:6379".into()),
            reason: reason.into(),
        })
    }

    fn reply(f: &Failure) -> String {
        String::from_utf8(f.reply()).unwrap()
    }

    #[test]
    fn a_set_up_answered_busy_gives_the_servers_own_error() {
        let busy = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
        let kind = ConnFailure::from(HandshakeError::Busy(busy.into()));
        assert!(kind.is_busy());
        let f = Failure::Connection {
            node: "127.0.0.1:7000".into(),
            pool: "c".into(),
            kind,
            sent: true,
        };
        assert_eq!(f.reply(), format!("-{busy}\r\n").into_bytes());
        let other = ConnFailure::from(HandshakeError::Unexpected("READONLY: ERR x".into()));
        assert!(!other.is_busy());
    }

    #[test]
    fn each_failure_renders_its_reply() {
        let shard = || "s1".to_string();
        let node = || "127.0.0.1:6379".to_string();
        let cases = [
            (
                Failure::NoPrimary {
                    shard: shard(),
                    cause: None,
                },
                "-ERR rampart: shard 's1' has no primary available\r\n",
            ),
            (
                Failure::NoPrimary {
                    shard: shard(),
                    cause: down("check: timed out"),
                },
                "-ERR rampart: shard 's1' has no primary available: 127.0.0.1:6379 is down: \
                 check: timed out; the write was not sent\r\n",
            ),
            (
                Failure::NoPrimary {
                    shard: shard(),
                    cause: Some(PrimaryDown {
                        node: None,
                        reason: String::new(),
                    }),
                },
                "-ERR rampart: shard 's1' has no primary available: it is down; the write was \
                 not sent\r\n",
            ),
            (
                Failure::NoReadNode { shard: shard() },
                "-ERR rampart: shard 's1' has no node available for reads\r\n",
            ),
            (
                Failure::HoldFull { shard: shard() },
                "-ERR rampart: shard 's1' has no primary and its failover_hold_bytes are full\r\n",
            ),
            (
                Failure::HoldExpired {
                    shard: shard(),
                    hold: Duration::from_millis(300),
                    cause: None,
                },
                "-ERR rampart: shard 's1' has no primary; the write was not sent (failover_hold \
                 of 300ms passed)\r\n",
            ),
            (
                Failure::HoldExpired {
                    shard: shard(),
                    hold: Duration::from_secs(5),
                    cause: down(""),
                },
                "-ERR rampart: shard 's1' has no primary; the write was not sent (failover_hold \
                 of 5s passed; 127.0.0.1:6379 is down)\r\n",
            ),
            (
                Failure::NodeDown {
                    node: node(),
                    reason: ConnFailure::Eof,
                },
                "-ERR rampart: server 127.0.0.1:6379 is down: connection closed by server\r\n",
            ),
            (
                Failure::QueueFull { node: node() },
                "-ERR rampart: server 127.0.0.1:6379 has too many queued requests\r\n",
            ),
            (
                Failure::Connection {
                    node: node(),
                    pool: "demo".into(),
                    kind: ConnFailure::Timeout,
                    sent: true,
                },
                "-ERR rampart: server 127.0.0.1:6379 (demo): timed out\r\n",
            ),
            (
                Failure::Connection {
                    node: node(),
                    pool: "demo".into(),
                    kind: ConnFailure::Protocol("reply without a request".into()),
                    sent: true,
                },
                "-ERR rampart: server 127.0.0.1:6379 (demo): unexpected reply: reply without a \
                 request\r\n",
            ),
            (
                Failure::Connection {
                    node: node(),
                    pool: "demo".into(),
                    kind: ConnFailure::Closed,
                    sent: false,
                },
                "-ERR rampart: server 127.0.0.1:6379 (demo): node switched away from (failover \
                 or health check)\r\n",
            ),
            (
                Failure::Connection {
                    node: node(),
                    pool: "demo".into(),
                    kind: HandshakeError::Refused(
                        "WRONGPASS invalid username-password pair".into(),
                    )
                    .into(),
                    sent: false,
                },
                "-ERR rampart: server 127.0.0.1:6379 (demo): authentication failed: WRONGPASS \
                 invalid username-password pair\r\n",
            ),
            (
                Failure::ReadOnly { node: node() },
                "-ERR rampart: server 127.0.0.1:6379 answered READONLY: it is no longer the \
                 primary\r\n",
            ),
            (
                Failure::NotDurable {
                    acked: 1,
                    wanted: 2,
                    within: Duration::from_millis(1500),
                },
                "-ERR rampart: write applied on the primary but acknowledged by only 1 of 2 \
                 replicas within 1s 500ms; it may not be durable\r\n",
            ),
            (
                Failure::AcksUnknown {
                    node: node(),
                    reason: "connection closed".into(),
                },
                "-ERR rampart: write applied on the primary but server 127.0.0.1:6379 could \
                 not count the replicas that have it (connection closed); it may not be \
                 durable\r\n",
            ),
            (
                Failure::Reloaded {
                    cause: Box::new(Failure::QueueFull { node: node() }),
                },
                "-ERR rampart: server 127.0.0.1:6379 has too many queued requests (the pool was \
                 reloaded meanwhile)\r\n",
            ),
            (
                // Retried for the whole pool timeout, with no redirection.
                Failure::Redirect {
                    node: node(),
                    reply: "CLUSTERDOWN The cluster is down".into(),
                    tries: 0,
                },
                "-ERR rampart: the cluster still answers CLUSTERDOWN The cluster is down (from \
                 127.0.0.1:6379; 0 redirections followed); the command was not run\r\n",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(reply(&f), want, "{f:?}");
        }
    }

    #[test]
    fn a_refused_connect_keeps_its_io_kind() {
        let kind = ConnFailure::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let f = Failure::NodeDown {
            node: "127.0.0.1:1".into(),
            reason: kind,
        };
        assert!(
            matches!(&f, Failure::NodeDown { reason: ConnFailure::Io(e), .. }
                if e.kind() == io::ErrorKind::ConnectionRefused),
            "{f:?}"
        );
        assert!(f.may_retry(), "a refused connect sent nothing");
    }

    #[test]
    fn only_a_request_that_may_have_reached_a_server_may_not_be_retried() {
        let conn = |sent| Failure::Connection {
            node: "n".into(),
            pool: "p".into(),
            kind: ConnFailure::Timeout,
            sent,
        };
        assert!(!conn(true).may_retry());
        assert!(conn(false).may_retry());
        let reloaded = |f| Failure::Reloaded { cause: Box::new(f) };
        assert!(!reloaded(conn(true)).may_retry());
        assert!(reloaded(Failure::ReadOnly { node: "n".into() }).may_retry());
        assert!(Failure::HoldFull { shard: "s".into() }.may_retry());
        let short = Failure::NotDurable {
            acked: 0,
            wanted: 1,
            within: Duration::from_secs(1),
        };
        assert!(!short.may_retry(), "applied on the primary: never resent");
    }
}

/// The kinds a real connection reports, seen where the router gets them back.
#[cfg(test)]
mod seen_on_a_connection {
    use std::rc::Rc;

    use tokio::time::Instant;

    use super::*;
    use crate::observe::stats::Metrics;
    use crate::reply::pending::Pending;
    use crate::topology::PoolRt;
    use crate::upstream::backend::Backend;
    use crate::upstream::sink::{Resend, Retries, Retry, Sink};

    /// A plain pool of one node at `addr` with a 200 ms timeout: one connection slot to it.
    fn backend(addr: &str) -> Rc<Backend> {
        let yml =
            format!("demo:\n  listen: 127.0.0.1:1\n  timeout: 200\n  servers:\n   - {addr}:1 s0\n");
        let conf = rampart_config::parse(&yml, "test").expect("test config parses");
        let pool = conf.pools.into_iter().next().expect("one pool");
        let pool = Arc::new(PoolRt::new(0, pool, 1));
        let node = Arc::clone(&pool.shards[0].view().nodes[0]);
        Backend::new(pool, 0, node, 0, Metrics::new(1, 1).worker(0), false)
    }

    /// A GET (`write` false) or SET that may be sent again through `queue`.
    fn sink(pending: &Rc<Pending>, queue: &Rc<Retries>, write: bool) -> Sink {
        let mut sink = Sink::new(pending, pending.push_waiting(), 0);
        sink.resend = Some(Box::new(Resend {
            bytes: Vec::new(),
            shard: 0,
            write,
            client: 1,
            retried: false,
            redirects: 0,
            redirected_at: None,
            asking: false,
            queue: Rc::clone(queue),
        }));
        sink
    }

    fn send(b: &Rc<Backend>, sink: Sink, cmd: &[u8]) -> Result<(), (Sink, Failure)> {
        let deadline = Instant::now() + Duration::from_millis(200);
        b.send_or_return(sink, deadline, |out| out.extend_from_slice(cmd))
    }

    const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";

    /// The next request the connection gives back to the router.
    async fn given_back(queue: &Retries) -> Retry {
        let wait = async {
            queue.wait().await;
            queue.pop()
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .ok()
            .flatten()
            .expect("a request is given back within 5 s")
    }

    fn run(f: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    #[test]
    fn a_frozen_server_is_a_timeout_and_a_sent_write_is_not_retried() {
        let redis = testkit::RedisServer::start();
        redis.stop();
        run(async {
            let b = backend(&redis.addr());
            let (pending, queue) = (Rc::new(Pending::default()), Rc::new(Retries::default()));
            assert!(send(&b, sink(&pending, &queue, false), GET).is_ok());
            assert!(send(&b, sink(&pending, &queue, true), SET).is_ok());
            let r = given_back(&queue).await;
            assert!(
                matches!(
                    r.failure,
                    Failure::Connection {
                        kind: ConnFailure::Timeout,
                        sent: true,
                        ..
                    }
                ),
                "{:?}",
                r.failure
            );
            assert!(queue.pop().is_none(), "the write is not given back");
            r.sink.fail(r.failure);
            // The node is configured with the name s0, which labels it.
            let want = "-ERR rampart: server s0 (demo): timed out\r\n";
            assert_eq!(
                String::from_utf8_lossy(&pending.out.borrow()),
                want.repeat(2),
                "the write that may have been applied fails"
            );
        });
        redis.cont();
    }

    #[test]
    fn a_refused_connect_keeps_its_kind_and_its_unsent_requests_may_be_retried() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            l.local_addr().expect("its address").port()
        };
        run(async {
            let b = backend(&format!("127.0.0.1:{port}"));
            let (pending, queue) = (Rc::new(Pending::default()), Rc::new(Retries::default()));
            assert!(send(&b, sink(&pending, &queue, true), SET).is_ok());
            let r = given_back(&queue).await;
            assert!(
                matches!(
                    &r.failure,
                    Failure::Connection { kind: ConnFailure::Io(e), sent: false, .. }
                        if e.kind() == io::ErrorKind::ConnectionRefused
                ),
                "{:?}",
                r.failure
            );
            // In the back-off that follows, requests are refused unsent with the same cause.
            match send(&b, sink(&pending, &queue, false), GET) {
                Err((_, f @ Failure::NodeDown { .. })) => {
                    assert!(f.may_retry());
                    assert!(
                        matches!(&f, Failure::NodeDown { reason: ConnFailure::Io(e), .. }
                            if e.kind() == io::ErrorKind::ConnectionRefused),
                        "{f:?}"
                    );
                }
                other => panic!("expected NodeDown, got {:?}", other.map_err(|e| e.1)),
            }
        });
    }
}
