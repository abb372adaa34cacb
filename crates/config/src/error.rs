//! Why a configuration file was refused, and where.
//!
//! Every refusal names the file, the line and column of the offending YAML node and, when the
//! problem is inside a pool, the pool. `Display` renders the whole thing on one line, in the
//! `file:line:column: reason` shape that editors and `grep` understand:
//!
//! ```text
//! nutcracker.yml:7:5: pool "alpha": unknown key "hsah" (did you mean "hash"?)
//! ```

use std::fmt;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// There is no file at the path given.
    #[error("{origin}: the configuration file does not exist")]
    Missing {
        /// The path as given by the caller.
        origin: String,
    },
    /// The file is not UTF-8 text; `line` and `column` (1-based, in characters) locate the
    /// first byte that is not.
    #[error("{origin}:{line}:{column}: the file is not valid UTF-8 text (byte 0x{byte:02x} here); save it as UTF-8")]
    NotUtf8 {
        /// The path as given by the caller.
        origin: String,
        /// 1-based line of the first invalid byte.
        line: u32,
        /// 1-based column of the first invalid byte.
        column: u32,
        /// The first invalid byte.
        byte: u8,
    },
    /// The file could not be read at all.
    #[error("{origin}: cannot read the configuration file: {source}")]
    Read {
        /// The path as given by the caller.
        origin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its content is not a valid configuration.
    #[error("{origin}:{line}:{column}: {}{problem}", PoolPrefix(.pool.as_deref()))]
    Invalid {
        /// The file name used in messages.
        origin: String,
        /// 1-based line of the offending node.
        line: u32,
        /// 1-based column of the offending node.
        column: u32,
        /// The pool the problem is in, if it is inside one.
        pool: Option<String>,
        /// What is wrong.
        problem: Problem,
    },
}

impl ConfigError {
    /// The 1-based line of the problem, if the file could be read.
    pub fn line(&self) -> Option<u32> {
        match self {
            ConfigError::Missing { .. } | ConfigError::Read { .. } => None,
            ConfigError::NotUtf8 { line, .. } | ConfigError::Invalid { line, .. } => Some(*line),
        }
    }

    /// The problem, if the file could be read as text.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Whether the file's content was read and refused ([`ConfigError::Invalid`]), as
    /// opposed to a file that is missing, unreadable or not text.
    pub fn is_invalid_content(&self) -> bool {
        matches!(self, ConfigError::Invalid { .. })
    }
}

/// Renders `pool "name": ` or nothing.
struct PoolPrefix<'a>(Option<&'a str>);

impl fmt::Display for PoolPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pool) => write!(f, "pool {pool:?}: "),
            None => Ok(()),
        }
    }
}

/// Renders ` (did you mean "x"?)` or nothing.
struct Hint(Option<&'static str>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, " (did you mean {key:?}?)"),
            None => Ok(()),
        }
    }
}

/// What is wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The text is not YAML, or not shaped like a nutcracker.yml (the YAML parser's words).
    #[error("{0}")]
    Yaml(String),
    /// The file defines no pool.
    #[error("no pools defined (expected a mapping of pool names to pool settings)")]
    NoPools,
    /// A pool name is empty.
    #[error("a pool name must not be empty")]
    EmptyPoolName,
    /// Two pools share a name.
    #[error("duplicate pool name (first defined on line {first_line})")]
    DuplicatePool {
        /// Line of the first definition.
        first_line: u32,
    },
    /// A pool's value is not a mapping of settings.
    #[error("the pool settings must be a mapping of keys to values")]
    PoolNotMapping,
    /// A key that neither twemproxy nor rampart knows.
    #[error("unknown key {key:?}{}", Hint(*.hint))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The known key it most resembles.
        hint: Option<&'static str>,
    },
    /// A key given twice in one pool.
    #[error("duplicate key {key:?} (first given on line {first_line})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Line of the first occurrence.
        first_line: u32,
    },
    /// A required key is absent.
    #[error("missing required key {0:?}")]
    MissingKey(&'static str),
    /// A key with no value (`timeout:` followed by nothing).
    #[error("key {0:?} has no value")]
    EmptyValue(&'static str),
    /// A key that needs a list got something else.
    #[error("key {0:?} must be a list")]
    NotList(&'static str),
    /// A boolean key with a value other than `true` / `false`.
    #[error("{key}: {value:?} is not \"true\" or \"false\"")]
    NotBool {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// A numeric key with a value that is not a non-negative integer.
    #[error("{key}: {value:?} is not a non-negative integer")]
    NotNumber {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// A number outside the accepted range.
    #[error("{key}: {value} is out of range (accepted: {min}..={max})")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A duration that is neither integer milliseconds nor a humantime string.
    #[error("{key}: {value:?} is not a duration (integer milliseconds, or e.g. \"1s 500ms\")")]
    BadDuration {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// A duration that must be positive is zero.
    #[error("{0}: must be greater than 0")]
    ZeroDuration(&'static str),
    /// A size that is neither an integer nor an integer with a unit.
    #[error("{key}: {value:?} is not a size in bytes (e.g. 1048576, \"64mb\", \"1gb\")")]
    BadSize {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// `hash:` names no known hash function.
    #[error("hash: {0:?} is not a valid hash (one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins)")]
    UnknownHash(String),
    /// `distribution:` names no known distribution.
    #[error("distribution: {0:?} is not a valid distribution (ketama, modula, random)")]
    UnknownDistribution(String),
    /// `hash_tag:` is not exactly two characters.
    #[error("hash_tag: {0:?} is not a hash tag of exactly two characters, e.g. \"{{}}\"")]
    BadHashTag(String),
    /// `listen:` cannot be parsed.
    #[error("listen: {value:?}: {reason}")]
    BadListen {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// `read_listen:` or `write_listen:` cannot be parsed.
    #[error("{key}: {value:?}: {reason}")]
    BadListenKey {
        /// The key.
        key: ListenKey,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// A line of `servers:` cannot be parsed.
    #[error("servers: {value:?}: {reason}")]
    BadServer {
        /// The line as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// `servers:` is an empty list.
    #[error("servers: the list is empty; a pool needs at least one server")]
    NoServers,
    /// Two servers of a pool share a ring name (explicit, or derived from the address).
    #[error("servers: duplicate server name {name:?} (first used on line {first_line})")]
    DuplicateServerName {
        /// The name.
        name: String,
        /// Line of the first server with this name.
        first_line: u32,
    },
    /// Two servers of a pool share an address.
    #[error("servers: duplicate server address {addr:?} (first used on line {first_line})")]
    DuplicateServerAddr {
        /// The address.
        addr: String,
        /// Line of the first server with this address.
        first_line: u32,
    },
    /// Two pools listen on the same address.
    #[error("listen: the address is already used by pool {other:?} (line {first_line})")]
    DuplicateListen {
        /// The pool that listens there first.
        other: String,
        /// Line of that pool's `listen:`.
        first_line: u32,
    },
    /// `redis: false`: a memcached pool.
    #[error(
        "redis: false (memcached) is not supported; rampart serves Redis only, set redis: true"
    )]
    NotRedis,
    /// `redis_auth:` is empty.
    #[error("redis_auth: the password must not be empty (remove the key to disable AUTH)")]
    EmptyAuth,
    /// `redis_username` without `redis_auth`.
    #[error("redis_username: needs redis_auth (the backend AUTH takes both)")]
    RedisUsernameWithoutAuth,
    /// A user with a clear-text `password:`.
    #[error("users: user '{user}': a clear-text password is not accepted; give password_sha256 (the SHA-256 of the password in hex, as Redis' ACL #<hash>), password_file or password_env")]
    ClearPassword {
        /// The user's name.
        user: String,
    },
    /// A user with no way to authenticate.
    #[error("users: user '{user}' has no password: give password_sha256, password_file or password_env, or nopass: true")]
    UserWithoutPassword {
        /// The user's name.
        user: String,
    },
    /// Anything else wrong with one user (its rules in Redis' `ACL SETUSER` wording).
    #[error("users: user '{user}': {reason}")]
    User {
        /// The user's name.
        user: String,
        /// What is wrong.
        reason: String,
    },
    /// `deny_commands`, `rename_commands` or `allow_commands` names something wrong.
    #[error("{key}: {reason}")]
    CommandPolicy {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A soft output limit above the hard one.
    #[error("client_output_soft ({soft} bytes) is larger than client_output_hard ({hard} bytes)")]
    SoftAboveHard {
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
    /// An input limit too small to ever hold one maximum-size argument.
    #[error("client_input_max ({input} bytes) is smaller than max_bulk_len ({bulk} bytes), so the largest accepted argument could never be read")]
    InputBelowBulk {
        /// The input limit.
        input: u64,
        /// The bulk limit.
        bulk: u64,
    },
    /// Two address keys of the file name the same address (`read_listen` / `write_listen`
    /// involved; two `listen`s are [`Problem::DuplicateListen`]).
    #[error(
        "{key}: the address is already used by {other_key} of pool {other:?} (line {first_line})"
    )]
    ListenInUse {
        /// The key that repeats the address.
        key: ListenKey,
        /// The key that has it first.
        other_key: ListenKey,
        /// The pool of that key.
        other: String,
        /// Line of that key.
        first_line: u32,
    },
    /// Two keys that describe the backends in different ways.
    #[error("{key} cannot be combined with {other}; a pool lists its backends one way: servers (twemproxy), shards, primary/replicas, or sentinels with master or shards")]
    ConflictingKeys {
        /// The later key.
        key: &'static str,
        /// The key it conflicts with.
        other: &'static str,
    },
    /// A key inside a structured value (`shards`, a node, `health_check`) that rampart does
    /// not know.
    #[error("{within}: unknown key {key:?}{}", Hint(*.hint))]
    UnknownNestedKey {
        /// Where the key is.
        within: &'static str,
        /// The key as written.
        key: String,
        /// The known key it most resembles.
        hint: Option<&'static str>,
    },
    /// A key given twice inside a structured value.
    #[error("{within}: duplicate key {key:?} (first given on line {first_line})")]
    DuplicateNestedKey {
        /// Where the key is.
        within: &'static str,
        /// The key.
        key: String,
        /// Line of the first occurrence.
        first_line: u32,
    },
    /// A required key inside a structured value is absent.
    #[error("{within}: missing required key {key:?}")]
    MissingNestedKey {
        /// Where the key is missing.
        within: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A TLS key is wrong (see [`crate::TlsProblem`]).
    #[error(transparent)]
    Tls(#[from] TlsProblem),
    /// A key that needs a mapping got something else.
    #[error("{0}: expected a mapping of keys to values")]
    NotMapping(&'static str),
    /// `shards:` is an empty list.
    #[error("shards: the list is empty; a pool needs at least one shard")]
    NoShards,
    /// A shard or master name that is empty or not one word.
    #[error("{within}: {value:?} is not a name (one word, not empty)")]
    BadName {
        /// Where the name is.
        within: &'static str,
        /// The value as written.
        value: String,
    },
    /// Two shards of a pool share a name.
    #[error("shards: duplicate shard name {name:?} (first used on line {first_line})")]
    DuplicateShardName {
        /// The name.
        name: String,
        /// Line of the first shard with this name.
        first_line: u32,
    },
    /// A shard of a non-Sentinel pool without a primary.
    #[error("shard {shard:?} has no primary (only a Sentinel pool leaves addresses out)")]
    MissingPrimary {
        /// The shard's name.
        shard: String,
    },
    /// `replicas:` at pool level without `primary:`.
    #[error("replicas: needs a primary: next to it (or use shards:)")]
    ReplicasWithoutPrimary,
    /// A node address (under `primary`, `replicas` or `addr`) that cannot be parsed.
    #[error("node {value:?}: {reason}")]
    BadNode {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// A node that is neither an address nor a mapping.
    #[error("{0}: expected \"host:port\", \"/path/to.sock\" or a mapping with addr:")]
    NotNode(&'static str),
    /// The same node address twice in one pool (in one shard or in two).
    #[error("{key}: duplicate node address {addr:?} (first used on line {first_line})")]
    DuplicateNode {
        /// The key of the repeated address.
        key: &'static str,
        /// The address as written.
        addr: String,
        /// Line of the first use.
        first_line: u32,
    },
    /// A zone that is empty.
    #[error("{0}: the zone must not be empty")]
    EmptyZone(&'static str),
    /// A node address given in a Sentinel pool.
    #[error("{0}: a Sentinel pool takes node addresses from Sentinel only; remove it (shards name masters: name and weight only)")]
    SentinelAddresses(&'static str),
    /// A fail-open setting in a pool without `fail_open: true`.
    #[error("{0}: only applies with fail_open: true")]
    NeedsFailOpen(&'static str),
    /// `fail_open: true` in a pool that is not a cache.
    #[error("fail_open: only a cache pool may answer misses for a shard that cannot answer (add cache: true, or auto_eject_hosts: true)")]
    FailOpenNeedsCache,
    /// `when_down:` is neither `error` nor `close`.
    #[error("when_down: {0:?} is not error or close")]
    BadWhenDown(String),
    /// `when_down: close` in a pool that fails open.
    #[error("when_down: close does not apply with fail_open: true (such a pool answers a shard that cannot answer with misses itself); remove one")]
    WhenDownFailOpen,
    /// `fail_open_writes:` is neither `error` nor `drop`.
    #[error("fail_open_writes: {0:?} is not error or drop")]
    BadFailOpenWrites(String),
    /// A Sentinel-only key in a pool without `sentinels:`.
    #[error("{0}: only applies to a Sentinel pool (add sentinels:)")]
    NeedsSentinels(&'static str),
    /// A Sentinel pool that names no master.
    #[error(
        "sentinels: a Sentinel pool needs master: (one shard) or shards: (a list of master names)"
    )]
    NoMasters,
    /// `cluster:` is an empty list.
    #[error("cluster: the list is empty; a cluster pool needs at least one seed node (host:port)")]
    NoSeeds,
    /// A line of `cluster:` that cannot be parsed.
    #[error("cluster: {value:?}: {reason}")]
    BadSeed {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// The same seed twice in `cluster:`.
    #[error("cluster: duplicate seed {addr:?} (first given on line {first_line})")]
    DuplicateSeed {
        /// The address as written.
        addr: String,
        /// Line of the first one.
        first_line: u32,
    },
    /// A key that a cluster pool does not take: it lists backends another way, or it places
    /// keys, which Redis Cluster's slots do.
    #[error("{key}: {why}")]
    NotInCluster {
        /// The key.
        key: &'static str,
        /// Why it does not apply.
        why: &'static str,
    },
    /// `sentinels:` is an empty list.
    #[error("sentinels: the list is empty; a Sentinel pool needs at least one sentinel")]
    NoSentinels,
    /// A line of `sentinels:` that cannot be parsed.
    #[error("sentinels: {value:?}: {reason}")]
    BadSentinel {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: AddrError,
    },
    /// The same sentinel twice.
    #[error("sentinels: duplicate sentinel {addr:?} (first used on line {first_line})")]
    DuplicateSentinel {
        /// The address.
        addr: String,
        /// Line of the first use.
        first_line: u32,
    },
    /// A Sentinel user name without a password.
    #[error("sentinel_username: needs sentinel_password (Sentinel's AUTH takes both)")]
    UsernameWithoutPassword,
    /// An empty password or user name.
    #[error("{0}: must not be empty (remove the key instead)")]
    EmptyCredential(&'static str),
    /// `read_policy:` names no policy.
    #[error("read_policy: {0:?} is not a read policy (primary, prefer-replica, replica, least-outstanding, latency)")]
    UnknownReadPolicy(String),
    /// `pubsub_output_soft` above `pubsub_output_hard`.
    #[error("pubsub_output_soft ({soft} bytes) is larger than pubsub_output_hard ({hard} bytes)")]
    PubSubSoftAboveHard {
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
    /// `pubsub_from:` is neither `primary` nor `replica`.
    #[error("pubsub_from: {0:?} is not primary or replica")]
    UnknownPubSubFrom(String),
    /// A fraction outside `0 <= x < 1`.
    #[error("{key}: {value:?} is not a fraction in 0..1 (e.g. 0.1)")]
    BadFraction {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// `spool_commands` or `spool_max_bytes` without `spool_dir`.
    #[error("spool_dir: missing; the spool keys need a directory for the spool's files")]
    SpoolWithoutDir,
    /// `spool_dir` without `spool_commands`.
    #[error("spool_commands: missing; list the commands to spool (LPUSH, RPUSH, SADD, ZADD, HSET, SET, XADD)")]
    SpoolWithoutCommands,
    /// `spool_dir` in a pool whose primaries are not health-checked.
    #[error("spool_dir: needs a pool with replicas or sentinels (its primaries are health-checked, so rampart knows when to spool and when to replay)")]
    SpoolWithoutReplicas,
    /// A command in `spool_commands` whose reply rampart cannot give without the server.
    #[error("spool_commands: {0:?} cannot be spooled: its reply would be a guess, not the server's answer (spoolable: LPUSH, RPUSH, SADD, ZADD, HSET, SET, XADD with an explicit id)")]
    NotSpoolable(String),
    /// A key that tunes replicas, health checks, ejection or the failover hold, in a pool
    /// whose nodes are not health-checked: it would do nothing there.
    #[error("{key}: does nothing in {kind} (its nodes are not health-checked, and it has no replica to read from or fail over to); it applies to pools with replicas:, sentinels: or cluster:; remove it")]
    NotForKind {
        /// The key.
        key: &'static str,
        /// The pool's kind, in words.
        kind: &'static str,
    },
    /// `min_replica_acks` in a pool without replicas (a `servers:` pool).
    #[error("min_replica_acks: needs replicas to acknowledge writes (shards:, primary: with replicas:, or sentinels:)")]
    AcksWithoutReplicas,
    /// `min_replica_acks` above the replicas a shard lists: every write would fail.
    #[error("min_replica_acks: {wanted} is more than the {replicas} replica(s) of shard '{shard}'; every write there would fail")]
    MoreAcksThanReplicas {
        /// The value.
        wanted: u32,
        /// The shard with too few replicas.
        shard: String,
        /// How many it lists.
        replicas: usize,
    },
    /// Two durations in the wrong order (`fast_interval` above `interval`, `eject_time`
    /// above `eject_time_max`, ...).
    #[error("{key} ({value_ms} ms) must not be longer than {other} ({limit_ms} ms)")]
    LongerThan {
        /// The key that is too long.
        key: &'static str,
        /// Its value in milliseconds.
        value_ms: u64,
        /// The key that bounds it.
        other: &'static str,
        /// The bound in milliseconds.
        limit_ms: u64,
    },
    /// A `cluster_view:` that cannot be used.
    #[error("{0}")]
    ClusterView(Box<crate::ViewProblem>),
    /// Another problem whose message would have shown the value of a secret key
    /// (`redis_auth`, `sentinel_password`, a user's password, hash or password rule): its
    /// message with each such value replaced by `(redacted)`.
    #[error("{0}")]
    Redacted(String),
}

/// A key that binds a listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenKey {
    /// `listen:`
    Listen,
    /// `read_listen:`
    ReadListen,
    /// `write_listen:`
    WriteListen,
    /// `tls_listen:`
    TlsListen,
}

impl fmt::Display for ListenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenKey::Listen => "listen",
            ListenKey::ReadListen => "read_listen",
            ListenKey::WriteListen => "write_listen",
            ListenKey::TlsListen => "tls_listen",
        })
    }
}

/// What is wrong with a `listen:` value or a `servers:` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// No `:port` where one is required.
    #[error("expected \"host:port\" or \"/path/to.sock [mode]\"")]
    ListenShape,
    /// A server line without the required fields.
    #[error("expected \"host:port:weight [name]\" or \"/path/to.sock:weight [name]\"")]
    ServerShape,
    /// The host part is empty or contains spaces.
    #[error("the host is empty or malformed")]
    BadHost,
    /// The port is not a number in 1..=65535.
    #[error("{0:?} is not a port in 1..=65535")]
    BadPort(String),
    /// The weight is not a positive integer.
    #[error("{0:?} is not a positive integer weight")]
    BadWeight(String),
    /// The weight is zero.
    #[error("the weight must be at least 1")]
    ZeroWeight,
    /// The unix socket mode is not an octal number up to 0777.
    #[error("{0:?} is not an octal file mode up to 0777")]
    BadMode(String),
    /// The server name contains whitespace.
    #[error("the server name must be one word")]
    BadName,
    /// A node or sentinel address without the required shape.
    #[error("expected \"host:port\" or \"/path/to.sock\"")]
    NodeShape,
    /// A sentinel address that is not `host:port`.
    #[error("expected \"host:port\"")]
    SentinelShape,
    /// A unix socket path longer than the system's `sun_path` can hold.
    #[error("the unix socket path is {len} bytes long; the system allows at most {max}")]
    SocketPathTooLong {
        /// The path's length in bytes.
        len: usize,
        /// The longest path the system accepts, in bytes ([`crate::MAX_SOCKET_PATH`]).
        max: usize,
    },
}

/// What is wrong with a TLS key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    /// `tls_listen` without a `tls:` block to serve it.
    #[error("tls_listen: a TLS listener needs a tls: block with cert and key")]
    ListenWithoutTls,
    /// A `tls:` block with no `tls_listen` to serve.
    #[error("tls: no TLS listener uses it; add tls_listen: (listen stays plaintext)")]
    TlsWithoutListen,
    /// `client_auth` without `client_ca`.
    #[error(
        "tls.client_auth: needs tls.client_ca (the CA client certificates are verified against)"
    )]
    AuthWithoutCa,
    /// `client_auth` is neither `optional` nor `required`.
    #[error("tls.client_auth: {0:?} is not optional or required")]
    BadClientAuth(String),
    /// `cert` without `key` or the reverse.
    #[error("{0}: a client certificate needs both cert and key")]
    HalfPair(&'static str),
    /// `auth_clients_user` without `client_ca`.
    #[error(
        "tls.auth_clients_user: needs tls.client_ca (only a verified certificate names a user)"
    )]
    UserWithoutCa,
    /// `auth_clients_user` is neither `CN` nor `off`.
    #[error("tls.auth_clients_user: {0:?} is not CN or off")]
    BadUserFrom(String),
    /// `server_name` is empty or has spaces.
    #[error("backend_tls.server_name: {0:?} is not a host name")]
    BadServerName(String),
}
