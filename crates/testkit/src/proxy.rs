//! [`Proxy`]: any binary under test (normally rampart, via `env!("CARGO_BIN_EXE_rampart")`
//! in the caller's integration test), with files in a temp dir, stderr captured, and a
//! readiness wait on a port.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{poll_until, port_accepts, read_lossy, ChildGuard, START_TIMEOUT};

/// Builds a [`Proxy`]: program, arguments, environment, files, and the port to wait for.
///
/// In arguments, `{dir}` is replaced by the path of the proxy's temp dir, so a config
/// written with [`ProxyBuilder::file`] can be passed as `"{dir}/rampart.yml"`.
#[derive(Debug)]
pub struct ProxyBuilder {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
    files: Vec<(String, Vec<u8>)>,
    wait_port: Option<u16>,
    timeout: Duration,
}

impl ProxyBuilder {
    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the child (for example `RUST_LOG`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes `contents` to `name` inside the temp dir before the start.
    pub fn file(mut self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .push((name.to_string(), contents.as_ref().to_vec()));
        self
    }

    /// Waits, after the start, until `127.0.0.1:port` accepts connections.
    pub fn wait_port(mut self, port: u16) -> Self {
        self.wait_port = Some(port);
        self
    }

    /// How long to wait for the port (default ~5 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the process.
    ///
    /// # Panics
    /// If a file cannot be written, the program cannot be started, or it exits or does
    /// not accept on the wait port in time; the message includes its stderr.
    pub fn start(self) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("testkit-proxy-")
            .tempdir()
            .unwrap_or_else(|e| panic!("proxy: cannot create temp dir: {e}"));
        for (name, contents) in &self.files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("proxy: cannot write {}: {e}", path.display()));
        }
        let dir_text = dir.path().to_string_lossy().into_owned();
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args.iter().map(|a| a.replace("{dir}", &dir_text)))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let label = self.program.display().to_string();
        let child = ChildGuard::spawn(cmd, &label, &dir.path().join("stderr.log"));
        let mut proxy = Proxy {
            child,
            port: self.wait_port,
            dir,
        };
        if let Some(port) = self.wait_port {
            let ready = poll_until(self.timeout, || {
                if let Some(status) = proxy.child.try_exit() {
                    return Some(Err(status));
                }
                port_accepts(port).then_some(Ok(()))
            });
            match ready {
                Some(Ok(())) => {}
                Some(Err(status)) => panic!(
                    "{label} exited ({status}) before accepting on port {port}; output:\n{}",
                    proxy.stderr()
                ),
                None => panic!(
                    "{label} did not accept on port {port} within {:?}; output:\n{}",
                    self.timeout,
                    proxy.stderr()
                ),
            }
        }
        proxy
    }
}

/// A running process under test; killed (SIGKILL) and reaped on drop.
/// Its stdout and stderr both go to `stderr.log` in its temp dir.
#[derive(Debug)]
pub struct Proxy {
    child: ChildGuard,
    port: Option<u16>,
    dir: TempDir,
}

impl Proxy {
    /// Starts describing a process running `program`.
    pub fn builder(program: impl AsRef<Path>) -> ProxyBuilder {
        ProxyBuilder {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            wait_port: None,
            timeout: START_TIMEOUT,
        }
    }

    /// Starts `program` with `args` and waits until `127.0.0.1:port` accepts.
    ///
    /// # Panics
    /// As [`ProxyBuilder::start`].
    pub fn start(program: impl AsRef<Path>, args: &[&str], port: u16) -> Proxy {
        Proxy::builder(program)
            .args(args.iter().copied())
            .wait_port(port)
            .start()
    }

    /// The port waited for at start, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `"127.0.0.1:PORT"` of the port waited for at start.
    ///
    /// # Panics
    /// If no wait port was given.
    pub fn addr(&self) -> String {
        let port = self
            .port
            .unwrap_or_else(|| panic!("proxy started without a wait port"));
        format!("127.0.0.1:{port}")
    }

    /// The process id (0 once it has been killed through this guard).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The temp dir (files written by the builder, `stderr.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a signal by name: `TERM`, `INT`, `HUP`, `STOP`, `CONT`, ...
    ///
    /// # Panics
    /// If the process was killed through this guard or the signal cannot be sent.
    pub fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    /// Waits up to `timeout` for the process to exit and returns its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_exit(timeout)
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill();
    }
}
