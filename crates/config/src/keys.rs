//! The keys a pool may have, and which kind of YAML value each takes (a scalar, a tree, or a
//! scalar inside a tree), so the raw reader knows how to read a value before the pool is built.

/// Every key twemproxy 0.5.0 knows (plus `reuseport` from later twemproxy).
pub(crate) const TWEMPROXY_KEYS: &[&str] = &[
    "listen",
    "client_connections",
    "hash",
    "hash_tag",
    "distribution",
    "timeout",
    "backlog",
    "preconnect",
    "redis",
    "redis_auth",
    "redis_db",
    "server_connections",
    "auto_eject_hosts",
    "server_retry_timeout",
    "server_failure_limit",
    "tcpkeepalive",
    "reuseport",
    "servers",
];

/// rampart's own keys.
pub(crate) const RAMPART_KEYS: &[&str] = &[
    "admin_broadcast",
    "max_bulk_len",
    "client_input_max",
    "client_output_soft",
    "client_output_hard",
    "max_inflight_per_client",
    "max_dedicated_connections",
    "pubsub_from",
    "pubsub_output_hard",
    "pubsub_output_soft",
    "pubsub_output_soft_time",
    "max_subscriptions_per_client",
    // Cache pools that fail open (see `cache_keys`).
    "cache",
    "fail_open",
    "fail_open_timeout",
    "fail_open_after",
    "fail_open_writes",
    "when_down",
    // High availability (see `shards` and `ha_keys`).
    "shards",
    "primary",
    "replicas",
    "sentinels",
    "master",
    "cluster",
    "cluster_refresh",
    "sentinel_username",
    "sentinel_password",
    "sentinel_poll",
    "read_policy",
    "read_your_writes",
    "max_replica_lag",
    "max_stale",
    "zone",
    "health_check",
    "eject_after",
    "eject_time",
    "eject_time_max",
    "failover_hold",
    "failover_hold_bytes",
    "min_replica_acks",
    "min_replica_acks_timeout",
    "spool_dir",
    "spool_commands",
    "spool_max_bytes",
    "read_listen",
    "write_listen",
    // The Redis Cluster the pool presents (see `cluster_view`).
    "cluster_view",
    // TLS (see `tls_keys`).
    "tls_listen",
    "tls",
    "backend_tls",
    // Users at the proxy and the command policy (see `users`).
    "redis_username",
    "users",
    "deny_commands",
    "allow_commands",
    "rename_commands",
];

/// Whether a pool key takes a single scalar (every known key but `servers` and the
/// structured ones).
pub(crate) fn is_scalar_key(key: &str) -> bool {
    !matches!(
        key,
        "servers" | "spool_commands" | "deny_commands" | "allow_commands"
    ) && !is_tree_key(key)
        && known_key(key).is_some()
}

/// Whether a key takes a structured value: lists of scalars or mappings, or a mapping.
pub(crate) fn is_tree_key(key: &str) -> bool {
    matches!(
        key,
        "shards"
            | "primary"
            | "replicas"
            | "sentinels"
            | "cluster"
            | "health_check"
            | "tls"
            | "backend_tls"
            | "users"
            | "rename_commands"
    ) || key == "cluster_view"
}

/// Whether a key inside a structured value takes a single scalar, read as written.
pub(crate) fn is_nested_scalar_key(key: &str) -> bool {
    matches!(
        key,
        "name"
            | "weight"
            | "addr"
            | "zone"
            | "priority"
            | "interval"
            | "timeout"
            | "rise"
            | "fall"
            | "jitter"
            | "fast_interval"
            | "cert"
            | "key"
            | "client_ca"
            | "client_auth"
            | "auth_clients_user"
            | "ca"
            | "server_name"
            | "enabled"
            | "password_sha256"
            | "password_file"
            | "password_env"
            | "password"
            | "nopass"
            | "rules"
    )
}

/// The static spelling of a known key.
pub(crate) fn known_key(key: &str) -> Option<&'static str> {
    TWEMPROXY_KEYS
        .iter()
        .chain(RAMPART_KEYS)
        .find(|k| **k == key)
        .copied()
}
