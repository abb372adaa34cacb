//! Helpers for the high-availability tests: a rampart process over a replica-set or Sentinel
//! pool, the proxy's own view of its nodes (`INFO pools`), per-command counters of the
//! redis-servers, and load generators that record every reply, error and latency.
//!
//! Every wait is bounded; every process is killed by its guard on drop.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

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
        let port = free_port();
        let stats = free_port();
        let yaml = format!(
            "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{body}"
        );
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

/// One `node_<pool>_<shard>_<i>:...` line of the proxy's `INFO pools`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The shard name.
    pub shard: String,
    /// Position of the node in its shard.
    pub index: usize,
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
    /// Requests the proxy sent to it.
    pub requests: i64,
}

impl NodeState {
    fn parse(line: &str) -> Option<NodeState> {
        let (key, fields) = line.trim().split_once(':')?;
        let rest = key.strip_prefix(&format!("node_{POOL}_"))?;
        let (shard, index) = rest.rsplit_once('_')?;
        let field = |name: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
                .to_string()
        };
        Some(NodeState {
            shard: shard.to_string(),
            index: index.parse().ok()?,
            addr: field("addr"),
            role: field("role"),
            seen_role: field("seen_role"),
            up: field("up") == "1",
            ejected: field("ejected") == "1",
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

/// Latency and error figures of a load run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests answered correctly.
    pub ok: u64,
    /// Error replies and I/O failures, with the time since the load started.
    pub errors: Vec<(Duration, String)>,
    /// Replies that answered another request (wrong value).
    pub mismatches: Vec<String>,
    /// Latency of every request (answered or failed), sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }

    /// One line with the figures.
    pub fn summary(&self) -> String {
        format!(
            "ok={} errors={} mismatches={} p50={:?} p99={:?} p999={:?} max={:?}",
            self.ok,
            self.errors.len(),
            self.mismatches.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.latencies.last().copied().unwrap_or_default()
        )
    }
}

/// Threads that GET preloaded keys through the proxy until stopped, checking each value.
pub struct ReadLoad {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<JoinHandle<LoadReport>>,
    started: Instant,
}

impl ReadLoad {
    /// Starts `threads` readers on `addr`, each with its own connection and `read_timeout`.
    pub fn start(
        addr: &str,
        threads: usize,
        keys: &Arc<Vec<(String, String)>>,
        read_timeout: Duration,
    ) -> ReadLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads = (0..threads)
            .map(|t| {
                let (stop, done, keys) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(keys));
                let addr = addr.to_string();
                thread::spawn(move || {
                    read_loop(&addr, t, &keys, read_timeout, &stop, &done, started)
                })
            })
            .collect();
        ReadLoad {
            stop,
            done,
            threads,
            started,
        }
    }

    /// Requests finished so far (all threads).
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops the threads and merges their figures.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = LoadReport::default();
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| panic!("a reader thread panicked"));
            all.ok += r.ok;
            all.errors.extend(r.errors);
            all.mismatches.extend(r.mismatches);
            all.latencies.extend(r.latencies);
        }
        all.latencies.sort();
        all.errors.sort_by_key(|(t, _)| *t);
        all
    }
}

fn read_loop(
    addr: &str,
    t: usize,
    keys: &[(String, String)],
    read_timeout: Duration,
    stop: &AtomicBool,
    done: &AtomicU64,
    started: Instant,
) -> LoadReport {
    let mut r = LoadReport::default();
    let mut conn: Option<Client> = None;
    let mut i = t * 7919;
    while !stop.load(Ordering::Relaxed) {
        i = i.wrapping_add(1);
        let (k, v) = &keys[i % keys.len()];
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Client::try_connect(addr) {
                Ok(mut c) => {
                    c.set_read_timeout(Some(read_timeout));
                    conn.insert(c)
                }
                Err(e) => {
                    r.errors.push((started.elapsed(), format!("connect: {e}")));
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let reply = c.try_cmd(&["GET", k.as_str()]);
        r.latencies.push(t0.elapsed());
        done.fetch_add(1, Ordering::Relaxed);
        match reply {
            Ok(Reply::Bulk(Some(b))) if b == v.as_bytes() => r.ok += 1,
            Ok(Reply::Error(e)) => r.errors.push((started.elapsed(), format!("GET {k}: -{e}"))),
            Ok(other) => r
                .mismatches
                .push(format!("GET {k}: expected {v:?}, got {other:?}")),
            Err(e) => {
                r.errors.push((started.elapsed(), format!("GET {k}: {e}")));
                conn = None;
            }
        }
    }
    r
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The key written.
    pub key: String,
    /// The value written.
    pub value: String,
    /// When the acknowledgement arrived, since the load started.
    pub at: Duration,
}

/// Figures of a write load.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Every acknowledged write.
    pub acks: Vec<Ack>,
    /// Error replies and I/O failures, with the time since the load started.
    pub errors: Vec<(Duration, String)>,
    /// Latency of every write, sorted.
    pub latencies: Vec<Duration>,
}

impl WriteReport {
    /// The longest time during which no write at all was acknowledged, and when it began.
    pub fn longest_pause(&self) -> (Duration, Duration) {
        let mut at: Vec<Duration> = self.acks.iter().map(|a| a.at).collect();
        at.sort();
        at.windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max()
            .unwrap_or_default()
    }

    /// The `q` quantile of the write latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Threads that each `SET k_<thread>_<n> n` for n = 0, 1, 2, ... through the proxy.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<WriteReport>>,
    started: Instant,
    errors: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl WriteLoad {
    /// Starts `threads` writers on `addr`, each with its own connection and `read_timeout`.
    pub fn start(addr: &str, threads: usize, read_timeout: Duration) -> WriteLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let threads = (0..threads)
            .map(|t| {
                let (stop, acked, errors) =
                    (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&errors));
                let addr = addr.to_string();
                thread::spawn(move || {
                    write_loop(&addr, t, read_timeout, &stop, &acked, &errors, started)
                })
            })
            .collect();
        WriteLoad {
            stop,
            acked,
            threads,
            started,
            errors,
        }
    }

    /// Writes acknowledged so far (all threads).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Errors so far (all threads).
    pub fn errors(&self) -> usize {
        self.errors.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops the threads and merges their figures.
    pub fn stop(self) -> WriteReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = WriteReport::default();
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| panic!("a writer thread panicked"));
            all.acks.extend(r.acks);
            all.latencies.extend(r.latencies);
        }
        all.errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        all.errors.sort_by_key(|(t, _)| *t);
        all.latencies.sort();
        all
    }
}

fn write_loop(
    addr: &str,
    t: usize,
    read_timeout: Duration,
    stop: &AtomicBool,
    acked: &AtomicU64,
    errors: &Mutex<Vec<(Duration, String)>>,
    started: Instant,
) -> WriteReport {
    let mut r = WriteReport::default();
    let mut conn: Option<Client> = None;
    let push_err = |msg: String| {
        if let Ok(mut e) = errors.lock() {
            e.push((started.elapsed(), msg));
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Client::try_connect(addr) {
                Ok(mut c) => {
                    c.set_read_timeout(Some(read_timeout));
                    conn.insert(c)
                }
                Err(e) => {
                    push_err(format!("connect: {e}"));
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let key = format!("k_{t}_{n}");
        let value = n.to_string();
        n += 1;
        let t0 = Instant::now();
        let reply = c.try_cmd(&["SET", key.as_str(), value.as_str()]);
        r.latencies.push(t0.elapsed());
        match reply {
            Ok(rep) if rep == Reply::ok() => {
                r.acks.push(Ack {
                    key,
                    value,
                    at: started.elapsed(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => push_err(format!("SET {key}: {other:?}")),
            Err(e) => {
                push_err(format!("SET {key}: {e}"));
                conn = None;
            }
        }
    }
    r
}

/// Waits until `load` has finished `more` further requests, for at most `timeout`; returns
/// whether it did.
pub fn progressed(done: impl Fn() -> u64, more: u64, timeout: Duration) -> bool {
    let start = done();
    poll_until(timeout, || (done() >= start + more).then_some(())).is_some()
}

/// Every command a redis-server executes, as `MONITOR` prints it, collected by a thread.
pub struct CommandTap {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<TapReport>,
}

/// What a [`CommandTap`] saw.
#[derive(Debug, Default)]
pub struct TapReport {
    /// Every MONITOR line.
    pub lines: Vec<String>,
    /// Why the tap ended early (the connection closed), if it did.
    pub ended: Option<String>,
}

impl TapReport {
    /// The lines of command `cmd` (any case) sent by a client other than `except` (an
    /// `ip:port` as MONITOR prints it, such as the primary a replica streams from).
    pub fn commands_not_from(&self, cmd: &str, except: &str) -> Vec<&String> {
        let quoted = format!("\"{}\"", cmd.to_ascii_lowercase());
        self.lines
            .iter()
            .filter(|l| {
                let source = l
                    .split_once('[')
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .and_then(|(inside, _)| inside.split_whitespace().nth(1))
                    .unwrap_or("");
                let command = l.split_once("] ").map_or("", |(_, c)| c);
                command.to_ascii_lowercase().starts_with(&quoted) && source != except
            })
            .collect()
    }
}

impl CommandTap {
    /// Connects to `addr` and starts `MONITOR`.
    ///
    /// # Panics
    /// If MONITOR is not accepted.
    pub fn start(addr: &str) -> CommandTap {
        let mut c = Client::connect(addr);
        assert_eq!(c.cmd(&["MONITOR"]), Reply::ok(), "MONITOR on {addr}");
        c.set_read_timeout(Some(Duration::from_millis(200)));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut r = TapReport::default();
            while !flag.load(Ordering::Relaxed) {
                match c.read_reply() {
                    Ok(Reply::Simple(line)) => r.lines.push(line),
                    Ok(other) => r.lines.push(format!("{other:?}")),
                    Err(e) if testkit::is_timeout(&e) => {}
                    Err(e) => {
                        r.ended = Some(e.to_string());
                        break;
                    }
                }
            }
            r
        });
        CommandTap { stop, handle }
    }

    /// Stops the tap and returns what it saw.
    pub fn stop(self) -> TapReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .unwrap_or_else(|_| panic!("the MONITOR thread panicked"))
    }
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

/// Checks every acknowledged write against `server` with pipelined GETs; returns the
/// writes whose value is not there.
pub fn missing_writes<'a>(server: &RedisServer, acks: &'a [Ack]) -> Vec<&'a Ack> {
    let mut c = Client::connect(&server.addr());
    let mut missing = Vec::new();
    for chunk in acks.chunks(1000) {
        let cmds: Vec<Vec<&str>> = chunk.iter().map(|a| vec!["GET", a.key.as_str()]).collect();
        for (a, r) in chunk.iter().zip(c.pipeline(&cmds)) {
            if r != Reply::bulk(&a.value) {
                missing.push(a);
            }
        }
    }
    missing
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
    /// once every sentinel knows both replicas and the other sentinels, and the proxy routes
    /// to the primary Sentinel names.
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

/// How many errors each writer of a [`WriteLoad`] of `writers` threads got (errors name the
/// key `k_<thread>_<n>`).
pub fn errors_per_writer(report: &WriteReport, writers: usize) -> Vec<usize> {
    let mut per = vec![0; writers];
    for (_, e) in &report.errors {
        let t = e
            .strip_prefix("SET k_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<usize>().ok());
        if let Some(slot) = t.and_then(|t| per.get_mut(t)) {
            *slot += 1;
        }
    }
    per
}
