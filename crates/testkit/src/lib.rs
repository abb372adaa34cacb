//! Real-process test harness for rampart.
//!
//! Integration tests start real `redis-server`, `redis-sentinel`, `nutcracker` and proxy
//! processes on loopback ports chosen by the OS, talk to them with a tiny blocking RESP
//! client, and inject faults for real: SIGKILL, SIGSTOP/SIGCONT, and a TCP link that
//! delays, blackholes or resets traffic. Every guard kills (SIGKILL) and reaps its process
//! by PID when dropped, and every wait is bounded and panics with a clear message: these
//! are test helpers, and a panic is the right way for them to fail.
//!
//! Binaries are found on `PATH` (plus the usual `sbin` directories); set
//! `TESTKIT_REDIS_SERVER` or `TESTKIT_NUTCRACKER` to use other builds.
//!
//! # Layout
//! - [`reply`]: the [`Reply`] type and a blocking RESP reader.
//! - [`client`]: [`Client`], one blocking connection.
//! - [`redis`]: [`RedisServer`], one redis-server in its own temp dir.
//! - [`sentinel`]: [`Sentinel`], one redis-sentinel with a generated config.
//! - [`cluster`]: [`RedisCluster`], a Redis Cluster created with `redis-cli --cluster create`.
//! - [`nutcracker`]: [`Nutcracker`], twemproxy from a YAML string.
//! - [`proxy`]: [`Proxy`], any binary (such as rampart) under test.
//! - [`fault`]: [`FaultLink`], a TCP forwarder with switchable faults.
//! - [`tls`]: [`TlsRedis`] and [`TlsSentinel`], TLS-only servers, and `redis-cli --tls`.
//! - [`process`]: signals, bounded waits and the child guard shared by the above.
//!
//! # Example
//! ```no_run
//! use testkit::{Client, RedisServer, Reply};
//! let redis = RedisServer::start();
//! let mut c = Client::connect(&redis.addr());
//! assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
//! assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod fault;
pub mod nutcracker;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod reply;
pub mod sentinel;
pub mod tls;

pub use client::{is_timeout, Client};
pub use cluster::{ClusterSetup, RedisCluster};
pub use fault::{FaultLink, Mode};
pub use hashkit::cluster_slot;
pub use nutcracker::{render, Nutcracker};
pub use process::{poll_until, send_signal, wait_until};
pub use proxy::{Proxy, ProxyBuilder};
pub use redis::RedisServer;
pub use reply::{encode_command, Reply, ReplyError};
pub use sentinel::{Monitor, Sentinel};
pub use tls::{redis_cli_tls, TlsFiles, TlsRedis, TlsSentinel};

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

/// Ports already handed out by [`free_port`] in this process.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a loopback TCP port that was free a moment ago.
///
/// The port is drawn at random below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 and up by default) and checked by
/// binding it on the wildcard address and on `127.0.0.1`, then closing the sockets again.
/// Below that range no outgoing connection's local port can take it meanwhile (a port
/// handed out by binding port 0 could be the next connection's local port, and a listener
/// on `0.0.0.0` then fails to bind); another process may still bind it first, a small race.
/// Ports are never handed out twice within one test process, which removes the race between
/// tests of the same binary; the guards in this crate also fail loudly (not silently) if a
/// bind loses the race. Prefer [`FaultLink`], which keeps its listener open, when possible.
///
/// # Panics
/// If no free port is found in 1,000 draws.
pub fn free_port() -> u16 {
    let mut seen = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    let top = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .clamp(11_000, 32768);
    let span = u64::from(top - 10_000);
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
        | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10_000 + (x % span) as u16;
        if seen.contains(&port) {
            continue;
        }
        // One bind at a time: a listener on the wildcard address would hold the port.
        let wildcard = TcpListener::bind(("0.0.0.0", port)).is_ok();
        let loopback = wildcard && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if loopback {
            seen.insert(port);
            return port;
        }
    }
    panic!("free_port: no free port below {top} in 1,000 draws");
}

/// Waits until `127.0.0.1:port` accepts TCP connections.
///
/// # Panics
/// After `timeout`, naming `what`.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    wait_until(timeout, &format!("{what} to accept on port {port}"), || {
        process::port_accepts(port)
    });
}
