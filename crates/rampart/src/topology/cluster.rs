//! A Redis Cluster pool's slot map as the workers see it: a 16384-entry slot -> shard table
//! published with one atomic swap, and what the follower (`ha::cluster`) keeps between
//! refreshes.
//!
//! ```text
//! key ──CRC16 of the key or its {tag}, mod 16384──► slot ──table──► shard ──view──► node
//! ```
//!
//! The table changes only when the follower adopts a new map; a redirection (`MOVED`) sends
//! its one request to the named node and asks for a refresh ([`ClusterRt::ask_refresh`]),
//! debounced by the follower.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use rampart_config::ServerAddr;

use crate::topology::node::NodeRt;

/// Number of slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The owner of every slot, as one adopted map says.
#[derive(Debug, Clone)]
pub struct SlotTable {
    /// Shard index per slot; [`SlotTable::NONE`] for a slot no node serves.
    owner: Vec<u16>,
    /// The config epoch of each slot's owner when the map was adopted (epochs never go back).
    epoch: Vec<u64>,
}

impl SlotTable {
    /// The mark of an uncovered slot.
    pub const NONE: u16 = u16::MAX;

    /// Every slot uncovered, epoch 0.
    pub fn empty() -> SlotTable {
        SlotTable {
            owner: vec![Self::NONE; SLOTS],
            epoch: vec![0; SLOTS],
        }
    }

    /// The shard serving `slot`, if any.
    #[inline]
    pub fn shard(&self, slot: u16) -> Option<usize> {
        match self.owner.get(usize::from(slot)).copied() {
            Some(Self::NONE) | None => None,
            Some(s) => Some(usize::from(s)),
        }
    }

    /// The config epoch of `slot`'s owner (0 when uncovered or unknown).
    pub fn epoch(&self, slot: u16) -> u64 {
        self.epoch.get(usize::from(slot)).copied().unwrap_or(0)
    }

    /// Set `slot` to `shard` (or uncovered) with its owner's config `epoch`.
    pub fn set(&mut self, slot: u16, shard: Option<usize>, epoch: u64) {
        let i = usize::from(slot);
        if i < SLOTS {
            self.owner[i] = shard
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(Self::NONE);
            self.epoch[i] = epoch;
        }
    }

    /// The same table with every shard index `i` replaced by `at(i)` (`None`: uncovered),
    /// epochs kept: the table of a pool rebuilt with shards added or dropped.
    pub fn remap(&self, at: impl Fn(usize) -> Option<usize>) -> SlotTable {
        let mut t = self.clone();
        for slot in 0..SLOTS as u16 {
            let shard = self.shard(slot).and_then(&at);
            t.set(slot, shard, self.epoch(slot));
        }
        t
    }

    /// Slots served, and `(first, last)` ranges per shard index (for reports).
    pub fn ranges(&self, shard: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (i, &o) in self.owner.iter().enumerate() {
            if usize::from(o) != shard || o == Self::NONE {
                continue;
            }
            let i = i as u16;
            match out.last_mut() {
                Some((_, last)) if *last + 1 == i => *last = i,
                _ => out.push((i, i)),
            }
        }
        out
    }
}

/// What a cluster pool shares between its workers and its follower.
#[derive(Debug)]
pub struct ClusterRt {
    table: ArcSwap<SlotTable>,
    /// Wakes the follower for a refresh (a redirection, a failed connection).
    pub refresh: tokio::sync::Notify,
    /// When a refresh was last asked for (ms since start, [`crate::clock::now_ms`]): asks
    /// within the follower's debounce need no second wake-up.
    asked_ms: AtomicU64,
    /// Node ids (CLUSTER MYID) known per shard index: how a new map's primaries are matched
    /// to the pool's shards (a failover keeps the shard, its replica now the primary).
    pub ids: Mutex<Vec<Vec<String>>>,
    /// Nodes named by a redirection that are in no shard's view (an `ASK` target being
    /// imported into, a node added since start), by address; connected on demand.
    others: Mutex<HashMap<String, Arc<NodeRt>>>,
    /// Primaries serving slots that no shard has (added to the cluster since start), as
    /// shards to add with their node ids; the control plane rebuilds the pool with them
    /// ([`ClusterRt::take_new_shards`]).
    new_shards: Mutex<Vec<(rampart_config::Shard, Vec<String>)>>,
    /// Names of shards whose nodes serve no slot any more (their primary left the cluster
    /// or gave every slot away); the control plane rebuilds the pool without them
    /// ([`ClusterRt::take_gone_shards`]).
    gone_shards: Mutex<Vec<String>>,
    /// Maps adopted, and maps refused (no agreement, epochs going back, a bad reply).
    adopted: AtomicU64,
    refused: AtomicU64,
}

impl ClusterRt {
    /// A cluster pool's state, starting with `table` and the node ids of each shard.
    pub fn new(table: SlotTable, ids: Vec<Vec<String>>) -> ClusterRt {
        ClusterRt {
            table: ArcSwap::from_pointee(table),
            refresh: tokio::sync::Notify::new(),
            asked_ms: AtomicU64::new(0),
            ids: Mutex::new(ids),
            others: Mutex::new(HashMap::new()),
            new_shards: Mutex::new(Vec::new()),
            gone_shards: Mutex::new(Vec::new()),
            adopted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The current table (one atomic load).
    #[inline]
    pub fn table(&self) -> Guard<Arc<SlotTable>> {
        self.table.load()
    }

    /// Publish a new table (the follower, once a map is adopted).
    pub fn publish(&self, t: SlotTable) {
        self.table.store(Arc::new(t));
        self.adopted.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a map that was not adopted.
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Maps adopted and refused since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.adopted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Ask the follower for a refresh soon (at most one wake-up per 100 ms; the follower
    /// debounces too).
    pub fn ask_refresh(&self) {
        let now = crate::clock::now_ms();
        let last = self.asked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 100 && last != 0 {
            return;
        }
        self.asked_ms.store(now, Ordering::Relaxed);
        self.refresh.notify_one();
    }

    /// A primary no shard has serves slots: ask for a shard for it (once per node id).
    pub fn want_shard(&self, shard: rampart_config::Shard, ids: Vec<String>) {
        let mut w = self.new_shards.lock().unwrap_or_else(|p| p.into_inner());
        if !w.iter().any(|(s, _)| s.name == shard.name) && w.len() < 1024 {
            w.push((shard, ids));
        }
    }

    /// Shard `name` serves no slot and none of its nodes is a primary serving slots: ask
    /// for the pool without it (once per name).
    pub fn drop_shard(&self, name: &str) {
        let mut g = self.gone_shards.lock().unwrap_or_else(|p| p.into_inner());
        if !g.iter().any(|n| n == name) && g.len() < 1024 {
            g.push(name.to_string());
        }
    }

    /// Whether shards were asked for or dropped (see [`ClusterRt::want_shard`],
    /// [`ClusterRt::drop_shard`]).
    pub fn has_shard_changes(&self) -> bool {
        !self
            .new_shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            || !self
                .gone_shards
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// The names of the shards dropped since the last call (see [`ClusterRt::drop_shard`]).
    pub fn take_gone_shards(&self) -> Vec<String> {
        std::mem::take(&mut *self.gone_shards.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The shards asked for since the last call (see [`ClusterRt::want_shard`]).
    pub fn take_new_shards(&self) -> Vec<(rampart_config::Shard, Vec<String>)> {
        std::mem::take(&mut *self.new_shards.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The node ids known per shard now.
    pub fn ids(&self) -> Vec<Vec<String>> {
        self.ids.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// The node at `addr` outside every view, made on first use with `make`.
    pub fn other_node(&self, addr: &ServerAddr, make: impl FnOnce() -> NodeRt) -> Arc<NodeRt> {
        let key = addr.to_string();
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a cluster has at most a few thousand nodes; a flood of made-up names
        // from a broken server must not grow this without end.
        if others.len() >= 4096 && !others.contains_key(&key) {
            others.clear();
        }
        Arc::clone(others.entry(key).or_insert_with(|| Arc::new(make())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_maps_slots_and_reports_ranges() {
        let mut t = SlotTable::empty();
        assert_eq!(t.shard(0), None);
        for s in 0..=5460 {
            t.set(s, Some(0), 1);
        }
        for s in 5461..=10922 {
            t.set(s, Some(1), 2);
        }
        t.set(16383, Some(2), 3);
        assert_eq!(t.shard(100), Some(0));
        assert_eq!(t.shard(6000), Some(1));
        assert_eq!(t.shard(12000), None);
        assert_eq!(t.epoch(6000), 2);
        assert_eq!(t.ranges(1), vec![(5461, 10922)]);
        assert_eq!(t.ranges(2), vec![(16383, 16383)]);
        // Shard 0 dropped: the others move down one, its slots (none left, here 0-5460
        // for the test) become uncovered.
        let r = t.remap(|i| i.checked_sub(1));
        assert_eq!(r.shard(100), None);
        assert_eq!(r.shard(6000), Some(0));
        assert_eq!(r.epoch(6000), 2);
        assert_eq!(r.shard(16383), Some(1));
    }
}
