//! rampart's high-availability model: shards with replica sets, Sentinel, read policies and
//! health checks. Parsing lives in `shards` and `ha_keys`; this module holds the types.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::addr::ServerAddr;
use crate::defaults;

/// One slice of the key space: a stable name on the ring and a replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's name: the `name:` of a `shards:` entry, the pool name (short form), the
    /// Sentinel master name, or for a twemproxy `servers:` pool the server's name, else its
    /// address text. Unique in the pool.
    pub name: String,
    /// Share of the keys relative to the pool's other shards; at least 1.
    pub weight: u32,
    /// The configured primary. `None` only in a Sentinel pool, where Sentinel names it.
    pub primary: Option<Node>,
    /// The configured replicas, in file order (always empty in a Sentinel pool, where
    /// Sentinel reports them).
    pub replicas: Vec<Node>,
    /// The bytes hashed onto the ketama ring for this shard. For a twemproxy `servers:`
    /// pool exactly [`hashkit::ring_identity`] of that server (what twemproxy hashes, quirks
    /// included); otherwise the shard name.
    pub identity: Vec<u8>,
}

/// One redis-server address in a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where the node is. Host names are kept as written and resolved by the proxy.
    pub addr: ServerAddr,
    /// The node's zone (rack, availability zone), if given; reads prefer nodes in the
    /// pool's own `zone`.
    pub zone: Option<String>,
    /// Read preference among otherwise equal candidates: **lower is preferred** (as Redis'
    /// `replica-priority`); equal priorities share the reads. Default
    /// [`defaults::NODE_PRIORITY`].
    pub priority: u32,
    /// The address exactly as written (`host:port` or the socket path).
    pub text: String,
}

/// A Sentinel's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SentinelAddr {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl fmt::Display for SentinelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::addr::fmt_host_port(f, &self.host, self.port)
    }
}

/// A seed node of a Redis Cluster pool (`cluster:`): where the slot map is first asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterSeed {
    /// Host name or IP address, without brackets (a name is resolved again at each connect).
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl fmt::Display for ClusterSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::addr::fmt_host_port(f, &self.host, self.port)
    }
}

/// Where a shard's reads go. Writes always go to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadPolicy {
    /// `primary`: every read goes to the primary (twemproxy's behaviour).
    #[default]
    Primary,
    /// `prefer-replica`: reads go to a replica in rotation; to the primary when none is.
    PreferReplica,
    /// `replica`: reads go only to replicas; when none is in rotation they fail rather than
    /// load the primary.
    Replica,
    /// `least-outstanding`: the replica in rotation with the fewest requests in flight; the
    /// primary when no replica is.
    LeastOutstanding,
    /// `latency`: power of two choices: of two random replicas in rotation, the one with the
    /// lower moving-average latency; the primary when no replica is.
    Latency,
}

impl ReadPolicy {
    /// Every policy with its canonical spelling, in documentation order.
    pub const ALL: [(&'static str, ReadPolicy); 5] = [
        ("primary", ReadPolicy::Primary),
        ("prefer-replica", ReadPolicy::PreferReplica),
        ("replica", ReadPolicy::Replica),
        ("least-outstanding", ReadPolicy::LeastOutstanding),
        ("latency", ReadPolicy::Latency),
    ];

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("primary", |(name, _)| name)
    }
}

impl fmt::Display for ReadPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a read policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a read policy (primary, prefer-replica, replica, least-outstanding, latency)"
)]
pub struct UnknownReadPolicy(pub String);

impl FromStr for ReadPolicy {
    type Err = UnknownReadPolicy;

    /// The canonical spelling, or the same with `_` for `-` (`prefer_replica`), matching the
    /// underscores of twemproxy's own keys.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().replace('_', "-");
        Self::ALL
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, p)| *p)
            .ok_or_else(|| UnknownReadPolicy(text.to_string()))
    }
}

/// Active health checks of every node of a pool (PING and ROLE with a deadline).
///
/// A node leaves rotation after `fall` consecutive failed checks and comes back after `rise`
/// consecutive good ones. While a node is changing state (at least one check disagrees with
/// its current state) checks run every `fast_interval` instead of every `interval`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthCheck {
    /// Time between checks of a node in a steady state (each wait jittered, see `jitter`).
    pub interval: Duration,
    /// Deadline for one check's reply. It may exceed `interval`: a node never has two
    /// checks in flight; the next one starts after the previous one ended.
    pub timeout: Duration,
    /// Consecutive good checks that put a node (back) into rotation; at least 1.
    pub rise: u32,
    /// Consecutive failed checks that take a node out of rotation; at least 1.
    pub fall: u32,
    /// Each wait is drawn between `interval` and `interval × (1 + jitter)` (likewise for
    /// `fast_interval`) so that many proxies do not check in lockstep; in `0 ≤ jitter < 1`,
    /// never NaN.
    pub jitter: f64,
    /// Time between checks while a node is changing state; at most `interval`.
    pub fast_interval: Duration,
}

// `jitter` is validated finite (never NaN), so equality is reflexive and `Pool` stays `Eq`.
impl Eq for HealthCheck {}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            rise: defaults::HEALTH_RISE,
            fall: defaults::HEALTH_FALL,
            jitter: defaults::HEALTH_JITTER,
            fast_interval: defaults::HEALTH_FAST_INTERVAL,
        }
    }
}

impl HealthCheck {
    /// The longest time from a node freezing (accepting connections but never answering)
    /// to its leaving rotation by active checks alone: the next check starts within
    /// `interval × (1 + jitter)` and times out after `timeout`; each of the `fall − 1`
    /// further checks starts within `fast_interval × (1 + jitter)` and times out too.
    /// A refused connection fails faster, and passive ejection on live traffic
    /// (`eject_after`) usually acts first. With the defaults: 220 + 250 + 55 + 250 = 775 ms.
    pub fn worst_detection(&self) -> Duration {
        let stretch = |d: Duration| d.mul_f64(1.0 + self.jitter.clamp(0.0, 1.0));
        let first = stretch(self.interval) + self.timeout;
        let more = (stretch(self.fast_interval) + self.timeout) * self.fall.saturating_sub(1);
        first + more
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_policy_spellings() {
        for (name, policy) in ReadPolicy::ALL {
            assert_eq!(name.parse::<ReadPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), name);
        }
        assert_eq!("prefer_replica".parse(), Ok(ReadPolicy::PreferReplica));
        assert_eq!(
            "least_outstanding".parse(),
            Ok(ReadPolicy::LeastOutstanding)
        );
        assert_eq!(
            "nearest".parse::<ReadPolicy>(),
            Err(UnknownReadPolicy("nearest".into()))
        );
        assert_eq!(ReadPolicy::default(), ReadPolicy::Primary);
    }

    #[test]
    fn default_checks_take_a_frozen_node_out_within_a_second() {
        let health = HealthCheck::default();
        assert_eq!(health.worst_detection(), Duration::from_millis(775));
        assert!(health.worst_detection() < Duration::from_secs(1));
        let slow = HealthCheck {
            fall: 3,
            ..HealthCheck::default()
        };
        assert_eq!(slow.worst_detection(), Duration::from_millis(1080));
    }

    #[test]
    fn sentinel_addresses_print_as_written() {
        let v4 = SentinelAddr {
            host: "10.0.0.1".into(),
            port: 26379,
        };
        assert_eq!(v4.to_string(), "10.0.0.1:26379");
        let v6 = SentinelAddr {
            host: "::1".into(),
            port: 26379,
        };
        assert_eq!(v6.to_string(), "[::1]:26379");
    }
}
