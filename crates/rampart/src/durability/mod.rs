//! The durable write spool: writes a shard could not take (no writable primary past
//! `failover_hold`) kept on disk until they are replayed.
//!
//! - [`log`]: the storage, one segmented log per shard with a checksum per record, group
//!   commit and a checkpoint of what the server acknowledged.
//!
//! It sits below `upstream` (which appends and replays) and imports no other room.

pub mod log;
