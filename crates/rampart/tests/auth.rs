//! Password-protected backends in every kind of pool: `servers:`, `primary:`/`replicas:`,
//! `shards:` with replicas and `sentinels:`. With the right `redis_auth` (and a `redis_db`)
//! every connection rampart opens authenticates and selects the database, so the nodes pass
//! their health checks, writes land in that database and replicas serve reads; a planned
//! switchover works. With a wrong password, or none, every node is DOWN with the reason in
//! words and commands get a clear error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{free_port, poll_until, Client, Monitor, Proxy, RedisServer, Reply, Sentinel};

const POOL: &str = "alpha";
const PASS: &str = "data-s3cret";
const WRONG: &str = "not-the-password";
const DB: &str = "2";
/// Fast health checks, so nodes come up (or are seen down) within a second.
const CHECKS: &str =
    "  health_check:\n    interval: 100ms\n    timeout: 200ms\n    fall: 2\n    rise: 2\n";

/// A rampart process with its admin port.
struct Rampart {
    proxy: Proxy,
    port: u16,
    admin: u16,
    /// The password clients give rampart (the pool's `redis_auth`), if any.
    password: Option<String>,
}

/// Starts rampart over a pool whose backend keys are `body` (lines indented by two spaces),
/// with `redis_auth: password` when given.
fn start(body: &str, password: Option<&str>) -> Rampart {
    let port = free_port();
    let admin = free_port();
    let mut yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{body}"
    );
    if let Some(p) = password {
        yaml.push_str(&format!("  redis_auth: {p}\n"));
    }
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("auth.yml", &yaml)
        .args(["-c", "{dir}/auth.yml", "--no-stats", "--workers", "2"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .env("RAMPART_LOG", "info")
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    Rampart {
        proxy,
        port,
        admin,
        password: password.map(str::to_string),
    }
}

impl Rampart {
    /// A client of the pool, authenticated with the pool's password.
    fn client(&self) -> Client {
        let mut c = Client::connect(&format!("127.0.0.1:{}", self.port));
        if let Some(p) = &self.password {
            assert_eq!(c.cmd(&["AUTH", p]), Reply::ok(), "AUTH to rampart");
        }
        c
    }

    /// Every node of `/api/topology`.
    fn nodes(&self) -> Vec<Value> {
        let body = http_get(self.admin, "/api/topology");
        let topo: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("topology: {e}: {body}"));
        topo["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["shards"].as_array().into_iter().flatten())
            .flat_map(|s| s["nodes"].as_array().into_iter().flatten())
            .cloned()
            .collect()
    }

    /// Waits until `want` nodes are listed and every one satisfies `ok`.
    fn wait_nodes(&self, want: usize, what: &str, ok: impl Fn(&Value) -> bool) {
        let done = poll_until(Duration::from_secs(10), || {
            let nodes = self.nodes();
            (nodes.len() == want && nodes.iter().all(&ok)).then_some(())
        });
        assert!(
            done.is_some(),
            "nodes never {what}: {:#?}\nlog:\n{}",
            self.nodes(),
            self.proxy.stderr()
        );
    }

    fn wait_all_up(&self, want: usize) {
        self.wait_nodes(want, "all up", |n| n["up"] == true);
    }

    /// Sends reads over many keys, so every shard's node sees traffic (a `servers:` node's
    /// state comes from its traffic); the replies do not matter.
    fn touch_every_shard(&self) {
        let mut c = self.client();
        c.set_read_timeout(Some(Duration::from_secs(5)));
        for i in 0..32 {
            let _ = c.try_cmd(&["GET", &format!("touch-{i}")]);
        }
    }

    /// Waits until every node is down and its reason contains each of `words`.
    fn wait_all_down_because(&self, want: usize, words: &[&str]) {
        self.touch_every_shard();
        self.wait_nodes(want, &format!("down with {words:?}"), |n| {
            let why = n["reason"].as_str().unwrap_or("");
            n["up"] == false && words.iter().all(|w| why.contains(w))
        });
    }
}

/// One HTTP GET on a fresh connection; returns the body (the status must be 200).
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    body.to_string()
}

/// A client straight to `server`, authenticated with [`PASS`].
fn direct(server: &RedisServer) -> Client {
    let mut c = Client::connect(&server.addr());
    assert_eq!(
        c.cmd(&["AUTH", PASS]),
        Reply::ok(),
        "AUTH on {}",
        server.addr()
    );
    c
}

/// `GET key` on `server` in database `db`, bypassing rampart.
fn get_in(server: &RedisServer, db: &str, key: &str) -> Reply {
    let mut c = direct(server);
    assert_eq!(c.cmd(&["SELECT", db]), Reply::ok());
    c.cmd(&["GET", key])
}

/// `cmdstat_get` calls of `server`.
fn gets(server: &RedisServer) -> u64 {
    let info = match direct(server).cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO commandstats: {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A primary and `n` replicas, every one requiring [`PASS`] (and giving it as `masterauth`
/// to the node it replicates from).
fn protected_set(n: usize) -> (RedisServer, Vec<RedisServer>) {
    let primary = RedisServer::start();
    let replicas: Vec<RedisServer> = (0..n)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    // The primary too: after a switchover it replicates from the promoted replica.
    for s in replicas.iter().chain([&primary]) {
        assert_eq!(s.cmd(&["CONFIG", "SET", "masterauth", PASS]), Reply::ok());
    }
    for s in replicas.iter().chain([&primary]) {
        assert_eq!(r_set_pass(s), Reply::ok());
    }
    (primary, replicas)
}

fn r_set_pass(s: &RedisServer) -> Reply {
    s.cmd(&["CONFIG", "SET", "requirepass", PASS])
}

/// Waits until every replica in `replicas` holds `key` = `value` in database `db`.
fn wait_replicated(replicas: &[&RedisServer], db: &str, key: &str, value: &str) {
    for r in replicas {
        testkit::wait_until(Duration::from_secs(5), "the write to replicate", || {
            get_in(r, db, key) == Reply::bulk(value)
        });
    }
}

/// One replica set as the tests see it: the primary and its replicas.
type Set<'a> = (&'a RedisServer, Vec<&'a RedisServer>);

/// Writes and reads through `rampart` (replicated pools: the reads must come from a replica
/// with `read_policy: replica`), and checks the keys landed in [`DB`] on one primary each
/// and were replicated there.
fn serves_in_db(rampart: &Rampart, sets: &[Set<'_>]) {
    let mut c = rampart.client();
    let keys: Vec<String> = (0..20).map(|i| format!("auth:{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, k]), Reply::ok(), "SET {k}");
    }
    for k in &keys {
        let holders: Vec<&Set<'_>> = sets
            .iter()
            .filter(|(p, _)| get_in(p, DB, k) == Reply::bulk(k))
            .collect();
        assert_eq!(holders.len(), 1, "{k} is in database {DB} of one primary");
        let in_db0 = sets
            .iter()
            .filter(|(p, _)| get_in(p, "0", k) != Reply::Bulk(None))
            .count();
        assert_eq!(in_db0, 0, "{k} must not be in database 0");
        wait_replicated(&holders[0].1, DB, k, k);
    }
    let replicas: Vec<&RedisServer> = sets.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    let before: u64 = replicas.iter().map(|r| gets(r)).sum();
    for k in &keys {
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk(k), "GET {k}");
    }
    let served: u64 = replicas.iter().map(|r| gets(r)).sum::<u64>() - before;
    if !replicas.is_empty() {
        assert_eq!(served, keys.len() as u64, "every read reached a replica");
    }
}

/// With a wrong password, every node is DOWN with WRONGPASS named, and a write is answered
/// with an error that says so (at once, or once the failover hold ends under Sentinel).
fn refuses_with_wrong_password(body: &str, nodes: usize) {
    let bad = start(body, Some(WRONG));
    bad.wait_all_down_because(nodes, &["authentication failed", "WRONGPASS"]);
    let mut c = bad.client();
    c.set_read_timeout(Some(Duration::from_secs(10)));
    let t = Instant::now();
    let r = c.cmd(&["SET", "k", "v"]);
    println!("wrong password: SET answered {r:?} after {:?}", t.elapsed());
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("authentication failed: WRONGPASS")),
        "a write to a primary that refuses the password names why: {r:?}"
    );
}

/// With no password in the pool, every node is DOWN saying authentication is required.
fn refuses_without_password(body: &str, nodes: usize) {
    let none = start(body, None);
    none.wait_all_down_because(nodes, &["authentication required", "NOAUTH"]);
}

#[test]
fn a_servers_pool_with_a_password_serves_in_its_database() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    for s in &servers {
        assert_eq!(r_set_pass(s), Reply::ok());
    }
    let mut body = format!("  redis_db: {DB}\n  servers:\n");
    for (i, s) in servers.iter().enumerate() {
        body.push_str(&format!("   - {}:1 shard{i}\n", s.addr()));
    }
    let good = start(&body, Some(PASS));
    good.wait_all_up(2);
    serves_in_db(&good, &[(&servers[0], vec![]), (&servers[1], vec![])]);

    let bad = start(&body, Some(WRONG));
    bad.wait_all_down_because(2, &["authentication failed", "WRONGPASS"]);
    let r = bad.client().cmd(&["GET", "k"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("authentication failed") && e.contains("WRONGPASS")),
        "a request through a wrong password names the failure: {r:?}"
    );
    refuses_without_password(&body, 2);
}

#[test]
fn a_replica_set_with_a_password_serves_writes_and_replica_reads() {
    let (primary, replicas) = protected_set(2);
    let body = format!(
        "  primary: {}\n  replicas: [{}, {}]\n  read_policy: replica\n  redis_db: {DB}\n{CHECKS}",
        primary.addr(),
        replicas[0].addr(),
        replicas[1].addr()
    );
    let good = start(&body, Some(PASS));
    good.wait_all_up(3);
    serves_in_db(&good, &[(&primary, replicas.iter().collect())]);
    refuses_with_wrong_password(&body, 3);
    refuses_without_password(&body, 3);
}

#[test]
fn a_shards_pool_with_replicas_and_a_password_serves() {
    let (p0, r0) = protected_set(1);
    let (p1, r1) = protected_set(1);
    let body = format!(
        "  shards:\n    - name: a\n      primary: {}\n      replicas: [{}]\n    - name: b\n      primary: {}\n      replicas: [{}]\n  read_policy: replica\n  redis_db: {DB}\n{CHECKS}",
        p0.addr(),
        r0[0].addr(),
        p1.addr(),
        r1[0].addr()
    );
    let good = start(&body, Some(PASS));
    good.wait_all_up(4);
    serves_in_db(&good, &[(&p0, vec![&r0[0]]), (&p1, vec![&r1[0]])]);
    refuses_with_wrong_password(&body, 4);
}

/// The sentinel's own password, distinct from the data nodes' one.
const SENTINEL_PASS: &str = "sentinel-s3cret";

#[test]
fn a_sentinel_pool_with_a_password_serves() {
    let (primary, replicas) = protected_set(2);
    let monitor = Monitor::new("mymaster", primary.port()).auth_pass(PASS);
    let sentinel = Sentinel::start_monitors(&[monitor]);
    // The sentinel can see the replicas only through the primary's INFO, which needs AUTH.
    testkit::wait_until(
        Duration::from_secs(15),
        "the sentinel to learn both replicas",
        || {
            let r = sentinel.cmd(&["SENTINEL", "REPLICAS", "mymaster"]);
            r.as_array().is_some_and(|a| a.len() == 2)
        },
    );
    // The sentinel itself asks for another password than the data nodes.
    assert_eq!(
        sentinel.cmd(&[
            "ACL",
            "SETUSER",
            "default",
            "resetpass",
            &format!(">{SENTINEL_PASS}")
        ]),
        Reply::ok()
    );
    let body = format!(
        "  sentinels: [{}]\n  master: mymaster\n  sentinel_password: {SENTINEL_PASS}\n  read_policy: replica\n  redis_db: {DB}\n{CHECKS}",
        sentinel.addr()
    );
    let good = start(&body, Some(PASS));
    good.wait_all_up(3);
    serves_in_db(&good, &[(&primary, replicas.iter().collect())]);
    refuses_with_wrong_password(&body, 3);
}

#[test]
fn a_planned_switchover_of_a_password_protected_replica_set() {
    let (primary, replicas) = protected_set(1);
    let body = format!(
        "  primary: {}\n  replicas: [{}]\n  failover_hold: 5s\n  redis_db: {DB}\n{CHECKS}",
        primary.addr(),
        replicas[0].addr()
    );
    let rampart = start(&body, Some(PASS));
    rampart.wait_all_up(2);
    let mut c = rampart.client();
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    wait_replicated(&[&replicas[0]], DB, "before", "1");
    c.set_read_timeout(Some(Duration::from_secs(20)));
    let r = c.cmd(&["RAMPART", "SWITCHOVER", POOL]);
    assert!(
        matches!(&r, Reply::Simple(s) if s.contains("switched to")),
        "{r:?}\nlog:\n{}",
        rampart.proxy.stderr()
    );
    let role = |s: &RedisServer| {
        direct(s)
            .cmd(&["ROLE"])
            .as_array()
            .and_then(|a| a.first().cloned())
    };
    assert_eq!(role(&replicas[0]), Some(Reply::bulk("master")));
    assert_eq!(c.cmd(&["SET", "after", "2"]), Reply::ok());
    assert_eq!(get_in(&replicas[0], DB, "after"), Reply::bulk("2"));
    assert_eq!(get_in(&replicas[0], DB, "before"), Reply::bulk("1"));
}
