//! The durable write spool: writes a shard could not take (no writable primary past
//! `failover_hold`) kept on disk until they are replayed.
//!
//! - [`log`]: the storage, one segmented log per shard with a checksum per record, group
//!   commit and a checkpoint of what the server acknowledged.
//! - [`spool`]: a shard's spool as workers and the replayer use it: a thread that owns the
//!   log, so fsyncs never block a worker.
//! - [`reply`]: which requests may be spooled and the reply each gets.
//!
//! It sits below `upstream` (which appends and replays) and imports no other room.

pub mod log;
pub mod reply;
pub mod spool;
