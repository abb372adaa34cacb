//! Keys that mean something for some kinds of pool only, checked against the pool's kind.
//!
//! A pool whose nodes are not health-checked (a `servers:` pool, or `primary:` / `shards:`
//! listing no replica: served as a `servers:` pool) has no replica to read from, no health
//! check, no passive ejection and no failover to hold writes for: the keys that tune those
//! ([`REPLICA_SET_KEYS`]) would do nothing there, so they are refused, naming the key and the
//! kind. `health_check` is the exception when `fail_open` is on: its `interval` paces the
//! checks that close an open circuit.
//!
//! The other way round, twemproxy's ejection keys ([`TWEMPROXY_EJECTION_KEYS`]) do nothing
//! in a pool whose nodes are health-checked (a node leaves rotation by its checks and by
//! `eject_after`; keys never move). A converted `nutcracker.yml` commonly carries them, so
//! they are accepted with a warning ([`Pool::warnings`](crate::Pool::warnings)) rather than
//! refused. A `cluster:` pool refuses `auto_eject_hosts` (see `shards`).

use crate::error::{ConfigError, Problem};
use crate::pool::{Fields, Lookup};
use crate::Pool;

/// Keys that tune replicas, health checks, ejection and the failover hold.
pub const REPLICA_SET_KEYS: [&str; 12] = [
    "read_policy",
    "read_your_writes",
    "max_replica_lag",
    "max_stale",
    "zone",
    "pubsub_from",
    "health_check",
    "eject_after",
    "eject_time",
    "eject_time_max",
    "failover_hold",
    "failover_hold_bytes",
];

/// twemproxy's keys for taking a failing server off the ring.
pub const TWEMPROXY_EJECTION_KEYS: [&str; 3] = [
    "auto_eject_hosts",
    "server_failure_limit",
    "server_retry_timeout",
];

impl Fields<'_> {
    /// Checks the kind-specific keys against `pool`'s kind; returns the warnings for the
    /// keys it accepts but ignores.
    ///
    /// # Errors
    /// [`Problem::NotForKind`] for a key of [`REPLICA_SET_KEYS`] in a pool whose nodes are
    /// not health-checked.
    pub(crate) fn check_kind_keys(
        &self,
        get: &Lookup<'_, '_>,
        pool: &Pool,
    ) -> Result<Vec<String>, ConfigError> {
        let checked = pool.is_sentinel()
            || pool.is_cluster()
            || pool.shards.iter().any(|s| !s.replicas.is_empty());
        if !checked {
            let kind = if get("servers").is_some() {
                "a servers: pool"
            } else if get("shards").is_some() {
                "a shards: pool whose shards list no replicas"
            } else {
                "a primary: pool without replicas:"
            };
            for key in REPLICA_SET_KEYS {
                if key == "health_check" && pool.fail_open.is_some() {
                    continue;
                }
                if let Some(e) = get(key) {
                    return Err(self.err(e.key.pos, Problem::NotForKind { key, kind }));
                }
            }
            return Ok(Vec::new());
        }
        let kind = if pool.is_cluster() {
            "a cluster: pool"
        } else if pool.is_sentinel() {
            "a sentinels: pool"
        } else {
            "a pool with replicas"
        };
        let mut warnings = Vec::new();
        for key in TWEMPROXY_EJECTION_KEYS {
            let Some(e) = get(key) else { continue };
            let (what, then) = if key == "auto_eject_hosts" && pool.auto_eject_hosts {
                (
                    "takes no node off the ring",
                    "here it only makes the pool a cache (see cache)",
                )
            } else {
                ("does nothing", "remove it")
            };
            warnings.push(format!(
                "{}:{}:{}: pool \"{}\": {key} is twemproxy's ejection key and {what} in {kind}: its nodes leave rotation by health_check and eject_after, and keys never move; {then}",
                self.origin, e.key.pos.line, e.key.pos.column, self.name
            ));
        }
        Ok(warnings)
    }
}
