//! rampart: a highly-available, sharding Redis proxy, a drop-in for twemproxy.
//!
//! # Layout
//! The modules are the nouns of docs/ARCHITECTURE.md, each importing only those listed after
//! it, so no import runs back up:
//! - [`server`]: start-up, worker threads, signals, graceful shutdown.
//! - [`admin`]: the operator HTTP interface (metrics, API, live page) and the stats port.
//! - [`control`]: listeners and their accept loops, health and Sentinel tasks, reload.
//! - [`session`]: one client: read loop, dispatch, local answers.
//! - [`ha`]: health checks, Sentinel following, switchover.
//! - [`upstream`]: connections to nodes, routing, retries, the failover hold.
//! - [`reply`]: a session's ordered reply queue and the merging of split replies.
//! - [`topology`]: pools, shards, nodes, the ring, the shared process state.
//! - [`durability`]: the write spool on disk.
//! - [`observe`]: statistics, events, slowlog.
//! - support: [`io`], [`notify`], [`rand`], [`clock`], [`text`], [`logfile`],
//!   [`handshake`] (the connect, TLS, AUTH and SELECT every connection to a server starts
//!   with), [`tls`] (certificates and keys, the TLS handshakes).
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod control;
pub mod durability;
pub mod ha;
pub mod handshake;
pub mod io;
pub mod logfile;
pub mod notify;
pub mod observe;
pub mod rand;
pub mod reply;
pub mod server;
pub mod session;
pub mod text;
pub mod tls;
pub mod topology;
pub mod upstream;
