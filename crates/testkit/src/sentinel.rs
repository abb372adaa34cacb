//! [`Sentinel`]: one real Redis Sentinel (`redis-server CONF --sentinel`) with a generated
//! config that monitors one or more primaries.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::client::Client;
use crate::free_port;
use crate::process::{find_program, poll_until, read_lossy, wait_until, ChildGuard, START_TIMEOUT};
use crate::reply::Reply;

/// One `sentinel monitor` entry: which primary to watch and how quickly to act.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// The master name clients ask for (`SENTINEL get-master-addr-by-name NAME`).
    pub name: String,
    /// The primary's port on 127.0.0.1.
    pub port: u16,
    /// How many sentinels must agree the primary is down.
    pub quorum: u32,
    /// `down-after-milliseconds`: silence before the primary is considered down.
    pub down_after: Duration,
    /// `failover-timeout`.
    pub failover_timeout: Duration,
    /// `auth-pass`: the password the sentinel sends to the primary and its replicas.
    pub auth_pass: Option<String>,
}

impl Monitor {
    /// Watches `127.0.0.1:port` under `name` with test-friendly defaults: quorum 1,
    /// down after 1 s, failover timeout 5 s.
    pub fn new(name: &str, port: u16) -> Monitor {
        Monitor {
            name: name.to_string(),
            port,
            quorum: 1,
            down_after: Duration::from_millis(1000),
            failover_timeout: Duration::from_millis(5000),
            auth_pass: None,
        }
    }

    /// Sets the quorum.
    pub fn quorum(mut self, quorum: u32) -> Monitor {
        self.quorum = quorum;
        self
    }

    /// Sets `down-after-milliseconds`.
    pub fn down_after(mut self, d: Duration) -> Monitor {
        self.down_after = d;
        self
    }

    /// Sets `failover-timeout`.
    pub fn failover_timeout(mut self, d: Duration) -> Monitor {
        self.failover_timeout = d;
        self
    }

    /// Sets `auth-pass`: the sentinel authenticates to the monitored servers with `password`.
    pub fn auth_pass(mut self, password: &str) -> Monitor {
        self.auth_pass = Some(password.to_string());
        self
    }

    pub(crate) fn write_conf(&self, out: &mut String) {
        let n = &self.name;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "sentinel monitor {n} 127.0.0.1 {} {}",
            self.port, self.quorum
        );
        let _ = writeln!(
            out,
            "sentinel down-after-milliseconds {n} {}",
            self.down_after.as_millis()
        );
        let _ = writeln!(
            out,
            "sentinel failover-timeout {n} {}",
            self.failover_timeout.as_millis()
        );
        let _ = writeln!(out, "sentinel parallel-syncs {n} 1");
        if let Some(p) = &self.auth_pass {
            let _ = writeln!(out, "sentinel auth-pass {n} {p}");
        }
    }
}

/// A running Sentinel on a free loopback port; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Sentinel {
    child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl Sentinel {
    /// Starts a Sentinel watching one primary, and waits until it answers PING.
    ///
    /// # Panics
    /// If it cannot be started or does not answer within ~5 s; the message includes its log.
    pub fn start(
        name: &str,
        master_port: u16,
        quorum: u32,
        down_after: Duration,
        failover_timeout: Duration,
    ) -> Sentinel {
        let m = Monitor::new(name, master_port)
            .quorum(quorum)
            .down_after(down_after)
            .failover_timeout(failover_timeout);
        Sentinel::start_monitors(&[m])
    }

    /// Starts a Sentinel watching every primary in `monitors`.
    ///
    /// # Panics
    /// If it cannot be started or does not answer within ~5 s; the message includes its log.
    pub fn start_monitors(monitors: &[Monitor]) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("testkit-sentinel-")
            .tempdir()
            .unwrap_or_else(|e| panic!("sentinel: cannot create temp dir: {e}"));
        let port = free_port();
        let mut conf = format!("port {port}\nbind 127.0.0.1\ndaemonize no\n");
        // Sentinel rewrites its config file, so it must live in a writable dir.
        let _ = writeln!(conf, "dir {}", dir.path().display());
        for m in monitors {
            m.write_conf(&mut conf);
        }
        let conf_path = dir.path().join("sentinel.conf");
        std::fs::write(&conf_path, conf)
            .unwrap_or_else(|e| panic!("sentinel: cannot write {}: {e}", conf_path.display()));
        let mut cmd = Command::new(find_program("redis-server", "TESTKIT_REDIS_SERVER"));
        cmd.arg(&conf_path).arg("--sentinel");
        let log = dir.path().join("sentinel.log");
        let mut child = ChildGuard::spawn(cmd, "redis-sentinel", &log);
        let addr = format!("127.0.0.1:{port}");
        let ready = poll_until(START_TIMEOUT, || {
            if child.try_exit().is_some() {
                return Some(false);
            }
            let mut c = Client::try_connect(&addr).ok()?;
            (c.try_cmd(&["PING"]).ok()? == Reply::simple("PONG")).then_some(true)
        });
        if ready != Some(true) {
            panic!("sentinel did not become ready; log:\n{}", read_lossy(&log));
        }
        Sentinel { child, port, dir }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:PORT"`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id (0 after [`Sentinel::kill9`]).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The temp dir holding `sentinel.conf` and `sentinel.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything Sentinel logged so far (`+switch-master` and friends appear here).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("sentinel.log"))
    }

    /// Runs one command on a fresh connection.
    ///
    /// # Panics
    /// On connection or I/O errors.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        Client::connect(&self.addr()).cmd(args)
    }

    /// The primary's address as Sentinel reports it, `("127.0.0.1", port)`, or `None` if
    /// it does not know the name, or does not answer within the client's read timeout
    /// (Sentinel rewrites and fsyncs its configuration file at every state change, which a
    /// loaded disk can stall for seconds; the callers poll).
    ///
    /// # Panics
    /// On an unexpected reply shape.
    pub fn master_addr(&self, name: &str) -> Option<(String, u16)> {
        let mut c = Client::try_connect(&self.addr()).ok()?;
        let reply = c
            .try_cmd(&["SENTINEL", "get-master-addr-by-name", name])
            .ok()?;
        match reply.as_array() {
            Some([host, port]) => {
                let host = host.as_str()?.to_string();
                let port = port.as_str()?.parse().ok()?;
                Some((host, port))
            }
            _ if reply == Reply::Bulk(None) || reply == Reply::Array(None) => None,
            _ => panic!("get-master-addr-by-name {name}: unexpected reply {reply:?}"),
        }
    }

    /// Waits until Sentinel names `127.0.0.1:port` as the primary of `name`.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_for_master(&self, name: &str, port: u16, timeout: Duration) {
        let what = format!("sentinel to name port {port} as primary of {name}");
        wait_until(timeout, &what, || {
            self.master_addr(name).is_some_and(|(_, p)| p == port)
        });
    }

    /// Kills Sentinel with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// Freezes Sentinel with SIGSTOP.
    pub fn stop(&self) {
        self.child.signal("STOP");
    }

    /// Resumes Sentinel after [`Sentinel::stop`].
    pub fn cont(&self) {
        self.child.signal("CONT");
    }
}
