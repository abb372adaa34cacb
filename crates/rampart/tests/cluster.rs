//! Redis Cluster pools against a real cluster (three primaries, a replica each, created by
//! `redis-cli --cluster create`): keys placed by slot on the node that owns it, multi-key
//! commands split per slot, Redis Cluster's CROSSSLOT error, redirections (MOVED, ASK,
//! TRYAGAIN) followed so that the client never sees them, a minority's map refused,
//! transactions, blocking commands, SCAN over every primary, reads from replicas.
//!
//! Run with `RUST_TEST_THREADS=2`: each test starts its own cluster of six servers.

use testkit::{free_port, Client, ClusterSetup, Proxy, RedisCluster, Reply};

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
        let port = free_port();
        let seeds = cluster.addrs()[..2].join(", ");
        let yaml = format!(
            "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\n{options}"
        );
        let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
            .file("c.yml", &yaml)
            .args([
                "-c",
                "{dir}/c.yml",
                "--workers",
                "2",
                "-a",
                "127.0.0.1",
                "-s",
            ])
            .arg(free_port().to_string())
            .wait_port(port)
            .start();
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
