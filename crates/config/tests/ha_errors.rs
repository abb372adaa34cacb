//! Every refusal of the high-availability keys names the file, line, column, pool and reason.

use rampart_config::{parse, AddrError, ListenKey, Problem};

/// (what, input, expected message)
fn cases() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "servers and shards",
            "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n  shards:\n    - name: a\n      primary: h:2\n",
            "nutcracker.yml:5:3: pool \"p\": shards cannot be combined with servers; a pool lists its backends one way: servers (twemproxy), shards, primary/replicas, or sentinels with master or shards",
        ),
        (
            "servers and primary",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:2\n  servers:\n    - h:1:1\n",
            "nutcracker.yml:4:3: pool \"p\": servers cannot be combined with primary; a pool lists its backends one way: servers (twemproxy), shards, primary/replicas, or sentinels with master or shards",
        ),
        (
            "shards and primary",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a\n      primary: h:2\n  primary: h:3\n",
            "nutcracker.yml:6:3: pool \"p\": primary cannot be combined with shards; a pool lists its backends one way: servers (twemproxy), shards, primary/replicas, or sentinels with master or shards",
        ),
        (
            "duplicate shard name",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a\n      primary: h:1\n    - name: a\n      primary: h:2\n",
            "nutcracker.yml:6:13: pool \"p\": shards: duplicate shard name \"a\" (first used on line 4)",
        ),
        (
            "shard without primary",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a\n      replicas: [h:1]\n",
            "nutcracker.yml:4:7: pool \"p\": shard \"a\" has no primary (only a Sentinel pool leaves addresses out)",
        ),
        (
            "shard without name",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - primary: h:1\n",
            "nutcracker.yml:4:7: pool \"p\": shards: missing required key \"name\"",
        ),
        (
            "shard name two words",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a b\n      primary: h:1\n",
            "nutcracker.yml:4:13: pool \"p\": shards: \"a b\" is not a name (one word, not empty)",
        ),
        (
            "shard weight 0",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a\n      weight: 0\n      primary: h:1\n",
            "nutcracker.yml:5:15: pool \"p\": shards.weight: 0 is out of range (accepted: 1..=4294967295)",
        ),
        (
            "shard unknown key",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a\n      primery: h:1\n",
            "nutcracker.yml:5:7: pool \"p\": shards: unknown key \"primery\" (did you mean \"primary\"?)",
        ),
        (
            "shard not a mapping",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - h:1\n",
            "nutcracker.yml:4:7: pool \"p\": shards: expected a mapping of keys to values",
        ),
        (
            "empty shards",
            "p:\n  listen: 127.0.0.1:1\n  shards: []\n",
            "nutcracker.yml:3:11: pool \"p\": shards: the list is empty; a pool needs at least one shard",
        ),
        (
            "bad node",
            "p:\n  listen: 127.0.0.1:1\n  primary: h\n",
            "nutcracker.yml:3:12: pool \"p\": node \"h\": expected \"host:port\" or \"/path/to.sock\"",
        ),
        (
            "bad node port",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:99999]\n",
            "nutcracker.yml:4:14: pool \"p\": node \"h:99999\": \"99999\" is not a port in 1..=65535",
        ),
        (
            "node map without addr",
            "p:\n  listen: 127.0.0.1:1\n  primary: {zone: a}\n",
            "nutcracker.yml:3:12: pool \"p\": primary: missing required key \"addr\"",
        ),
        (
            "node map unknown key",
            "p:\n  listen: 127.0.0.1:1\n  primary: {addr: \"h:1\", zome: a}\n",
            "nutcracker.yml:3:26: pool \"p\": primary: unknown key \"zome\" (did you mean \"zone\"?)",
        ),
        (
            "node list for primary",
            "p:\n  listen: 127.0.0.1:1\n  primary: [h:1]\n",
            "nutcracker.yml:3:12: pool \"p\": primary: expected \"host:port\", \"/path/to.sock\" or a mapping with addr:",
        ),
        (
            "empty zone",
            "p:\n  listen: 127.0.0.1:1\n  primary: {addr: \"h:1\", zone: \"\"}\n",
            "nutcracker.yml:3:32: pool \"p\": zone: the zone must not be empty",
        ),
        (
            "duplicate node",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:2, H:1]\n",
            "nutcracker.yml:4:19: pool \"p\": replicas: duplicate node address \"H:1\" (first used on line 3)",
        ),
        (
            "duplicate node across shards",
            "p:\n  listen: 127.0.0.1:1\n  shards:\n    - name: a\n      primary: h:1\n    - name: b\n      primary: h:2\n      replicas: [h:1]\n",
            "nutcracker.yml:8:18: pool \"p\": replicas: duplicate node address \"h:1\" (first used on line 5)",
        ),
        (
            "replicas not a list",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: h:2\n",
            "nutcracker.yml:4:13: pool \"p\": key \"replicas\" must be a list",
        ),
        (
            "replicas without primary",
            "p:\n  listen: 127.0.0.1:1\n  replicas: [h:2]\n",
            "nutcracker.yml:3:3: pool \"p\": replicas: needs a primary: next to it (or use shards:)",
        ),
        (
            "address in sentinel pool",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n  master: m\n  primary: h:1\n",
            "nutcracker.yml:5:3: pool \"p\": primary: a Sentinel pool takes node addresses from Sentinel only; remove it (shards name masters: name and weight only)",
        ),
        (
            "address in sentinel shard",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n  shards:\n    - name: m\n      primary: h:1\n",
            "nutcracker.yml:6:7: pool \"p\": primary: a Sentinel pool takes node addresses from Sentinel only; remove it (shards name masters: name and weight only)",
        ),
        (
            "sentinel without masters",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n",
            "nutcracker.yml:3:3: pool \"p\": sentinels: a Sentinel pool needs master: (one shard) or shards: (a list of master names)",
        ),
        (
            "empty sentinels",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: []\n  master: m\n",
            "nutcracker.yml:3:14: pool \"p\": sentinels: the list is empty; a Sentinel pool needs at least one sentinel",
        ),
        (
            "bad sentinel",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [/run/s.sock]\n  master: m\n",
            "nutcracker.yml:3:15: pool \"p\": sentinels: \"/run/s.sock\": expected \"host:port\"",
        ),
        (
            "duplicate sentinel",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379, S:26379]\n  master: m\n",
            "nutcracker.yml:3:24: pool \"p\": sentinels: duplicate sentinel \"S:26379\" (first used on line 3)",
        ),
        (
            "master without sentinels",
            "p:\n  listen: 127.0.0.1:1\n  master: m\n",
            "nutcracker.yml:3:3: pool \"p\": master: only applies to a Sentinel pool (add sentinels:)",
        ),
        (
            "sentinel_password without sentinels",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  sentinel_password: x\n",
            "nutcracker.yml:4:3: pool \"p\": sentinel_password: only applies to a Sentinel pool (add sentinels:)",
        ),
        (
            "username without password",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n  master: m\n  sentinel_username: u\n",
            "nutcracker.yml:5:22: pool \"p\": sentinel_username: needs sentinel_password (Sentinel's AUTH takes both)",
        ),
        (
            "empty sentinel password",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n  master: m\n  sentinel_password: \"\"\n",
            "nutcracker.yml:5:22: pool \"p\": sentinel_password: must not be empty (remove the key instead)",
        ),
        (
            "sentinel_poll above 1s",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n  master: m\n  sentinel_poll: 2s\n",
            "nutcracker.yml:5:18: pool \"p\": sentinel_poll: 2000 is out of range (accepted: 1..=1000)",
        ),
        (
            "sentinel_poll 0",
            "p:\n  listen: 127.0.0.1:1\n  sentinels: [s:26379]\n  master: m\n  sentinel_poll: 0\n",
            "nutcracker.yml:5:18: pool \"p\": sentinel_poll: must be greater than 0",
        ),
        (
            "servers and sentinels",
            "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n  sentinels: [s:26379]\n",
            "nutcracker.yml:5:3: pool \"p\": sentinels cannot be combined with servers; a pool lists its backends one way: servers (twemproxy), shards, primary/replicas, or sentinels with master or shards",
        ),
        (
            "unknown read policy",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  read_policy: nearest\n",
            "nutcracker.yml:4:16: pool \"p\": read_policy: \"nearest\" is not a read policy (primary, prefer-replica, replica, least-outstanding, latency)",
        ),
        (
            "bad duration",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  max_replica_lag: soon\n",
            "nutcracker.yml:4:20: pool \"p\": max_replica_lag: \"soon\" is not a duration (integer milliseconds, or e.g. \"1s 500ms\")",
        ),
        (
            "max_replica_lag 0",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  max_replica_lag: 0\n",
            "nutcracker.yml:4:20: pool \"p\": max_replica_lag: must be greater than 0",
        ),
        (
            "max_stale not a duration",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  max_stale: a while\n",
            "nutcracker.yml:4:14: pool \"p\": max_stale: \"a while\" is not a duration (integer milliseconds, or e.g. \"1s 500ms\")",
        ),
        (
            "health_check not a mapping",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check: 200ms\n",
            "nutcracker.yml:4:17: pool \"p\": health_check: expected a mapping of keys to values",
        ),
        (
            "health rise 0",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    rise: 0\n",
            "nutcracker.yml:5:11: pool \"p\": health_check.rise: 0 is out of range (accepted: 1..=100)",
        ),
        (
            "health fall 0",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    fall: 0\n",
            "nutcracker.yml:5:11: pool \"p\": health_check.fall: 0 is out of range (accepted: 1..=100)",
        ),
        (
            "health interval 0",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    interval: 0\n",
            "nutcracker.yml:5:15: pool \"p\": health_check.interval: must be greater than 0",
        ),
        (
            "health bad timeout",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    timeout: fast\n",
            "nutcracker.yml:5:14: pool \"p\": health_check.timeout: \"fast\" is not a duration (integer milliseconds, or e.g. \"1s 500ms\")",
        ),
        (
            "health unknown key",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    intervall: 1s\n",
            "nutcracker.yml:5:5: pool \"p\": health_check: unknown key \"intervall\" (did you mean \"interval\"?)",
        ),
        (
            "health duplicate key",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    rise: 1\n    rise: 2\n",
            "nutcracker.yml:6:5: pool \"p\": health_check: duplicate key \"rise\" (first given on line 5)",
        ),
        (
            "jitter 1",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    jitter: 1\n",
            "nutcracker.yml:5:13: pool \"p\": health_check.jitter: \"1\" is not a fraction in 0..1 (e.g. 0.1)",
        ),
        (
            "jitter negative",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    jitter: -0.1\n",
            "nutcracker.yml:5:13: pool \"p\": health_check.jitter: \"-0.1\" is not a fraction in 0..1 (e.g. 0.1)",
        ),
        (
            "jitter nan",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    jitter: .nan\n",
            "nutcracker.yml:5:13: pool \"p\": health_check.jitter: \".nan\" is not a fraction in 0..1 (e.g. 0.1)",
        ),
        (
            "fast_interval above interval",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n    interval: 100ms\n    fast_interval: 150ms\n",
            "nutcracker.yml:6:20: pool \"p\": health_check.fast_interval (150 ms) must not be longer than health_check.interval (100 ms)",
        ),
        (
            "eject_after 0",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  eject_after: 0\n",
            "nutcracker.yml:4:16: pool \"p\": eject_after: 0 is out of range (accepted: 1..=4294967295)",
        ),
        (
            "eject_time above max",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  eject_time: 1m\n",
            "nutcracker.yml:4:15: pool \"p\": eject_time (60000 ms) must not be longer than eject_time_max (30000 ms)",
        ),
        (
            "failover_hold_bytes bad",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  failover_hold_bytes: lots\n",
            "nutcracker.yml:4:24: pool \"p\": failover_hold_bytes: \"lots\" is not a size in bytes (e.g. 1048576, \"64mb\", \"1gb\")",
        ),
        (
            "read_listen equal to listen",
            "p:\n  listen: 127.0.0.1:1\n  read_listen: 127.0.0.1:1\n  primary: h:1\n",
            "nutcracker.yml:3:16: pool \"p\": read_listen: the address is already used by listen of pool \"p\" (line 2)",
        ),
        (
            "write_listen equal to read_listen",
            "p:\n  listen: 127.0.0.1:1\n  read_listen: 127.0.0.1:2\n  write_listen: 127.0.0.1:2\n  primary: h:1\n",
            "nutcracker.yml:4:17: pool \"p\": write_listen: the address is already used by read_listen of pool \"p\" (line 3)",
        ),
        (
            "read_listen equal to other pool listen",
            "a:\n  listen: 127.0.0.1:1\n  primary: h:1\nb:\n  listen: 127.0.0.1:2\n  read_listen: LOCALHOST:3\n  primary: h:2\nc:\n  listen: localhost:3\n  primary: h:3\n",
            "nutcracker.yml:9:11: pool \"c\": listen: the address is already used by read_listen of pool \"b\" (line 6)",
        ),
        (
            "bad read_listen",
            "p:\n  listen: 127.0.0.1:1\n  read_listen: nowhere\n  primary: h:1\n",
            "nutcracker.yml:3:16: pool \"p\": read_listen: \"nowhere\": expected \"host:port\" or \"/path/to.sock [mode]\"",
        ),
        (
            "missing backends",
            "p:\n  listen: 127.0.0.1:1\n",
            "nutcracker.yml:1:1: pool \"p\": missing required key \"servers\"",
        ),
        (
            "empty zone key",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  zone: \"\"\n",
            "nutcracker.yml:4:9: pool \"p\": zone: the zone must not be empty",
        ),
        (
            "unknown pool key near ha key",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  read_polcy: replica\n",
            "nutcracker.yml:4:3: pool \"p\": unknown key \"read_polcy\" (did you mean \"read_policy\"?)",
        ),
        (
            "node priority not a number",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas:\n    - {addr: \"h:2\", priority: high}\n",
            "nutcracker.yml:5:31: pool \"p\": replicas.priority: \"high\" is not a non-negative integer",
        ),
        (
            "health_check without value",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  health_check:\n",
            "nutcracker.yml:4:3: pool \"p\": key \"health_check\" has no value",
        ),
        (
            "read_policy given twice",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  read_policy: replica\n  read_policy: primary\n",
            "nutcracker.yml:5:3: pool \"p\": duplicate key \"read_policy\" (first given on line 4)",
        ),
        (
            "min_replica_acks without replicas",
            "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n  min_replica_acks: 1\n",
            "nutcracker.yml:5:21: pool \"p\": min_replica_acks: needs replicas to acknowledge writes (shards:, primary: with replicas:, or sentinels:)",
        ),
        (
            "min_replica_acks above a shard's replicas",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:2]\n  min_replica_acks: 2\n",
            "nutcracker.yml:5:21: pool \"p\": min_replica_acks: 2 is more than the 1 replica(s) of shard 'p'; every write there would fail",
        ),
        (
            "spool_commands without spool_dir",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  spool_commands: [LPUSH]\n",
            "nutcracker.yml:4:3: pool \"p\": spool_dir: missing; the spool keys need a directory for the spool's files",
        ),
        (
            "spool_dir without spool_commands",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  spool_dir: spool\n",
            "nutcracker.yml:4:14: pool \"p\": spool_commands: missing; list the commands to spool (LPUSH, RPUSH, SADD, ZADD, HSET, SET, XADD)",
        ),
        (
            "spool without replicas",
            "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n  spool_dir: spool\n  spool_commands: [LPUSH]\n",
            "nutcracker.yml:5:14: pool \"p\": spool_dir: needs a pool with replicas or sentinels (its primaries are health-checked, so rampart knows when to spool and when to replay)",
        ),
        (
            "INCR is not spoolable",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:2]\n  spool_dir: spool\n  spool_commands: [LPUSH, INCR]\n",
            "nutcracker.yml:6:27: pool \"p\": spool_commands: \"INCR\" cannot be spooled: its reply would be a guess, not the server's answer (spoolable: LPUSH, RPUSH, SADD, ZADD, HSET, SET, XADD with an explicit id)",
        ),
        (
            "min_replica_acks_timeout zero",
            "p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  replicas: [h:2]\n  min_replica_acks: 1\n  min_replica_acks_timeout: 0\n",
            "nutcracker.yml:6:29: pool \"p\": min_replica_acks_timeout: must be greater than 0",
        ),
    ]
}

#[test]
fn each_invalid_ha_file_names_file_line_column_and_reason() {
    let mut wrong = Vec::new();
    for (what, text, expected) in cases() {
        let got = match parse(text, "nutcracker.yml") {
            Ok(config) => format!("accepted: {config:?}"),
            Err(err) => err.to_string(),
        };
        if got != expected {
            wrong.push(format!("{what}:\n  expected {expected}\n  got      {got}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn ha_problems_are_typed() {
    let problem = |text: &str| parse(text, "x.yml").unwrap_err().problem().cloned();
    assert_eq!(
        problem("p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n  shards: []\n"),
        Some(Problem::ConflictingKeys {
            key: "shards",
            other: "servers"
        })
    );
    assert_eq!(
        problem("p:\n  listen: 127.0.0.1:1\n  primary: h:0\n"),
        Some(Problem::BadNode {
            value: "h:0".into(),
            reason: AddrError::BadPort("0".into())
        })
    );
    assert_eq!(
        problem("p:\n  listen: 127.0.0.1:1\n  write_listen: 127.0.0.1:1\n  primary: h:1\n"),
        Some(Problem::ListenInUse {
            key: ListenKey::WriteListen,
            other_key: ListenKey::Listen,
            other: "p".into(),
            first_line: 2
        })
    );
    assert_eq!(
        problem("p:\n  listen: 127.0.0.1:1\n  primary: h:1\n  read_policy: fastest\n"),
        Some(Problem::UnknownReadPolicy("fastest".into()))
    );
}

#[test]
fn structured_keys_survive_truncation_without_panics() {
    let full = "p:\n  listen: 127.0.0.1:1\n  zone: a\n  health_check:\n    interval: 1s\n    \
                jitter: 0.2\n  shards:\n    - name: a\n      primary: {addr: \"h:1\", zone: a}\n      \
                replicas:\n        - h:2\n        - {addr: \"h:3\", priority: 1}\n\
                q:\n  listen: 127.0.0.1:2\n  sentinels: [s:1, s:2]\n  master: m\n";
    assert!(parse(full, "n.yml").is_ok());
    for (cut, _) in full.char_indices() {
        if let Err(err) = parse(&full[..cut], "n.yml") {
            let line = err.line().unwrap_or(0);
            let lines_in_input = full[..cut].lines().count().max(1);
            assert!(
                line >= 1 && line as usize <= lines_in_input + 1,
                "cut {cut}: {err}"
            );
        }
    }
}
