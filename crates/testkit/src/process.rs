//! Shared plumbing for the process guards: finding binaries, signals, bounded waits,
//! and a child handle that is killed and reaped when dropped.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a guard waits for a freshly started process to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Directories searched after `PATH`: the daemons we drive (nutcracker, haproxy) are
/// often installed into an `sbin` directory that a non-root `PATH` leaves out.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Resolves the program to run for `name`.
///
/// The environment variable `env_override` (for example `TESTKIT_REDIS_SERVER`) wins when
/// set; otherwise `PATH` and the usual `sbin` directories are searched. Falls back to the
/// bare name so that the spawn error names the missing program.
pub fn find_program(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Sends `sig` (a name such as `TERM`, `STOP`, `CONT`, `HUP`, `KILL`) to process `pid`
/// using the system `kill` command, so this crate needs no unsafe code.
///
/// # Panics
/// If `kill` cannot be run or reports failure (for example the process is gone).
pub fn send_signal(pid: u32, sig: &str) {
    let sig = sig.trim_start_matches("SIG");
    let status = Command::new("kill")
        .arg("-s")
        .arg(sig)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill -s {sig} {pid}`: {e}"));
    assert!(status.success(), "`kill -s {sig} {pid}` failed: {status}");
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
/// Returns `None` when the time runs out.
pub fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `cond` holds, for at most `timeout`.
///
/// # Panics
/// With a message naming `what` when the time runs out.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    if poll_until(timeout, || cond().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Returns true when a TCP connection to `127.0.0.1:port` is accepted by a listener.
///
/// Test ports come from the ephemeral range, so while nothing listens yet the kernel may
/// pick `port` itself as the connecting socket's source port, and TCP's simultaneous open
/// then "connects" the socket to itself. Such a connection is not counted: it would report
/// a listener that is not there (and hold the port while it lives).
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        Ok(stream) => stream.local_addr().ok() != Some(addr),
        Err(_) => false,
    }
}

/// Reads a file into a string, lossily; an unreadable file reads as empty.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A spawned child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    status: Option<ExitStatus>,
    label: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`.
    ///
    /// # Panics
    /// If the log file cannot be created or the program cannot be started.
    pub fn spawn(mut cmd: Command, label: &str, log: &Path) -> Self {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{label}: cannot open log {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{label}: cannot clone log handle: {e}"));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot start {:?}: {e}", cmd.get_program()));
        ChildGuard {
            child: Some(child),
            status: None,
            label: label.to_string(),
        }
    }

    /// The process id, or 0 once the process has been reaped (killed or seen exiting).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Returns the exit status if the process has exited (it is then reaped, and its
    /// pid is forgotten so that no signal can reach a recycled pid).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    self.child = None;
                }
                Ok(None) => {}
                Err(e) => panic!("{}: waitpid failed: {e}", self.label),
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.try_exit())
    }

    /// Kills the process with SIGKILL (a stopped process dies too) and reaps it;
    /// does nothing if it has already exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means the process already exited; reaping below still works.
            let _ = child.kill();
            self.status = child.wait().ok();
        }
    }

    /// Sends a named signal to the live process.
    ///
    /// # Panics
    /// If the process was already killed through this guard or the signal fails.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid();
        assert!(pid != 0, "{}: process is not running", self.label);
        send_signal(pid, sig);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Maps an I/O error to a readable panic message for helpers that cannot fail usefully.
pub fn io_panic<T>(what: &str, r: io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}
