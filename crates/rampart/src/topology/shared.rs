//! The process state every worker shares: the published pools and their generation, the
//! statistics, the shutdown signal. Everything here is read-only, atomic, or a snapshot
//! published with one swap.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::observe::stats::Metrics;
use crate::topology::PoolRt;

/// State every worker shares (read-only, atomics, or published snapshots).
pub struct Shared {
    /// The pools of the current configuration, in config order; replaced whole by a reload.
    pub pools: ArcSwap<Vec<Arc<PoolRt>>>,
    /// Bumped after each reload publishes new pools; workers compare it once per read batch.
    pub generation: AtomicU64,
    /// The configuration file, for reloads.
    pub config_path: Option<PathBuf>,
    /// Statistics slot of each pool name ever configured (index = slot).
    pub slots: std::sync::Mutex<Vec<String>>,
    /// Reloads attempted.
    pub reloads: AtomicU64,
    /// Reloads refused (invalid file, bind error, unforced ring change).
    pub reload_failures: AtomicU64,
    /// Outcome of the last reload.
    pub last_reload: std::sync::Mutex<String>,
    /// All statistics.
    pub metrics: Arc<Metrics>,
    /// When the process started.
    pub started: Instant,
    /// Cancelled when the process begins a graceful shutdown.
    pub shutdown: CancellationToken,
    /// Number of worker threads.
    pub workers: usize,
}

impl Shared {
    /// Process state with no pools yet (they are stored once built) and statistics for
    /// `workers` workers.
    pub fn new(workers: usize, config_path: Option<PathBuf>, shutdown: CancellationToken) -> Self {
        Shared {
            pools: ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
            config_path,
            metrics: Arc::new(Metrics::new(workers, crate::observe::stats::MAX_POOLS)),
            started: Instant::now(),
            shutdown,
            workers,
            slots: std::sync::Mutex::new(Vec::new()),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            last_reload: std::sync::Mutex::new(String::new()),
        }
    }

    /// The statistics slot of pool `name` (a new one for a name never seen).
    ///
    /// # Errors
    /// More than [`crate::observe::stats::MAX_POOLS`] pool names over the life of the process.
    pub fn pool_slot(&self, name: &str) -> anyhow::Result<usize> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| anyhow::anyhow!("slot table poisoned"))?;
        if let Some(i) = slots.iter().position(|n| n == name) {
            return Ok(i);
        }
        if slots.len() >= crate::observe::stats::MAX_POOLS {
            anyhow::bail!(
                "more than {} pools over the life of the process",
                crate::observe::stats::MAX_POOLS
            );
        }
        slots.push(name.to_string());
        Ok(slots.len() - 1)
    }
}
