//! `nutcracker.yml`, read the way twemproxy reads it, validated the way rampart needs it.
//!
//! A file is a mapping of pool names to pool settings. rampart reads every twemproxy 0.5.0 key
//! with twemproxy's meaning and default, adds keys of its own (deadlines, client buffer
//! limits, admin command broadcast, and high availability: replica sets, Sentinel, read
//! policies, health checks) and refuses anything it would have to guess about: unknown
//! keys, repeated keys, bad values, duplicate pools, listen addresses or servers. Every refusal
//! says `file:line:column: pool "name": reason`. The key-by-key reference is `docs/CONFIG.md`.
//!
//! ```
//! let config = rampart_config::parse(
//!     "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n    - 127.0.0.1:6379:1\n",
//!     "nutcracker.yml",
//! )?;
//! assert_eq!(config.pools[0].name, "alpha");
//! assert_eq!(config.pools[0].timeout, rampart_config::defaults::TIMEOUT);
//! # Ok::<(), rampart_config::ConfigError>(())
//! ```
//!
//! # Layout
//! - `raw`: the YAML as written (scalar text, positions, duplicates kept).
//! - `pool`: one pool's keys, defaults and checks.
//! - `addr`: `listen:` values, `servers:` lines and node addresses ([`Listen`], [`Server`]).
//! - `shards`: the four ways to list backends (`servers`, `shards`, `primary`/`replicas`,
//!   `sentinels`), all turned into [`Shard`]s.
//! - `ha_keys`: read policy, replica lag, zone, [`HealthCheck`], ejection, failover hold.
//! - `kind_keys`: keys that mean something for some kinds of pool only, checked against the
//!   pool's kind (refused, or accepted with a warning in [`Pool::warnings`]).
//! - `ha`: the high-availability types ([`Shard`], [`Node`], [`ReadPolicy`], ...).
//! - `value`: booleans, durations, byte sizes.
//! - `cluster_view`: the Redis Cluster a pool presents ([`ClusterView`]).
//! - `diff`: what a reload changes in a pool, in words ([`Pool::changes_from`]).
//! - `redact`: the values of secret keys kept out of every refusal's message.
//! - `error`: [`ConfigError`] and its [`Problem`]s.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod addr;
mod cache_keys;
mod cluster_view;
mod diff;
mod error;
mod ha;
mod ha_keys;
mod keys;
mod kind_keys;
mod pool;
mod raw;
mod redact;
mod shards;
mod tls_keys;
mod users;
mod value;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub use addr::{Listen, Server, ServerAddr, MAX_SOCKET_PATH};
pub use cache_keys::{FailOpen, FailOpenWrites, WhenDown, FAIL_OPEN_AFTER, FAIL_OPEN_TIMEOUT};
pub use cluster_view::{
    node_id, ClusterView, ViewNode, ViewProblem, ViewSlots, CLUSTER_VIEW_MAX_NODES,
};
pub use error::{AddrError, ConfigError, ListenKey, Problem, TlsProblem};
pub use ha::{ClusterSeed, HealthCheck, Node, ReadPolicy, SentinelAddr, Shard, UnknownReadPolicy};
pub use hashkit::{Distribution, HashKind, HashTag};
pub use tls_keys::{BackendTls, ClientAuth, ListenerTls, TlsFile};
pub use users::{is_dangerous, sha256, CommandPolicy, User, DANGEROUS};

use raw::Pos;

/// A whole configuration file: its pools, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The pools, in the order the file lists them. Names and listen addresses are unique.
    pub pools: Vec<Pool>,
}

/// One pool: a listen address and the servers its keys are spread over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name (its top-level key).
    pub name: String,
    /// Where clients connect.
    pub listen: Listen,
    /// Most client connections accepted at once; 0 means unlimited.
    pub client_connections: u32,
    /// The key hash function.
    pub hash: HashKind,
    /// The part of a key that is hashed, if only part of it is.
    pub hash_tag: Option<HashTag>,
    /// How hashes map to servers.
    pub distribution: Distribution,
    /// Deadline for a backend to connect or to answer a request.
    pub timeout: Duration,
    /// Whether `timeout` was written in the file (false: it is rampart's default).
    pub timeout_from_file: bool,
    /// Listen backlog.
    pub backlog: u32,
    /// Connect to every server at start instead of on first use.
    pub preconnect: bool,
    /// Password sent with `AUTH` on every backend connection.
    pub redis_auth: Option<String>,
    /// rampart: the ACL user name sent with `redis_auth` (`AUTH <user> <password>`);
    /// `None`: `AUTH <password>`, Redis' `default` user. Needs `redis_auth`.
    pub redis_username: Option<String>,
    /// Database selected on every backend connection.
    pub redis_db: u32,
    /// Connections per server, at least 1.
    pub server_connections: u32,
    /// Most dedicated backend connections (blocking commands) one worker opens for this
    /// pool, over all its nodes, in use or idle (1 to 1,000,000; default 1,024). Over it a
    /// blocking command gets an error naming this setting.
    pub max_dedicated_connections: u32,
    /// Take a server out of the ring after `server_failure_limit` consecutive failures.
    pub auto_eject_hosts: bool,
    /// How long an ejected server stays out before it is tried again.
    pub server_retry_timeout: Duration,
    /// rampart: the pool is a cache (its data may be lost); default `auto_eject_hosts`.
    pub cache: bool,
    /// rampart: how the cache fails open when a shard cannot answer; `None`: it does not.
    pub fail_open: Option<FailOpen>,
    /// rampart: what a client whose request meets a shard that is down gets (its error
    /// reply, or its connection closed); default [`WhenDown::Error`].
    pub when_down: WhenDown,
    /// Consecutive failures that eject a server (0 behaves like 1, as in twemproxy).
    pub server_failure_limit: u32,
    /// Enable TCP keepalive on backend connections.
    pub tcpkeepalive: bool,
    /// Set `SO_REUSEPORT` on the listen socket.
    pub reuseport: bool,
    /// The twemproxy view of the backends: for a `servers:` pool the servers in file order
    /// (addresses and ring identities unique). For a `shards:`, short-form or Sentinel pool,
    /// one entry per shard in shard order, so code that iterates servers keeps working:
    /// `name` and `text` are the shard name (so [`Server::ring_identity`] is the shard's
    /// identity), `weight` the shard weight, `addr` the configured primary's address, or in a
    /// Sentinel pool the unused placeholder [`SENTINEL_PLACEHOLDER`]. New code reads `shards`.
    pub servers: Vec<Server>,
    /// rampart: send FLUSHALL, FLUSHDB, SCRIPT FLUSH, FUNCTION FLUSH and CONFIG GET/SET to
    /// every server instead of refusing them.
    pub admin_broadcast: bool,
    /// rampart: per-client protocol and buffer limits.
    pub limits: ClientLimits,
    /// rampart: the users clients authenticate as at the proxy (`users:`), with their ACL
    /// rules. Empty: twemproxy's behaviour (`AUTH` with `redis_auth`, every command).
    pub users: Vec<std::sync::Arc<User>>,
    /// rampart: commands denied, renamed and (of those refused by default) allowed.
    pub commands: CommandPolicy,
    /// rampart: the shards, in ring order (file order). Always filled: a `servers:` pool has
    /// one shard per server, primary only; see [`Shard`].
    pub shards: Vec<Shard>,
    /// rampart: the Sentinels to follow; empty unless this is a Sentinel pool.
    pub sentinels: Vec<SentinelAddr>,
    /// rampart: ACL user name sent to the Sentinels (needs `sentinel_password`).
    pub sentinel_username: Option<String>,
    /// rampart: password sent to the Sentinels.
    pub sentinel_password: Option<String>,
    /// rampart: how often each master's address is asked of Sentinel (at most 1 s).
    pub sentinel_poll: Duration,
    /// rampart: the seed nodes of a Redis Cluster; empty unless this is a cluster pool. A
    /// cluster pool's `shards` and `servers` are empty in the file's `Config`: the proxy
    /// fills `shards` from the cluster's slot map (one shard per primary and its replicas).
    pub cluster: Vec<ClusterSeed>,
    /// rampart: how often a cluster pool asks its nodes for the slot map when nothing
    /// (a redirection, a failed connection) asks sooner. Default 10 s, at least 100 ms.
    pub cluster_refresh: Duration,
    /// rampart: where reads go (writes always go to the primary).
    pub read_policy: ReadPolicy,
    /// rampart: after a client writes to a shard, its reads of that shard go to the primary
    /// for this long; `None` when off.
    pub read_your_writes: Option<Duration>,
    /// rampart: a replica lagging its primary by more than this leaves the read rotation.
    pub max_replica_lag: Duration,
    /// rampart: a replica whose replication link is down (its primary unreachable) keeps
    /// serving reads while the link has been down for at most this long
    /// (`master_link_down_since_seconds`); zero: never with the link down.
    pub max_stale: Duration,
    /// rampart: the proxy's own zone for this pool; reads prefer nodes in it.
    pub zone: Option<String>,
    /// rampart: active health checks.
    pub health: HealthCheck,
    /// rampart: consecutive failures on live traffic that take a node out of rotation.
    pub eject_after: u32,
    /// rampart: how long a node first stays out after a passive ejection; doubles with each
    /// further ejection, up to `eject_time_max`.
    pub eject_time: Duration,
    /// rampart: the longest passive ejection; at least `eject_time`.
    pub eject_time_max: Duration,
    /// rampart: how long writes to a shard without a confirmed primary are held (then
    /// failed); zero means they fail at once.
    pub failover_hold: Duration,
    /// rampart: most bytes of writes held per shard during a failover; beyond it they fail.
    pub failover_hold_bytes: u64,
    /// rampart: Pub/Sub settings (where subscriptions read from, slow-subscriber limits).
    pub pubsub: PubSub,
    /// rampart: a write is acknowledged to its client only once this many replicas have it
    /// (`WAIT` after each batch of writes on a primary connection); 0, the default, is off.
    /// Only for pools with replica sets (`shards:`, `primary:`/`replicas:`, `sentinels:`).
    pub min_replica_acks: u32,
    /// rampart: how long each `WAIT` may take (its timeout argument); a batch whose writes
    /// reached fewer replicas by then gets an error for each write. At least 1 ms.
    pub min_replica_acks_timeout: Duration,
    /// rampart: the durable write spool; `None` unless `spool_dir` is set.
    pub spool: Option<SpoolConfig>,
    /// rampart: an extra address that serves only reads of this pool (writes are refused).
    pub read_listen: Option<Listen>,
    /// rampart: an extra address that sends everything, reads included, to the primaries.
    pub write_listen: Option<Listen>,
    /// rampart: the Redis Cluster this pool presents to clients (CLUSTER SLOTS, NODES, ...),
    /// made of rampart instances; `None`: it answers as a server with cluster support
    /// disabled.
    pub cluster_view: Option<ClusterView>,
    /// rampart: an extra address that serves the pool over TLS (`tls` says with what);
    /// `listen` stays plaintext.
    pub tls_listen: Option<Listen>,
    /// rampart: the certificate and client-certificate rules of `tls_listen`.
    pub tls: Option<ListenerTls>,
    /// rampart: TLS to the pool's servers and Sentinels; `None`: plaintext.
    pub backend_tls: Option<BackendTls>,
    /// Keys the file gives this pool that its kind accepts but ignores (twemproxy's ejection
    /// keys in a pool whose nodes are health-checked), one message each, as
    /// `file:line:column: pool "name": ...`, for the log and `rampart -t`. Empty for most.
    pub warnings: Vec<String>,
}

/// A pool's write spool (`spool_dir`, `spool_commands`, `spool_max_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Where the spool's files live (one directory per shard under it), as written
    /// (a relative path is relative to rampart's working directory).
    pub dir: std::path::PathBuf,
    /// The commands that may be spooled, each listed once, in file order.
    pub commands: Vec<SpoolCommand>,
    /// Most payload bytes waiting for replay per shard; beyond it, writes fail naming the
    /// spool. Default [`defaults::SPOOL_MAX_BYTES`].
    pub max_bytes: u64,
}

/// A command whose reply rampart can give truthfully without the server, so it may be
/// spooled. Commands whose reply depends on data only the server has (`INCR`, `XADD *`,
/// `GETSET`, ...) are refused by the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoolCommand {
    /// `LPUSH`.
    Lpush,
    /// `RPUSH`.
    Rpush,
    /// `SADD`.
    Sadd,
    /// `ZADD` (without `INCR`, `GT`/`LT` or `CH` changing what it answers).
    Zadd,
    /// `HSET`.
    Hset,
    /// `SET` (without `GET`, `NX` or `XX`).
    Set,
    /// `XADD` with an explicit id (never `*`).
    Xadd,
}

impl SpoolCommand {
    /// Every spoolable command, in the order the documentation lists them.
    pub const ALL: [SpoolCommand; 7] = [
        SpoolCommand::Lpush,
        SpoolCommand::Rpush,
        SpoolCommand::Sadd,
        SpoolCommand::Zadd,
        SpoolCommand::Hset,
        SpoolCommand::Set,
        SpoolCommand::Xadd,
    ];

    /// The command's name in upper case.
    pub fn name(self) -> &'static str {
        match self {
            SpoolCommand::Lpush => "LPUSH",
            SpoolCommand::Rpush => "RPUSH",
            SpoolCommand::Sadd => "SADD",
            SpoolCommand::Zadd => "ZADD",
            SpoolCommand::Hset => "HSET",
            SpoolCommand::Set => "SET",
            SpoolCommand::Xadd => "XADD",
        }
    }

    /// The spoolable command named `name` (any case).
    pub fn parse(name: &str) -> Option<SpoolCommand> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// The address of the placeholder `servers` entries of a Sentinel pool, which has no
/// configured addresses: an empty host and port 0, which no connection can reach. The proxy
/// must route a Sentinel pool by `shards` and Sentinel, never by these entries.
pub const SENTINEL_PLACEHOLDER: ServerAddr = ServerAddr::Tcp {
    host: String::new(),
    port: 0,
};

impl Pool {
    /// Whether the pool follows Sentinel for its primaries and replicas.
    pub fn is_sentinel(&self) -> bool {
        !self.sentinels.is_empty()
    }

    /// Whether the pool is a Redis Cluster (`cluster:` seeds): keys placed by slot, the
    /// shards learned from the cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }
}

/// Which node of a shard the worker's subscriber connection reads from (`pubsub_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubFrom {
    /// The shard's primary (the default).
    Primary,
    /// A node picked by the pool's `read_policy` (Redis replicates PUBLISH to replicas).
    Replica,
}

/// rampart's Pub/Sub settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubSub {
    /// `pubsub_from`: where subscriptions read from; default [`PubSubFrom::Primary`].
    pub from: PubSubFrom,
    /// `pubsub_output_hard`: message bytes held for one subscribing client above which it is
    /// disconnected at once (Redis' `client-output-buffer-limit pubsub` hard limit); 32 MiB.
    pub output_hard: u64,
    /// `pubsub_output_soft`: held message bytes that disconnect a client when it stays above
    /// them for `pubsub_output_soft_time`; 8 MiB. At most `output_hard`.
    pub output_soft: u64,
    /// `pubsub_output_soft_time`: how long a client may stay above `output_soft`; 60 s.
    pub output_soft_time: std::time::Duration,
    /// `max_subscriptions_per_client`: channels, patterns and shard channels one client may
    /// hold together (1 to 1,000,000); 10,000. A command that would go over it is refused
    /// whole.
    pub max_per_client: u32,
}

impl Default for PubSub {
    fn default() -> Self {
        PubSub {
            from: PubSubFrom::Primary,
            output_hard: defaults::PUBSUB_OUTPUT_HARD,
            output_soft: defaults::PUBSUB_OUTPUT_SOFT,
            output_soft_time: defaults::PUBSUB_OUTPUT_SOFT_TIME,
            max_per_client: defaults::MAX_SUBSCRIPTIONS_PER_CLIENT,
        }
    }
}

/// rampart's per-client limits (every buffer is bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest bulk string accepted in a request, in bytes (at most Redis' 512 MiB).
    pub max_bulk_len: u64,
    /// Most bytes of unparsed request data buffered per client; at least `max_bulk_len`.
    pub client_input_max: u64,
    /// Pending reply bytes above which the client's requests are no longer read.
    pub client_output_soft: u64,
    /// Pending reply bytes above which the client is disconnected; at least the soft limit.
    pub client_output_hard: u64,
    /// Most requests of one client in flight at once.
    pub max_inflight_per_client: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_bulk_len: defaults::MAX_BULK_LEN,
            client_input_max: defaults::CLIENT_INPUT_MAX,
            client_output_soft: defaults::CLIENT_OUTPUT_SOFT,
            client_output_hard: defaults::CLIENT_OUTPUT_HARD,
            max_inflight_per_client: defaults::MAX_INFLIGHT_PER_CLIENT,
        }
    }
}

/// The value of every key a pool leaves out.
pub mod defaults {
    use std::time::Duration;

    use hashkit::{Distribution, HashKind};

    /// `timeout`: 1 s. twemproxy waits forever; rampart needs a deadline on every backend
    /// operation, and 1 s is far above any healthy Redis reply yet below the socket timeouts
    /// of common clients (2-5 s), so the client gets rampart's clear error, not its own.
    pub const TIMEOUT: Duration = Duration::from_millis(1000);
    /// `client_connections`: unlimited.
    pub const CLIENT_CONNECTIONS: u32 = 0;
    /// `hash`.
    pub const HASH: HashKind = HashKind::Fnv1a_64;
    /// `distribution`.
    pub const DISTRIBUTION: Distribution = Distribution::Ketama;
    /// `backlog`.
    pub const BACKLOG: u32 = 512;
    /// `preconnect`.
    pub const PRECONNECT: bool = false;
    /// `redis_db`.
    pub const REDIS_DB: u32 = 0;
    /// `server_connections`.
    pub const SERVER_CONNECTIONS: u32 = 1;
    /// `max_dedicated_connections`: per pool and worker.
    pub const MAX_DEDICATED_CONNECTIONS: u32 = 1024;
    /// `auto_eject_hosts`.
    pub const AUTO_EJECT_HOSTS: bool = false;
    /// `server_retry_timeout`: 30 s.
    pub const SERVER_RETRY_TIMEOUT: Duration = Duration::from_millis(30_000);
    /// `server_failure_limit`.
    pub const SERVER_FAILURE_LIMIT: u32 = 2;
    /// `tcpkeepalive`.
    pub const TCPKEEPALIVE: bool = false;
    /// `reuseport`.
    pub const REUSEPORT: bool = false;
    /// `admin_broadcast`.
    pub const ADMIN_BROADCAST: bool = false;
    /// `max_bulk_len`: 512 MiB, Redis' own `proto-max-bulk-len` (and the most it can be).
    pub const MAX_BULK_LEN: u64 = 512 << 20;
    /// `client_input_max`: 1 GiB, Redis' `client-query-buffer-limit`.
    pub const CLIENT_INPUT_MAX: u64 = 1 << 30;
    /// `client_output_soft`: 64 MiB.
    pub const CLIENT_OUTPUT_SOFT: u64 = 64 << 20;
    /// `client_output_hard`: 1 GiB (room for the largest possible bulk reply).
    pub const CLIENT_OUTPUT_HARD: u64 = 1 << 30;
    /// `max_inflight_per_client`.
    pub const MAX_INFLIGHT_PER_CLIENT: u32 = 1024;
    /// `pubsub_output_hard`: 32 MiB, Redis' default `client-output-buffer-limit pubsub`.
    pub const PUBSUB_OUTPUT_HARD: u64 = 32 << 20;
    /// `pubsub_output_soft`: 8 MiB, as Redis.
    pub const PUBSUB_OUTPUT_SOFT: u64 = 8 << 20;
    /// `pubsub_output_soft_time`: 60 s, as Redis.
    pub const PUBSUB_OUTPUT_SOFT_TIME: Duration = Duration::from_secs(60);
    /// `max_subscriptions_per_client`.
    pub const MAX_SUBSCRIPTIONS_PER_CLIENT: u32 = 10_000;
    /// Largest accepted `max_inflight_per_client`.
    pub const MAX_INFLIGHT_LIMIT: u32 = 1_000_000;
    /// `priority` of a node.
    pub const NODE_PRIORITY: u32 = 100;
    /// `weight` of a shard.
    pub const SHARD_WEIGHT: u32 = 1;
    /// `cluster_refresh`: 10 s.
    pub const CLUSTER_REFRESH: Duration = Duration::from_secs(10);
    /// Shortest accepted `cluster_refresh`: 100 ms.
    pub const CLUSTER_REFRESH_MIN: Duration = Duration::from_millis(100);
    /// `sentinel_poll`: 500 ms.
    pub const SENTINEL_POLL: Duration = Duration::from_millis(500);
    /// Longest accepted `sentinel_poll`: 1 s.
    pub const SENTINEL_POLL_MAX: Duration = Duration::from_millis(1000);
    /// `read_policy`.
    pub const READ_POLICY: crate::ReadPolicy = crate::ReadPolicy::Primary;
    /// `max_replica_lag`: 10 s.
    pub const MAX_REPLICA_LAG: Duration = Duration::from_secs(10);
    /// `max_stale`: 30 s.
    pub const MAX_STALE: Duration = Duration::from_secs(30);
    /// `health_check.interval`: 200 ms.
    pub const HEALTH_INTERVAL: Duration = Duration::from_millis(200);
    /// `health_check.timeout`: 250 ms.
    pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(250);
    /// `health_check.rise`.
    pub const HEALTH_RISE: u32 = 2;
    /// `health_check.fall`.
    pub const HEALTH_FALL: u32 = 2;
    /// `health_check.jitter`: 10 % of the interval.
    pub const HEALTH_JITTER: f64 = 0.1;
    /// `health_check.fast_interval`: 50 ms.
    pub const HEALTH_FAST_INTERVAL: Duration = Duration::from_millis(50);
    /// Largest accepted `health_check.rise` and `fall`.
    pub const HEALTH_COUNT_MAX: u32 = 100;
    /// `eject_after`.
    pub const EJECT_AFTER: u32 = 3;
    /// `eject_time`: 1 s.
    pub const EJECT_TIME: Duration = Duration::from_secs(1);
    /// `eject_time_max`: 30 s.
    pub const EJECT_TIME_MAX: Duration = Duration::from_secs(30);
    /// `failover_hold`: 3 s.
    pub const FAILOVER_HOLD: Duration = Duration::from_secs(3);
    /// `failover_hold_bytes`: 16 MiB.
    pub const FAILOVER_HOLD_BYTES: u64 = 16 << 20;
    /// `min_replica_acks`: 0 (off).
    pub const MIN_REPLICA_ACKS: u32 = 0;
    /// Largest accepted `min_replica_acks`.
    pub const MIN_REPLICA_ACKS_MAX: u32 = 64;
    /// `spool_max_bytes`: 1 GiB.
    pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
    /// `min_replica_acks_timeout`: 1 s.
    pub const MIN_REPLICA_ACKS_TIMEOUT: Duration = Duration::from_secs(1);
    /// Longest accepted duration (one day): longer is a typo, and keeps deadline arithmetic
    /// far from overflow.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
}

/// Reads and validates a configuration file.
///
/// # Errors
/// [`ConfigError::Missing`] if there is no file at `path`, [`ConfigError::Read`] if it cannot
/// be read, [`ConfigError::NotUtf8`] (with the line) if it is not UTF-8 text,
/// [`ConfigError::Invalid`] if its content is refused; messages name the path as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing {
            origin: origin.clone(),
        },
        _ => ConfigError::Read {
            origin: origin.clone(),
            source,
        },
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| not_utf8(&bytes, e, &origin))?;
    parse(text, &origin)
}

/// Locates the first byte of `bytes` that is not UTF-8.
fn not_utf8(bytes: &[u8], e: std::str::Utf8Error, origin: &str) -> ConfigError {
    let valid = &bytes[..e.valid_up_to()];
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let count = |n: usize| u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX);
    // The prefix is valid UTF-8, so counting non-continuation bytes counts characters.
    let chars = valid[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    ConfigError::NotUtf8 {
        origin: origin.to_string(),
        line: count(valid.iter().filter(|&&b| b == b'\n').count()),
        column: count(chars),
        byte: bytes.get(e.valid_up_to()).copied().unwrap_or(0),
    }
}

/// Parses and validates configuration text; `origin` is the file name used in messages.
///
/// # Errors
/// [`ConfigError::Invalid`] with the line, column and [`Problem`] of the first thing refused.
/// A message never shows the value of a secret key (`redis_auth`, `sentinel_password`, a
/// user's password or hash): where it would, the problem is [`Problem::Redacted`].
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_text(text, origin).map_err(|e| match e {
        ConfigError::Invalid {
            origin,
            line,
            column,
            pool,
            problem,
        } => {
            let secrets = redact::secrets_in(text);
            let problem = match redact::scrub(&problem.to_string(), &secrets) {
                Some(text) => Problem::Redacted(text),
                None => problem,
            };
            let pool = pool.map(|p| redact::scrub(&p, &secrets).unwrap_or(p));
            ConfigError::Invalid {
                origin,
                line,
                column,
                pool,
                problem,
            }
        }
        other => other,
    })
}

fn parse_text(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw = raw::parse(text)
        .map_err(|(pos, message)| pool::invalid(origin, pos, None, Problem::Yaml(message)))?;
    if raw.pools.is_empty() {
        return Err(pool::invalid(origin, Pos::START, None, Problem::NoPools));
    }
    let mut names: HashMap<&str, u32> = HashMap::new();
    // Every address bound so far: (address, key, position, index of its pool).
    let mut bound: Vec<(Listen, ListenKey, Pos, usize)> = Vec::new();
    let mut pools = Vec::with_capacity(raw.pools.len());
    for raw_pool in &raw.pools {
        let name = raw_pool.name.text.as_str();
        if let Some(first_line) = names.insert(name, raw_pool.name.pos.line) {
            let problem = Problem::DuplicatePool { first_line };
            return Err(pool::invalid(
                origin,
                raw_pool.name.pos,
                Some(name),
                problem,
            ));
        }
        let (pool, positions) = pool::build(origin, raw_pool)?;
        let addresses = [
            (ListenKey::Listen, Some(&pool.listen)),
            (ListenKey::ReadListen, pool.read_listen.as_ref()),
            (ListenKey::WriteListen, pool.write_listen.as_ref()),
            (ListenKey::TlsListen, pool.tls_listen.as_ref()),
        ];
        for ((key, listen), pos) in addresses.into_iter().zip(positions) {
            let Some(listen) = listen else { continue };
            if let Some((_, other_key, first, index)) =
                bound.iter().find(|(l, ..)| same_listen(l, listen))
            {
                let other = raw.pools[*index].name.text.clone();
                let first_line = first.line;
                let other_key = *other_key;
                let problem = if key == ListenKey::Listen && other_key == ListenKey::Listen {
                    Problem::DuplicateListen { other, first_line }
                } else {
                    Problem::ListenInUse {
                        key,
                        other_key,
                        other,
                        first_line,
                    }
                };
                return Err(pool::invalid(origin, pos, Some(name), problem));
            }
            bound.push((listen.clone(), key, pos, pools.len()));
        }
        pools.push(pool);
    }
    Ok(Config { pools })
}

/// Whether two listen addresses are the same (host names compared without case).
fn same_listen(a: &Listen, b: &Listen) -> bool {
    match (a, b) {
        (Listen::Tcp { host: ha, port: pa }, Listen::Tcp { host: hb, port: pb }) => {
            pa == pb && ha.eq_ignore_ascii_case(hb)
        }
        (Listen::Unix { path: a, .. }, Listen::Unix { path: b, .. }) => a == b,
        _ => false,
    }
}
