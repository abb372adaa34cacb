//! High-availability keys: every key and default, the short form, `shards:`, the Sentinel
//! forms, and the shards/servers views of a twemproxy pool.

use std::path::PathBuf;
use std::time::Duration;

use rampart_config::{
    defaults, parse, HealthCheck, Listen, Node, Pool, ReadPolicy, SentinelAddr, Server, ServerAddr,
    Shard, SpoolCommand, SpoolConfig, SENTINEL_PLACEHOLDER,
};

fn one_pool(text: &str) -> Pool {
    match parse(text, "ha.yml") {
        Ok(mut config) => config.pools.remove(0),
        Err(err) => panic!("{err}\n--- input ---\n{text}"),
    }
}

fn tcp(host: &str, port: u16) -> ServerAddr {
    ServerAddr::Tcp {
        host: host.into(),
        port,
    }
}

fn node(host: &str, port: u16) -> Node {
    Node {
        addr: tcp(host, port),
        zone: None,
        priority: 100,
        text: format!("{host}:{port}"),
    }
}

#[test]
fn short_form_is_one_shard_named_after_the_pool() {
    let pool = one_pool(
        "cache:\n  listen: 127.0.0.1:6380\n  primary: 10.0.0.1:6379\n  \
         replicas: [10.0.0.2:6379, 10.0.0.3:6379]\n",
    );
    assert_eq!(
        pool.shards,
        [Shard {
            name: "cache".into(),
            weight: 1,
            primary: Some(node("10.0.0.1", 6379)),
            replicas: vec![node("10.0.0.2", 6379), node("10.0.0.3", 6379)],
            identity: b"cache".to_vec(),
        }]
    );
    assert!(!pool.is_sentinel());
    // The twemproxy view: one server per shard, at the primary, named after the shard.
    assert_eq!(
        pool.servers,
        [Server {
            addr: tcp("10.0.0.1", 6379),
            weight: 1,
            name: Some("cache".into()),
            text: "cache".into(),
        }]
    );
    assert_eq!(pool.servers[0].ring_identity(), pool.shards[0].identity);
}

#[test]
fn short_form_without_replicas_and_block_lists() {
    let pool = one_pool("p:\n  listen: 127.0.0.1:1\n  primary: /run/redis.sock\n");
    let shard = &pool.shards[0];
    assert_eq!(
        shard.primary.as_ref().map(|n| &n.addr),
        Some(&ServerAddr::Unix(PathBuf::from("/run/redis.sock")))
    );
    assert!(shard.replicas.is_empty());

    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  primary: redis-0.redis.svc:6379\n  replicas:\n    \
         - redis-1.redis.svc:6379\n    - {addr: \"[::1]:6390\", zone: b, priority: 5}\n",
    );
    let shard = &pool.shards[0];
    assert_eq!(
        shard.primary.as_ref().map(|n| &n.addr),
        Some(&tcp("redis-0.redis.svc", 6379)),
        "host names are kept for the proxy to resolve"
    );
    assert_eq!(
        shard.replicas[1],
        Node {
            addr: tcp("::1", 6390),
            zone: Some("b".into()),
            priority: 5,
            text: "[::1]:6390".into(),
        }
    );
}

const SHARDED: &str = r#"
orders:
  listen: 127.0.0.1:22121
  zone: a
  shards:
    - name: s1
      primary: 10.0.0.1:6379
    - name: s2
      weight: 3
      primary: {addr: "10.0.0.2:6379", zone: a}
      replicas:
        - {addr: "10.0.0.3:6379", zone: b, priority: 0}
        - 10.0.0.4:6379
"#;

#[test]
fn shards_keep_order_names_weights_zones_and_priorities() {
    let pool = one_pool(SHARDED);
    assert_eq!(pool.zone.as_deref(), Some("a"));
    assert_eq!(pool.shards.len(), 2);
    let s1 = &pool.shards[0];
    assert_eq!((s1.name.as_str(), s1.weight), ("s1", 1));
    assert_eq!(s1.identity, b"s1");
    assert_eq!(s1.primary, Some(node("10.0.0.1", 6379)));
    assert!(s1.replicas.is_empty());
    let s2 = &pool.shards[1];
    assert_eq!((s2.name.as_str(), s2.weight), ("s2", 3));
    assert_eq!(
        s2.primary.as_ref().and_then(|n| n.zone.as_deref()),
        Some("a")
    );
    let replicas: Vec<_> = s2
        .replicas
        .iter()
        .map(|n| (n.text.as_str(), n.zone.as_deref(), n.priority))
        .collect();
    assert_eq!(
        replicas,
        [
            ("10.0.0.3:6379", Some("b"), 0),
            ("10.0.0.4:6379", None, defaults::NODE_PRIORITY)
        ]
    );
    let servers: Vec<_> = pool
        .servers
        .iter()
        .map(|s| (s.name.as_deref(), s.weight, s.addr.clone()))
        .collect();
    assert_eq!(
        servers,
        [
            (Some("s1"), 1, tcp("10.0.0.1", 6379)),
            (Some("s2"), 3, tcp("10.0.0.2", 6379))
        ]
    );
}

#[test]
fn shard_names_are_read_as_written() {
    // A numeric-looking name keeps its spelling: it is the ring identity.
    let pool =
        one_pool("p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: 007\n      primary: h:1\n");
    assert_eq!(pool.shards[0].identity, b"007");
}

#[test]
fn twemproxy_pool_gets_one_primary_only_shard_per_server() {
    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  servers:\n    - 10.0.0.1:6379:2 alpha\n    \
         - 10.0.0.2:6379:1\n    - 10.0.0.3:11211:1\n    - /run/r.sock:1\n",
    );
    assert_eq!(pool.shards.len(), 4);
    for (shard, server) in pool.shards.iter().zip(&pool.servers) {
        assert_eq!(shard.identity, server.ring_identity(), "{server:?}");
        assert_eq!(
            shard.identity,
            hashkit::ring_identity(
                &server.text,
                match server.addr {
                    ServerAddr::Tcp { port, .. } => port,
                    ServerAddr::Unix(_) => 0,
                },
                server.name.as_deref()
            )
        );
        assert_eq!(shard.weight, server.weight);
        assert_eq!(shard.primary.as_ref().map(|n| &n.addr), Some(&server.addr));
        assert_eq!(
            shard.primary.as_ref().map(|n| n.text.as_str()),
            Some(server.text.as_str())
        );
        assert!(shard.replicas.is_empty());
    }
    let names: Vec<_> = pool.shards.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["alpha", "10.0.0.2:6379", "10.0.0.3:11211", "/run/r.sock"]
    );
    // twemproxy's quirks survive: port 11211 drops the port, sockets get a trailing colon.
    assert_eq!(pool.shards[2].identity, b"10.0.0.3");
    assert_eq!(pool.shards[3].identity, b"/run/r.sock:");
    assert!(!pool.is_sentinel());
}

#[test]
fn sentinel_short_form_names_one_master() {
    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  sentinels: [10.0.0.1:26379, \"[::1]:26380\"]\n  \
         master: mymaster\n",
    );
    assert!(pool.is_sentinel());
    assert_eq!(
        pool.sentinels,
        [
            SentinelAddr {
                host: "10.0.0.1".into(),
                port: 26379
            },
            SentinelAddr {
                host: "::1".into(),
                port: 26380
            }
        ]
    );
    assert_eq!(
        pool.shards,
        [Shard {
            name: "mymaster".into(),
            weight: 1,
            primary: None,
            replicas: Vec::new(),
            identity: b"mymaster".to_vec(),
        }]
    );
    assert_eq!(pool.servers[0].addr, SENTINEL_PLACEHOLDER);
    assert_eq!(pool.servers[0].name.as_deref(), Some("mymaster"));
    assert_eq!(pool.sentinel_poll, Duration::from_millis(500));
    assert_eq!(pool.sentinel_username, None);
    assert_eq!(pool.sentinel_password, None);
}

#[test]
fn sentinel_shards_name_masters_with_weights_and_credentials() {
    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  sentinels:\n    - s1.internal:26379\n    \
         - s2.internal:26379\n  sentinel_username: proxy\n  sentinel_password: 0123\n  \
         sentinel_poll: 1s\n  shards:\n    - name: m1\n    - name: m2\n      weight: 4\n",
    );
    let shards: Vec<_> = pool
        .shards
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.weight,
                s.primary.is_none(),
                s.replicas.len(),
            )
        })
        .collect();
    assert_eq!(shards, [("m1", 1, true, 0), ("m2", 4, true, 0)]);
    assert_eq!(pool.sentinel_username.as_deref(), Some("proxy"));
    assert_eq!(pool.sentinel_password.as_deref(), Some("0123"));
    assert_eq!(pool.sentinel_poll, Duration::from_secs(1));
    assert_eq!(pool.sentinels[1].host, "s2.internal");
}

const EVERY_HA_KEY: &str = r#"
p:
  listen: 127.0.0.1:1
  read_listen: 127.0.0.1:2
  write_listen: /tmp/rampart-writes.sock 0600
  primary: h:1
  replicas: [h:2]
  read_policy: least-outstanding
  read_your_writes: 1500ms
  max_replica_lag: 2s
  max_stale: 5s
  zone: eu-1a
  health_check:
    interval: 1s
    timeout: 2s
    rise: 3
    fall: 4
    jitter: 0.25
    fast_interval: 100
  eject_after: 5
  eject_time: 2s
  eject_time_max: 1m
  failover_hold: 0
  failover_hold_bytes: 1mb
  min_replica_acks: 1
  min_replica_acks_timeout: 250ms
  spool_dir: var/spool
  spool_commands: [lpush, RPUSH, XADD, LPUSH]
  spool_max_bytes: 64mb
"#;

#[test]
fn every_ha_key_is_read() {
    let pool = one_pool(EVERY_HA_KEY);
    assert_eq!(
        pool.read_listen,
        Some(Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 2
        })
    );
    assert_eq!(
        pool.write_listen,
        Some(Listen::Unix {
            path: PathBuf::from("/tmp/rampart-writes.sock"),
            mode: Some(0o600)
        })
    );
    assert_eq!(pool.read_policy, ReadPolicy::LeastOutstanding);
    assert_eq!(pool.read_your_writes, Some(Duration::from_millis(1500)));
    assert_eq!(pool.max_replica_lag, Duration::from_secs(2));
    assert_eq!(pool.max_stale, Duration::from_secs(5));
    assert_eq!(pool.zone.as_deref(), Some("eu-1a"));
    assert_eq!(
        pool.health,
        HealthCheck {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            rise: 3,
            fall: 4,
            jitter: 0.25,
            fast_interval: Duration::from_millis(100),
        },
        "a check timeout may exceed the interval"
    );
    assert_eq!(pool.eject_after, 5);
    assert_eq!(pool.eject_time, Duration::from_secs(2));
    assert_eq!(pool.eject_time_max, Duration::from_secs(60));
    assert_eq!(pool.failover_hold, Duration::ZERO, "0 means no hold");
    assert_eq!(pool.failover_hold_bytes, 1 << 20);
    assert_eq!(pool.min_replica_acks, 1);
    assert_eq!(pool.min_replica_acks_timeout, Duration::from_millis(250));
    assert_eq!(
        pool.spool,
        Some(SpoolConfig {
            dir: PathBuf::from("var/spool"),
            commands: vec![SpoolCommand::Lpush, SpoolCommand::Rpush, SpoolCommand::Xadd],
            max_bytes: 64 << 20,
        }),
        "any case; listed twice counts once"
    );
}

#[test]
fn absent_ha_keys_get_documented_defaults() {
    let pool = one_pool("p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n");
    assert!(pool.sentinels.is_empty());
    assert_eq!(pool.sentinel_poll, Duration::from_millis(500));
    assert_eq!(pool.read_policy, ReadPolicy::Primary);
    assert_eq!(pool.read_your_writes, None);
    assert_eq!(pool.max_replica_lag, Duration::from_secs(10));
    assert_eq!(pool.max_stale, Duration::from_secs(30));
    assert_eq!(pool.zone, None);
    assert_eq!(pool.health, HealthCheck::default());
    assert_eq!(pool.health.interval, Duration::from_millis(200));
    assert_eq!(pool.health.timeout, Duration::from_millis(250));
    assert_eq!((pool.health.rise, pool.health.fall), (2, 2));
    assert!((pool.health.jitter - 0.1).abs() < f64::EPSILON);
    assert_eq!(pool.health.fast_interval, Duration::from_millis(50));
    assert!(pool.health.worst_detection() < Duration::from_secs(1));
    assert_eq!(pool.eject_after, 3);
    assert_eq!(pool.eject_time, Duration::from_secs(1));
    assert_eq!(pool.eject_time_max, Duration::from_secs(30));
    assert_eq!(pool.failover_hold, Duration::from_secs(3));
    assert_eq!(pool.failover_hold_bytes, 16 << 20);
    assert_eq!(pool.min_replica_acks, 0, "off");
    assert_eq!(pool.min_replica_acks_timeout, Duration::from_secs(1));
    assert_eq!(pool.spool, None);
    assert_eq!((pool.read_listen, pool.write_listen), (None, None));
}

#[test]
fn partial_health_check_keeps_other_defaults() {
    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:2]\n  health_check:\n    rise: 1\n    jitter: 0\n",
    );
    assert_eq!(
        pool.health,
        HealthCheck {
            rise: 1,
            jitter: 0.0,
            ..HealthCheck::default()
        }
    );
}

#[test]
fn every_read_policy_spelling() {
    let cases = [
        ("primary", ReadPolicy::Primary),
        ("prefer-replica", ReadPolicy::PreferReplica),
        ("prefer_replica", ReadPolicy::PreferReplica),
        ("replica", ReadPolicy::Replica),
        ("least-outstanding", ReadPolicy::LeastOutstanding),
        ("latency", ReadPolicy::Latency),
    ];
    for (text, policy) in cases {
        let pool = one_pool(&format!(
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:2]\n  read_policy: {text}\n"
        ));
        assert_eq!(pool.read_policy, policy, "{text}");
    }
}

#[test]
fn read_your_writes_zero_is_off() {
    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  read_your_writes: 0\n  eject_after: 1\n  primary: h:1\n  replicas: [h:2]\n",
    );
    assert_eq!(pool.read_your_writes, None);
    assert_eq!(pool.eject_after, 1);
}

/// Keys that tune replicas, health checks, ejection and the failover hold do nothing in a
/// pool whose nodes are not health-checked: refused there, naming the key and the kind, and
/// accepted by every kind that uses them. twemproxy's ejection keys do nothing in a pool
/// whose nodes are health-checked: accepted with a warning naming the key and the kind.
#[test]
fn keys_of_one_pool_kind_are_refused_or_warned_in_another() {
    let plain = [
        ("  servers:\n    - h:1:1\n", "a servers: pool"),
        ("  primary: h:1\n", "a primary: pool without replicas:"),
        (
            "  shards:\n    - name: a\n      primary: h:1\n",
            "a shards: pool whose shards list no replicas",
        ),
    ];
    let checked = [
        "  primary: h:1\n  replicas: [h:2]\n",
        "  shards:\n    - name: a\n      primary: h:1\n      replicas: [h:2]\n    - name: b\n      primary: h:3\n",
        "  sentinels: [h:26379]\n  master: m\n",
        "  cluster: [h:7000]\n",
    ];
    let values = [
        ("read_policy", "replica"),
        ("read_your_writes", "1s"),
        ("max_replica_lag", "5s"),
        ("max_stale", "5s"),
        ("zone", "eu-1a"),
        ("pubsub_from", "replica"),
        ("health_check", "{interval: 1s}"),
        ("eject_after", "2"),
        ("eject_time", "2s"),
        ("eject_time_max", "60s"),
        ("failover_hold", "1s"),
        ("failover_hold_bytes", "1mb"),
    ];
    for (key, value) in values {
        for (backends, kind) in plain {
            let text = format!("p:\n  listen: 127.0.0.1:1\n  {key}: {value}\n{backends}");
            let err = parse(&text, "x.yml").expect_err(&text);
            assert_eq!(
                err.to_string(),
                format!("x.yml:3:3: pool \"p\": {key}: does nothing in {kind} (its nodes are not health-checked, and it has no replica to read from or fail over to); it applies to pools with replicas:, sentinels: or cluster:; remove it"),
            );
        }
        for backends in checked {
            let text = format!("p:\n  listen: 127.0.0.1:1\n  {key}: {value}\n{backends}");
            let pool = one_pool(&text);
            assert!(pool.warnings.is_empty(), "{text}: {:?}", pool.warnings);
        }
    }
    // A fail-open cache's health_check paces the checks that close its circuit.
    let pool = one_pool(
        "p:\n  listen: 127.0.0.1:1\n  cache: true\n  fail_open: true\n  health_check: {interval: 1s}\n  servers:\n    - h:1:1\n",
    );
    assert_eq!(pool.health.interval, Duration::from_secs(1));
    // twemproxy's ejection keys: warned where health checks decide.
    for key in [
        "server_failure_limit: 3",
        "server_retry_timeout: 1000",
        "auto_eject_hosts: false",
    ] {
        for (backends, kind) in [
            (checked[0], "a pool with replicas"),
            (checked[2], "a sentinels: pool"),
        ] {
            let text = format!("p:\n  listen: 127.0.0.1:1\n  {key}\n{backends}");
            let pool = one_pool(&text);
            let name = key.split(':').next().unwrap_or_default();
            assert_eq!(
                pool.warnings,
                vec![format!("ha.yml:3:3: pool \"p\": {name} is twemproxy's ejection key and does nothing in {kind}: its nodes leave rotation by health_check and eject_after, and keys never move; remove it")],
            );
        }
        for (backends, _) in plain {
            let text = format!("p:\n  listen: 127.0.0.1:1\n  {key}\n{backends}");
            assert!(one_pool(&text).warnings.is_empty(), "{text}");
        }
    }
    let pool = one_pool(&format!(
        "p:\n  listen: 127.0.0.1:1\n  auto_eject_hosts: true\n{}",
        checked[0]
    ));
    assert_eq!(pool.warnings.len(), 1);
    assert!(
        pool.warnings[0].contains("only makes the pool a cache"),
        "{:?}",
        pool.warnings
    );
    assert!(pool.cache);
}

#[test]
fn read_and_write_listens_of_different_pools_may_differ() {
    let text = "a:\n  listen: 127.0.0.1:1\n  read_listen: 127.0.0.1:2\n  primary: h:1\n\
                b:\n  listen: 127.0.0.1:3\n  write_listen: 127.0.0.1:4\n  primary: h:2\n";
    let config = parse(text, "x.yml").unwrap();
    assert_eq!(config.pools.len(), 2);
    assert!(config.pools[1].write_listen.is_some());
}

#[test]
fn pubsub_keys_and_defaults() {
    let base =
        "p:\n  listen: 127.0.0.1:6380\n  primary: 127.0.0.1:6379\n  replicas: [127.0.0.1:6390]\n";
    let d = one_pool(base).pubsub;
    assert_eq!(d.from, rampart_config::PubSubFrom::Primary);
    assert_eq!(d.output_hard, 32 << 20);
    assert_eq!(d.output_soft, 8 << 20);
    assert_eq!(d.output_soft_time, Duration::from_secs(60));
    assert_eq!(d.max_per_client, 10_000);
    let p = one_pool(&format!(
        "{base}  pubsub_from: replica\n  pubsub_output_hard: 1mb\n  pubsub_output_soft: 512kb\n  \
         pubsub_output_soft_time: 5s\n  max_subscriptions_per_client: 100\n"
    ))
    .pubsub;
    assert_eq!(p.from, rampart_config::PubSubFrom::Replica);
    assert_eq!(p.output_hard, 1 << 20);
    assert_eq!(p.output_soft, 512 << 10);
    assert_eq!(p.output_soft_time, Duration::from_secs(5));
    assert_eq!(p.max_per_client, 100);
    for (bad, says) in [
        (
            "  pubsub_from: nearest\n",
            "pubsub_from: \"nearest\" is not primary or replica",
        ),
        (
            "  pubsub_output_hard: 1mb\n  pubsub_output_soft: 2mb\n",
            "pubsub_output_soft (2097152 bytes) is larger than pubsub_output_hard (1048576 bytes)",
        ),
        (
            "  max_subscriptions_per_client: 0\n",
            "max_subscriptions_per_client",
        ),
    ] {
        let err = parse(&format!("{base}{bad}"), "ha.yml")
            .expect_err(bad)
            .to_string();
        assert!(err.contains(says), "{err}");
    }
}
