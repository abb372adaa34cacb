//! The two faces rampart shows cluster-aware clients. Without `cluster_view`, CLUSTER,
//! READONLY, READWRITE, ASKING and INFO's cluster section answer byte for byte as a plain
//! redis-server does. With it, two rampart processes in front of the same two servers present
//! one Redis Cluster of two nodes: redis-cli, redis-py's `RedisCluster` (pinned by
//! `scripts/client-libs.sh`) and ioredis' `Cluster` spread their commands over both instances
//! by slot, and commands whose keys span slots are served whole (no CROSSSLOT).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{raw_exchange, require_pass, Setup};
use testkit::{free_port, Client, Proxy, RedisServer, Reply};

/// A rampart process serving pool `alpha` on `port` over `backends` (a `servers:` pool),
/// with `extra` pool lines (each indented two spaces).
fn rampart(port: u16, backends: &[&RedisServer], extra: &str) -> Proxy {
    let mut yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{extra}  servers:\n"
    );
    for (i, b) in backends.iter().enumerate() {
        yaml.push_str(&format!("   - {}:1 shard{i}\n", b.addr()));
    }
    common::start_rampart(&yaml, port, 2)
}

/// `cluster_view:` listing the instances on `ports`.
fn view(ports: &[u16]) -> String {
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("  cluster_view:\n    nodes: [{}]\n", nodes.join(", "))
}

/// Two servers, and two rampart instances in front of both, each presenting the cluster view
/// of the two instances.
struct TwoInstances {
    servers: Vec<RedisServer>,
    a: Proxy,
    b: Proxy,
}

impl TwoInstances {
    fn start() -> TwoInstances {
        let servers = vec![RedisServer::start(), RedisServer::start()];
        let (pa, pb) = (free_port(), free_port());
        let refs: Vec<&RedisServer> = servers.iter().collect();
        let a = rampart(pa, &refs, &view(&[pa, pb]));
        let b = rampart(pb, &refs, &view(&[pa, pb]));
        TwoInstances { servers, a, b }
    }

    fn ports(&self) -> (u16, u16) {
        (
            self.a.port().unwrap_or_default(),
            self.b.port().unwrap_or_default(),
        )
    }
}

/// `calls=` of `cmdstat_<name>` in the instance's INFO commandstats (0 when absent).
fn calls(addr: &str, name: &str) -> i64 {
    let mut c = Client::connect(addr);
    let text = match c.cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO commandstats: {other:?}"),
    };
    let prefix = format!("cmdstat_{name}:calls=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Every reply of the default face, compared byte for byte with a redis-server started
/// without cluster support.
#[test]
fn without_a_view_cluster_commands_answer_as_a_redis_without_cluster_support() {
    let env = Setup::new(2).start();
    let plain = RedisServer::start();
    let cmds: &[&[&str]] = &[
        &["CLUSTER", "INFO"],
        &["CLUSTER", "SLOTS"],
        &["CLUSTER", "SHARDS"],
        &["CLUSTER", "NODES"],
        &["CLUSTER", "MYID"],
        &["CLUSTER", "HELP"],
        &["CLUSTER", "KEYSLOT", "foo"],
        &["CLUSTER", "ADDSLOTS", "1"],
        &["CLUSTER", "FOO"],
        &["CLUSTER"],
        &["CLUSTER", "KEYSLOT"],
        &["CLUSTER", "INFO", "extra"],
        &["READONLY"],
        &["READWRITE"],
        &["ASKING"],
        &["READONLY", "extra"],
        &["INFO", "cluster"],
        &["QUIT"],
    ];
    let mut bytes = Vec::new();
    for c in cmds {
        bytes.extend_from_slice(&testkit::encode_command(c));
    }
    let got = raw_exchange(&env.addr(), &bytes);
    let want = raw_exchange(&plain.addr(), &bytes);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "rampart vs redis-server"
    );
    // And in RESP3 (INFO is a verbatim string there).
    let mut resp3 = testkit::encode_command(&["HELLO", "3"]);
    resp3.extend_from_slice(&bytes);
    let got = raw_exchange(&env.addr(), &resp3);
    let want = raw_exchange(&plain.addr(), &resp3);
    let after_hello = |b: &[u8]| {
        let t = String::from_utf8_lossy(b).into_owned();
        // The HELLO map differs (client id); compare from the reply after it.
        t.split_once("*0\r\n").map(|(_, rest)| rest.to_string())
    };
    assert_eq!(after_hello(&got), after_hello(&want), "RESP3");
}

/// Each instance answers for the same cluster: the same slot ranges and node ids, itself
/// flagged `myself`, cluster_enabled:1.
#[test]
fn both_instances_describe_the_same_cluster() {
    let two = TwoInstances::start();
    let (pa, pb) = two.ports();
    let mut a = Client::connect(&two.a.addr());
    let mut b = Client::connect(&two.b.addr());
    let slots = a.cmd(&["CLUSTER", "SLOTS"]);
    assert_eq!(slots, b.cmd(&["CLUSTER", "SLOTS"]));
    let ids = (a.cmd(&["CLUSTER", "MYID"]), b.cmd(&["CLUSTER", "MYID"]));
    let (Reply::Bulk(Some(ia)), Reply::Bulk(Some(ib))) = &ids else {
        panic!("MYID: {ids:?}")
    };
    let (ia, ib) = (
        String::from_utf8_lossy(ia).into_owned(),
        String::from_utf8_lossy(ib).into_owned(),
    );
    assert_ne!(ia, ib);
    let node = |port: u16, id: &str| {
        Reply::Array(Some(vec![
            Reply::bulk("127.0.0.1"),
            Reply::Int(port.into()),
            Reply::bulk(id),
            Reply::Array(Some(vec![])),
        ]))
    };
    assert_eq!(
        slots,
        Reply::Array(Some(vec![
            Reply::Array(Some(vec![Reply::Int(0), Reply::Int(8191), node(pa, &ia)])),
            Reply::Array(Some(vec![
                Reply::Int(8192),
                Reply::Int(16383),
                node(pb, &ib)
            ])),
        ]))
    );
    let nodes = match b.cmd(&["CLUSTER", "NODES"]) {
        Reply::Bulk(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
        other => panic!("CLUSTER NODES: {other:?}"),
    };
    assert_eq!(
        nodes,
        format!(
            "{ia} 127.0.0.1:{pa}@0 master - 0 0 1 connected 0-8191\n{ib} 127.0.0.1:{pb}@0 myself,master - 0 0 2 connected 8192-16383\n"
        )
    );
    let info = match a.cmd(&["CLUSTER", "INFO"]) {
        Reply::Bulk(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
        other => panic!("CLUSTER INFO: {other:?}"),
    };
    assert!(
        info.starts_with("cluster_state:ok\r\ncluster_slots_assigned:16384\r\n")
            && info.contains("cluster_known_nodes:2\r\ncluster_size:2\r\n"),
        "{info}"
    );
    assert_eq!(
        a.cmd(&["INFO", "cluster"]),
        Reply::bulk("# Cluster\r\ncluster_enabled:1\r\n")
    );
    assert_eq!(
        a.cmd(&["CLUSTER", "KEYSLOT", "{user1000}.following"]),
        Reply::Int(3443)
    );
    for c in ["READONLY", "READWRITE", "ASKING"] {
        assert_eq!(a.cmd(&[c]), Reply::ok(), "{c}");
    }
    assert_eq!(
        a.cmd(&["CLUSTER", "COUNTKEYSINSLOT", "99999"]),
        Reply::Error("ERR Invalid slot".into())
    );
    let r = a.cmd(&["CLUSTER", "GETKEYSINSLOT", "1", "10"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("keep no index of keys by slot")),
        "{r:?}"
    );
    let r = a.cmd(&["CLUSTER", "ADDSLOTS", "1"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("cluster_view")),
        "{r:?}"
    );
}

/// A view adds no CROSSSLOT: a client that sends multi-key commands across slots to one
/// instance gets them served whole, as without the view.
#[test]
fn commands_across_slots_are_served_whole() {
    let two = TwoInstances::start();
    let mut a = Client::connect(&two.a.addr());
    // foo is slot 12182 and bar 5061: different slots, owned by different instances.
    assert_eq!(a.cmd(&["MSET", "foo", "1", "bar", "2"]), Reply::ok());
    assert_eq!(
        a.cmd(&["MGET", "foo", "bar"]),
        Reply::Array(Some(vec![Reply::bulk("1"), Reply::bulk("2")]))
    );
    assert_eq!(a.cmd(&["DEL", "foo", "bar"]), Reply::Int(2));
    let total: i64 = two
        .servers
        .iter()
        .map(|s| s.cmd(&["DBSIZE"]).as_int().unwrap_or(-1))
        .sum();
    assert_eq!(total, 0);
}

/// redis-cli in cluster mode: `--cluster check` finds every slot covered, and `-c` reads and
/// writes through either instance.
#[test]
fn redis_cli_sees_a_healthy_cluster() {
    let two = TwoInstances::start();
    let (pa, pb) = two.ports();
    let out = Command::new("redis-cli")
        .args(["--cluster", "check", &format!("127.0.0.1:{pa}")])
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[OK] All 16384 slots covered."),
        "redis-cli --cluster check:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (port, key) in [(pa, "foo"), (pb, "bar"), (pa, "bar"), (pb, "foo")] {
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-c", "-p", &port.to_string()])
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("redis-cli: {e}"));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(cli(&["SET", key, &format!("{port}")]), "OK");
        assert_eq!(cli(&["GET", key]), port.to_string());
    }
}

const REDIS_PY_SPREAD: &str = r#"
import sys, time, redis
from redis.cluster import RedisCluster
pa, pb = int(sys.argv[1]), int(sys.argv[2])
rc = RedisCluster(host="127.0.0.1", port=pa)
assert sorted(n.port for n in rc.get_primaries()) == sorted([pa, pb]), rc.get_nodes()
keys = ["py:%d" % i for i in range(1000)]
for k in keys:
    assert rc.set(k, k) is True
for k in keys:
    assert rc.get(k) == k.encode()
# MGET and MSET over slots: the client splits them per slot and node.
assert rc.mget_nonatomic(keys) == [k.encode() for k in keys]
assert rc.mset_nonatomic({"py:m%d" % i: i for i in range(100)}) is not None
assert rc.mget_nonatomic(["py:m%d" % i for i in range(100)]) == [str(i).encode() for i in range(100)]
on_a = sum(1 for k in keys if rc.keyslot(k) <= 8191)
print("on_a", on_a)
print("dbsize", rc.dbsize())
print("scanned", len(list(rc.scan_iter(match="py:[0-9]*", count=500))))
# RESP2 too.
r2 = RedisCluster(host="127.0.0.1", port=pb, protocol=2)
assert r2.get("py:1") == b"py:1"
assert r2.cluster_shards()
print("ready", flush=True)
sys.stdin.readline()
# The instance on pb is gone: keys of its slots fail, keys of pa's slots still answer.
ka = next(k for k in keys if rc.keyslot(k) <= 8191)
kb = next(k for k in keys if rc.keyslot(k) > 8191)
assert rc.get(ka) == ka.encode()
t0 = time.monotonic()
try:
    rc.get(kb)
    print("after_kill served")
except Exception as e:
    print("after_kill", type(e).__name__, str(e)[:200].replace("\n", " "))
print("after_kill took %.2f s" % (time.monotonic() - t0))
assert rc.get(ka) == ka.encode()
print("ok")
"#;

/// redis-py's RedisCluster against two instances: every key set and read, MGET and MSET over
/// slots; each instance served exactly the keys of its slots. Then one instance is killed
/// and what redis-py does is printed (keys of the other instance's slots keep working).
#[test]
fn redis_py_cluster_spreads_keys_over_both_instances() {
    let dir = common::client_libs();
    let mut two = TwoInstances::start();
    let (pa, pb) = two.ports();
    let mut child = Command::new("python3")
        .env("PYTHONPATH", dir.join("py"))
        .args(["-c", REDIS_PY_SPREAD, &pa.to_string(), &pb.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = lines.read_line(&mut line).unwrap_or(0);
        if n == 0 {
            let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            panic!(
                "redis-py ended early: {seen:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = line.trim().to_string();
        seen.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    let on_a: i64 = seen
        .iter()
        .find_map(|l| l.strip_prefix("on_a "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no on_a line: {seen:?}"));
    // Every SET went to the instance that owns its key's slot.
    let (a, b) = (two.a.addr(), two.b.addr());
    assert_eq!(calls(&a, "set"), on_a, "SETs on the first instance");
    assert_eq!(calls(&b, "set"), 1000 - on_a, "SETs on the second instance");
    assert!(on_a > 400 && on_a < 600, "{on_a} of 1000 keys on the first");
    assert!(calls(&a, "mget") > 0 && calls(&b, "mget") > 0);
    // What redis-py's whole-keyspace calls see: DBSIZE asks one node (right), SCAN every
    // master (each key once per instance, since every instance answers for every key).
    let total: i64 = two
        .servers
        .iter()
        .map(|s| s.cmd(&["DBSIZE"]).as_int().unwrap_or(-1))
        .sum();
    assert_eq!(total, 1100);
    let field = |name: &str| -> Option<i64> {
        seen.iter()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
    };
    assert_eq!(field("dbsize "), Some(total), "{seen:?}");
    assert_eq!(field("scanned "), Some(2000), "{seen:?}");

    two.b.kill9();
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    writeln!(stdin).unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success() && rest.trim_end().ends_with("ok"),
        "redis-py after the kill ({}):\n{rest}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // What the client did with the dead instance's slots, for the record.
    eprintln!("{}", rest.trim());
}

const REDIS_PY_AUTH: &str = r#"
import sys, redis
from redis.cluster import RedisCluster
port, password = int(sys.argv[1]), sys.argv[2]
rc = RedisCluster(host="127.0.0.1", port=port, password=password)
for i in range(200):
    assert rc.set("auth:%d" % i, i) is True
assert rc.mget_nonatomic(["auth:%d" % i for i in range(200)]) == [str(i).encode() for i in range(200)]
try:
    RedisCluster(host="127.0.0.1", port=port, password="wrong").get("auth:1")
    raise SystemExit("a wrong password was accepted")
except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as e:
    assert "invalid username-password pair" in str(e), e
    print("wrong password:", type(e).__name__)
print("ok")
"#;

/// A `primary:`/`replicas:` pool with a password and a view of itself alone: RedisCluster
/// authenticates and works; a wrong password is refused.
#[test]
fn redis_py_cluster_with_a_password_over_a_replica_set() {
    const PASSWORD: &str = "s3cret";
    let dir = common::client_libs();
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    for s in [&primary, &replica] {
        assert_eq!(
            s.cmd(&["CONFIG", "SET", "masterauth", PASSWORD]),
            Reply::ok()
        );
        require_pass(s, PASSWORD);
    }
    let port = free_port();
    let yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis_auth: {PASSWORD}\n  read_policy: prefer-replica\n  primary: {}\n  replicas:\n    - {}\n{}",
        primary.addr(),
        replica.addr(),
        view(&[port])
    );
    let proxy = common::start_rampart(&yaml, port, 2);
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["AUTH", PASSWORD]), Reply::ok());
    // The pool's nodes start down until checked; wait until it takes writes.
    testkit::wait_until(std::time::Duration::from_secs(10), "pool ready", || {
        c.cmd(&["SET", "probe", "1"]) == Reply::ok()
    });
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", dir.join("py"))
        .args(["-c", REDIS_PY_AUTH, &port.to_string(), PASSWORD]);
    common::run_script("redis-py with a password", cmd);
}

const IOREDIS: &str = r#"
const Redis = require("ioredis");
const [pa, pb] = process.argv.slice(-2).map(Number);
(async () => {
  const c = new Redis.Cluster([{ host: "127.0.0.1", port: pa }], { enableReadyCheck: true });
  const keys = Array.from({ length: 500 }, (_, i) => `io:${i}`);
  for (const k of keys) {
    if ((await c.set(k, k)) !== "OK") throw new Error("set " + k);
  }
  for (const k of keys) {
    if ((await c.get(k)) !== k) throw new Error("get " + k);
  }
  const ports = c.nodes("master").map((n) => Number(n.options.port)).sort();
  if (JSON.stringify(ports) !== JSON.stringify([pa, pb].sort())) throw new Error("masters " + ports);
  // MGET of keys in two slots: ioredis sends it to the first key's node, which serves it whole.
  const got = await c.mget("io:1", "io:2", "io:3");
  if (JSON.stringify(got) !== JSON.stringify(["io:1", "io:2", "io:3"])) throw new Error("mget " + got);
  c.disconnect();
  console.log("ok");
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// ioredis' Cluster client against the two instances: every key set and read through the
/// instance of its slot; an MGET over slots served whole.
#[test]
fn ioredis_cluster_spreads_keys_over_both_instances() {
    let dir = common::client_libs();
    let two = TwoInstances::start();
    let (pa, pb) = two.ports();
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", dir.join("node/node_modules")).args([
        "-e",
        IOREDIS,
        &pa.to_string(),
        &pb.to_string(),
    ]);
    common::run_script("ioredis Cluster", cmd);
    let (a, b) = (calls(&two.a.addr(), "set"), calls(&two.b.addr(), "set"));
    assert_eq!(a + b, 500);
    assert!(a > 0 && b > 0, "{a} and {b}");
}

const REDIS_PY_ALL: &str = r#"
import sys, time, redis
from redis.cluster import RedisCluster
pa, pb = int(sys.argv[1]), int(sys.argv[2])
rc = RedisCluster(host="127.0.0.1", port=pa)
assert [n.port for n in rc.get_primaries()] == [pa], rc.get_nodes()
assert [n.port for n in rc.get_replicas()] == [pb], rc.get_nodes()
for i in range(200):
    assert rc.set("all:%d" % i, i) is True
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
assert rc.set("all:after", 1) is True
print("moved_after %.2f s" % (time.monotonic() - t0))
assert [n.port for n in rc.get_primaries()] == [pb], rc.get_nodes()
assert rc.get("all:7") == b"7"
print("ok")
"#;

/// `slots: all`: the instance a client asks first answers as the master of every slot and
/// names the other as its replica, so the client sends everything there; when that instance
/// dies, the client asks the other for the map and carries on through it.
#[test]
fn with_slots_all_a_client_stays_on_one_instance_and_moves_when_it_dies() {
    let dir = common::client_libs();
    let servers = [RedisServer::start(), RedisServer::start()];
    let (pa, pb) = (free_port(), free_port());
    let refs: Vec<&RedisServer> = servers.iter().collect();
    let all = |ports: &[u16]| format!("{}    slots: all\n", view(ports));
    let mut a = rampart(pa, &refs, &all(&[pa, pb]));
    let b = rampart(pb, &refs, &all(&[pa, pb]));
    let mut child = Command::new("python3")
        .env("PYTHONPATH", dir.join("py"))
        .args(["-c", REDIS_PY_ALL, &pa.to_string(), &pb.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let mut line = String::new();
    lines.read_line(&mut line).unwrap_or(0);
    if line.trim() != "ready" {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        panic!("redis-py: {line}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(calls(&a.addr(), "set"), 200);
    assert_eq!(calls(&b.addr(), "set"), 0);
    a.kill9();
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    writeln!(stdin).unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success() && rest.trim_end().ends_with("ok"),
        "redis-py after the kill ({}):\n{rest}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", rest.trim());
    assert!(calls(&b.addr(), "set") >= 1);
}

/// A reload (SIGHUP) that changes the view applies to the next command: a node added to the
/// list shows in CLUSTER SLOTS and INFO; removing the view brings the default face back.
#[test]
fn a_reload_changes_the_view() {
    let server = RedisServer::start();
    let (pa, pb) = (free_port(), free_port());
    let proxy = rampart(pa, &[&server], &view(&[pa]));
    let mut c = Client::connect(&proxy.addr());
    let known = |c: &mut Client| match c.cmd(&["CLUSTER", "INFO"]) {
        Reply::Bulk(Some(t)) => String::from_utf8_lossy(&t)
            .lines()
            .find_map(|l| l.strip_prefix("cluster_known_nodes:").map(str::to_string)),
        _ => None,
    };
    assert_eq!(known(&mut c).as_deref(), Some("1"));
    let yaml = std::fs::read_to_string(proxy.dir().join("rampart.yml"))
        .unwrap_or_else(|e| panic!("the configuration file: {e}"));
    let grown = yaml.replace(&view(&[pa]), &view(&[pa, pb]));
    assert_ne!(grown, yaml);
    std::fs::write(proxy.dir().join("rampart.yml"), &grown).unwrap_or_else(|e| panic!("{e}"));
    proxy.signal("HUP");
    testkit::wait_until(std::time::Duration::from_secs(5), "the new view", || {
        known(&mut c).as_deref() == Some("2")
    });
    match c.cmd(&["CLUSTER", "SLOTS"]) {
        Reply::Array(Some(ranges)) => assert_eq!(ranges.len(), 2, "{ranges:?}"),
        other => panic!("CLUSTER SLOTS: {other:?}"),
    }
    std::fs::write(
        proxy.dir().join("rampart.yml"),
        yaml.replace(&view(&[pa]), ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    proxy.signal("HUP");
    testkit::wait_until(std::time::Duration::from_secs(5), "no view", || {
        c.cmd(&["CLUSTER", "INFO"])
            == Reply::Error("ERR This instance has cluster support disabled".into())
    });
    assert_eq!(
        c.cmd(&["INFO", "cluster"]),
        Reply::bulk("# Cluster\r\ncluster_enabled:0\r\n")
    );
}
