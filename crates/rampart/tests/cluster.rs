//! Redis Cluster pools against a real cluster (three primaries, a replica each, created by
//! `redis-cli --cluster create`): keys placed by slot on the node that owns it, multi-key
//! commands split per slot, Redis Cluster's CROSSSLOT error, redirections (MOVED, ASK,
//! TRYAGAIN) followed so that the client never sees them, a minority's map refused,
//! transactions, blocking commands, SCAN over every primary, reads from replicas, a reload
//! that points the pool at another cluster.
//!
//! Run with `RUST_TEST_THREADS=2`: each test starts its own cluster of six servers.

mod common;

use std::time::Duration;

use testkit::{free_port, poll_until, Client, ClusterSetup, Proxy, RedisCluster, Reply};

/// A cluster and a rampart pool in front of it.
struct Env {
    cluster: RedisCluster,
    #[allow(dead_code)]
    proxy: Proxy,
    port: u16,
}

impl Env {
    fn start(options: &str) -> Env {
        let cluster = ClusterSetup::new().start();
        let seeds = cluster.addrs()[..2].to_vec();
        Env::start_on(cluster, &seeds, options)
    }

    /// A pool with `seeds` in front of `cluster`.
    fn start_on(cluster: RedisCluster, seeds: &[String], options: &str) -> Env {
        let port = free_port();
        let seeds = seeds.join(", ");
        let options = options.replace("{port}", &port.to_string());
        // 2 s unless the options say otherwise.
        let timeout = if options.lines().any(|l| l.starts_with("  timeout:")) {
            ""
        } else {
            "  timeout: 2000\n"
        };
        let yaml =
            format!("c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n{timeout}{options}");
        let proxy = common::start_rampart(&yaml, port, 2);
        Env {
            cluster,
            proxy,
            port,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.port))
    }

    /// A direct connection to node `i`.
    fn node(&self, i: usize) -> Client {
        Client::connect(&self.cluster.nodes[i].addr())
    }
}

#[test]
fn single_keys_go_to_the_primary_that_owns_their_slot() {
    let env = Env::start("");
    let mut c = env.client();
    let primaries = env.cluster.primaries();
    for &p in &primaries {
        for n in 0..5 {
            let key = env.cluster.key_on(p, &format!("k{n}-"));
            assert_eq!(c.cmd(&["SET", &key, &format!("v{p}")]), Reply::ok());
            assert_eq!(c.cmd(&["GET", &key]), Reply::bulk(format!("v{p}")));
            // On the owner itself (no redirection: a direct GET there answers the value).
            let mut direct = env.node(p);
            assert_eq!(direct.cmd(&["GET", &key]), Reply::bulk(format!("v{p}")));
            assert_eq!(env.cluster.owner_of(&key), p);
        }
    }
    // Hash tags place keys as Redis Cluster does.
    assert_eq!(c.cmd(&["SET", "{user1}:a", "1"]), Reply::ok());
    let owner = env.cluster.owner_of("user1");
    assert_eq!(env.node(owner).cmd(&["GET", "{user1}:a"]), Reply::bulk("1"));
    // The pool says what it is, with one shard per primary.
    let info = c.cmd(&["INFO", "pools"]);
    let want = format!("kind=cluster,shards={},", primaries.len());
    assert!(
        info.as_str().is_some_and(|t| t.contains(&want)),
        "{want} in {info:?}"
    );
}

/// Keys sharing the hash tag `tag`, so they are in one slot.
fn tagged(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{{tag}}}:{i}")).collect()
}

/// A tag whose slot node `owner` serves.
fn tag_on(env: &Env, owner: usize, prefix: &str) -> String {
    let key = env.cluster.key_on(owner, prefix);
    // key_on returns a plain key: as a tag it hashes the same.
    key
}

#[test]
fn multi_key_commands_are_split_per_slot_and_merged() {
    let env = Env::start("");
    let mut c = env.client();
    let p = env.cluster.primaries();
    // Keys on every primary, several per slot and several slots per primary.
    let mut keys = Vec::new();
    for (i, &owner) in p.iter().enumerate() {
        for t in 0..2 {
            let tag = tag_on(&env, owner, &format!("t{i}{t}-"));
            keys.extend(tagged(&tag, 2));
        }
    }
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("v-{k}"));
    }
    assert_eq!(c.cmd(&mset), Reply::ok());
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    mget.push("missing-key".into());
    let mut want: Vec<Reply> = keys.iter().map(|k| Reply::bulk(format!("v-{k}"))).collect();
    want.push(Reply::nil());
    assert_eq!(c.cmd(&mget), Reply::Array(Some(want)));
    let mut exists = vec!["EXISTS".to_string()];
    exists.extend(keys.iter().cloned());
    assert_eq!(c.cmd(&exists), Reply::Int(keys.len() as i64));
    let mut touch = vec!["TOUCH".to_string()];
    touch.extend(keys.iter().cloned());
    assert_eq!(c.cmd(&touch), Reply::Int(keys.len() as i64));
    let mut del = vec!["DEL".to_string()];
    del.extend(keys[..4].iter().cloned());
    assert_eq!(c.cmd(&del), Reply::Int(4));
    let mut unlink = vec!["UNLINK".to_string()];
    unlink.extend(keys[4..].iter().cloned());
    unlink.push("missing-key".into());
    assert_eq!(c.cmd(&unlink), Reply::Int((keys.len() - 4) as i64));
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(0));
}

#[test]
fn commands_needing_one_slot_get_crossslot_when_keys_span_slots() {
    let env = Env::start("");
    let mut c = env.client();
    let crossslot = Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into());
    // Two keys of one primary in different slots: slots, not shards, decide.
    let p0 = env.cluster.primaries()[0];
    let a = env.cluster.key_on(p0, "a");
    let b = (0..)
        .map(|i| env.cluster.key_on(p0, &format!("b{i}-")))
        .find(|k| testkit::cluster_slot(k.as_bytes()) != testkit::cluster_slot(a.as_bytes()))
        .expect("another slot");
    c.cmd(&["SET", &a, "1"]);
    for cmd in [
        vec!["RENAME", &a, &b],
        vec!["SMOVE", &a, &b, "m"],
        vec!["SUNIONSTORE", &a, &b],
        vec!["MSETNX", &a, "1", &b, "2"],
        vec!["EVAL", "return 1", "2", &a, &b],
        vec!["BLPOP", &a, &b, "1"],
        vec!["LMPOP", "2", &a, &b, "LEFT"],
    ] {
        assert_eq!(c.cmd(&cmd), crossslot, "{cmd:?}");
    }
    // Inside a transaction: the command is refused and EXEC aborts; commands of different
    // slots make EXEC answer CROSSSLOT, as Redis Cluster does.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &a, "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["SET", &b, "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), crossslot);
    // Same slot via a hash tag: fine.
    assert_eq!(c.cmd(&["SET", "{x}a", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["RENAME", "{x}a", "{x}b"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "{x}b"]), Reply::bulk("1"));
    // The default face is a standalone server without cluster support.
    assert_eq!(
        c.cmd(&["CLUSTER", "INFO"]),
        Reply::Error("ERR This instance has cluster support disabled".into())
    );
    let info = c.cmd(&["INFO", "cluster"]);
    assert!(
        info.as_str()
            .is_some_and(|s| s.contains("cluster_enabled:0")),
        "{info:?}"
    );
}

#[test]
fn spublish_in_a_transaction_counts_its_channel_slot_as_redis_cluster_does() {
    let env = Env::start("");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let channel = env.cluster.key_on(a, "news-");
    let key = env.cluster.key_on(b, "tx-");
    // A shard channel is placed by its slot, as a key: a transaction publishing on one
    // slot and writing another spans slots (Redis Cluster refuses it CROSSSLOT), and
    // nothing of it runs.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SPUBLISH", &channel, "m"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["SET", &key, "1"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::nil(), "nothing ran");
    // One slot (a hash tag): the transaction runs on that slot's node, where the
    // channel's subscriber hears the message.
    let tag = env.cluster.key_on(a, "tag-");
    let (channel, key) = (format!("{{{tag}}}:ch"), format!("{{{tag}}}:k"));
    let mut sub = env.node(a);
    assert!(matches!(
        sub.cmd(&["SSUBSCRIBE", &channel]),
        Reply::Array(_)
    ));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &key, "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["SPUBLISH", &channel, "m"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::ok(), Reply::Int(1)]))
    );
    assert_eq!(env.node(a).cmd(&["GET", &key]), Reply::bulk("1"));
}

/// Starts moving `slot` from primary `from` to primary `to` (IMPORTING on `to`, MIGRATING
/// on `from`).
fn begin_migration(env: &Env, slot: u16, from: usize, to: usize) {
    let s = slot.to_string();
    let (from_id, to_id) = (env.cluster.id(from), env.cluster.id(to));
    let r = env
        .node(to)
        .cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
    assert_eq!(r, Reply::ok());
    let r = env
        .node(from)
        .cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
    assert_eq!(r, Reply::ok());
}

/// Moves `keys` from `from` to `to` with MIGRATE.
fn migrate(env: &Env, from: usize, to: usize, keys: &[String]) {
    let port = env.cluster.nodes[to].port().to_string();
    let mut cmd = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    cmd.extend(keys.iter().map(String::as_str));
    assert_eq!(env.node(from).cmd(&cmd), Reply::ok(), "MIGRATE {keys:?}");
}

/// Ends a migration: `slot` belongs to `to`, said to `to` first (it bumps its config
/// epoch), then to every other primary; waits until every node agrees.
fn end_migration(env: &Env, slot: u16, to: usize) {
    let s = slot.to_string();
    let to_id = env.cluster.id(to);
    let mut order = vec![to];
    order.extend(env.cluster.primaries().into_iter().filter(|&p| p != to));
    for p in order {
        let r = env.node(p).cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        assert_eq!(r, Reply::ok(), "SETSLOT NODE on node {p}");
    }
    env.cluster.wait_ok(Duration::from_secs(10));
}

/// How many `kind` errors (`MOVED`, `ASK`, `TRYAGAIN`) node `i` has answered
/// (`INFO errorstats`).
fn error_count(env: &Env, i: usize, kind: &str) -> i64 {
    let info = env.cluster.nodes[i].info("errorstats");
    let prefix = format!("errorstat_{kind}:count=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.split(',').next())
        .map_or(0, |n| n.trim().parse().unwrap_or(0))
}

/// How many `MOVED` replies node `i` has given.
fn moved_count(env: &Env, i: usize) -> i64 {
    error_count(env, i, "MOVED")
}

#[test]
fn moved_is_followed_and_the_map_refreshed_the_client_sees_no_error() {
    let env = Env::start("  cluster_refresh: 60s\n");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let key = env.cluster.key_on(a, "moving");
    let slot = testkit::cluster_slot(key.as_bytes());
    assert_eq!(c.cmd(&["SET", &key, "v1"]), Reply::ok());
    begin_migration(&env, slot, a, b);
    migrate(&env, a, b, std::slice::from_ref(&key));
    end_migration(&env, slot, b);
    // rampart's map still names `a`, which now answers MOVED: followed.
    let adopted = maps_adopted(&mut c);
    let before = moved_count(&env, a);
    assert_eq!(c.cmd(&["GET", &key]), Reply::bulk("v1"));
    assert_eq!(c.cmd(&["SET", &key, "v2"]), Reply::ok());
    assert_eq!(env.node(b).cmd(&["GET", &key]), Reply::bulk("v2"));
    assert!(moved_count(&env, a) > before, "the request did meet MOVED");
    // The MOVED asked for a refresh (the periodic one is a minute away): soon no request
    // goes to `a` any more.
    let settled = poll_until(Duration::from_secs(5), || {
        let at = moved_count(&env, a);
        for _ in 0..20 {
            assert_eq!(c.cmd(&["GET", &key]), Reply::bulk("v2"));
        }
        (moved_count(&env, a) == at).then_some(())
    });
    assert!(settled.is_some(), "requests still redirected after 5 s");
    assert!(
        maps_adopted(&mut c) > adopted,
        "no map adopted after the MOVED"
    );
    let info = c.cmd(&["INFO", "cluster"]);
    assert!(
        info.as_str()
            .is_some_and(|i| i.contains("shards=3,") && i.contains("slots_uncovered=0")),
        "{info:?}"
    );
}

/// The `maps_adopted` count of rampart's INFO cluster section.
fn maps_adopted(c: &mut Client) -> u64 {
    let info = c.cmd(&["INFO", "cluster"]);
    info.as_str()
        .and_then(|i| i.split("maps_adopted=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Four keys of one slot of the first primary `a` set to `v-<key>` through `c`, then the
/// slot's migration to the second primary `b` begun and its first two keys moved:
/// (keys, slot, a, b).
fn half_migrated(env: &Env, c: &mut Client, prefix: &str) -> (Vec<String>, u16, usize, usize) {
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let tag = env.cluster.key_on(a, prefix);
    let keys = tagged(&tag, 4);
    let slot = testkit::cluster_slot(keys[0].as_bytes());
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, &format!("v-{k}")]), Reply::ok());
    }
    begin_migration(env, slot, a, b);
    migrate(env, a, b, &keys[..2]);
    (keys, slot, a, b)
}

#[test]
fn ask_and_tryagain_during_a_migration_are_followed() {
    let env = Env::start("");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (keys, slot, a, b) = half_migrated(&env, &mut c, "mig");
    let tag = keys[0][1..keys[0].find('}').expect("tagged")].to_string();
    // A moved key: `a` answers ASK, rampart asks `b` with ASKING.
    assert_eq!(
        c.cmd(&["GET", &keys[0]]),
        Reply::bulk(format!("v-{}", keys[0]))
    );
    // A key not moved yet: `a` serves it.
    assert_eq!(
        c.cmd(&["GET", &keys[3]]),
        Reply::bulk(format!("v-{}", keys[3]))
    );
    // A new key of the slot goes to the importing node.
    let fresh = format!("{{{tag}}}:new");
    assert_eq!(c.cmd(&["SET", &fresh, "n"]), Reply::ok());
    let mut direct = env.node(b);
    let got = direct.pipeline(&[
        vec!["ASKING".to_string()],
        vec!["GET".to_string(), fresh.clone()],
    ]);
    assert_eq!(
        got[1],
        Reply::bulk("n"),
        "the new key is on the importing node"
    );
    // Split across the two nodes: `a` answers TRYAGAIN until the migration ends; rampart
    // waits and sends it again, and the client gets the values.
    let ender = {
        let rest: Vec<String> = keys[2..].to_vec();
        let addrs = env.cluster.addrs();
        let to_id = env.cluster.id(b);
        // SETSLOT NODE to the importing node first, then to the others.
        let mut order = vec![addrs[b].clone(), addrs[a].clone()];
        order.extend(
            p.iter()
                .filter(|&&x| x != a && x != b)
                .map(|&x| addrs[x].clone()),
        );
        let (addr_a, port_b) = (addrs[a].clone(), env.cluster.nodes[b].port().to_string());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut cmd = vec!["MIGRATE", "127.0.0.1", &port_b, "", "0", "5000", "KEYS"];
            cmd.extend(rest.iter().map(String::as_str));
            assert_eq!(Client::connect(&addr_a).cmd(&cmd), Reply::ok());
            let s = slot.to_string();
            for addr in &order {
                let r = Client::connect(addr).cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
                assert_eq!(r, Reply::ok());
            }
        })
    };
    let tryagain_before = error_count(&env, a, "TRYAGAIN");
    let got = c.cmd(&["MGET", &keys[0], &keys[3]]);
    ender.join().expect("migration ended");
    assert_eq!(
        got,
        Reply::bulks([format!("v-{}", keys[0]), format!("v-{}", keys[3])])
    );
    assert!(
        error_count(&env, a, "TRYAGAIN") > tryagain_before,
        "the MGET did meet TRYAGAIN"
    );
    env.cluster.wait_ok(Duration::from_secs(10));
    assert_eq!(
        c.cmd(&["GET", &keys[3]]),
        Reply::bulk(format!("v-{}", keys[3]))
    );
}

#[test]
fn a_multi_key_request_in_a_stalled_migration_follows_ask_key_by_key() {
    let env = Env::start("");
    let mut c = env.client();
    // Half the slot's keys moved, and the migration left so: nothing ends it here, as when
    // an operator's reshard stopped halfway. The source answers a request for keys on both
    // sides TRYAGAIN for as long as that lasts.
    let (keys, _, a, b) = half_migrated(&env, &mut c, "stall");
    let tryagain_before = error_count(&env, a, "TRYAGAIN");
    let with = |cmd: &str| {
        let mut v = vec![cmd.to_string()];
        v.extend(keys.iter().cloned());
        v
    };
    assert_eq!(
        c.cmd(&with("MGET")),
        Reply::bulks(keys.iter().map(|k| format!("v-{k}")))
    );
    assert!(
        error_count(&env, a, "TRYAGAIN") > tryagain_before,
        "the MGET met TRYAGAIN"
    );
    assert_eq!(c.cmd(&with("EXISTS")), Reply::Int(4));
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.extend([k.clone(), format!("new-{k}")]);
    }
    assert_eq!(c.cmd(&mset), Reply::ok());
    assert_eq!(
        c.cmd(&with("MGET")),
        Reply::bulks(keys.iter().map(|k| format!("new-{k}")))
    );
    // Each key was written where it lives: the moved ones on the importing node.
    let mut importing = env.node(b);
    let got = importing.pipeline(&[
        vec!["ASKING".to_string()],
        vec!["GET".to_string(), keys[0].clone()],
    ]);
    assert_eq!(got[1], Reply::bulk(format!("new-{}", keys[0])));
    assert_eq!(
        env.node(a).cmd(&["GET", &keys[3]]),
        Reply::bulk(format!("new-{}", keys[3]))
    );
    assert_eq!(c.cmd(&with("DEL")), Reply::Int(4));
    assert_eq!(c.cmd(&with("EXISTS")), Reply::Int(0));
}

#[test]
fn keyless_commands_cover_every_primary_and_scan_walks_them_all() {
    let env = Env::start("  admin_broadcast: true\n");
    let mut c = env.client();
    let mut written = std::collections::BTreeSet::new();
    for i in 0..300 {
        let k = format!("scan:{i}");
        assert_eq!(c.cmd(&["SET", &k, "x"]), Reply::ok());
        written.insert(k);
    }
    // Every primary holds some of them.
    for p in env.cluster.primaries() {
        let n = env.node(p).cmd(&["DBSIZE"]).as_int().unwrap_or(0);
        assert!(n > 0, "primary {p} holds no key");
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(300));
    let keys = c.cmd(&["KEYS", "scan:*"]);
    assert_eq!(keys.as_array().map(<[Reply]>::len), Some(300));
    // One cursor over every primary, each key once.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let r = c.cmd(&["SCAN", &cursor, "COUNT", "50"]);
        let items = r.as_array().expect("SCAN reply");
        cursor = items[0].as_str().expect("cursor").to_string();
        for k in items[1].as_array().expect("keys") {
            seen.insert(k.as_str().expect("key").to_string());
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "SCAN did not end");
    assert_eq!(seen, written);
    assert!(c
        .cmd(&["RANDOMKEY"])
        .as_str()
        .is_some_and(|k| k.starts_with("scan:")));
    let sha = c.cmd(&["SCRIPT", "LOAD", "return 1"]);
    let sha = sha.as_str().expect("sha").to_string();
    for p in env.cluster.primaries() {
        let r = env.node(p).cmd(&["SCRIPT", "EXISTS", &sha]);
        assert_eq!(r, Reply::Array(Some(vec![Reply::Int(1)])), "node {p}");
    }
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha]),
        Reply::Array(Some(vec![Reply::Int(1)]))
    );
    assert_eq!(c.cmd(&["FLUSHALL"]), Reply::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(0));
}

#[test]
fn a_transaction_runs_on_the_node_of_its_slot_even_after_the_slot_moved() {
    let env = Env::start("  cluster_refresh: 60s\n");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let tag = env.cluster.key_on(a, "tx");
    let (k1, k2) = (format!("{{{tag}}}:1"), format!("{{{tag}}}:2"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &k1, "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", &k2]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::ok(), Reply::Int(1)]))
    );
    assert_eq!(env.node(a).cmd(&["GET", &k1]), Reply::bulk("1"));
    // The slot moves; rampart's map still names `a` (its periodic refresh is a minute
    // away): the queued commands meet MOVED there, EXEC aborts with nothing run, and the
    // transaction is sent again, whole, to `b`.
    let slot = testkit::cluster_slot(k1.as_bytes());
    begin_migration(&env, slot, a, b);
    migrate(&env, a, b, &[k1.clone(), k2.clone()]);
    end_migration(&env, slot, b);
    let moved = moved_count(&env, a);
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &k2]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", &k2]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(2), Reply::Int(3)]))
    );
    assert_eq!(
        env.node(b).cmd(&["GET", &k2]),
        Reply::bulk("3"),
        "each INCR ran once"
    );
    assert!(
        moved_count(&env, a) > moved,
        "the transaction did meet MOVED"
    );
}

#[test]
fn blocking_commands_wait_on_the_primary_of_their_slot() {
    let env = Env::start("");
    let mut c = env.client();
    let owner = env.cluster.primaries()[2];
    let q = env.cluster.key_on(owner, "queue");
    let pusher = {
        let addr = format!("127.0.0.1:{}", env.port);
        let q = q.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            Client::connect(&addr).cmd(&["RPUSH", &q, "job"])
        })
    };
    assert_eq!(
        c.cmd(&["BLPOP", &q, "5"]),
        Reply::bulks([q.as_str(), "job"])
    );
    assert_eq!(pusher.join().expect("pusher"), Reply::Int(1));
    assert_eq!(c.cmd(&["BLPOP", &q, "0.1"]), Reply::Array(None));
}

#[test]
fn reads_go_to_replicas_with_prefer_replica() {
    let env = Env::start("  read_policy: prefer-replica\n");
    let mut c = env.client();
    let owner = env.cluster.primaries()[0];
    let key = env.cluster.key_on(owner, "r");
    assert_eq!(c.cmd(&["SET", &key, "v"]), Reply::ok());
    let replica = (0..env.cluster.nodes.len())
        .find(|&i| {
            env.cluster.nodes[i]
                .info("replication")
                .contains(&format!("master_port:{}", env.cluster.nodes[owner].port()))
        })
        .expect("the owner's replica");
    let gets = |i: usize| -> i64 {
        let info = env.cluster.nodes[i].info("commandstats");
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|n| n.split(',').next())
            .map_or(0, |n| n.parse().unwrap_or(0))
    };
    // Replicas start down until their checks pass: wait until reads reach the replica.
    let reached = poll_until(Duration::from_secs(5), || {
        // The replica may answer before it has the write (asynchronous replication).
        let before = gets(replica);
        let read = c.cmd(&["GET", &key]);
        (gets(replica) > before && read == Reply::bulk("v")).then_some(())
    });
    assert!(
        reached.is_some(),
        "no read of the written value reached the replica"
    );
    let (p0, r0) = (gets(owner), gets(replica));
    for _ in 0..50 {
        assert_eq!(c.cmd(&["GET", &key]), Reply::bulk("v"));
    }
    assert_eq!(gets(owner), p0, "reads went to the primary");
    assert_eq!(gets(replica), r0 + 50);
}

#[test]
fn a_lone_node_with_another_view_does_not_change_the_map() {
    let cluster = ClusterSetup::new().start();
    let primaries = cluster.primaries();
    let keys: Vec<String> = primaries
        .iter()
        .map(|&p| cluster.key_on(p, "lone"))
        .collect();
    // A replica forgets the cluster: it answers CLUSTER NODES with itself alone, a primary
    // serving no slot. It is the first seed, and asked at every refresh.
    let lone = (0..cluster.nodes.len())
        .find(|i| !primaries.contains(i))
        .expect("a replica");
    assert_eq!(
        cluster.nodes[lone].cmd(&["CLUSTER", "RESET", "HARD"]),
        Reply::ok()
    );
    let seeds = [
        cluster.nodes[lone].addr(),
        cluster.nodes[primaries[0]].addr(),
    ];
    let env = Env::start_on(cluster, &seeds, "  cluster_refresh: 100ms\n");
    let mut c = env.client();
    // Fifteen refreshes or so: every key is served by its owner all along.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    let mut rounds = 0;
    while std::time::Instant::now() < until {
        for k in &keys {
            assert_eq!(c.cmd(&["SET", k, "v"]), Reply::ok(), "round {rounds}");
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk("v"), "round {rounds}");
        }
        rounds += 1;
    }
    for (k, &p) in keys.iter().zip(&primaries) {
        assert_eq!(env.node(p).cmd(&["GET", k]), Reply::bulk("v"));
    }
}

#[test]
fn shard_channels_live_on_their_slot_and_classic_channels_anywhere() {
    let env = Env::start("");
    let p = env.cluster.primaries();
    // Shard channels of every primary, subscribed on one connection.
    let mut chans: Vec<String> = p.iter().map(|&i| env.cluster.key_on(i, "sch")).collect();
    let mut owners = p.clone();
    // A second one on the first primary, in another slot: its node takes SSUBSCRIBE of one
    // slot at a time.
    let slot0 = testkit::cluster_slot(chans[0].as_bytes());
    let second = (0..)
        .map(|i| env.cluster.key_on(p[0], &format!("sch{i}-")))
        .find(|c| testkit::cluster_slot(c.as_bytes()) != slot0)
        .expect("another slot");
    chans.push(second);
    owners.push(p[0]);
    let mut sub = env.client();
    for ch in &chans {
        let r = sub.cmd(&["SSUBSCRIBE", ch]);
        assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    }
    let r = sub.cmd(&["SUBSCRIBE", "news"]);
    assert_eq!(r.as_array().map(<[Reply]>::len), Some(3), "{r:?}");
    // Each shard channel is subscribed on its slot's owner (once the node passed its first
    // health checks: the hub subscribes when its link has a node).
    for (ch, &owner) in chans.iter().zip(&owners) {
        let on_owner = poll_until(Duration::from_secs(5), || {
            let n = env.node(owner).cmd(&["PUBSUB", "SHARDNUMSUB", ch]);
            (n == Reply::Array(Some(vec![Reply::bulk(ch), Reply::Int(1)]))).then_some(())
        });
        assert!(on_owner.is_some(), "{ch} not subscribed on node {owner}");
    }
    let mut publisher = env.client();
    for ch in &chans {
        assert_eq!(publisher.cmd(&["SPUBLISH", ch, "hello"]), Reply::Int(1));
        let msg = sub.read_reply().expect("smessage");
        assert_eq!(msg, Reply::bulks(["smessage", ch.as_str(), "hello"]));
    }
    // A classic message published on any node reaches the subscriber (the cluster
    // broadcasts it).
    for &i in &p {
        env.node(i).cmd(&["PUBLISH", "news", &format!("from {i}")]);
        let msg = sub.read_reply().expect("message");
        assert_eq!(msg, Reply::bulks(["message", "news", &format!("from {i}")]));
    }
    // Shard channels of one SSUBSCRIBE share a slot, as in Redis Cluster.
    let mut other = env.client();
    assert_eq!(
        other.cmd(&["SSUBSCRIBE", &chans[0], &chans[1]]),
        Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
}

/// A client thread that `SET`s `{tag}:n` for n = 0, 1, ... (one slot), recording every
/// acknowledged write, every error and every latency.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, Vec<String>, Vec<Duration>)>,
}

impl Writer {
    fn start(addr: String, tag: String) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut c = Client::connect(&addr);
            c.set_read_timeout(Some(Duration::from_secs(20)));
            let (mut acked, mut errors, mut lat) = (Vec::new(), Vec::new(), Vec::new());
            let mut n = 0u64;
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("{{{tag}}}:{n}");
                n += 1;
                let t0 = std::time::Instant::now();
                match c.try_cmd(&["SET", &key, &key]) {
                    Ok(r) if r == Reply::ok() => acked.push(key),
                    Ok(r) => errors.push(format!("{key}: {r:?}")),
                    Err(e) => {
                        errors.push(format!("{key}: {e}"));
                        c = Client::connect(&addr);
                    }
                }
                lat.push(t0.elapsed());
            }
            (acked, errors, lat)
        });
        Writer { stop, thread }
    }

    fn stop(self) -> (Vec<String>, Vec<String>, Vec<Duration>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (a, e, mut l) = self.thread.join().expect("writer");
        l.sort();
        (a, e, l)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn a_primary_killed_under_load_holds_its_writes_until_the_cluster_promotes_its_replica() {
    let cluster = ClusterSetup::new().full_coverage(false).start();
    let p = cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let (tag_a, tag_b) = (cluster.key_on(a, "fa"), cluster.key_on(b, "fb"));
    let replica = (0..cluster.nodes.len())
        .find(|&i| {
            cluster.nodes[i]
                .info("replication")
                .contains(&format!("master_port:{}", cluster.nodes[a].port()))
        })
        .expect("a's replica");
    let seeds = [cluster.nodes[b].addr(), cluster.nodes[p[2]].addr()];
    let mut env = Env::start_on(
        cluster,
        &seeds,
        "  read_policy: prefer-replica\n  failover_hold: 10s\n  cluster_refresh: 60s\n",
    );
    let addr = format!("127.0.0.1:{}", env.port);
    let mut c = env.client();
    assert_eq!(
        c.cmd(&["SET", &format!("{{{tag_a}}}:warm"), "1"]),
        Reply::ok()
    );
    let on_a = Writer::start(addr.clone(), tag_a.clone());
    let on_b = Writer::start(addr.clone(), tag_b.clone());
    // A reader of the dying primary's slot: with `prefer-replica` its reads go on at the
    // replica while the writes wait. Each read: when it ended, how long it took, its reply.
    let stop_reads = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (addr, key, stop) = (
            addr.clone(),
            format!("{{{tag_a}}}:warm"),
            stop_reads.clone(),
        );
        std::thread::spawn(move || {
            let mut r = Client::connect(&addr);
            r.set_read_timeout(Some(Duration::from_secs(20)));
            let mut reads = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                let reply = r.cmd(&["GET", &key]);
                reads.push((std::time::Instant::now(), t.elapsed(), reply));
                std::thread::sleep(Duration::from_millis(5));
            }
            reads
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    env.cluster.nodes[a].kill9();
    let killed = std::time::Instant::now();
    let promoted = poll_until(Duration::from_secs(20), || {
        (env.cluster.nodes[replica].role() == "master").then(|| killed.elapsed())
    })
    .expect("the cluster promoted a's replica");
    std::thread::sleep(Duration::from_millis(1000));
    stop_reads.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader");
    let held = killed + promoted;
    let during: Vec<_> = reads
        .iter()
        .filter(|(at, took, _)| *at > killed + Duration::from_millis(50) && *at - *took < held)
        .collect();
    println!(
        "reads of its slot while its writes were held: {}, longest {:?}",
        during.len(),
        during.iter().map(|r| r.1).max()
    );
    for (_, _, reply) in &reads {
        assert_eq!(
            *reply,
            Reply::bulk("1"),
            "a read of the dying primary's slot"
        );
    }
    assert!(
        during.len() > 10,
        "too few reads while the writes were held"
    );
    assert!(
        during.iter().all(|r| r.1 < Duration::from_millis(500)),
        "a read waited with the writes: {:?}",
        during.iter().map(|r| r.1).max()
    );
    let (acked_a, errors_a, lat_a) = on_a.stop();
    let (acked_b, errors_b, lat_b) = on_b.stop();
    println!(
        "kill -9 of a primary: replica promoted after {promoted:?}; its slot: {} writes acknowledged, {} errors {:?}, longest write {:?}; another primary's slot: {} writes, {} errors, p99 {:?}, max {:?}",
        acked_a.len(),
        errors_a.len(),
        errors_a,
        lat_a.last(),
        acked_b.len(),
        errors_b.len(),
        quantile(&lat_b, 0.99),
        lat_b.last(),
    );
    // The write in flight when the primary died may have been applied: it gets an error and
    // is never sent again. Every other write waited for the promotion.
    assert!(errors_a.len() <= 1, "{errors_a:?}");
    for e in &errors_a {
        let e = e.to_lowercase();
        assert!(
            e.contains("connection") || e.contains("switched away"),
            "{e}"
        );
    }
    assert!(errors_b.is_empty(), "{errors_b:?}");
    assert!(
        lat_a.last().copied().unwrap_or_default() < promoted + Duration::from_secs(2),
        "held writes were released late"
    );
    // No acknowledged write is lost: each is on the new primary.
    let mut direct = Client::connect(&env.cluster.nodes[replica].addr());
    for k in acked_a.iter().chain(&acked_b) {
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk(k), "{k}");
    }
    for k in &acked_a {
        let r = direct.cmd(&["GET", k]);
        assert_eq!(r, Reply::bulk(k), "{k} on the promoted replica");
    }
}

/// What one client of the resharding load saw.
#[derive(Default)]
struct Mixed {
    /// Keys written with SET, each to its own name.
    written: Vec<String>,
    /// INCR counters and how many INCRs each had acknowledged.
    counters: std::collections::HashMap<String, i64>,
    errors: Vec<String>,
    ops: u64,
}

/// A client running single-key writes, reads of what it wrote, INCRs and multi-key
/// MSET/MGET over slots until `stop`.
fn mixed_load(
    addr: String,
    t: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Mixed {
    let mut m = Mixed::default();
    let mut c = Client::connect(&addr);
    c.set_read_timeout(Some(Duration::from_secs(20)));
    let mut n = 0usize;
    let check = |m: &mut Mixed, what: String, got: Reply, want: Reply| {
        m.ops += 1;
        if got != want {
            m.errors.push(format!("{what}: {got:?}, expected {want:?}"));
        }
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("w:{t}:{n}");
        check(
            &mut m,
            format!("SET {key}"),
            c.cmd(&["SET", &key, &key]),
            Reply::ok(),
        );
        m.written.push(key);
        let old = &m.written[n / 2];
        let old = old.clone();
        check(
            &mut m,
            format!("GET {old}"),
            c.cmd(&["GET", &old]),
            Reply::bulk(&old),
        );
        let counter = format!("c:{t}:{}", n % 40);
        let count = m.counters.get(&counter).copied().unwrap_or(0) + 1;
        let got = c.cmd(&["INCR", &counter]);
        if got == Reply::Int(count) {
            m.counters.insert(counter, count);
        }
        check(
            &mut m,
            format!("INCR c:{t}:{}", n % 40),
            got,
            Reply::Int(count),
        );
        if n.is_multiple_of(5) {
            let keys: Vec<String> = (0..4).map(|i| format!("m:{t}:{n}:{i}")).collect();
            let mut mset = vec!["MSET".to_string()];
            for k in &keys {
                mset.push(k.clone());
                mset.push(k.clone());
            }
            check(&mut m, format!("MSET m:{t}:{n}"), c.cmd(&mset), Reply::ok());
            let mut mget = vec!["MGET".to_string()];
            mget.extend(keys.iter().cloned());
            let want = Reply::bulks(keys.iter());
            check(&mut m, format!("MGET m:{t}:{n}"), c.cmd(&mget), want);
        }
        n += 1;
    }
    m
}

#[test]
fn resharding_a_thousand_slots_under_a_mixed_load_gives_no_error_and_loses_no_write() {
    let env = Env::start("");
    let p = env.cluster.primaries();
    let (from, to) = (env.cluster.id(p[0]), env.cluster.id(p[1]));
    let addr = format!("127.0.0.1:{}", env.port);
    // Some data to move, so the migration takes a while: 30,000 keys over all slots.
    let mut filler = env.client();
    for chunk in 0..30 {
        let cmds: Vec<Vec<String>> = (0..1000)
            .map(|i| {
                let k = format!("fill:{}", chunk * 1000 + i);
                vec!["SET".to_string(), k.clone(), k]
            })
            .collect();
        assert!(filler.pipeline(&cmds).iter().all(|r| *r == Reply::ok()));
    }
    let slots_of = |i: usize| -> i64 {
        let port = env.cluster.nodes[i].port() as i64;
        let r = env.cluster.nodes[p[2]].cmd(&["CLUSTER", "SLOTS"]);
        r.as_array()
            .unwrap_or(&[])
            .iter()
            .filter_map(|range| {
                let it = range.as_array()?;
                let owner = it.get(2)?.as_array()?.get(1)?.as_int()?;
                (owner == port)
                    .then(|| it[1].as_int().unwrap_or(0) - it[0].as_int().unwrap_or(0) + 1)
            })
            .sum()
    };
    let before = slots_of(p[1]);
    let redirects_before = error_count(&env, p[0], "MOVED")
        + error_count(&env, p[0], "ASK")
        + error_count(&env, p[0], "TRYAGAIN");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|t| {
            let (addr, stop) = (addr.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || mixed_load(addr, t, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let started = std::time::Instant::now();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &env.cluster.nodes[p[0]].addr()])
        .args(["--cluster-from", &from, "--cluster-to", &to])
        .args(["--cluster-slots", "1000", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster reshard");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "reshard failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<Mixed> = clients
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let ops: u64 = results.iter().map(|m| m.ops).sum();
    let errors: Vec<&String> = results.iter().flat_map(|m| &m.errors).collect();
    println!(
        "reshard of 1000 slots took {took:?}; {ops} commands checked by 3 clients, {} errors {:?}",
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );
    assert!(errors.is_empty(), "{errors:?}");
    // Every acknowledged write is readable, every INCR counted once.
    let mut c = env.client();
    let mut lost = 0;
    for m in &results {
        for k in &m.written {
            if c.cmd(&["GET", k]) != Reply::bulk(k) {
                lost += 1;
            }
        }
        for (k, n) in &m.counters {
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk(n.to_string()), "{k}");
        }
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    for i in (0..30_000).step_by(97) {
        let k = format!("fill:{i}");
        assert_eq!(c.cmd(&["GET", &k]), Reply::bulk(&k));
    }
    // The slots did move, and the load did meet the migration.
    env.cluster.wait_ok(Duration::from_secs(10));
    assert_eq!(slots_of(p[1]), before + 1000);
    let redirects = error_count(&env, p[0], "MOVED")
        + error_count(&env, p[0], "ASK")
        + error_count(&env, p[0], "TRYAGAIN")
        - redirects_before;
    println!("the source node answered {redirects} redirections (MOVED, ASK, TRYAGAIN) meanwhile");
    assert!(redirects > 0);
}

/// redis-py's RedisCluster against two rampart instances that describe themselves as a
/// cluster: it finds both, spreads keys over them by slot, and every command works.
const REDIS_PY_CLUSTER: &str = r#"
import sys
from redis.cluster import RedisCluster
rc = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]))
ports = sorted(n.port for n in rc.get_nodes())
assert ports == sorted([int(sys.argv[1]), int(sys.argv[2])]), ports
for i in range(300):
    assert rc.set(f"py:{i}", i) is True
for i in range(300):
    assert rc.get(f"py:{i}") == str(i).encode()
assert rc.mget_nonatomic([f"py:{i}" for i in range(40)]) == [str(i).encode() for i in range(40)]
assert rc.incr("py:{t}:n") == 1
p = rc.pipeline()
p.set("py:{t}:a", "1").get("py:{t}:a")
assert p.execute() == [True, b"1"]
print("ok")
"#;

#[test]
fn the_cluster_view_lets_redis_py_rediscluster_spread_over_rampart_instances() {
    let second = free_port();
    let view = format!("  cluster_view:\n    nodes: [127.0.0.1:{{port}}, 127.0.0.1:{second}]\n");
    let env = Env::start(&view);
    let mut c = env.client();
    // This instance is the first node, serving the first half of the slots.
    let slots = c.cmd(&["CLUSTER", "SLOTS"]);
    let ranges = slots.as_array().expect("CLUSTER SLOTS");
    assert_eq!(ranges.len(), 2);
    let first = ranges[0].as_array().expect("a range");
    assert_eq!(first[0], Reply::Int(0));
    assert_eq!(first[1], Reply::Int(8191));
    let node = first[2].as_array().expect("a node");
    assert_eq!(node[1], Reply::Int(i64::from(env.port)));
    let myid = c.cmd(&["CLUSTER", "MYID"]);
    assert_eq!(Some(&myid), node.get(2));
    let nodes = c.cmd(&["CLUSTER", "NODES"]);
    let nodes = nodes.as_str().expect("CLUSTER NODES").to_string();
    assert!(nodes.contains("myself,master"), "{nodes}");
    assert!(nodes.contains(&format!("127.0.0.1:{second}@")), "{nodes}");
    let info = c.cmd(&["CLUSTER", "INFO"]);
    assert!(
        info.as_str()
            .is_some_and(|i| i.contains("cluster_state:ok")),
        "{info:?}"
    );
    let info = c.cmd(&["INFO", "cluster"]);
    assert!(
        info.as_str()
            .is_some_and(|i| i.contains("cluster_enabled:1")),
        "{info:?}"
    );
    assert_eq!(c.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(c.cmd(&["CLUSTER", "KEYSLOT", "foo"]), Reply::Int(12182));
    // A second instance with the same view, in front of the same cluster.
    let seeds = env.cluster.addrs()[..2].join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{second}\n  cluster: [{seeds}]\n  timeout: 2000\n  cluster_view:\n    nodes: [127.0.0.1:{}, 127.0.0.1:{second}]\n",
        env.port
    );
    let _other = common::start_rampart(&yaml, second, 1);
    let mut c2 = Client::connect(&format!("127.0.0.1:{second}"));
    assert_eq!(c2.cmd(&["CLUSTER", "MYID"]), node_ids(&slots)[1]);
    let mut cmd = std::process::Command::new("python3");
    cmd.env("PYTHONPATH", common::client_libs().join("py"))
        .args(["-c", REDIS_PY_CLUSTER])
        .arg(env.port.to_string())
        .arg(second.to_string());
    common::run_script("redis-py RedisCluster", cmd);
    // Both instances served: the keys are on the cluster, written through either.
    let mut direct = env.client();
    assert_eq!(direct.cmd(&["GET", "py:7"]), Reply::bulk("7"));
    for (i, port) in [env.port, second].into_iter().enumerate() {
        let mut c = Client::connect(&format!("127.0.0.1:{port}"));
        let stats = c.cmd(&["INFO", "commandstats"]);
        let sets = stats
            .as_str()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("cmdstat_set:calls=")))
            .and_then(|n| n.split(',').next())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
        assert!(sets > 0, "instance {i} got no SET");
    }
}

/// The node ids of a CLUSTER SLOTS reply, in order.
fn node_ids(slots: &Reply) -> Vec<Reply> {
    slots
        .as_array()
        .unwrap_or(&[])
        .iter()
        .filter_map(|r| r.as_array()?.get(2)?.as_array()?.get(2).cloned())
        .collect()
}

#[test]
fn a_primary_added_to_the_cluster_becomes_a_shard_without_a_reload() {
    let mut env = Env::start("");
    let mut c = env.client();
    let from = env.cluster.primaries()[0];
    join_primary(&mut env);
    let added = env.cluster.nodes.len() - 1;
    let key = env.cluster.key_on(added, "grown");
    assert_eq!(c.cmd(&["SET", &key, "v"]), Reply::ok());
    assert_eq!(env.node(added).cmd(&["GET", &key]), Reply::bulk("v"));
    // rampart made it a shard of its own: INFO names it a shard's primary, and its keys
    // go straight to it (no more MOVED from the node that gave the slots away).
    let port = env.cluster.nodes[added].port().to_string();
    let shard = poll_until(Duration::from_secs(10), || {
        let info = c.cmd(&["INFO", "replication"]);
        let info = info.as_str().unwrap_or("").to_string();
        info.lines()
            .any(|l| l.starts_with("primary_") && l.contains(&format!("addr=127.0.0.1:{port},")))
            .then_some(())
    });
    assert!(shard.is_some(), "no shard for the new primary");
    let settled = poll_until(Duration::from_secs(5), || {
        let before = moved_count(&env, from);
        for _ in 0..20 {
            assert_eq!(c.cmd(&["GET", &key]), Reply::bulk("v"));
        }
        (moved_count(&env, from) == before).then_some(())
    });
    assert!(
        settled.is_some(),
        "requests for the new primary's slots still redirected"
    );
}

#[test]
fn a_blocking_command_in_a_migrating_slot_follows_ask_to_the_importing_node() {
    let env = Env::start("");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let list = env.cluster.key_on(a, "jobs-");
    let stream = format!("{{{list}}}:events");
    let slot = testkit::cluster_slot(list.as_bytes());
    begin_migration(&env, slot, a, b);
    // The keys do not exist on the node the slot leaves, so it answers ASK: the client
    // never sees it; the command blocks on the importing node, as a cluster client's would.
    assert_eq!(c.cmd(&["BLPOP", &list, "0.2"]), Reply::Array(None));
    assert_eq!(
        c.cmd(&["XREAD", "BLOCK", "200", "STREAMS", &stream, "$"]),
        Reply::Array(None)
    );
    let mut blocked = env.client();
    let key = list.clone();
    let waiter = std::thread::spawn(move || blocked.cmd(&["BLPOP", &key, "5"]));
    let listed = poll_until(Duration::from_secs(5), || {
        let l = env.node(b).cmd(&["CLIENT", "LIST"]);
        l.as_str()
            .is_some_and(|t| t.contains("cmd=blpop"))
            .then_some(())
    });
    assert!(
        listed.is_some(),
        "the BLPOP does not wait on the importing node"
    );
    // A push follows the same ASK and wakes it.
    assert_eq!(c.cmd(&["RPUSH", &list, "job"]), Reply::Int(1));
    assert_eq!(
        waiter.join().expect("waiter"),
        Reply::bulks([list.as_str(), "job"])
    );
}

/// A blocking command whose keys a migration has split between two nodes (BZPOPMIN goes
/// straight to a connection of its own) meets `TRYAGAIN` on the node the slot leaves: rampart
/// sends it again after a pause, as it does any request, and once the migration ends it
/// follows the `MOVED` and the client gets the pop, never the `TRYAGAIN`.
#[test]
fn a_blocking_command_split_by_a_migration_is_sent_again_after_tryagain() {
    let env = Env::start("");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let tag = env.cluster.key_on(a, "zsplit");
    let keys = tagged(&tag, 4);
    let slot = testkit::cluster_slot(keys[0].as_bytes());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.cmd(&["ZADD", k, "1", &format!("m{i}")]), Reply::Int(1));
    }
    begin_migration(&env, slot, a, b);
    migrate(&env, a, b, &keys[..2]);
    let tryagain_before = error_count(&env, a, "TRYAGAIN");
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            migrate(&env, a, b, &keys[2..]);
            end_migration(&env, slot, b);
        });
        c.cmd(&["BZPOPMIN", &keys[0], &keys[3], "5"])
    });
    assert_eq!(got, Reply::bulks([keys[0].as_str(), "m0", "1"]));
    assert!(
        error_count(&env, a, "TRYAGAIN") > tryagain_before,
        "the BZPOPMIN did meet TRYAGAIN"
    );
}

/// A fourth primary joins the cluster (`redis-cli --cluster add-node`) and takes 100 slots,
/// with their keys, from the first (`reshard`).
fn join_primary(env: &mut Env) {
    let from = env.cluster.primaries()[0];
    let bus = free_port().to_string();
    let new = testkit::RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-port",
        &bus,
    ]);
    cluster_cli(&["add-node", &new.addr(), &env.cluster.nodes[from].addr()]);
    let new_id = new
        .cmd(&["CLUSTER", "MYID"])
        .as_str()
        .expect("id")
        .to_string();
    env.cluster.nodes.push(new);
    env.cluster.wait_ok(Duration::from_secs(10));
    let from_addr = env.cluster.nodes[from].addr();
    let from_id = env.cluster.id(from);
    cluster_cli(&[
        "reshard",
        &from_addr,
        "--cluster-from",
        &from_id,
        "--cluster-to",
        &new_id,
        "--cluster-slots",
        "100",
        "--cluster-yes",
    ]);
    env.cluster.wait_ok(Duration::from_secs(10));
}

#[test]
fn broadcasts_reach_a_primary_that_joined_from_the_moment_it_is_a_shard() {
    let mut env = Env::start("");
    let mut c = env.client();
    for i in 0..100 {
        assert_eq!(c.cmd(&["SET", &format!("b:{i}"), "x"]), Reply::ok());
    }
    join_primary(&mut env);
    // As soon as INFO counts the new shard, commands sent to every shard reach it:
    // its primary passed its checks before the pool named it.
    let grown = poll_until(Duration::from_secs(10), || {
        let info = c.cmd(&["INFO", "cluster"]);
        info.as_str()
            .is_some_and(|t| t.contains("rampart_cluster_c:shards=4,"))
            .then_some(())
    });
    assert!(grown.is_some(), "no shard for the new primary");
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(100));
    let keys = c.cmd(&["KEYS", "b:*"]);
    assert_eq!(keys.as_array().map(<[Reply]>::len), Some(100), "{keys:?}");
}

/// One step of SCAN from `cursor`: the next cursor and the keys returned.
fn scan_step(c: &mut Client, cursor: &str) -> (String, Vec<String>) {
    let r = c.cmd(&["SCAN", cursor, "COUNT", "10"]);
    let Some(items) = r.as_array() else {
        panic!("SCAN {cursor}: {r:?}");
    };
    let next = items[0].as_str().expect("cursor").to_string();
    let keys = items[1].as_array().expect("keys");
    let keys = keys.iter().filter_map(|k| k.as_str().map(str::to_string));
    (next, keys.collect())
}

#[test]
fn a_scan_begun_before_a_primary_joined_still_returns_every_key() {
    let mut env = Env::start("");
    let mut c = env.client();
    let mut written = std::collections::BTreeSet::new();
    for i in 0..300 {
        let k = format!("walk:{i}");
        assert_eq!(c.cmd(&["SET", &k, "x"]), Reply::ok());
        written.insert(k);
    }
    // One walk before the cluster grows: each cursor it handed out, with the keys seen
    // up to it.
    let mut steps = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let (next, keys) = scan_step(&mut c, &cursor);
        seen.extend(keys);
        cursor = next;
        if cursor == "0" {
            break;
        }
        steps.push((cursor.clone(), seen.clone()));
    }
    assert_eq!(seen, written);
    assert!(steps.len() > 10, "a walk of {} steps", steps.len());
    // A fourth primary joins and takes 100 slots (with their keys) from the first.
    join_primary(&mut env);
    let grown = poll_until(Duration::from_secs(10), || {
        let info = c.cmd(&["INFO", "cluster"]);
        info.as_str()
            .is_some_and(|t| t.contains("rampart_cluster_c:shards=4,"))
            .then_some(())
    });
    assert!(grown.is_some(), "no shard for the new primary");
    let ready = poll_until(Duration::from_secs(10), || {
        (c.cmd(&["DBSIZE"]) == Reply::Int(300)).then_some(())
    });
    assert!(ready.is_some(), "the new shard did not serve");
    // Every walk taken up again from where it stopped still returns every key (a key may
    // come twice, as SCAN allows).
    for (i, (cursor, before)) in steps.into_iter().enumerate() {
        let mut seen = before;
        let mut cursor = cursor;
        for _ in 0..10_000 {
            let (next, keys) = scan_step(&mut c, &cursor);
            seen.extend(keys);
            cursor = next;
            if cursor == "0" {
                break;
            }
        }
        let missing: Vec<_> = written.difference(&seen).collect();
        assert!(
            missing.is_empty(),
            "walk resumed at step {i} missed {missing:?}"
        );
    }
}

#[test]
fn a_blocking_command_whose_slot_moved_follows_it() {
    let env = Env::start("  cluster_refresh: 60s\n");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let q = env.cluster.key_on(a, "bq");
    assert_eq!(c.cmd(&["RPUSH", &q, "first"]), Reply::Int(1));
    let slot = testkit::cluster_slot(q.as_bytes());
    begin_migration(&env, slot, a, b);
    migrate(&env, a, b, std::slice::from_ref(&q));
    end_migration(&env, slot, b);
    // rampart's map still names `a`: the blocking command meets MOVED on its connection,
    // waits for the refreshed map, and runs on `b`.
    assert_eq!(
        c.cmd(&["BLPOP", &q, "2"]),
        Reply::bulks([q.as_str(), "first"])
    );
    let pusher = {
        let addr = format!("127.0.0.1:{}", env.port);
        let q = q.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            Client::connect(&addr).cmd(&["RPUSH", &q, "second"])
        })
    };
    assert_eq!(
        c.cmd(&["BLPOP", &q, "5"]),
        Reply::bulks([q.as_str(), "second"])
    );
    assert_eq!(pusher.join().expect("pusher"), Reply::Int(1));
}

/// The `INFO pools` line of the node listed at `addr` (`None` when it is not listed).
fn node_line(c: &mut Client, addr: &str) -> Option<String> {
    let info = c.cmd(&["INFO", "pools"]);
    let text = info.as_str().unwrap_or("").to_string();
    let want = format!("addr={addr},");
    text.lines()
        .find(|l| l.starts_with("node_") && l.contains(&want))
        .map(str::to_string)
}

#[test]
fn a_primary_busy_with_a_long_script_stays_up_and_its_clients_get_busy() {
    let cluster = ClusterSetup::new()
        .node_timeout_ms(5000)
        .server_args(&["--busy-reply-threshold", "100"])
        .start();
    let seeds = cluster.addrs()[..2].to_vec();
    let env = Env::start_on(cluster, &seeds, "  failover_hold: 500ms\n");
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (busy, other) = (p[0], p[1]);
    let (key, elsewhere) = (
        env.cluster.key_on(busy, "busy"),
        env.cluster.key_on(other, "calm"),
    );
    assert_eq!(c.cmd(&["SET", &key, "v"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &elsewhere, "v"]), Reply::ok());
    let addr = env.cluster.nodes[busy].addr();
    let script = {
        let a = addr.clone();
        std::thread::spawn(move || {
            let mut s = Client::connect(&a);
            s.set_read_timeout(Some(Duration::from_secs(60)));
            s.cmd(&["EVAL", "while true do end", "0"])
        })
    };
    let want = poll_until(Duration::from_secs(5), || {
        let r = env.node(busy).cmd(&["GET", &key]);
        matches!(&r, Reply::Error(e) if e.starts_with("BUSY")).then_some(r)
    })
    .expect("the node became busy");
    // Well past what two failed health checks take (about half a second): the busy
    // primary stays in rotation, its keys get the server's own BUSY (not a held write's
    // timeout), and the other primaries' keys are served.
    // A RESP3 client makes each worker open connections of its own to the node, whose
    // set-up (READONLY) the busy node answers BUSY too: that is not a failure either.
    let mut resp3 = env.client();
    assert!(matches!(resp3.cmd(&["HELLO", "3"]), Reply::Array(_)));
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        assert_eq!(c.cmd(&["GET", &key]), want);
        assert_eq!(c.cmd(&["SET", &key, "w"]), want);
        assert_eq!(resp3.cmd(&["GET", &key]), want, "RESP3");
        assert_eq!(c.cmd(&["GET", &elsewhere]), Reply::bulk("v"));
        let line = node_line(&mut c, &addr).expect("the busy primary is listed");
        assert!(
            line.contains(",up=1,") && line.contains(",ejected=0,"),
            "{line}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SCRIPT KILL through rampart reaches the busy node (on a connection of its own: the
    // node answers the pool's READONLY set-up with BUSY, but not AUTH or the kill).
    assert_eq!(c.cmd(&["SCRIPT", "KILL"]), Reply::ok());
    let killed = script.join().expect("script thread");
    assert!(
        matches!(&killed, Reply::Error(e) if e.contains("killed")),
        "{killed:?}"
    );
    assert_eq!(c.cmd(&["SET", &key, "after"]), Reply::ok());
    assert_eq!(env.node(busy).cmd(&["GET", &key]), Reply::bulk("after"));
    assert_eq!(resp3.cmd(&["GET", &key]), Reply::bulk("after"));
    let log = env.proxy.stderr();
    assert!(!log.contains("node down"), "{log}");
}

#[test]
fn a_primary_whose_address_changes_is_followed_at_its_new_address() {
    // A node timeout well above the restart: the cluster does not fail the node over, it
    // learns its new address from the node itself (same node id, from its nodes.conf). A
    // primary that restarts answers CLUSTERDOWN for its first 2 s (Redis' rejoin delay),
    // which rampart retries within the pool timeout: 5 s here.
    let cluster = ClusterSetup::new().node_timeout_ms(5000).start();
    let p = cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let (tag_a, tag_b) = (cluster.key_on(a, "ma"), cluster.key_on(b, "mb"));
    let seeds = [cluster.nodes[b].addr(), cluster.nodes[p[2]].addr()];
    let mut env = Env::start_on(
        cluster,
        &seeds,
        "  timeout: 5000\n  failover_hold: 10s\n  cluster_refresh: 60s\n",
    );
    let addr = format!("127.0.0.1:{}", env.port);
    let mut c = env.client();
    let id = env.cluster.id(a);
    let old = env.cluster.nodes[a].addr();
    assert!(node_line(&mut c, &old).is_some());
    let on_a = Writer::start(addr.clone(), tag_a.clone());
    let on_b = Writer::start(addr.clone(), tag_b.clone());
    std::thread::sleep(Duration::from_millis(300));
    let port = free_port();
    env.cluster.nodes[a].restart_on(port);
    let moved = std::time::Instant::now();
    let new = env.cluster.nodes[a].addr();
    assert_eq!(env.cluster.id(a), id, "the node kept its id");
    // rampart lists the node at its new address, and no longer at the old one.
    let followed = poll_until(Duration::from_secs(15), || {
        (node_line(&mut c, &new).is_some() && node_line(&mut c, &old).is_none())
            .then(|| moved.elapsed())
    });
    let followed = followed.unwrap_or_else(|| {
        panic!(
            "not followed: {:?}\n{}",
            c.cmd(&["INFO", "pools"]),
            env.proxy.stderr()
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let (acked_a, errors_a, lat_a) = on_a.stop();
    let (acked_b, errors_b, _) = on_b.stop();
    println!(
        "a primary restarted on a new port: followed after {followed:?}; its slot: {} writes acknowledged, {} errors {errors_a:?}, longest write {:?}; another primary's slot: {} writes, {} errors",
        acked_a.len(),
        errors_a.len(),
        lat_a.last(),
        acked_b.len(),
        errors_b.len(),
    );
    // The one write in flight on the connection that died may have been applied: it gets
    // an error and is not resent. Every other write waited for the new address.
    assert!(errors_a.len() <= 1, "{errors_a:?}");
    assert!(errors_b.is_empty(), "{errors_b:?}");
    let last = acked_a.last().expect("writes acknowledged");
    assert_eq!(
        Client::connect(&new).cmd(&["GET", last]),
        Reply::bulk(last),
        "the last acknowledged write is on the node at its new address"
    );
    assert_eq!(
        c.cmd(&["SET", &format!("{{{tag_a}}}:after"), "1"]),
        Reply::ok()
    );
    assert_eq!(
        Client::connect(&new).cmd(&["GET", &format!("{{{tag_a}}}:after")]),
        Reply::bulk("1")
    );
}

/// `redis-cli --cluster <args>`, which must succeed; its output.
fn cluster_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .output()
        .expect("redis-cli --cluster");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "redis-cli --cluster {args:?}: {text}");
    text
}

/// `connected_clients` of node `i` (its own INFO connection included).
fn connected_clients(env: &Env, i: usize) -> i64 {
    env.cluster.nodes[i]
        .info("clients")
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn a_primary_that_leaves_the_cluster_is_no_longer_a_shard() {
    let env = Env::start("  read_policy: prefer-replica\n  timeout: 5000\n");
    let addr = format!("127.0.0.1:{}", env.port);
    let mut c = env.client();
    let p = env.cluster.primaries();
    let (a, b) = (p[0], p[1]);
    let replica_of = |i: usize| {
        (0..env.cluster.nodes.len())
            .find(|&r| {
                env.cluster.nodes[r]
                    .info("replication")
                    .contains(&format!("master_port:{}\r", env.cluster.nodes[i].port()))
            })
            .expect("a replica")
    };
    let ra = replica_of(a);
    let (a_addr, ra_addr) = (env.cluster.nodes[a].addr(), env.cluster.nodes[ra].addr());
    let (a_id, ra_id, b_id) = (env.cluster.id(a), env.cluster.id(ra), env.cluster.id(b));
    assert!(node_line(&mut c, &a_addr).is_some());
    // Clients write to keys of every primary, `a`'s included, for the whole sequence.
    let writers: Vec<Writer> = p
        .iter()
        .enumerate()
        .map(|(n, &i)| Writer::start(addr.clone(), env.cluster.key_on(i, &format!("lv{n}-"))))
        .collect();
    // A subscriber to a shard channel on each primary that stays: the shards after the one
    // dropped move down an index, and their channels must stay with their slots' owners.
    let channels: Vec<String> = p[1..]
        .iter()
        .map(|&i| env.cluster.key_on(i, "stay-chan-"))
        .collect();
    let mut sub = env.client();
    for (n, ch) in channels.iter().enumerate() {
        assert_eq!(
            sub.cmd(&["SSUBSCRIBE", ch]),
            Reply::Array(Some(vec![
                Reply::bulk("ssubscribe"),
                Reply::bulk(ch),
                Reply::Int(n as i64 + 1)
            ]))
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    // Every slot of `a` moves to `b` (Redis then makes `a` and its replica replicas of
    // `b`), then both leave the cluster: forgotten by every node, reset.
    let nodes = env.cluster.nodes[a].cmd(&["CLUSTER", "NODES"]);
    let mine = nodes
        .as_str()
        .and_then(|t| t.lines().find(|l| l.contains("myself")).map(str::to_string))
        .expect("CLUSTER NODES");
    // Shards are ordered by their first slot: `a` is shard 0, so every other shard moves.
    assert!(
        mine.split_whitespace()
            .skip(8)
            .any(|r| r == "0" || r.starts_with("0-")),
        "{mine}"
    );
    let slots: u32 = mine
        .split_whitespace()
        .skip(8)
        .map(|r| match r.split_once('-') {
            Some((x, y)) => y.parse::<u32>().unwrap_or(0) - x.parse::<u32>().unwrap_or(0) + 1,
            None => 1,
        })
        .sum();
    let slots = slots.to_string();
    cluster_cli(&[
        "reshard",
        &env.cluster.nodes[b].addr(),
        "--cluster-from",
        &a_id,
        "--cluster-to",
        &b_id,
        "--cluster-slots",
        &slots,
        "--cluster-yes",
    ]);
    env.cluster.wait_ok(Duration::from_secs(20));
    let b_addr = env.cluster.nodes[b].addr();
    cluster_cli(&["del-node", &b_addr, &ra_id]);
    cluster_cli(&["del-node", &b_addr, &a_id]);
    // rampart lists neither node, has two shards, and holds no connection to them.
    let gone = poll_until(Duration::from_secs(15), || {
        let info = c.cmd(&["INFO", "cluster"]);
        (node_line(&mut c, &a_addr).is_none()
            && node_line(&mut c, &ra_addr).is_none()
            && info.as_str().is_some_and(|i| i.contains("shards=2,")))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "still listed: {:?}\n{:?}\n{}",
        c.cmd(&["INFO", "cluster"]),
        c.cmd(&["INFO", "pools"]),
        env.proxy.stderr()
    );
    let closed = poll_until(Duration::from_secs(10), || {
        (connected_clients(&env, a) == 1 && connected_clients(&env, ra) == 1).then_some(())
    });
    assert!(
        closed.is_some(),
        "connections left: {} to a, {} to its replica",
        connected_clients(&env, a) - 1,
        connected_clients(&env, ra) - 1
    );
    // Nothing reaches them any more: reads (prefer-replica) and writes of every slot.
    let before = (
        ha_calls(&env, a, "get") + ha_calls(&env, a, "set"),
        ha_calls(&env, ra, "get") + ha_calls(&env, ra, "set"),
    );
    for n in 0..200 {
        assert_eq!(c.cmd(&["SET", &format!("after-{n}"), "1"]), Reply::ok());
    }
    // prefer-replica reads may lag the write they follow (asynchronous replication): each
    // key is read until its replica has it. A read sent to a node that left would be
    // counted below.
    for n in 0..200 {
        let k = format!("after-{n}");
        let read = poll_until(Duration::from_secs(5), || {
            (c.cmd(&["GET", &k]) == Reply::bulk("1")).then_some(())
        });
        assert!(
            read.is_some(),
            "{k} is not readable: {:?}",
            c.cmd(&["GET", &k])
        );
    }
    let after = (
        ha_calls(&env, a, "get") + ha_calls(&env, a, "set"),
        ha_calls(&env, ra, "get") + ha_calls(&env, ra, "set"),
    );
    assert_eq!(after, before, "requests reached the nodes that left");
    // Each shard channel still reaches its subscriber, published through rampart.
    for ch in &channels {
        let got = poll_until(Duration::from_secs(10), || {
            (c.cmd(&["SPUBLISH", ch, "after-drop"]) == Reply::Int(1)).then_some(())
        });
        assert!(
            got.is_some(),
            "no subscriber for {ch} after the shard was dropped; log:\n{}",
            env.proxy.stderr()
        );
    }
    for ch in &channels {
        let msg = loop {
            match sub.read_reply() {
                Ok(Reply::Array(Some(v)))
                    if v.first() == Some(&Reply::bulk("smessage"))
                        && v.get(1) == Some(&Reply::bulk(ch)) =>
                {
                    break v
                }
                Ok(_) => continue,
                Err(e) => panic!("reading {ch}'s message: {e}"),
            }
        };
        assert_eq!(msg[2], Reply::bulk("after-drop"));
    }
    let mut errors = Vec::new();
    let mut acked = 0;
    for w in writers {
        let (ok, e, _) = w.stop();
        acked += ok.len();
        errors.extend(e);
    }
    println!("a primary and its replica left the cluster: {acked} writes acknowledged meanwhile, {} errors", errors.len());
    assert!(errors.is_empty(), "{errors:?}");
}

/// `calls` of `cmdstat_<cmd>` on node `i`.
fn ha_calls(env: &Env, i: usize, cmd: &str) -> u64 {
    let prefix = format!("cmdstat_{cmd}:calls=");
    env.cluster.nodes[i]
        .info("commandstats")
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_seed_that_is_not_a_cluster_node_stops_the_start_with_its_reason() {
    // A standalone server: it answers, but not as a cluster node.
    let solo = testkit::RedisServer::start();
    let port = free_port();
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{}]\n  timeout: 1000\n",
        solo.addr()
    );
    let mut proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yaml)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--no-admin"])
        .start();
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("rampart stops");
    assert!(!status.success());
    let err = proxy.stderr();
    assert!(
        err.contains(&solo.addr()) && err.contains("cluster support disabled"),
        "{err}"
    );
}

#[test]
fn an_mget_over_every_slot_does_not_stall_the_other_clients_of_its_worker() {
    // One worker: the big request and the small one share it.
    let cluster = ClusterSetup::new().start();
    let port = free_port();
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!("c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 30000\n");
    let _proxy = common::start_rampart(&yaml, port, 1);
    let addr = format!("127.0.0.1:{port}");
    let mut small = Client::connect(&addr);
    assert_eq!(small.cmd(&["SET", "probe", "1"]), Reply::ok());
    // 100,000 keys land in nearly every one of the 16,384 slots: one fragment per slot.
    let n = 100_000;
    let big = std::thread::spawn(move || {
        let mut c = Client::connect(&addr);
        let mut mget = vec!["MGET".to_string()];
        mget.extend((0..n).map(|i| format!("key:{i}")));
        c.cmd(&mget)
    });
    // While it is split, sent and merged, a GET of another client waits only its turn. The
    // split compared every key with every slot's group before: the worker spent about 17 s
    // (debug build) on this MGET, and the GET waited as long.
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let got = small.try_cmd(&["GET", "probe"]);
    let waited = started.elapsed();
    assert!(
        matches!(&got, Ok(r) if *r == Reply::bulk("1")) && waited < Duration::from_secs(4),
        "the GET waited {waited:?} behind the MGET: {got:?}"
    );
    let reply = big.join().expect("mget");
    assert_eq!(reply.as_array().map(<[Reply]>::len), Some(n));
}

#[test]
fn a_primary_frozen_by_sigstop_is_followed_as_soon_as_its_replica_is_promoted() {
    let cluster = ClusterSetup::new().full_coverage(false).start();
    let p = cluster.primaries();
    let a = p[0];
    let tag_a = cluster.key_on(a, "fz");
    let replica = (0..cluster.nodes.len())
        .find(|&i| {
            cluster.nodes[i]
                .info("replication")
                .contains(&format!("master_port:{}", cluster.nodes[a].port()))
        })
        .expect("a's replica");
    // A long pool timeout: a frozen node answers nothing until it runs out.
    let seeds = [cluster.nodes[p[1]].addr(), cluster.nodes[p[2]].addr()];
    let env = Env::start_on(
        cluster,
        &seeds,
        "  timeout: 5000\n  failover_hold: 20s\n  cluster_refresh: 60s\n",
    );
    let on_a = Writer::start(format!("127.0.0.1:{}", env.port), tag_a.clone());
    std::thread::sleep(Duration::from_millis(300));
    env.cluster.nodes[a].stop();
    let frozen = std::time::Instant::now();
    poll_until(Duration::from_secs(20), || {
        (env.cluster.nodes[replica].role() == "master").then_some(())
    })
    .expect("the cluster promoted a's replica");
    let promoted = frozen.elapsed();
    // A write of the frozen primary's slot, sent once the replica is primary: it waits in
    // the failover hold until rampart adopts the map that names the replica. The map's
    // refresh asks every known node; before, it waited for the frozen one until the ask's
    // deadline (the pool timeout, 5 s here), round after round.
    let mut c = env.client();
    c.set_read_timeout(Some(Duration::from_secs(30)));
    let t = std::time::Instant::now();
    assert_eq!(
        c.cmd(&["SET", &format!("{{{tag_a}}}:after"), "1"]),
        Reply::ok()
    );
    let followed = t.elapsed();
    env.cluster.nodes[a].cont();
    let (acked, errors, _) = on_a.stop();
    println!(
        "SIGSTOP of a primary: promoted after {promoted:?}; a write sent then answered after {followed:?}; {} writes acknowledged, errors {errors:?}",
        acked.len()
    );
    assert!(
        followed < Duration::from_secs(2),
        "the new map was adopted {followed:?} after the promotion"
    );
    // Only the write in flight at the freeze may fail (it may have been applied).
    assert!(errors.len() <= 1, "{errors:?}");
    let mut direct = Client::connect(&env.cluster.nodes[replica].addr());
    for k in &acked {
        assert_eq!(direct.cmd(&["GET", k]), Reply::bulk(k), "{k}");
    }
}

/// A slot no node serves (every node ran `CLUSTER DELSLOTS` on it; the cluster keeps
/// serving the others with `cluster-require-full-coverage no`) gets Redis Cluster's own
/// error through rampart, inside a transaction too, and the other slots are unaffected.
#[test]
fn a_slot_no_node_serves_answers_clusterdown() {
    let cluster = ClusterSetup::new().full_coverage(false).start();
    let seeds = cluster.addrs()[..2].to_vec();
    let env = Env::start_on(cluster, &seeds, "  cluster_refresh: 100ms\n");
    let mut c = env.client();
    let owner = env.cluster.primaries()[0];
    let gone = env.cluster.key_on(owner, "unserved-");
    let other = env.cluster.key_on(env.cluster.primaries()[1], "served-");
    assert_eq!(c.cmd(&["SET", &gone, "1"]), Reply::ok());
    let slot = testkit::cluster_slot(gone.as_bytes()).to_string();
    for n in &env.cluster.nodes {
        assert_eq!(n.cmd(&["CLUSTER", "DELSLOTS", &slot]), Reply::ok());
    }
    let down = poll_until(Duration::from_secs(10), || {
        let r = c.cmd(&["GET", &gone]);
        (r == Reply::Error("CLUSTERDOWN Hash slot not served".into())).then_some(())
    });
    assert!(
        down.is_some(),
        "GET of an unserved slot answered {:?}",
        c.cmd(&["GET", &gone])
    );
    assert_eq!(c.cmd(&["SET", &other, "2"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", &other]), Reply::bulk("2"));
    // Inside MULTI the command is refused while queueing, and EXEC runs nothing.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", &other]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["SET", &gone, "x"]),
        Reply::Error("CLUSTERDOWN Hash slot not served".into())
    );
    assert!(
        matches!(c.cmd(&["EXEC"]), Reply::Error(e) if e.starts_with("EXECABORT")),
        "EXEC after a refused command"
    );
    assert_eq!(
        c.cmd(&["GET", &other]),
        Reply::bulk("2"),
        "the transaction ran"
    );
}

/// Write `yaml` to the proxy's configuration file, send SIGHUP, and return the reload's log
/// line once it is written.
fn reload_hup(proxy: &Proxy, yaml: &str) -> String {
    let lines = |log: String| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("reload: applied") || l.contains("reload refused"))
            .map(str::to_string)
            .collect()
    };
    let before = lines(proxy.stderr()).len();
    std::fs::write(proxy.dir().join("rampart.yml"), yaml).expect("write config");
    testkit::send_signal(proxy.pid(), "HUP");
    poll_until(Duration::from_secs(20), || {
        lines(proxy.stderr()).get(before).cloned()
    })
    .unwrap_or_else(|| panic!("no reload line after SIGHUP:\n{}", proxy.stderr()))
}

#[test]
fn a_reload_to_the_seeds_of_another_cluster_moves_the_pool_there() {
    let a = ClusterSetup::new().replicas(0).start();
    let b = ClusterSetup::new().replicas(0).start();
    let port = free_port();
    let yaml = |seeds: &[String]| {
        format!(
            "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{}]\n  timeout: 2000\n",
            seeds.join(", ")
        )
    };
    let proxy = common::start_rampart(&yaml(&a.addrs()[..2]), port, 2);
    let addr = format!("127.0.0.1:{port}");
    let keys: Vec<String> = (0..30).map(|i| format!("moved:{i}")).collect();
    let on = |cluster: &RedisCluster, key: &str| {
        Client::connect(&cluster.nodes[cluster.owner_of(key)].addr()).cmd(&["GET", key])
    };
    let mut c = Client::connect(&addr);
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, "a"]), Reply::ok());
        assert_eq!(on(&a, k), Reply::bulk("a"), "{k} is on cluster A");
    }

    // Seeds where nothing listens give no map: refused, and A keeps serving.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let line = reload_hup(&proxy, &yaml(&[nowhere]));
    assert!(
        line.contains("reload refused")
            && line.contains("pool 'c': no cluster seed answered")
            && line.contains("nothing changed"),
        "{line}"
    );
    for k in &keys {
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk("a"));
    }
    assert_eq!(c.cmd(&["SET", &keys[0], "a2"]), Reply::ok());
    assert_eq!(on(&a, &keys[0]), Reply::bulk("a2"));

    // Seeds that still include a node of A's map: the pool keeps following A.
    let line = reload_hup(&proxy, &yaml(&[a.addrs()[2].clone(), b.addrs()[0].clone()]));
    assert!(
        line.contains("reload: applied") && !line.contains("moved to another cluster"),
        "{line}"
    );
    assert_eq!(c.cmd(&["SET", &keys[1], "a3"]), Reply::ok());
    assert_eq!(on(&a, &keys[1]), Reply::bulk("a3"));

    // B's seeds: the pool moves to cluster B, for the clients it had and new ones.
    let t0 = std::time::Instant::now();
    let line = reload_hup(&proxy, &yaml(&b.addrs()[..2]));
    println!("reload to another cluster applied after {:?}", t0.elapsed());
    assert!(
        line.contains("reload: applied") && line.contains("pool 'c' moved to another cluster"),
        "{line}"
    );
    let mut fresh = Client::connect(&addr);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            fresh.cmd(&["GET", k]),
            Reply::nil(),
            "{k} is not on cluster B yet"
        );
        let who = if i % 2 == 0 { &mut c } else { &mut fresh };
        assert_eq!(who.cmd(&["SET", k, "b"]), Reply::ok());
        assert_eq!(on(&b, k), Reply::bulk("b"), "{k} was written to cluster B");
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk("b"));
    }
    // Cluster A kept what it had.
    assert_eq!(on(&a, &keys[0]), Reply::bulk("a2"));
    assert_eq!(on(&a, &keys[1]), Reply::bulk("a3"));
}

/// A cache cluster pool with `fail_open`: a primary killed (no replica to promote, and the
/// cluster keeps serving the other slots) takes its slots' node out by its health checks;
/// reads of those slots then get their misses at once (MGET: nil in its keys' places only)
/// and its writes the dropped reply, while the other slots are served as before. Before,
/// they got `no node available for reads` and `no primary` errors.
#[test]
fn a_fail_open_cluster_answers_misses_for_the_slots_of_a_dead_primary() {
    let cluster = ClusterSetup::new().replicas(0).full_coverage(false).start();
    let seeds = cluster.addrs()[1..].to_vec();
    let mut env = Env::start_on(
        cluster,
        &seeds,
        "  cache: true\n  fail_open: true\n  fail_open_writes: drop\n  fail_open_after: 1000000\n  failover_hold: 100\n  health_check: {interval: 100}\n",
    );
    env.cluster.wait_ok(Duration::from_secs(10));
    let mut c = env.client();
    c.set_read_timeout(Some(Duration::from_secs(5)));
    let (dead, live) = (env.cluster.key_on(0, "d"), env.cluster.key_on(1, "l"));
    for (k, owner) in [(&dead, 0), (&live, 1)] {
        let stored = poll_until(Duration::from_secs(5), || {
            (c.cmd(&["SET", k, "v"]) == Reply::ok()
                && env.node(owner).cmd(&["GET", k]) == Reply::bulk("v"))
            .then_some(())
        });
        assert!(stored.is_some(), "{k} was never stored");
    }
    let dead_addr = env.cluster.nodes[0].addr();
    env.cluster.nodes[0].kill9();
    let info = |c: &mut Client| match c.cmd(&["INFO", "pools"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        r => panic!("INFO pools: {r:?}"),
    };
    poll_until(Duration::from_secs(5), || {
        info(&mut c)
            .lines()
            .any(|l| l.contains(&format!("addr={dead_addr},")) && l.contains(",up=0"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the dead node is still up: {}", info(&mut c)));
    assert_eq!(c.cmd(&["GET", &dead]), Reply::Bulk(None));
    assert_eq!(
        c.cmd(&["MGET", &dead, &live]),
        Reply::Array(Some(vec![Reply::Bulk(None), Reply::bulk("v")]))
    );
    assert_eq!(c.cmd(&["SET", &dead, "w"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &live, "w"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", &live]), Reply::bulk("w"));
}

/// A reload may make a pool a cluster pool (here a `servers:` pool), or add a cluster pool:
/// as at start, the map is read from the seeds (and its nodes checked) before the swap, and
/// keys go to the cluster from the next request, for the clients the pool had and new ones.
#[test]
fn a_reload_makes_a_pool_a_cluster_pool_and_adds_another() {
    let cluster = ClusterSetup::new().replicas(0).start();
    let single = testkit::RedisServer::start();
    let (port, port2) = (free_port(), free_port());
    let servers = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}:1 s0\n",
        single.addr()
    );
    let proxy = common::start_rampart(&servers, port, 2);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\nd:\n  listen: 127.0.0.1:{port2}\n  cluster: [{seeds}]\n"
    );
    let line = reload_hup(&proxy, &yaml);
    assert!(line.contains("reload: applied"), "{line}");
    let on = |key: &str| {
        Client::connect(&cluster.nodes[cluster.owner_of(key)].addr()).cmd(&["GET", key])
    };
    let mut d = Client::connect(&format!("127.0.0.1:{port2}"));
    for i in 0..20 {
        let k = format!("kind:{i}");
        assert_eq!(
            c.cmd(&["SET", &k, "c"]),
            Reply::ok(),
            "{k} through the old client"
        );
        assert_eq!(on(&k), Reply::bulk("c"), "{k} is on the cluster");
        assert_eq!(
            d.cmd(&["GET", &k]),
            Reply::bulk("c"),
            "{k} through the new pool"
        );
    }
    assert_eq!(
        c.cmd(&["GET", "before"]),
        Reply::nil(),
        "the cluster is another store"
    );
}
