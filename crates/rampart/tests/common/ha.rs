//! Helpers for the high-availability tests: a rampart process over a replica-set or Sentinel
//! pool, the proxy's own view of its nodes (`INFO pools`), per-command counters of the
//! redis-servers, and a Sentinel setup. The load generators are in `ha_load.rs`, which a
//! test declares next to this file as `mod load`.
//!
//! Every wait is bounded; every process is killed by its guard on drop.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::ReadLoad;

use testkit::{free_port, poll_until, Client, FaultLink, Proxy, RedisServer, Reply};

/// Name of the pool in the generated YAML (and of the shard of a short-form pool).
pub const POOL: &str = "alpha";

/// A rampart process serving one pool.
#[derive(Debug)]
pub struct HaProxy {
    /// The process.
    pub proxy: Proxy,
    /// The pool's listen port.
    pub port: u16,
    /// The YAML it was started with.
    pub yaml: String,
}

impl HaProxy {
    /// Starts rampart (2 workers, `RAMPART_LOG=info`) with a pool whose backend and HA keys
    /// are `body`: YAML lines indented by two spaces, as they appear under the pool name.
    ///
    /// # Panics
    /// If the proxy does not start.
    pub fn start(body: &str) -> HaProxy {
        Self::start_pool(
            "  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n",
            body,
        )
    }

    /// The same for a Redis Cluster pool: `body` names its seeds (`cluster: [...]`); keys
    /// are placed by slot, so the pool has no hash or distribution.
    pub fn start_cluster(body: &str) -> HaProxy {
        Self::start_pool("", body)
    }

    fn start_pool(placement: &str, body: &str) -> HaProxy {
        let port = free_port();
        let stats = free_port();
        let yaml = format!("{POOL}:\n  listen: 127.0.0.1:{port}\n{placement}{body}");
        let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
            .file("ha.yml", &yaml)
            .args(["-c", "{dir}/ha.yml", "-a", "127.0.0.1", "--workers", "2"])
            .args(["-s".to_string(), stats.to_string()])
            .env("RAMPART_LOG", "info")
            .wait_port(port)
            .start();
        HaProxy { proxy, port, yaml }
    }

    /// `"127.0.0.1:PORT"` of the pool.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        self.proxy.stderr()
    }

    /// The log lines that contain any of `words` (for failure messages and reports).
    pub fn log_lines(&self, words: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .map(str::to_string)
            .collect()
    }

    /// The proxy's view of every node (`INFO pools`).
    ///
    /// # Panics
    /// If the proxy does not answer INFO.
    pub fn nodes(&self) -> Vec<NodeState> {
        let mut c = Client::connect(&self.addr());
        let text = match c.cmd(&["INFO", "pools"]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO pools: unexpected reply {other:?}"),
        };
        text.lines().filter_map(NodeState::parse).collect()
    }

    /// The proxy's view of the node listed with address `addr`, if it is in the topology.
    pub fn node(&self, addr: &str) -> Option<NodeState> {
        self.nodes().into_iter().find(|n| n.addr == addr)
    }

    /// Waits until every node in `addrs` is in rotation (`up=1`, not ejected).
    ///
    /// # Panics
    /// After `timeout`, with the proxy's view and log.
    pub fn wait_up(&self, addrs: &[String], timeout: Duration) {
        let ok = poll_until(timeout, || {
            let nodes = self.nodes();
            addrs
                .iter()
                .all(|a| nodes.iter().any(|n| &n.addr == a && n.routable()))
                .then_some(())
        });
        if ok.is_none() {
            panic!(
                "nodes {addrs:?} not up after {timeout:?}; proxy view: {:#?}\nlog:\n{}",
                self.nodes(),
                self.log()
            );
        }
    }
}

/// One `node_<pool>_<shard>_<address>:...` line of the proxy's `INFO pools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The shard name.
    pub shard: String,
    /// The address as listed.
    pub addr: String,
    /// `primary` or `replica`: the role the proxy routes it as.
    pub role: String,
    /// The role the node itself last reported.
    pub seen_role: String,
    /// Passes health checks.
    pub up: bool,
    /// Taken out by passive failures (or its shard ejected).
    pub ejected: bool,
    /// `up`, `down`, `ejected`, `maintenance` or `out`.
    pub status: String,
    /// Replication lag in ms (-1: not measured).
    pub lag_ms: i64,
    /// Why it is not up (empty when it is).
    pub reason: String,
    /// Requests the proxy sent to it.
    pub requests: i64,
}

impl NodeState {
    /// One `node_<pool>_<addr>:...` line of `INFO pools`, if it is one.
    pub fn parse(line: &str) -> Option<NodeState> {
        let (key, fields) = line.trim().split_once(':')?;
        key.strip_prefix(&format!("node_{POOL}_"))?;
        let field = |name: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
                .to_string()
        };
        Some(NodeState {
            shard: field("shard"),
            addr: field("addr"),
            role: field("role"),
            seen_role: field("seen_role"),
            up: field("up") == "1",
            ejected: field("ejected") == "1",
            status: field("status"),
            lag_ms: field("lag_ms").parse().unwrap_or(-1),
            reason: field("reason"),
            requests: field("requests").parse().unwrap_or(-1),
        })
    }

    /// In the read rotation as far as health goes.
    pub fn routable(&self) -> bool {
        self.up && !self.ejected
    }
}

/// `calls` of `cmdstat_<cmd>` in the server's `INFO commandstats` (0 when never called), or
/// `None` when the server does not answer.
pub fn try_calls(addr: &str, cmd: &str) -> Option<u64> {
    let mut c = Client::try_connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_millis(500)));
    let text = match c.try_cmd(&["INFO", "commandstats"]).ok()? {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => return None,
    };
    let prefix = format!("cmdstat_{}:", cmd.to_ascii_lowercase());
    let calls = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|f| f.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(calls)
}

/// As [`try_calls`].
///
/// # Panics
/// When the server does not answer.
pub fn calls(addr: &str, cmd: &str) -> u64 {
    try_calls(addr, cmd).unwrap_or_else(|| panic!("INFO commandstats on {addr}: no answer"))
}

/// A primary with `replicas` replicas, every replica synced.
pub fn replica_set(replicas: usize) -> (RedisServer, Vec<RedisServer>) {
    let primary = RedisServer::start();
    let reps = (0..replicas)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    (primary, reps)
}

/// Make every server of a replica set (`primary` and `replicas`) require `pw`, and give it
/// as `masterauth` (the primary too: after a switchover it replicates from a replica).
pub fn protect(primary: &RedisServer, replicas: &[RedisServer], pw: &str) {
    for s in replicas.iter().chain([primary]) {
        assert_eq!(s.cmd(&["CONFIG", "SET", "masterauth", pw]), Reply::ok());
    }
    for s in replicas.iter().chain([primary]) {
        assert_eq!(s.cmd(&["CONFIG", "SET", "requirepass", pw]), Reply::ok());
    }
}

/// Pool lines of the short form over `primary` and `replicas` (addresses), then `extra`
/// (already indented lines).
pub fn short_form(primary: &str, replicas: &[String], extra: &str) -> String {
    let mut y = format!("  primary: {primary}\n  replicas:\n");
    for r in replicas {
        y.push_str(&format!("    - {r}\n"));
    }
    y.push_str(extra);
    y
}

/// Writes `n` keys `key_i` = `val_i` through `addr` and waits until every replica in
/// `replicas` has them (its offset caught up is not observable cheaply, so the last key
/// is polled on each).
pub fn preload(addr: &str, n: usize, replicas: &[&RedisServer]) -> Arc<Vec<(String, String)>> {
    let mut c = Client::connect(addr);
    let kv: Vec<(String, String)> = (0..n)
        .map(|i| (format!("key_{i}"), format!("val_{i}")))
        .collect();
    for chunk in kv.chunks(100) {
        let cmds: Vec<Vec<String>> = chunk
            .iter()
            .map(|(k, v)| vec!["SET".to_string(), k.clone(), v.clone()])
            .collect();
        for r in c.pipeline(&cmds) {
            assert_eq!(r, Reply::ok(), "preload through the proxy");
        }
    }
    let (last_k, last_v) = kv[n - 1].clone();
    for r in replicas {
        let what = format!("replica {} to have the preloaded keys", r.addr());
        testkit::wait_until(Duration::from_secs(5), &what, || {
            r.cmd(&["GET", &last_k]) == Reply::bulk(&last_v)
        });
    }
    Arc::new(kv)
}

/// Field `field` of `SENTINEL MASTER name` on `sentinel`, if present.
pub fn sentinel_field(sentinel: &testkit::Sentinel, name: &str, field: &str) -> Option<String> {
    let reply = sentinel.cmd(&["SENTINEL", "MASTER", name]);
    let items = reply.as_array()?;
    items
        .chunks(2)
        .find(|kv| kv[0].as_str() == Some(field))
        .and_then(|kv| kv.get(1)?.as_str().map(str::to_string))
}

/// Fast health checks: a dead node leaves rotation in well under a second.
pub const FAST_CHECKS: &str =
    "  health_check:\n    interval: 100ms\n    timeout: 100ms\n    fall: 2\n    rise: 2\n";

/// The Sentinel master name of [`SentinelSetup`].
pub const MASTER: &str = "mymaster";

/// A primary, two replicas, three sentinels (quorum 2, down after 1 s, failover timeout 5 s)
/// and a Sentinel pool (`sentinels:` + `master:`) over them.
pub struct SentinelSetup {
    /// The first primary.
    pub primary: RedisServer,
    /// Its replicas.
    pub replicas: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<testkit::Sentinel>,
    /// The proxy.
    pub proxy: HaProxy,
}

impl SentinelSetup {
    /// Starts everything; the pool has [`FAST_CHECKS`] and the extra lines `extra`. Returns
    /// once every sentinel knows both replicas and the other sentinels, the proxy routes to
    /// the primary Sentinel names, and both replicas are in the proxy's rotation.
    ///
    /// # Panics
    /// If any of that does not happen in time.
    pub fn start(extra: &str) -> SentinelSetup {
        let (primary, replicas) = replica_set(2);
        let monitor = testkit::Monitor::new(MASTER, primary.port())
            .quorum(2)
            .down_after(Duration::from_millis(1000))
            .failover_timeout(Duration::from_millis(5000));
        let sentinels: Vec<testkit::Sentinel> = (0..3)
            .map(|_| testkit::Sentinel::start_monitors(std::slice::from_ref(&monitor)))
            .collect();
        let t0 = Instant::now();
        for s in &sentinels {
            testkit::wait_until(
                Duration::from_secs(15),
                "sentinels to know both replicas and each other",
                || {
                    let n = |f| sentinel_field(s, MASTER, f).and_then(|v| v.parse::<u32>().ok());
                    n("num-slaves") == Some(2) && n("num-other-sentinels") == Some(2)
                },
            );
        }
        println!("sentinels agreed on the topology in {:?}", t0.elapsed());
        let mut body = String::from("  sentinels:\n");
        for s in &sentinels {
            body.push_str(&format!("    - {}\n", s.addr()));
        }
        body.push_str(&format!("  master: {MASTER}\n{FAST_CHECKS}{extra}"));
        let proxy = HaProxy::start(&body);
        let addr = primary.addr();
        let ready = poll_until(Duration::from_secs(5), || {
            proxy
                .node(&addr)
                .filter(|n| n.role == "primary" && n.routable())
        });
        assert!(
            ready.is_some(),
            "the proxy never routed to the primary Sentinel names; view {:#?}\nlog:\n{}",
            proxy.nodes(),
            proxy.log()
        );
        // Replicas pass their checks a few intervals later; a switchover or a replica read
        // asked before that finds no healthy replica.
        let replica_addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
        proxy.wait_up(&replica_addrs, Duration::from_secs(10));
        SentinelSetup {
            primary,
            replicas,
            sentinels,
            proxy,
        }
    }

    /// Waits until the first sentinel names another primary than the first one; returns the
    /// time since `since` and the new primary's port.
    ///
    /// # Panics
    /// After `timeout`, with the sentinel's log.
    pub fn wait_switch(&self, since: Instant, timeout: Duration) -> (Duration, u16) {
        let old = self.primary.port();
        poll_until(timeout, || {
            self.sentinels[0]
                .master_addr(MASTER)
                .filter(|(_, port)| *port != old)
                .map(|(_, port)| (since.elapsed(), port))
        })
        .unwrap_or_else(|| {
            panic!(
                "no failover within {timeout:?}; sentinel log:\n{}",
                self.sentinels[0].log()
            )
        })
    }

    /// The node (the first primary or a replica) listening on `port`.
    ///
    /// # Panics
    /// If none does.
    pub fn node_on(&self, port: u16) -> &RedisServer {
        if self.primary.port() == port {
            return &self.primary;
        }
        self.replica_on(port)
    }

    /// Every sentinel's failover events, for failure messages.
    pub fn failover_log(&self) -> String {
        let mut out = String::new();
        for (i, x) in self.sentinels.iter().enumerate() {
            out.push_str(&format!("\nsentinel {i} ({}):", x.addr()));
            for l in x.log().lines().filter(|l| {
                [
                    "failover",
                    "promoted",
                    "switch-master",
                    "sdown",
                    "odown",
                    "convert",
                    "config-update",
                ]
                .iter()
                .any(|w| l.contains(w))
            }) {
                out.push_str(&format!("\n  {l}"));
            }
        }
        out
    }

    /// The replica listening on `port`.
    ///
    /// # Panics
    /// If none does.
    pub fn replica_on(&self, port: u16) -> &RedisServer {
        self.replicas
            .iter()
            .find(|r| r.port() == port)
            .unwrap_or_else(|| panic!("Sentinel promoted an unknown port {port}"))
    }
}

/// The `cmdstat_get` calls of each server.
pub fn gets(servers: &[&RedisServer]) -> Vec<u64> {
    servers.iter().map(|s| calls(&s.addr(), "get")).collect()
}

/// Element-wise `after - before`.
pub fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Share of GETs served by a replica reached through a link that adds 50 ms each way, and
/// the read latency, under `read_policy`; compared with the same load before the delay.
pub fn slow_replica_run(policy: &str) {
    let (primary, replicas) = replica_set(2);
    let link = FaultLink::start(&replicas[1].addr());
    // Checks tolerate the slow link: the policy, not the health checks, must avoid it.
    let checks =
        "  health_check:\n    interval: 100ms\n    timeout: 1s\n    fall: 2\n    rise: 2\n";
    let body = short_form(
        &primary.addr(),
        &[replicas[0].addr(), link.addr()],
        &format!("  read_policy: {policy}\n{checks}"),
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr(), link.addr()],
        Duration::from_secs(5),
    );
    let keys = preload(&proxy.addr(), 500, &[&replicas[0], &replicas[1]]);
    let servers = [&primary, &replicas[0], &replicas[1]];
    let measure = |secs: u64| {
        let before = gets(&servers);
        let load = ReadLoad::start(&proxy.addr(), 4, &keys, Duration::from_secs(3));
        std::thread::sleep(Duration::from_secs(secs));
        let report = load.stop();
        (delta(&gets(&servers), &before), report)
    };
    let (base_split, base) = measure(1);
    link.delay(Duration::from_millis(50));
    let _ = measure(1); // the policy learns
    let (split, slow) = measure(3);
    let share = split[2] as f64 / (split[1] + split[2]).max(1) as f64;
    let slow_node = proxy.node(&link.addr());
    println!(
        "{policy}: before the delay primary/fast/slow served {base_split:?}; {}",
        base.summary()
    );
    println!(
        "{policy}: with 50 ms each way on one replica, primary/fast/slow served {split:?} (slow share {:.2}%); {}",
        share * 100.0,
        slow.summary()
    );
    println!("{policy}: proxy view of the slow replica: {slow_node:?}");
    assert!(
        slow.errors.is_empty() && slow.mismatches.is_empty(),
        "{}",
        slow.summary()
    );
    assert!(
        share < 0.05,
        "{policy}: the slow replica still got {:.1}% of the reads",
        share * 100.0
    );
    let bound = base.quantile(0.99) + Duration::from_millis(20);
    assert!(
        slow.quantile(0.99) < bound,
        "{policy}: read p99 {:?} with a slow replica vs {:?} before",
        slow.quantile(0.99),
        base.quantile(0.99)
    );
}

/// A primary, two replicas and a short-form pool over them with `read_policy`, every node in
/// rotation and `keys` keys preloaded and replicated.
pub struct ReadSetup {
    /// The primary.
    pub primary: RedisServer,
    /// Its two replicas.
    pub replicas: Vec<RedisServer>,
    /// The proxy.
    pub proxy: HaProxy,
    /// The preloaded keys and values.
    pub keys: Arc<Vec<(String, String)>>,
}

/// Starts a [`ReadSetup`]: [`FAST_CHECKS`], `read_policy`, then the extra pool lines `extra`.
///
/// # Panics
/// If a process does not start or a node does not come up within 5 s.
pub fn read_setup(read_policy: &str, extra: &str) -> ReadSetup {
    let (primary, replicas) = replica_set(2);
    let addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
    let body = short_form(
        &primary.addr(),
        &addrs,
        &format!("  read_policy: {read_policy}\n{FAST_CHECKS}{extra}"),
    );
    let proxy = HaProxy::start(&body);
    let mut all = vec![primary.addr()];
    all.extend(addrs);
    proxy.wait_up(&all, Duration::from_secs(5));
    let keys = preload(&proxy.addr(), 500, &[&replicas[0], &replicas[1]]);
    ReadSetup {
        primary,
        replicas,
        proxy,
        keys,
    }
}
