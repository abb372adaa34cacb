//! Every key parses to its meaning; every absent key gets its documented default.

use std::path::PathBuf;
use std::time::Duration;

use rampart_config::{
    defaults, parse, ClientLimits, Distribution, HashKind, HashTag, Listen, ServerAddr,
};

const EVERY_KEY: &str = r#"
alpha:
  listen: 0.0.0.0:22121
  client_connections: 100
  hash: murmur
  hash_tag: "{}"
  distribution: modula
  timeout: 400
  backlog: 1024
  preconnect: true
  redis: true
  redis_auth: s3cret
  redis_db: 3
  server_connections: 4
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 5
  tcpkeepalive: true
  reuseport: true
  admin_broadcast: true
  max_bulk_len: 1mb
  client_input_max: 8mb
  client_output_soft: 2mb
  client_output_hard: 4194304
  max_inflight_per_client: 64
  servers:
    - 10.0.0.1:6379:1 one
    - 10.0.0.2:6380:2 two
"#;

#[test]
fn every_key_is_read() {
    let config = parse(EVERY_KEY, "every.yml").unwrap();
    assert_eq!(config.pools.len(), 1);
    let pool = &config.pools[0];
    assert_eq!(pool.name, "alpha");
    assert_eq!(
        pool.listen,
        Listen::Tcp {
            host: "0.0.0.0".into(),
            port: 22121
        }
    );
    assert_eq!(pool.client_connections, 100);
    assert_eq!(pool.hash, HashKind::Murmur);
    assert_eq!(pool.hash_tag, Some(HashTag::new("{}").unwrap()));
    assert_eq!(pool.distribution, Distribution::Modula);
    assert_eq!(pool.timeout, Duration::from_millis(400));
    assert!(pool.timeout_from_file);
    assert_eq!(pool.backlog, 1024);
    assert!(pool.preconnect);
    assert_eq!(pool.redis_auth.as_deref(), Some("s3cret"));
    assert_eq!(pool.redis_db, 3);
    assert_eq!(pool.server_connections, 4);
    assert!(pool.auto_eject_hosts);
    assert_eq!(pool.server_retry_timeout, Duration::from_secs(2));
    assert_eq!(pool.server_failure_limit, 5);
    assert!(pool.tcpkeepalive);
    assert!(pool.reuseport);
    assert!(pool.admin_broadcast);
    assert_eq!(
        pool.limits,
        ClientLimits {
            max_bulk_len: 1 << 20,
            client_input_max: 8 << 20,
            client_output_soft: 2 << 20,
            client_output_hard: 4 << 20,
            max_inflight_per_client: 64,
        }
    );
    let servers: Vec<_> = pool
        .servers
        .iter()
        .map(|s| (s.addr.clone(), s.weight, s.name.as_deref(), s.text.as_str()))
        .collect();
    assert_eq!(
        servers,
        [
            (
                ServerAddr::Tcp {
                    host: "10.0.0.1".into(),
                    port: 6379
                },
                1,
                Some("one"),
                "10.0.0.1:6379"
            ),
            (
                ServerAddr::Tcp {
                    host: "10.0.0.2".into(),
                    port: 6380
                },
                2,
                Some("two"),
                "10.0.0.2:6380"
            ),
        ]
    );
}

#[test]
fn absent_keys_get_twemproxy_defaults_and_rampart_timeout() {
    let text = "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n    - 127.0.0.1:6379:1\n";
    let pool = &parse(text, "min.yml").unwrap().pools[0];
    assert_eq!(pool.client_connections, 0, "unlimited");
    assert_eq!(pool.hash, HashKind::Fnv1a_64);
    assert_eq!(pool.hash_tag, None);
    assert_eq!(pool.distribution, Distribution::Ketama);
    assert_eq!(pool.timeout, Duration::from_millis(1000));
    assert!(!pool.timeout_from_file);
    assert_eq!(pool.backlog, 512);
    assert!(!pool.preconnect);
    assert_eq!(pool.redis_auth, None);
    assert_eq!(pool.redis_db, 0);
    assert_eq!(pool.server_connections, 1);
    assert!(!pool.auto_eject_hosts);
    assert_eq!(pool.server_retry_timeout, Duration::from_millis(30_000));
    assert_eq!(pool.server_failure_limit, 2);
    assert!(!pool.tcpkeepalive);
    assert!(!pool.reuseport);
    assert!(!pool.admin_broadcast);
    assert_eq!(pool.limits, ClientLimits::default());
    assert_eq!(pool.limits.max_bulk_len, 512 << 20);
    assert_eq!(pool.limits.client_input_max, 1 << 30);
    assert_eq!(pool.limits.client_output_soft, 64 << 20);
    assert_eq!(pool.limits.client_output_hard, 1 << 30);
    assert_eq!(pool.limits.max_inflight_per_client, 1024);
    assert_eq!(pool.timeout, defaults::TIMEOUT);
}

#[test]
fn omitted_redis_key_means_redis() {
    let text = "p:\n  listen: 127.0.0.1:22121\n  servers:\n    - 127.0.0.1:6379:1\n";
    assert_eq!(parse(text, "x.yml").unwrap().pools[0].name, "p");
}

#[test]
fn durations_accept_humantime_strings() {
    let text = "p:\n  listen: 127.0.0.1:1\n  timeout: 1s 500ms\n  server_retry_timeout: \"2m\"\n  servers:\n    - h:1:1\n";
    let pool = &parse(text, "x.yml").unwrap().pools[0];
    assert_eq!(pool.timeout, Duration::from_millis(1500));
    assert_eq!(pool.server_retry_timeout, Duration::from_secs(120));
}

#[test]
fn zero_retry_timeout_and_failure_limit_are_accepted_like_twemproxy() {
    let text = "p:\n  listen: 127.0.0.1:1\n  server_retry_timeout: 0\n  server_failure_limit: 0\n  servers:\n    - h:1:1\n";
    let pool = &parse(text, "x.yml").unwrap().pools[0];
    assert_eq!(pool.server_retry_timeout, Duration::ZERO);
    assert_eq!(pool.server_failure_limit, 0);
}

#[test]
fn scalars_are_read_as_written() {
    // A numeric-looking password keeps its leading zero; a quoted number is still a number.
    let text = "p:\n  listen: 127.0.0.1:1\n  redis_auth: 0123\n  backlog: \"64\"\n  servers:\n    - h:1:1\n";
    let pool = &parse(text, "x.yml").unwrap().pools[0];
    assert_eq!(pool.redis_auth.as_deref(), Some("0123"));
    assert_eq!(pool.backlog, 64);
}

#[test]
fn unix_sockets_for_listen_and_servers() {
    let text = "p:\n  listen: /tmp/rampart.sock 0660\n  servers:\n    - /tmp/redis.sock:1 local\n";
    let pool = &parse(text, "x.yml").unwrap().pools[0];
    assert_eq!(
        pool.listen,
        Listen::Unix {
            path: PathBuf::from("/tmp/rampart.sock"),
            mode: Some(0o660)
        }
    );
    assert_eq!(
        pool.servers[0].addr,
        ServerAddr::Unix(PathBuf::from("/tmp/redis.sock"))
    );
    assert_eq!(pool.servers[0].ring_identity(), b"local");
}

#[test]
fn every_hash_and_distribution_name() {
    let hashes = [
        ("one_at_a_time", HashKind::OneAtATime),
        ("md5", HashKind::Md5),
        ("crc16", HashKind::Crc16),
        ("crc32", HashKind::Crc32),
        ("crc32a", HashKind::Crc32a),
        ("fnv1_64", HashKind::Fnv1_64),
        ("fnv1a_64", HashKind::Fnv1a_64),
        ("fnv1_32", HashKind::Fnv1_32),
        ("fnv1a_32", HashKind::Fnv1a_32),
        ("hsieh", HashKind::Hsieh),
        ("murmur", HashKind::Murmur),
        ("jenkins", HashKind::Jenkins),
    ];
    for (name, kind) in hashes {
        let text = format!("p:\n  listen: 127.0.0.1:1\n  hash: {name}\n  servers:\n    - h:1:1\n");
        assert_eq!(parse(&text, "x.yml").unwrap().pools[0].hash, kind, "{name}");
    }
    let dists = [
        ("ketama", Distribution::Ketama),
        ("modula", Distribution::Modula),
        ("random", Distribution::Random),
    ];
    for (name, dist) in dists {
        let text =
            format!("p:\n  listen: 127.0.0.1:1\n  distribution: {name}\n  servers:\n    - h:1:1\n");
        let pool = &parse(&text, "x.yml").unwrap().pools[0];
        assert_eq!(pool.distribution, dist, "{name}");
    }
}

#[test]
fn pools_keep_file_order() {
    let text = "zeta:\n  listen: 127.0.0.1:3\n  servers:\n    - h:1:1\n\
                alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n\
                mid:\n  listen: 127.0.0.1:2\n  servers:\n    - h:1:1\n";
    let names: Vec<_> = parse(text, "x.yml")
        .unwrap()
        .pools
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, EVERY_KEY).unwrap();
    assert_eq!(rampart_config::load(&good).unwrap().pools[0].name, "alpha");

    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "p:\n  listen: 127.0.0.1:1\n  hsah: md5\n").unwrap();
    let err = rampart_config::load(&bad).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:3:3: pool \"p\": unknown key \"hsah\" (did you mean \"hash\"?)",
            bad.display()
        )
    );

    let missing = dir.path().join("missing.yml");
    let err = rampart_config::load(&missing).unwrap_err();
    assert!(matches!(err, rampart_config::ConfigError::Missing { .. }));
    assert!(err.to_string().starts_with(&missing.display().to_string()));
}
