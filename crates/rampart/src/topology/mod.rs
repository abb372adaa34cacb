//! The pools as the workers see them: pools, shards, nodes and their state, the ring, the
//! listener modes, and the process state every worker shares.
//!
//! - [`pool`]: a pool's configuration, its shards and their published views, the ring,
//!   twemproxy-style ejection.
//! - [`node`]: one node's health, role and statistics.
//! - [`circuit`]: a shard's circuit in a cache pool that fails open.
//! - [`shared`]: the published pools and the rest of the process-wide state.
//! - [`snapshot`]: one snapshot of every pool, shard and node that every report renders.
//! - [`policy`]: a pool's command policy (denied, renamed, allowed commands).
//! - [`paused`]: each pool's `CLIENT PAUSE` state.

pub mod circuit;
pub mod cluster;
pub mod node;
pub mod paused;
pub mod policy;
pub mod pool;
pub mod shared;
pub mod snapshot;

pub use pool::{PoolRt, ShardRt, ShardView};
pub use shared::Shared;

/// What a listener of a pool serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Everything (the pool's `listen`).
    #[default]
    All,
    /// Only commands the table marks as reads (`read_listen`).
    Reads,
    /// Everything, reads from the primary too (`write_listen`).
    Writes,
}
