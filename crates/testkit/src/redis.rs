//! [`RedisServer`]: one real `redis-server` process in its own temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::client::Client;
use crate::free_port;
use crate::process::{find_program, poll_until, read_lossy, wait_until, ChildGuard, START_TIMEOUT};
use crate::reply::Reply;

/// How many fresh ports a first start tries when it loses the [`free_port`] race.
const BIND_ATTEMPTS: usize = 3;

/// A `redis-server` bound to `127.0.0.1` on a free port, without persistence
/// (`--save "" --appendonly no`), its working directory and log in a temp dir.
///
/// It is killed with SIGKILL and reaped on drop; the temp dir is removed.
#[derive(Debug)]
pub struct RedisServer {
    child: ChildGuard,
    port: u16,
    args: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a plain server and waits until it answers PING.
    ///
    /// # Panics
    /// If it cannot be started or does not answer within ~5 s; the message includes its log.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra command-line arguments, for example
    /// `&["--maxmemory", "10mb"]` or `&["--replicaof", "127.0.0.1", "6379"]`,
    /// and waits until it answers PING.
    ///
    /// # Panics
    /// If it cannot be started or does not answer within ~5 s; the message includes its log.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("testkit-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("redis-server: cannot create temp dir: {e}"));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut last_log = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let mut child = launch(dir.path(), port, &args);
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return RedisServer {
                        child,
                        port,
                        args,
                        dir,
                    }
                }
                Err(()) => {
                    last_log = read_lossy(&dir.path().join("redis.log"));
                    if !last_log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("redis-server {args:?} did not become ready; log:\n{last_log}");
    }

    /// Starts a server that replicates from `master` (`--replicaof`) and waits until the
    /// initial sync has finished.
    ///
    /// # Panics
    /// As [`RedisServer::start_with`], or if the sync does not finish within 10 s.
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let port = master.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        replica.wait_replication_up(Duration::from_secs(10));
        replica
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:PORT"`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id (0 after [`RedisServer::kill9`] until [`RedisServer::restart`]).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The temp dir holding the log (`redis.log`) and any dump files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server wrote to stdout and stderr so far (all runs).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Kills the server with SIGKILL and reaps it; the port stays reserved for
    /// [`RedisServer::restart`].
    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// Freezes the server with SIGSTOP: it keeps accepting TCP connections (the kernel
    /// does that) but answers nothing until [`RedisServer::cont`].
    ///
    /// # Panics
    /// If the server is not running.
    pub fn stop(&self) {
        self.child.signal("STOP");
    }

    /// Resumes a server frozen by [`RedisServer::stop`].
    ///
    /// # Panics
    /// If the server is not running.
    pub fn cont(&self) {
        self.child.signal("CONT");
    }

    /// Kills the server if it runs, then starts it again on the same port with the same
    /// arguments (and empty data), waiting until it answers PING.
    ///
    /// # Panics
    /// If it does not come back within ~5 s.
    pub fn restart(&mut self) {
        self.restart_on(self.port);
    }

    /// Kills the server if it runs, then starts it again on `port` in the same directory
    /// with the same arguments (a cluster node keeps its `nodes.conf`, so its node id),
    /// waiting until it answers PING.
    ///
    /// # Panics
    /// If it does not come back within ~5 s.
    pub fn restart_on(&mut self, port: u16) {
        self.child.kill();
        self.port = port;
        self.child = launch(self.dir.path(), self.port, &self.args);
        if wait_ready(&mut self.child, self.port).is_err() {
            panic!(
                "redis-server did not restart on port {}; log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// Runs one command on a fresh connection and returns the reply.
    ///
    /// # Panics
    /// On connection or I/O errors (including a 5 s read timeout).
    pub fn cmd(&self, args: &[&str]) -> Reply {
        Client::connect(&self.addr()).cmd(args)
    }

    /// Makes this server a replica of `master` (`REPLICAOF 127.0.0.1 PORT`); returns the reply.
    /// Use [`RedisServer::wait_replication_up`] to wait for the sync.
    pub fn replica_of(&self, master: &RedisServer) -> Reply {
        self.cmd(&["REPLICAOF", "127.0.0.1", &master.port().to_string()])
    }

    /// Promotes this server to a primary (`REPLICAOF NO ONE`); returns the reply.
    pub fn replica_of_no_one(&self) -> Reply {
        self.cmd(&["REPLICAOF", "NO", "ONE"])
    }

    /// The text of `INFO section`.
    ///
    /// # Panics
    /// If the reply is not a bulk string.
    pub fn info(&self, section: &str) -> String {
        match self.cmd(&["INFO", section]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!(
                "INFO {section} on {}: unexpected reply {other:?}",
                self.addr()
            ),
        }
    }

    /// The first element of `ROLE`: `"master"`, `"slave"` or `"sentinel"`; an empty string
    /// when the connection fails or is cut (Sentinel, reconfiguring a server, kills its
    /// clients: callers poll this).
    ///
    /// # Panics
    /// If the reply is not the expected array.
    pub fn role(&self) -> String {
        let reply = match Client::try_connect(&self.addr()).and_then(|mut c| c.try_cmd(&["ROLE"])) {
            Ok(r) => r,
            Err(_) => return String::new(),
        };
        reply
            .as_array()
            .and_then(|items| items.first())
            .and_then(Reply::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("ROLE on {}: unexpected reply {reply:?}", self.addr()))
    }

    /// Waits until this replica reports `master_link_status:up`.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_replication_up(&self, timeout: Duration) {
        let what = format!("replica {} to finish syncing", self.addr());
        wait_until(timeout, &what, || {
            self.info("replication").contains("master_link_status:up")
        });
    }
}

fn launch(dir: &Path, port: u16, args: &[String]) -> ChildGuard {
    let mut cmd = Command::new(find_program("redis-server", "TESTKIT_REDIS_SERVER"));
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(args);
    ChildGuard::spawn(cmd, "redis-server", &dir.join("redis.log"))
}

/// Waits until the server answers PING with PONG; `Err` if it exits or time runs out.
fn wait_ready(child: &mut ChildGuard, port: u16) -> Result<(), ()> {
    let addr = format!("127.0.0.1:{port}");
    let ready = poll_until(START_TIMEOUT, || {
        if child.try_exit().is_some() {
            return Some(false);
        }
        let mut c = Client::try_connect(&addr).ok()?;
        c.set_read_timeout(Some(Duration::from_millis(500)));
        let pong = c.try_cmd(&["PING"]).ok()?;
        (pong == Reply::simple("PONG")).then_some(true)
    });
    match ready {
        Some(true) => Ok(()),
        _ => Err(()),
    }
}
