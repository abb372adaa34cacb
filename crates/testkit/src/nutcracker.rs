//! [`Nutcracker`]: twemproxy 0.5 started from a YAML string, the reference the proxy is
//! compared against.

use std::fmt::{Display, Write as _};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::free_port;
use crate::process::{
    find_program, poll_until, port_accepts, read_lossy, ChildGuard, START_TIMEOUT,
};

/// Replaces every `{name}` in `template` with its value, for filling ports into YAML:
/// `render("listen: 127.0.0.1:{p}", &[("p", &port)])`.
pub fn render(template: &str, vars: &[(&str, &dyn Display)]) -> String {
    vars.iter()
        .fold(template.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), &value.to_string())
        })
}

/// A running `nutcracker` with its config, pid file and log in a temp dir; its stats
/// server listens on `127.0.0.1` on a free port. Killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Nutcracker {
    child: ChildGuard,
    listen_ports: Vec<u16>,
    stats_port: u16,
    dir: TempDir,
}

impl Nutcracker {
    /// Writes `yml` to a temp file, starts nutcracker on it and waits until every TCP
    /// `listen:` port in it and the stats port accept connections.
    ///
    /// # Panics
    /// If the YAML has no TCP `listen:` line, or nutcracker exits or is not ready
    /// within ~5 s; the message includes its log.
    pub fn start(yml: &str) -> Nutcracker {
        Nutcracker::start_with(yml, &[])
    }

    /// Like [`Nutcracker::start`] with extra command-line arguments (for example
    /// `&["-i", "1000"]` for a 1 s stats interval).
    ///
    /// # Panics
    /// As [`Nutcracker::start`].
    pub fn start_with(yml: &str, args: &[&str]) -> Nutcracker {
        let listen_ports = listen_ports(yml);
        assert!(
            !listen_ports.is_empty(),
            "nutcracker yml has no TCP listen port:\n{yml}"
        );
        let dir = tempfile::Builder::new()
            .prefix("testkit-nutcracker-")
            .tempdir()
            .unwrap_or_else(|e| panic!("nutcracker: cannot create temp dir: {e}"));
        let conf = dir.path().join("nutcracker.yml");
        std::fs::write(&conf, yml)
            .unwrap_or_else(|e| panic!("nutcracker: cannot write {}: {e}", conf.display()));
        let stats_port = free_port();
        let log = dir.path().join("nutcracker.log");
        let mut cmd = Command::new(find_program("nutcracker", "TESTKIT_NUTCRACKER"));
        cmd.arg("-c")
            .arg(&conf)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1", "-p"])
            .arg(dir.path().join("nutcracker.pid"))
            .arg("-o")
            .arg(&log)
            .args(args);
        // stdout/stderr go to a second file: `-o` owns the main log.
        let mut child = ChildGuard::spawn(cmd, "nutcracker", &dir.path().join("stderr.log"));
        let ready = poll_until(START_TIMEOUT, || {
            if child.try_exit().is_some() {
                return Some(false);
            }
            let all = listen_ports
                .iter()
                .chain([&stats_port])
                .all(|&p| port_accepts(p));
            all.then_some(true)
        });
        if ready != Some(true) {
            panic!(
                "nutcracker did not become ready; log:\n{}{}",
                read_lossy(&log),
                read_lossy(&dir.path().join("stderr.log"))
            );
        }
        Nutcracker {
            child,
            listen_ports,
            stats_port,
            dir,
        }
    }

    /// A one-pool config named `alpha` listening on `127.0.0.1:listen_port` over the
    /// given redis ports (servers named `s1`, `s2`, ...), with ketama/fnv1a_64, hash tag
    /// `{}`, a 400 ms timeout and no auto-ejection.
    pub fn pool_yml(listen_port: u16, server_ports: &[u16]) -> String {
        let mut yml = format!(
            "alpha:\n  listen: 127.0.0.1:{listen_port}\n  hash: fnv1a_64\n  \
             hash_tag: \"{{}}\"\n  distribution: ketama\n  redis: true\n  timeout: 400\n  \
             auto_eject_hosts: false\n  server_connections: 1\n  servers:\n"
        );
        for (i, port) in server_ports.iter().enumerate() {
            // Writing to a String cannot fail.
            let _ = writeln!(yml, "   - 127.0.0.1:{port}:1 s{}", i + 1);
        }
        yml
    }

    /// The first `listen:` port of the config.
    pub fn port(&self) -> u16 {
        self.listen_ports[0]
    }

    /// `"127.0.0.1:PORT"` of the first pool.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Every TCP `listen:` port, in file order.
    pub fn listen_ports(&self) -> &[u16] {
        &self.listen_ports
    }

    /// The stats port (`-s`).
    pub fn stats_port(&self) -> u16 {
        self.stats_port
    }

    /// The stats JSON nutcracker sends to a new connection on its stats port.
    ///
    /// # Panics
    /// On connection or read errors.
    pub fn stats(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.stats_port))
            .unwrap_or_else(|e| panic!("nutcracker stats port {}: {e}", self.stats_port));
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut out = String::new();
        s.read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("nutcracker stats read: {e}"));
        out
    }

    /// The process id (0 after [`Nutcracker::kill9`]).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The temp dir holding the config, pid file and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of the config file written from the YAML.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nutcracker.yml")
    }

    /// Everything nutcracker logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("nutcracker.log"))
    }

    /// Kills nutcracker with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// Sends a named signal (`STOP`, `CONT`, `HUP`, ...).
    pub fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }
}

/// The TCP ports of every `listen: host:port` line (unix socket paths are skipped).
fn listen_ports(yml: &str) -> Vec<u16> {
    yml.lines()
        .filter_map(|line| line.trim().strip_prefix("listen:"))
        .filter_map(|value| {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            let port = value.rsplit(':').next()?;
            // `host:port:weight` is not a listen form; a bare path has no port.
            port.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder() {
        let out = render("a {x} b {y} {x}", &[("x", &1), ("y", &"two")]);
        assert_eq!(out, "a 1 b two 1");
    }

    #[test]
    fn finds_tcp_listen_ports_only() {
        let yml = "a:\n  listen: 127.0.0.1:7001\nb:\n  listen: \"127.0.0.1:7002\"\n\
                   c:\n  listen: run/proxy.sock\n";
        assert_eq!(listen_ports(yml), vec![7001, 7002]);
    }

    #[test]
    fn pool_yml_lists_servers_in_order() {
        let yml = Nutcracker::pool_yml(7000, &[7001, 7002]);
        assert_eq!(listen_ports(&yml), vec![7000]);
        assert!(yml.contains("   - 127.0.0.1:7001:1 s1\n   - 127.0.0.1:7002:1 s2\n"));
    }
}
