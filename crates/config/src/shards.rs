//! A pool's backends, in any of its four forms, as shards:
//!
//! ```text
//! servers:  [host:port:weight name, ...]      twemproxy: one shard per server, primary only
//! shards:   [{name, weight, primary, replicas}] rampart: named replica sets
//! primary: + replicas:                        rampart short form: one shard named after the pool
//! sentinels: + master: | shards: [{name, weight}]  rampart: Sentinel names the nodes
//! cluster:  [host:port, ...]                  rampart: Redis Cluster seeds; the proxy learns
//!                                             the shards from the cluster's slot map
//! ```

use std::collections::HashMap;
use std::time::Duration;

use crate::addr::{digits, parse_node, parse_sentinel, Server, ServerAddr};
use crate::defaults;
use crate::error::{AddrError, ConfigError, Problem};
use crate::ha::{ClusterSeed, Node, SentinelAddr, Shard};
use crate::pool::{narrow, Fields, Lookup};
use crate::raw::{Pos, RawEntry, RawItem, RawValue};
use crate::SENTINEL_PLACEHOLDER;

/// The keys of one `shards:` entry.
const SHARD_KEYS: &[&str] = &["name", "weight", "primary", "replicas"];
/// The keys of a node written as a mapping.
const NODE_KEYS: &[&str] = &["addr", "zone", "priority"];
/// Keys that only mean something next to `sentinels:`.
const SENTINEL_ONLY: [&str; 4] = [
    "master",
    "sentinel_username",
    "sentinel_password",
    "sentinel_poll",
];
/// Pairs of keys that describe the backends in two different ways.
const CONFLICTS: [(&str, &str); 8] = [
    ("servers", "shards"),
    ("servers", "primary"),
    ("servers", "replicas"),
    ("servers", "sentinels"),
    ("shards", "primary"),
    ("shards", "replicas"),
    ("shards", "master"),
    ("master", "primary"),
];

/// Keys a cluster pool refuses, and why: the cluster names its nodes, and its slots place
/// the keys.
const NOT_IN_CLUSTER: [(&str, &str); 14] = [
    ("servers", BACKENDS_ONE_WAY),
    ("shards", BACKENDS_ONE_WAY),
    ("primary", BACKENDS_ONE_WAY),
    ("replicas", BACKENDS_ONE_WAY),
    ("sentinels", BACKENDS_ONE_WAY),
    ("master", BACKENDS_ONE_WAY),
    ("sentinel_username", BACKENDS_ONE_WAY),
    ("sentinel_password", BACKENDS_ONE_WAY),
    ("sentinel_poll", BACKENDS_ONE_WAY),
    ("hash", PLACED_BY_SLOTS),
    ("hash_tag", PLACED_BY_SLOTS),
    ("distribution", PLACED_BY_SLOTS),
    (
        "auto_eject_hosts",
        "a cluster pool never moves keys off a node; remove it",
    ),
    (
        "spool_dir",
        "a cluster pool has no write spool (its shards come and go with the cluster); remove it",
    ),
];
const BACKENDS_ONE_WAY: &str =
    "a cluster pool learns its nodes from the cluster: seeds under cluster: only; remove it";
const PLACED_BY_SLOTS: &str = "a cluster pool places keys by Redis Cluster's slots (CRC16 of the key or of its {hash tag}); remove it";

/// A pool's backends.
pub(crate) struct Backends {
    pub servers: Vec<Server>,
    pub shards: Vec<Shard>,
    pub sentinels: Vec<SentinelAddr>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub sentinel_poll: Duration,
    pub cluster: Vec<ClusterSeed>,
    pub cluster_refresh: Duration,
}

/// Node addresses seen so far in the pool (normalised) and the line of each.
type Seen = HashMap<String, u32>;

impl Fields<'_> {
    pub(crate) fn backends(&self, get: &Lookup<'_, '_>) -> Result<Backends, ConfigError> {
        self.check_forms(get)?;
        let mut backends = Backends {
            servers: Vec::new(),
            shards: Vec::new(),
            sentinels: Vec::new(),
            sentinel_username: None,
            sentinel_password: None,
            sentinel_poll: defaults::SENTINEL_POLL,
            cluster: Vec::new(),
            cluster_refresh: defaults::CLUSTER_REFRESH,
        };
        if let Some(entry) = get("cluster") {
            self.cluster_settings(get, entry, &mut backends)?;
            return Ok(backends);
        }
        if let Some(entry) = get("cluster_refresh") {
            let problem = Problem::NotInCluster {
                key: "cluster_refresh",
                why: "only applies to a cluster pool (add cluster:)",
            };
            return Err(self.err(entry.key.pos, problem));
        }
        if let Some(entry) = get("servers") {
            backends.servers = self.servers(entry)?;
            backends.shards = backends.servers.iter().map(shard_of_server).collect();
            return Ok(backends);
        }
        backends.shards = if let Some(entry) = get("sentinels") {
            self.sentinel_settings(get, entry, &mut backends)?;
            match (get("shards"), self.text(get, "master")?) {
                (Some(shards), _) => self.shard_list(shards, true)?,
                (None, Some((master, pos))) => {
                    let name = self.shard_name(master, pos, "master")?;
                    vec![named_shard(name, defaults::SHARD_WEIGHT, None, Vec::new())]
                }
                (None, None) => return Err(self.err(entry.key.pos, Problem::NoMasters)),
            }
        } else if let Some(entry) = get("shards") {
            self.shard_list(entry, false)?
        } else if let Some(entry) = get("primary") {
            let mut seen = Seen::new();
            let primary = self.node(&entry.value, entry.pos, "primary", &mut seen)?;
            let replicas = match get("replicas") {
                Some(entry) => self.replicas(entry, &mut seen)?,
                None => Vec::new(),
            };
            let name = self.name.to_string();
            vec![named_shard(
                name,
                defaults::SHARD_WEIGHT,
                Some(primary),
                replicas,
            )]
        } else if let Some(entry) = get("replicas") {
            return Err(self.err(entry.key.pos, Problem::ReplicasWithoutPrimary));
        } else {
            return Err(self.err(self.at, Problem::MissingKey("servers")));
        };
        backends.servers = backends.shards.iter().map(server_of_shard).collect();
        Ok(backends)
    }

    /// Refuses two ways of listing backends in one pool, addresses in a Sentinel pool and
    /// Sentinel keys without `sentinels:`.
    fn check_forms(&self, get: &Lookup<'_, '_>) -> Result<(), ConfigError> {
        if get("sentinels").is_some() {
            for key in ["primary", "replicas"] {
                if let Some(entry) = get(key) {
                    return Err(self.err(entry.key.pos, Problem::SentinelAddresses(key)));
                }
            }
        } else {
            for key in SENTINEL_ONLY {
                if let Some(entry) = get(key) {
                    return Err(self.err(entry.key.pos, Problem::NeedsSentinels(key)));
                }
            }
        }
        for (a, b) in CONFLICTS {
            if let (Some(first), Some(second)) = (get(a), get(b)) {
                let later = |e: &RawEntry| (e.key.pos.line, e.key.pos.column);
                let (key, other, at) = if later(second) >= later(first) {
                    (b, a, second)
                } else {
                    (a, b, first)
                };
                return Err(self.err(at.key.pos, Problem::ConflictingKeys { key, other }));
            }
        }
        Ok(())
    }

    /// `cluster:` seeds and `cluster_refresh`; keys that list backends another way or place
    /// keys are refused, and `redis_db` must be 0 (Redis Cluster has one database).
    fn cluster_settings(
        &self,
        get: &Lookup<'_, '_>,
        entry: &RawEntry,
        backends: &mut Backends,
    ) -> Result<(), ConfigError> {
        for (key, why) in NOT_IN_CLUSTER {
            if let Some(e) = get(key) {
                return Err(self.err(e.key.pos, Problem::NotInCluster { key, why }));
            }
        }
        if let Some((text, pos)) = self.text(get, "redis_db")? {
            if digits(text.trim()) != Some(0) {
                let why = "Redis Cluster has database 0 only; remove it or write 0";
                return Err(self.err(
                    pos,
                    Problem::NotInCluster {
                        key: "redis_db",
                        why,
                    },
                ));
            }
        }
        let items = self.items(entry, "cluster")?;
        if items.is_empty() {
            return Err(self.err(entry.pos, Problem::NoSeeds));
        }
        let seeds = self.host_ports(
            items,
            |value, reason| Problem::BadSeed { value, reason },
            |addr, first_line| Problem::DuplicateSeed { addr, first_line },
        )?;
        backends.cluster = seeds
            .into_iter()
            .map(|(host, port)| ClusterSeed { host, port })
            .collect();
        let refresh = self.positive(get, "cluster_refresh", defaults::CLUSTER_REFRESH)?;
        if refresh < defaults::CLUSTER_REFRESH_MIN {
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let problem = Problem::OutOfRange {
                key: "cluster_refresh",
                value: ms(refresh),
                min: ms(defaults::CLUSTER_REFRESH_MIN),
                max: ms(defaults::MAX_DURATION),
            };
            return Err(self.err(self.pos(get, "cluster_refresh"), problem));
        }
        backends.cluster_refresh = refresh;
        Ok(())
    }

    fn sentinel_settings(
        &self,
        get: &Lookup<'_, '_>,
        entry: &RawEntry,
        backends: &mut Backends,
    ) -> Result<(), ConfigError> {
        backends.sentinels = self.sentinels(entry)?;
        backends.sentinel_password = self.credential(get, "sentinel_password")?;
        backends.sentinel_username = self.credential(get, "sentinel_username")?;
        if backends.sentinel_username.is_some() && backends.sentinel_password.is_none() {
            let pos = self.pos(get, "sentinel_username");
            return Err(self.err(pos, Problem::UsernameWithoutPassword));
        }
        let poll = self.positive(get, "sentinel_poll", defaults::SENTINEL_POLL)?;
        if poll > defaults::SENTINEL_POLL_MAX {
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let problem = Problem::OutOfRange {
                key: "sentinel_poll",
                value: ms(poll),
                min: 1,
                max: ms(defaults::SENTINEL_POLL_MAX),
            };
            return Err(self.err(self.pos(get, "sentinel_poll"), problem));
        }
        backends.sentinel_poll = poll;
        Ok(())
    }

    fn credential(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        match self.text(get, key)? {
            None => Ok(None),
            Some(("", pos)) => Err(self.err(pos, Problem::EmptyCredential(key))),
            Some((text, _)) => Ok(Some(text.to_string())),
        }
    }

    fn sentinels(&self, entry: &RawEntry) -> Result<Vec<SentinelAddr>, ConfigError> {
        let items = self.items(entry, "sentinels")?;
        if items.is_empty() {
            return Err(self.err(entry.pos, Problem::NoSentinels));
        }
        let sentinels = self.host_ports(
            items,
            |value, reason| Problem::BadSentinel { value, reason },
            |addr, first_line| Problem::DuplicateSentinel { addr, first_line },
        )?;
        Ok(sentinels
            .into_iter()
            .map(|(host, port)| SentinelAddr { host, port })
            .collect())
    }

    /// The `host:port` items of a list (Sentinels, cluster seeds), in order: each parsed,
    /// none given twice (host names compared without case). `bad` words an item that is not
    /// `host:port`, `dup` one given twice (with the line it was first given on).
    fn host_ports(
        &self,
        items: &[RawItem],
        bad: impl Fn(String, AddrError) -> Problem,
        dup: impl Fn(String, u32) -> Problem,
    ) -> Result<Vec<(String, u16)>, ConfigError> {
        let mut seen: HashMap<(String, u16), u32> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let text = match &item.value {
                RawValue::Scalar(text) => text.as_str(),
                _ => "",
            };
            let (host, port) = parse_sentinel(text)
                .map_err(|reason| self.err(item.pos, bad(text.to_string(), reason)))?;
            if let Some(first_line) = seen.insert((host.to_ascii_lowercase(), port), item.pos.line)
            {
                return Err(self.err(item.pos, dup(text.trim().to_string(), first_line)));
            }
            out.push((host, port));
        }
        Ok(out)
    }

    /// The items of a list-valued structured key.
    fn items<'e>(
        &self,
        entry: &'e RawEntry,
        key: &'static str,
    ) -> Result<&'e [RawItem], ConfigError> {
        match &entry.value {
            RawValue::Items(items) => Ok(items),
            RawValue::Empty => Err(self.err(entry.pos, Problem::EmptyValue(key))),
            _ => Err(self.err(entry.pos, Problem::NotList(key))),
        }
    }

    /// `shards:`; in a Sentinel pool each entry names a master and gives no addresses.
    fn shard_list(&self, entry: &RawEntry, sentinel: bool) -> Result<Vec<Shard>, ConfigError> {
        let items = self.items(entry, "shards")?;
        if items.is_empty() {
            return Err(self.err(entry.pos, Problem::NoShards));
        }
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut seen = Seen::new();
        let mut shards = Vec::with_capacity(items.len());
        for item in items {
            let RawValue::Entries(entries) = &item.value else {
                return Err(self.err(item.pos, Problem::NotMapping("shards")));
            };
            let map = self.index_nested(entries, SHARD_KEYS, "shards")?;
            // Messages name nested keys in full (`shards.weight`).
            let get =
                |key: &'static str| map.get(key.strip_prefix("shards.").unwrap_or(key)).copied();
            let (text, pos) = self.text(&get, "name")?.ok_or_else(|| {
                let problem = Problem::MissingNestedKey {
                    within: "shards",
                    key: "name",
                };
                self.err(item.pos, problem)
            })?;
            let name = self.shard_name(text, pos, "shards")?;
            if let Some(first_line) = names.insert(name.clone(), pos.line) {
                return Err(self.err(pos, Problem::DuplicateShardName { name, first_line }));
            }
            let weight = self
                .number(&get, "shards.weight", 1, u32::MAX.into())?
                .map_or(defaults::SHARD_WEIGHT, narrow);
            if sentinel {
                for key in ["primary", "replicas"] {
                    if let Some(entry) = get(key) {
                        return Err(self.err(entry.key.pos, Problem::SentinelAddresses(key)));
                    }
                }
                shards.push(named_shard(name, weight, None, Vec::new()));
                continue;
            }
            let Some(primary) = get("primary") else {
                return Err(self.err(item.pos, Problem::MissingPrimary { shard: name }));
            };
            let primary = self.node(&primary.value, primary.pos, "primary", &mut seen)?;
            let replicas = match get("replicas") {
                Some(entry) => self.replicas(entry, &mut seen)?,
                None => Vec::new(),
            };
            shards.push(named_shard(name, weight, Some(primary), replicas));
        }
        Ok(shards)
    }

    /// A shard or master name: one word.
    fn shard_name(
        &self,
        text: &str,
        pos: Pos,
        within: &'static str,
    ) -> Result<String, ConfigError> {
        let name = text.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            let value = text.to_string();
            return Err(self.err(pos, Problem::BadName { within, value }));
        }
        Ok(name.to_string())
    }

    fn replicas(&self, entry: &RawEntry, seen: &mut Seen) -> Result<Vec<Node>, ConfigError> {
        self.items(entry, "replicas")?
            .iter()
            .map(|item| self.node(&item.value, item.pos, "replicas", seen))
            .collect()
    }

    /// A node: `host:port`, `/path/to.sock`, or `{addr, zone, priority}`. Each address may
    /// appear once in the pool.
    fn node(
        &self,
        value: &RawValue,
        pos: Pos,
        key: &'static str,
        seen: &mut Seen,
    ) -> Result<Node, ConfigError> {
        let (text, at, zone, priority) = match value {
            RawValue::Scalar(text) => (text.as_str(), pos, None, defaults::NODE_PRIORITY),
            RawValue::Entries(entries) => {
                let map = self.index_nested(entries, NODE_KEYS, key)?;
                let get = |k: &'static str| map.get(k.rsplit('.').next().unwrap_or(k)).copied();
                let priority_key = match key {
                    "primary" => "primary.priority",
                    _ => "replicas.priority",
                };
                let (text, at) = self.text(&get, "addr")?.ok_or_else(|| {
                    self.err(
                        pos,
                        Problem::MissingNestedKey {
                            within: key,
                            key: "addr",
                        },
                    )
                })?;
                let priority = self
                    .number(&get, priority_key, 0, u32::MAX.into())?
                    .map_or(defaults::NODE_PRIORITY, narrow);
                (text, at, self.zone(&get, "zone")?, priority)
            }
            RawValue::Empty => return Err(self.err(pos, Problem::EmptyValue(key))),
            _ => return Err(self.err(pos, Problem::NotNode(key))),
        };
        let addr = parse_node(text).map_err(|reason| {
            let value = text.to_string();
            self.err(at, Problem::BadNode { value, reason })
        })?;
        let text = text.trim().to_string();
        if let Some(first_line) = seen.insert(normalise(&addr), at.line) {
            let problem = Problem::DuplicateNode {
                key,
                addr: text,
                first_line,
            };
            return Err(self.err(at, problem));
        }
        Ok(Node {
            addr,
            zone,
            priority,
            text,
        })
    }
}

/// An address as compared for duplicates: host names without case.
fn normalise(addr: &ServerAddr) -> String {
    match addr {
        ServerAddr::Tcp { host, port } => format!("{}:{port}", host.to_ascii_lowercase()),
        ServerAddr::Unix(path) => path.display().to_string(),
    }
}

/// A shard whose ring identity is its name.
fn named_shard(name: String, weight: u32, primary: Option<Node>, replicas: Vec<Node>) -> Shard {
    Shard {
        identity: name.clone().into_bytes(),
        name,
        weight,
        primary,
        replicas,
    }
}

/// The shard of a twemproxy server line: identity exactly as twemproxy hashes it.
fn shard_of_server(server: &Server) -> Shard {
    Shard {
        name: server.name.clone().unwrap_or_else(|| server.text.clone()),
        weight: server.weight,
        primary: Some(Node {
            addr: server.addr.clone(),
            zone: None,
            priority: defaults::NODE_PRIORITY,
            text: server.text.clone(),
        }),
        replicas: Vec::new(),
        identity: server.ring_identity(),
    }
}

/// The twemproxy view of a shard (see `Pool::servers`).
fn server_of_shard(shard: &Shard) -> Server {
    Server {
        addr: shard
            .primary
            .as_ref()
            .map_or(SENTINEL_PLACEHOLDER, |node| node.addr.clone()),
        weight: shard.weight,
        name: Some(shard.name.clone()),
        text: shard.name.clone(),
    }
}
