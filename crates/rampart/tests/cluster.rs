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
            .args(["-c", "{dir}/c.yml", "--workers", "2"])
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
