//! Everything between a session and the Redis nodes.
//!
//! - [`sink`]: where a reply goes, what a request needs to be sent again, and the queue
//!   through which a connection gives back a request to retry (a read to send elsewhere, a
//!   write refused with READONLY) instead of calling the router.
//! - [`error`]: why a request could not be served ([`error::Failure`]), kept as a value until
//!   its reply is written.
//! - [`acks`]: `WAIT` after each batch of writes (`min_replica_acks`) and how its reply
//!   releases or fails them.
//! - [`backend`]: one pipelined connection from a worker to a node: deadlines, back-off.
//! - [`dedicated`]: connections a session borrows for itself (blocking commands), bounded
//!   per pool and worker, reused only after a complete reply.
//! - [`failopen`]: a cache pool's answer (a miss, a dropped write) for a shard that cannot
//!   answer within `fail_open_timeout` or whose circuit is open.
//! - [`fault`]: faults the operator injects into live traffic (delay, error, black hole,
//!   reset), checked with one relaxed load per request while none is active.
//! - [`hold`]: writes waiting while a shard has no primary.
//! - [`pool`]: a pool as one worker sees it: its connections per node, holds and retries.
//! - [`subscriber`]: the worker's Pub/Sub hub: one subscriber connection per shard, local
//!   subscribers counted per channel and pattern, each message read once and fanned out.
//! - [`listener`]: a subscribing session as the hub sees it, and subscribe replies that wait
//!   for the server's confirmations.
//! - [`route`]: which node serves a request; drains retries and releases held writes.
//! - [`worker`]: one worker thread's pools, rebuilt after a reload.

pub mod acks;
pub mod backend;
pub mod dedicated;
pub mod error;
pub mod failopen;
pub mod fault;
pub mod hold;
pub mod listener;
pub mod pool;
pub mod redirect;
pub mod route;
pub mod sink;
pub mod subscriber;
pub mod worker;
