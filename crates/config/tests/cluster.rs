//! The `cluster:` pool kind: seeds and `cluster_refresh` read, and every key a cluster pool
//! does not take refused with where and why.

use std::time::Duration;

use rampart_config::parse;

#[test]
fn seeds_and_refresh_are_read_and_the_pool_has_no_shards_of_its_own() {
    let yaml = "c:\n  listen: 127.0.0.1:1\n  cluster:\n    - 127.0.0.1:7000\n    - redis-a.example:7001\n  cluster_refresh: 5s\n  read_policy: prefer-replica\n";
    let config = parse(yaml, "nutcracker.yml").expect("valid");
    let pool = &config.pools[0];
    assert!(pool.is_cluster() && !pool.is_sentinel());
    let seeds: Vec<String> = pool.cluster.iter().map(ToString::to_string).collect();
    assert_eq!(seeds, ["127.0.0.1:7000", "redis-a.example:7001"]);
    assert_eq!(pool.cluster_refresh, Duration::from_secs(5));
    assert!(pool.shards.is_empty() && pool.servers.is_empty());
}

#[test]
fn refresh_defaults_to_ten_seconds() {
    let yaml = "c:\n  listen: 127.0.0.1:1\n  cluster: [127.0.0.1:7000]\n";
    let pool = &parse(yaml, "nutcracker.yml").expect("valid").pools[0];
    assert_eq!(pool.cluster_refresh, Duration::from_secs(10));
}

#[test]
fn keys_a_cluster_pool_does_not_take_are_refused_with_the_reason() {
    let cases = [
        (
            "c:\n  listen: 127.0.0.1:1\n  cluster: [h:1]\n  servers:\n    - h:2:1\n",
            "nutcracker.yml:4:3: pool \"c\": servers: a cluster pool learns its nodes from the cluster: seeds under cluster: only; remove it",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  cluster: [h:1]\n  sentinels: [s:26379]\n",
            "nutcracker.yml:4:3: pool \"c\": sentinels: a cluster pool learns its nodes from the cluster: seeds under cluster: only; remove it",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  hash_tag: \"{}\"\n  cluster: [h:1]\n",
            "nutcracker.yml:3:3: pool \"c\": hash_tag: a cluster pool places keys by Redis Cluster's slots (CRC16 of the key or of its {hash tag}); remove it",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  distribution: ketama\n  cluster: [h:1]\n",
            "nutcracker.yml:3:3: pool \"c\": distribution: a cluster pool places keys by Redis Cluster's slots (CRC16 of the key or of its {hash tag}); remove it",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  redis_db: 2\n  cluster: [h:1]\n",
            "nutcracker.yml:3:13: pool \"c\": redis_db: Redis Cluster has database 0 only; remove it or write 0",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  cluster: []\n",
            "nutcracker.yml:3:12: pool \"c\": cluster: the list is empty; a cluster pool needs at least one seed node (host:port)",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  cluster: [h:1, h:0]\n",
            "nutcracker.yml:3:18: pool \"c\": cluster: \"h:0\": \"0\" is not a port in 1..=65535",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  cluster: [h:1, H:1]\n",
            "nutcracker.yml:3:18: pool \"c\": cluster: duplicate seed \"H:1\" (first given on line 3)",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  cluster: [h:1]\n  cluster_refresh: 10ms\n",
            "nutcracker.yml:4:20: pool \"c\": cluster_refresh: 10 is out of range (accepted: 100..=",
        ),
        (
            "c:\n  listen: 127.0.0.1:1\n  primary: h:1\n  cluster_refresh: 1s\n",
            "nutcracker.yml:4:3: pool \"c\": cluster_refresh: only applies to a cluster pool (add cluster:)",
        ),
    ];
    for (yaml, want) in cases {
        let got = parse(yaml, "nutcracker.yml").expect_err(yaml).to_string();
        assert!(got.starts_with(want), "{yaml}\n got: {got}\nwant: {want}");
    }
}
