//! rampart: a highly-available, sharding Redis proxy, a drop-in for twemproxy.
//!
//! # Layout
//! - [`server`]: listeners, worker threads, connection limits, graceful shutdown.
//! - [`client`]: one client session (read, dispatch, ordered write-back).
//! - [`dispatch`]: local answer, forward by key, split over shards, or broadcast.
//! - [`local`]: the commands the proxy answers itself.
//! - [`split`]: how the replies of a split request are merged.
//! - [`pending`]: a session's ordered reply queue.
//! - [`backend`]: pipelined connections to one server, deadlines, reconnect back-off.
//! - [`topology`]: pools, servers, the ring and twemproxy-style ejection.
//! - [`stats`] and [`stats_server`]: every statistic, and the twemproxy stats JSON.
//!
//! docs/ARCHITECTURE.md draws the data path.
#![forbid(unsafe_code)]

pub mod backend;
pub mod client;
pub mod dispatch;
pub mod io;
pub mod local;
pub mod notify;
pub mod pending;
pub mod rand;
pub mod server;
pub mod split;
pub mod stats;
pub mod stats_server;
pub mod topology;
pub mod worker;
