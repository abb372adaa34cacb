//! The shipped example files parse, and nutcracker agrees with rampart on twemproxy files.

use std::path::{Path, PathBuf};
use std::process::Command;

use rampart_config::{load, parse, Problem};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_file_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            let config = load(&path).unwrap_or_else(|err| panic!("{err}"));
            assert!(!config.pools.is_empty(), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example files found");
}

#[test]
fn nutcracker_example_has_a_sharded_and_a_plain_pool() {
    let config = load(&examples_dir().join("nutcracker.yml")).unwrap();
    let names: Vec<_> = config.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sessions", "cache"]);
    let sharded = &config.pools[0];
    assert_eq!(sharded.servers.len(), 3);
    assert!(sharded.hash_tag.is_some());
    assert!(sharded.servers.iter().all(|s| s.name.is_some()));
    assert_eq!(config.pools[1].servers.len(), 1);
}

#[test]
fn wrong_shapes_get_plain_words() {
    let list_for_scalar = "p:\n  listen: 127.0.0.1:1\n  timeout: [1]\n  servers:\n    - h:1:1\n";
    let err = parse(list_for_scalar, "n.yml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "n.yml:3:12: expected a single value here, not a list or a mapping"
    );
    let two_docs = "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n---\nq: 1\n";
    let err = parse(two_docs, "n.yml").unwrap_err();
    assert!(matches!(err.problem(), Some(Problem::Yaml(_))));
    assert_eq!(err.line(), Some(6), "{err}");
}

/// Runs `nutcracker -t` on `text`; None when nutcracker is not installed.
fn nutcracker_accepts(text: &str) -> Option<bool> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nutcracker.yml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("nutcracker")
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .ok()?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(all.contains("syntax is ok"))
}

#[test]
fn nutcracker_and_rampart_agree_on_twemproxy_files() {
    let base = "p:\n  listen: 127.0.0.1:22121\n  redis: true\n";
    let cases = [
        "  hash: md5\n  distribution: modula\n  timeout: 400\n  backlog: 64\n  preconnect: true\n  redis_auth: pw\n  redis_db: 2\n  server_connections: 2\n  auto_eject_hosts: true\n  server_retry_timeout: 500\n  server_failure_limit: 3\n  tcpkeepalive: true\n  client_connections: 10\n  hash_tag: \"{}\"\n  servers:\n    - 127.0.0.1:6379:1 a\n    - ::1:6380:2 b\n",
        "  servers:\n    - 127.0.0.1:6379:1\n    - 127.0.0.1:6379:1\n",
        "  hash: sha1\n  servers:\n    - 127.0.0.1:6379:1\n",
        "  hash_tag: \"{{}}\"\n  servers:\n    - 127.0.0.1:6379:1\n",
        "  servers:\n    - 127.0.0.1:6379:0\n",
        "  server_connections: 0\n  servers:\n    - 127.0.0.1:6379:1\n",
        "  preconnect: yes\n  servers:\n    - 127.0.0.1:6379:1\n",
        "  hsah: md5\n  servers:\n    - 127.0.0.1:6379:1\n",
        "  redis_db: -1\n  servers:\n    - 127.0.0.1:6379:1\n",
        "  servers:\n    - 127.0.0.1:6379\n",
    ];
    for extra in cases {
        let text = format!("{base}{extra}");
        let Some(theirs) = nutcracker_accepts(&text) else {
            eprintln!("nutcracker is not installed; skipping the cross-check");
            return;
        };
        let ours = parse(&text, "x.yml");
        assert_eq!(ours.is_ok(), theirs, "{text}\nrampart: {ours:?}");
    }
}

#[test]
fn ha_examples_have_the_forms_they_advertise() {
    use rampart_config::ReadPolicy;

    let replicas = load(&examples_dir().join("ha-replicas.yml")).unwrap();
    let pool = &replicas.pools[0];
    assert_eq!(pool.shards.len(), 1);
    assert!(pool.shards[0].primary.is_some());
    assert_eq!(pool.shards[0].replicas.len(), 2);
    assert_eq!(pool.read_policy, ReadPolicy::PreferReplica);

    let sharded = load(&examples_dir().join("ha-sharded.yml")).unwrap();
    let pool = &sharded.pools[0];
    assert_eq!(pool.shards.len(), 3);
    for shard in &pool.shards {
        assert!(shard.primary.as_ref().is_some_and(|n| n.zone.is_some()));
        assert!(!shard.replicas.is_empty());
        assert!(shard.replicas.iter().all(|n| n.zone.is_some()));
    }
    assert!(pool.zone.is_some());

    let sentinel = load(&examples_dir().join("ha-sentinel.yml")).unwrap();
    let pool = &sentinel.pools[0];
    assert!(pool.is_sentinel());
    assert_eq!(pool.shards.len(), 2);
    assert!(pool.shards.iter().all(|s| s.primary.is_none()));
}
