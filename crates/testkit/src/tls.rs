//! [`TlsRedis`]: one real `redis-server` that speaks TLS only (`--port 0 --tls-port P`), and
//! [`redis_cli_tls`], one `redis-cli --tls` command. Certificates are the caller's files
//! (PEM); Debian's redis-server is built with TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::free_port;
use crate::process::{find_program, poll_until, read_lossy, ChildGuard};

/// The files a TLS server or client uses.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates that verify the peer (PEM).
    pub ca: PathBuf,
}

/// A TLS-only `redis-server` on `127.0.0.1`, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct TlsRedis {
    child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl TlsRedis {
    /// Starts a server on a free port with `files` (`--tls-cert-file`, `--tls-key-file`,
    /// `--tls-ca-cert-file`), `--tls-auth-clients auth` (`no`, `optional` or `yes`) and
    /// `extra` arguments (for example `--tls-replication yes --replicaof ...`), and waits
    /// until it logs that it is ready.
    ///
    /// # Panics
    /// If it does not become ready within ~5 s; the message includes its log.
    pub fn start(files: &TlsFiles, auth: &str, extra: &[&str]) -> TlsRedis {
        let dir = tempfile::Builder::new()
            .prefix("testkit-tls-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("redis-server: cannot create temp dir: {e}"));
        let port = free_port();
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new(find_program("redis-server", "TESTKIT_REDIS_SERVER"));
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--tls-auth-clients", auth])
            .arg("--tls-cert-file")
            .arg(&files.cert)
            .arg("--tls-key-file")
            .arg(&files.key)
            .arg("--tls-ca-cert-file")
            .arg(&files.ca)
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        let mut child = ChildGuard::spawn(cmd, "redis-server (TLS)", &log);
        let ready = poll_until(Duration::from_secs(5), || {
            if child.try_exit().is_some() {
                return Some(false);
            }
            read_lossy(&log)
                .contains("Ready to accept connections")
                .then_some(true)
        });
        if ready != Some(true) {
            panic!(
                "redis-server (TLS) did not become ready; log:\n{}",
                read_lossy(&log)
            );
        }
        TlsRedis { child, port, dir }
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `"127.0.0.1:PORT"`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("redis.log"))
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// One command through `redis-cli --tls` with `client` files; see [`redis_cli_tls`].
    pub fn cli(&self, client: &TlsFiles, args: &[&str]) -> (bool, String) {
        redis_cli_tls(self.port, Some(client), &client.ca, args)
    }
}

/// Runs `redis-cli --tls -p port --cacert ca [--cert --key] args...` against `127.0.0.1`;
/// returns whether it exited 0 and its stdout and stderr together (redis-cli prints a TLS
/// failure on stderr). `--sni localhost` is sent so a certificate naming `localhost` checks.
///
/// # Panics
/// If redis-cli cannot be started.
pub fn redis_cli_tls(
    port: u16,
    client: Option<&TlsFiles>,
    ca: &Path,
    args: &[&str],
) -> (bool, String) {
    let mut cmd = Command::new(find_program("redis-cli", "TESTKIT_REDIS_CLI"));
    cmd.args(["--tls", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg("--cacert")
        .arg(ca);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    cmd.args(args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A TLS-only Redis Sentinel (`port 0`, `tls-port P`) that reaches the servers it watches
/// over TLS too (`tls-replication yes`, which Sentinel uses for its own connections to
/// them); killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct TlsSentinel {
    child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl TlsSentinel {
    /// Starts a Sentinel watching `monitors` with `files` (clients are not asked for a
    /// certificate) and waits until it logs that it monitors them.
    ///
    /// # Panics
    /// If it does not become ready within ~5 s; the message includes its log.
    pub fn start(files: &TlsFiles, monitors: &[crate::Monitor]) -> TlsSentinel {
        use std::fmt::Write as _;
        let dir = tempfile::Builder::new()
            .prefix("testkit-tls-sentinel-")
            .tempdir()
            .unwrap_or_else(|e| panic!("sentinel: cannot create temp dir: {e}"));
        let port = free_port();
        let mut conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ndaemonize no\ntls-replication yes\ntls-auth-clients no\n"
        );
        let _ = writeln!(conf, "tls-cert-file {}", files.cert.display());
        let _ = writeln!(conf, "tls-key-file {}", files.key.display());
        let _ = writeln!(conf, "tls-ca-cert-file {}", files.ca.display());
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
        let mut child = ChildGuard::spawn(cmd, "redis-sentinel (TLS)", &log);
        let ready = poll_until(Duration::from_secs(5), || {
            if child.try_exit().is_some() {
                return Some(false);
            }
            read_lossy(&log).contains("+monitor").then_some(true)
        });
        if ready != Some(true) {
            panic!(
                "sentinel (TLS) did not become ready; log:\n{}",
                read_lossy(&log)
            );
        }
        TlsSentinel { child, port, dir }
    }

    /// `"127.0.0.1:PORT"` (TLS).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything Sentinel logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("sentinel.log"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}
