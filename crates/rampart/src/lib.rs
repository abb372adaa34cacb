//! rampart: a highly-available, sharding Redis proxy, a drop-in for twemproxy.
//!
//! # Layout
//! - [`server`]: listeners, worker threads, connection limits, graceful shutdown.
//! - [`client`]: one client session (read, dispatch, ordered write-back).
//! - [`dispatch`]: local answer, forward by key, split over shards, or broadcast.
//! - [`local`]: the commands the proxy answers itself.
//! - [`split`]: how the replies of a split request are merged.
//! - [`pending`]: a session's ordered reply queue.
//! - [`route`]: which node of a shard serves a request (primary, read policies).
//! - [`hold`]: writes held while a shard has no primary.
//! - [`backend`]: pipelined connections to one node, deadlines, reconnect back-off.
//! - [`topology`]: pools, shards, the ring and twemproxy-style ejection; [`node`]: node state.
//! - [`health`]: active health checks; [`ctl`]: the control-plane Redis client;
//!   [`handshake`]: the AUTH and SELECT every connection to a server starts with.
//! - [`stats`] and [`stats_server`]: every statistic, and the twemproxy stats JSON.
//! - [`admin`]: the operator HTTP interface (metrics, API, live page).
//!
//! docs/ARCHITECTURE.md draws the data path.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod client;
pub mod control;
pub mod ctl;
pub mod dispatch;
pub mod events;
pub mod handshake;
pub mod health;
pub mod hold;
pub mod io;
pub mod local;
pub mod logfile;
pub mod node;
pub mod notify;
pub mod pending;
pub mod rand;
pub mod route;
pub mod sentinel;
pub mod server;
pub mod slowlog;
pub mod split;
pub mod stats;
pub mod stats_server;
pub mod switchover;
pub mod topology;
pub mod worker;
