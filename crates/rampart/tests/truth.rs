//! One truth about each node: a dead node reads the same in INFO `pools`, `/metrics`, the
//! stats JSON and `/api/topology` (which the page renders) for every kind of pool; replication
//! lag comes from offsets, so an idle replica stays in rotation and one really behind leaves;
//! a node Sentinel lists as down stays visible after a failover; failovers are counted when
//! they happen and a start is not one; a cache pool stays ready with a dead shard.
//!
//! Each test prints what it measured; run with
//! `cargo test -p rampart --test truth -- --nocapture` to see the figures.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ha::{calls, replica_set, short_form, SentinelSetup, FAST_CHECKS, MASTER};
use serde_json::Value;
use testkit::{free_port, poll_until, Client, FaultLink, Proxy, RedisServer, Reply};

const POOL: &str = "alpha";

/// A rampart process with its pool, admin and stats ports.
struct Rampart {
    proxy: Proxy,
    port: u16,
    admin: u16,
    stats: u16,
}

fn start(body: &str) -> Rampart {
    let (port, admin, stats) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{body}"
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("t.yml", &yaml)
        .args(["-c", "{dir}/t.yml", "-a", "127.0.0.1", "--workers", "2"])
        .args(["-s".to_string(), stats.to_string()])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .env("RAMPART_LOG", "info")
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    Rampart {
        proxy,
        port,
        admin,
        stats,
    }
}

/// One HTTP GET as curl sends it; the status and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of one Prometheus series (exact name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What one report says about a node: up, and writable (the primary of a shard taking writes).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    up: bool,
    writable: bool,
}

impl Rampart {
    fn client(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.port))
    }

    fn info(&self) -> String {
        match self.client().cmd(&["INFO", "pools"]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO pools: {other:?}"),
        }
    }

    /// The fields of the INFO line of the node at `addr`.
    fn info_node(&self, addr: &str) -> Option<HashMap<String, String>> {
        let info = self.info();
        info.lines().find_map(|l| {
            let (key, value) = l.trim().split_once(':')?;
            key.starts_with(&format!("node_{POOL}_")).then_some(())?;
            let fields: HashMap<String, String> = value
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (fields.get("addr").map(String::as_str) == Some(addr)).then_some(fields)
        })
    }

    fn topology(&self) -> Value {
        let (status, body) = http_get(self.admin, "/api/topology");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// The shard and node of `/api/topology` at `addr`.
    fn api_node(&self, addr: &str) -> Option<(Value, Value)> {
        let topo = self.topology();
        for p in topo["pools"].as_array().into_iter().flatten() {
            for s in p["shards"].as_array().into_iter().flatten() {
                for n in s["nodes"].as_array().into_iter().flatten() {
                    if n["addr"] == addr {
                        return Some((s.clone(), n.clone()));
                    }
                }
            }
        }
        None
    }

    fn stats_json(&self) -> Value {
        let mut raw = String::new();
        TcpStream::connect(("127.0.0.1", self.stats))
            .and_then(|mut s| s.read_to_string(&mut raw))
            .unwrap_or_else(|e| panic!("stats port: {e}"));
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"))
    }

    /// What INFO, /metrics, the stats port and /api/topology say about the node at `addr`,
    /// asserted equal; returns it with the reason INFO and the API give (equal too).
    fn seen_everywhere(&self, addr: &str) -> (Seen, String) {
        // The reports are read one after the other; while the node is changing state (a
        // check passing as we read) they may differ for a moment, so wait (bounded) for a
        // moment when all four agree, then assert on one more reading.
        let _ = testkit::poll_until(std::time::Duration::from_secs(5), || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.seen_once(addr))).ok()
        });
        self.seen_once(addr)
    }

    /// One reading of [`Self::seen_everywhere`].
    fn seen_once(&self, addr: &str) -> (Seen, String) {
        let (shard, node) = self
            .api_node(addr)
            .unwrap_or_else(|| panic!("{addr} not in /api/topology"));
        let shard_name = shard["name"].as_str().unwrap_or_default().to_string();
        let api = Seen {
            up: node["up"] == true,
            writable: node["writable"] == true,
        };
        let f = self
            .info_node(addr)
            .unwrap_or_else(|| panic!("{addr} not in INFO pools:\n{}", self.info()));
        let info = Seen {
            up: f["up"] == "1",
            writable: f["writable"] == "1",
        };
        let (_, metrics) = http_get(self.admin, "/metrics");
        let labels = format!("{{pool=\"{POOL}\",shard=\"{shard_name}\",node=\"{addr}\"}}");
        let shard_labels = format!("{{pool=\"{POOL}\",shard=\"{shard_name}\"}}");
        let up = sample(&metrics, &format!("rampart_node_up{labels}"));
        let shard_writable = sample(&metrics, &format!("rampart_shard_writable{shard_labels}"));
        let metric = Seen {
            up: up == Some(1.0),
            writable: shard_writable == Some(1.0) && node["role"] == "primary",
        };
        let key = node["label"].as_str().unwrap_or_default();
        let stats = &self.stats_json()[POOL][key];
        let port = Seen {
            up: stats["server_up"] == 1,
            writable: stats["server_writable"] == 1,
        };
        assert_eq!(info, api, "INFO vs /api/topology for {addr}: {f:?} {node}");
        assert_eq!(metric, api, "/metrics vs /api/topology for {addr}: {node}");
        assert_eq!(
            port, api,
            "stats port vs /api/topology for {addr}: {stats} {node}"
        );
        if node["role"] == "primary" {
            assert_eq!(shard["writable"] == true, api.writable, "{shard}");
        }
        let reason = node["reason"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            f.get("reason").map(String::as_str).unwrap_or_default(),
            reason.replace(',', ";"),
            "INFO and /api/topology give the same reason"
        );
        (api, reason)
    }

    /// Waits until INFO says the node at `addr` has `field=value`.
    fn wait_info(&self, addr: &str, field: &str, value: &str, timeout: Duration) {
        let ok = poll_until(timeout, || {
            self.info_node(addr)
                .filter(|f| f.get(field).map(String::as_str) == Some(value))
        });
        assert!(
            ok.is_some(),
            "{addr} never had {field}={value}; INFO:\n{}\nlog:\n{}",
            self.info(),
            self.proxy.stderr()
        );
    }

    fn events(&self) -> Vec<Value> {
        let (_, body) = http_get(self.admin, "/api/events");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

#[test]
fn a_dead_servers_node_reads_the_same_everywhere_and_its_changes_are_events() {
    let mut redis: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let (a0, a1) = (redis[0].addr(), redis[1].addr());
    let r = start(&format!("  servers:\n   - {a0}:1 s0\n   - {a1}:1 s1\n"));
    let mut c = r.client();
    for i in 0..20 {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    for a in [&a0, &a1] {
        let (seen, _) = r.seen_everywhere(a);
        assert_eq!(
            seen,
            Seen {
                up: true,
                writable: true
            },
            "{a} before the kill"
        );
    }

    redis[1].kill9();
    let t = Instant::now();
    for i in 0..20 {
        let _ = c.cmd(&["GET", &format!("k{i}")]);
    }
    r.wait_info(&a1, "up", "0", Duration::from_secs(5));
    println!(
        "dead servers: node seen down {:?} after the kill (traffic right after it)",
        t.elapsed()
    );
    let (seen, reason) = r.seen_everywhere(&a1);
    assert_eq!(
        seen,
        Seen {
            up: false,
            writable: false
        }
    );
    assert!(
        reason.contains("refused") || reason.contains("closed"),
        "the reason names the failure: {reason}"
    );
    assert_eq!(
        r.seen_everywhere(&a0).0,
        Seen {
            up: true,
            writable: true
        }
    );
    let (status, body) = http_get(r.admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("{POOL}/s1")) && body.contains(&a1),
        "{body}"
    );
    let down = r.events();
    assert!(
        down.iter()
            .any(|e| e["kind"] == "node_down" && e["node"] == a1.as_str()),
        "a node_down event for {a1}: {down:?}"
    );

    // Back: the next reply marks it up again, everywhere, with an event.
    redis[1].restart();
    let back = poll_until(Duration::from_secs(10), || {
        for i in 0..20 {
            let _ = c.cmd(&["GET", &format!("k{i}")]);
        }
        (r.info_node(&a1)?.get("up")? == "1").then_some(())
    });
    assert!(back.is_some(), "never up again:\n{}", r.info());
    assert_eq!(
        r.seen_everywhere(&a1).0,
        Seen {
            up: true,
            writable: true
        }
    );
    assert!(r
        .events()
        .iter()
        .any(|e| e["kind"] == "node_up" && e["node"] == a1.as_str()));
    assert_eq!(http_get(r.admin, "/readyz").0, 200);
}

#[test]
fn a_cache_pool_stays_ready_with_one_dead_shard() {
    let mut redis: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let (a0, a1) = (redis[0].addr(), redis[1].addr());
    let r = start(&format!(
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 30000\n  servers:\n   - {a0}:1 s0\n   - {a1}:1 s1\n"
    ));
    let mut c = r.client();
    redis[1].kill9();
    for i in 0..20 {
        let _ = c.cmd(&["GET", &format!("k{i}")]);
    }
    r.wait_info(&a1, "up", "0", Duration::from_secs(5));
    assert_eq!(
        r.seen_everywhere(&a1).0,
        Seen {
            up: false,
            writable: false
        }
    );
    let (status, body) = http_get(r.admin, "/readyz");
    assert_eq!(
        status, 200,
        "one dead shard of a cache pool: still ready: {body}"
    );
    assert!(r
        .info()
        .contains(&format!("pool_{POOL}:kind=twemproxy,shards=2")));
    redis[0].kill9();
    for i in 0..20 {
        let _ = c.cmd(&["GET", &format!("k{i}")]);
    }
    r.wait_info(&a0, "up", "0", Duration::from_secs(5));
    let (status, body) = http_get(r.admin, "/readyz");
    assert_eq!(status, 503, "no shard left: {body}");
}

#[test]
fn a_dead_replica_reads_the_same_everywhere() {
    let (primary, mut replicas) = replica_set(1);
    let rep = replicas[0].addr();
    let r = start(&short_form(
        &primary.addr(),
        std::slice::from_ref(&rep),
        &format!("  read_policy: prefer-replica\n{FAST_CHECKS}"),
    ));
    r.wait_info(&rep, "status", "up", Duration::from_secs(10));
    assert_eq!(
        r.seen_everywhere(&rep).0,
        Seen {
            up: true,
            writable: false
        }
    );
    assert_eq!(
        r.seen_everywhere(&primary.addr()).0,
        Seen {
            up: true,
            writable: true
        }
    );
    replicas[0].kill9();
    r.wait_info(&rep, "up", "0", Duration::from_secs(5));
    let (seen, reason) = r.seen_everywhere(&rep);
    assert_eq!(
        seen,
        Seen {
            up: false,
            writable: false
        }
    );
    assert!(!reason.is_empty());
    println!("dead replica: reason {reason:?}");
    assert_eq!(
        r.seen_everywhere(&primary.addr()).0,
        Seen {
            up: true,
            writable: true
        }
    );
}

/// The replica's GET calls and the primary's, read `n` times through the proxy.
fn read_through(r: &Rampart, primary: &RedisServer, replica: &RedisServer, n: usize) -> (u64, u64) {
    let before = (calls(&primary.addr(), "get"), calls(&replica.addr(), "get"));
    let mut c = r.client();
    for _ in 0..n {
        let got = c.cmd(&["GET", "k"]);
        assert!(matches!(got, Reply::Bulk(_)), "{got:?}");
    }
    (
        calls(&primary.addr(), "get") - before.0,
        calls(&replica.addr(), "get") - before.1,
    )
}

#[test]
fn an_idle_caught_up_replica_stays_in_rotation() {
    let (primary, replicas) = replica_set(1);
    let rep = replicas[0].addr();
    let r = start(&short_form(
        &primary.addr(),
        std::slice::from_ref(&rep),
        "  read_policy: prefer-replica\n  max_replica_lag: 2s\n",
    ));
    r.wait_info(&rep, "status", "up", Duration::from_secs(10));
    assert_eq!(primary.cmd(&["SET", "k", "v"]), Reply::ok());
    // Idle: no writes for 25 s (Redis pings its replicas every 10 s). Every read goes to the
    // replica and the lag stays small.
    let t = Instant::now();
    let mut max_lag = 0i64;
    let mut to_primary = 0;
    while t.elapsed() < Duration::from_secs(25) {
        to_primary += read_through(&r, &primary, &replicas[0], 5).0;
        let f = r.info_node(&rep).unwrap_or_default();
        let lag: i64 = f.get("lag_ms").and_then(|v| v.parse().ok()).unwrap_or(-1);
        assert_eq!(
            f.get("status").map(String::as_str),
            Some("up"),
            "at {:?}: {f:?}",
            t.elapsed()
        );
        max_lag = max_lag.max(lag);
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "idle replica for 25 s: largest lag {max_lag} ms, reads sent to the primary {to_primary}"
    );
    assert_eq!(to_primary, 0, "reads never left the replica");
    assert!((0..1000).contains(&max_lag), "lag {max_lag} ms");
}

#[test]
fn a_replica_really_behind_leaves_the_rotation_and_comes_back() {
    let primary = RedisServer::start();
    let link = FaultLink::start(&primary.addr());
    let replica = RedisServer::start();
    let port = link.port().to_string();
    assert_eq!(replica.cmd(&["REPLICAOF", "127.0.0.1", &port]), Reply::ok());
    replica.wait_replication_up(Duration::from_secs(10));
    let rep = replica.addr();
    let r = start(&short_form(
        &primary.addr(),
        std::slice::from_ref(&rep),
        "  read_policy: prefer-replica\n  max_replica_lag: 2s\n",
    ));
    assert_eq!(primary.cmd(&["SET", "k", "v"]), Reply::ok());
    r.wait_info(&rep, "status", "up", Duration::from_secs(10));

    // The replication stream now arrives 5 s late while the primary takes writes.
    link.delay(Duration::from_secs(5));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, addr) = (std::sync::Arc::clone(&stop), primary.addr());
        std::thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.cmd(&["SET", "w", &i.to_string()]);
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t = Instant::now();
    r.wait_info(&rep, "status", "out", Duration::from_secs(10));
    let left = t.elapsed();
    let f = r.info_node(&rep).unwrap_or_default();
    println!("replica behind: out of rotation {left:?} after its stream was delayed: {f:?}");
    assert!(f["reason"].contains("lag"), "{f:?}");
    let lag: i64 = f["lag_ms"].parse().unwrap_or(-1);
    assert!(lag > 2000, "{f:?}");
    assert_eq!(
        read_through(&r, &primary, &replica, 20),
        (20, 0),
        "reads left the replica"
    );
    let (seen, _) = r.seen_everywhere(&rep);
    assert_eq!(
        seen,
        Seen {
            up: true,
            writable: false
        }
    );

    link.pass();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    let t = Instant::now();
    r.wait_info(&rep, "status", "up", Duration::from_secs(15));
    println!(
        "caught up: back in rotation {:?} after the link was restored",
        t.elapsed()
    );
    assert_eq!(read_through(&r, &primary, &replica, 20).1, 20);
}

#[test]
fn after_a_failover_the_dead_old_primary_stays_visible_and_is_counted_once() {
    let mut setup = SentinelSetup::start("");
    let mut body = String::from("  sentinels:\n");
    for s in &setup.sentinels {
        body.push_str(&format!("    - {}\n", s.addr()));
    }
    body.push_str(&format!("  master: {MASTER}\n{FAST_CHECKS}"));
    let r = start(&body);
    let old = setup.primary.addr();
    r.wait_info(&old, "writable", "1", Duration::from_secs(10));
    let failovers = |r: &Rampart| {
        let (_, m) = http_get(r.admin, "/metrics");
        sample(
            &m,
            &format!("rampart_shard_failovers_total{{pool=\"{POOL}\",shard=\"{MASTER}\"}}"),
        )
    };
    assert_eq!(failovers(&r), Some(0.0), "a start is not a failover");
    assert!(!r.events().iter().any(|e| e["kind"] == "failover"));

    setup.primary.kill9();
    let t = Instant::now();
    let (_, port) = setup.wait_switch(t, Duration::from_secs(20));
    let new = format!("127.0.0.1:{port}");
    r.wait_info(&new, "writable", "1", Duration::from_secs(10));
    // Sentinel keeps the old primary as a replica it marks s_down: shown DOWN, with why.
    let listed = poll_until(Duration::from_secs(20), || {
        r.info_node(&old)
            .filter(|f| f["reason"].contains("Sentinel lists it as down"))
    });
    assert!(
        listed.is_some(),
        "the old primary is not shown down by Sentinel's list; INFO:\n{}\n{}",
        r.info(),
        setup.failover_log()
    );
    println!("old primary after the failover: {listed:?}");
    let (seen, reason) = r.seen_everywhere(&old);
    assert_eq!(
        seen,
        Seen {
            up: false,
            writable: false
        }
    );
    assert!(reason.contains("s_down"), "{reason}");
    let (_, node) = r.api_node(&old).unwrap_or_default();
    assert_eq!(
        node["status"], "down",
        "the page counts it among the nodes down: {node}"
    );
    assert_eq!(failovers(&r), Some(1.0));
}
