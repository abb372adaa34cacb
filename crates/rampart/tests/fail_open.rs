//! A cache pool that fails open, against real redis-servers behind the test fault link: a
//! black-holed shard answers misses within `fail_open_timeout` while the other shards keep
//! their latency, writes are dropped as configured, every miss and drop is counted, only a
//! health check closes the circuit, and a reply that comes after its miss was answered never
//! reaches anyone.
//!
//! Run with `cargo test -p rampart --test fail_open -- --nocapture` to see the figures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use testkit::{free_port, poll_until, Client, FaultLink, Proxy, RedisServer, Reply};

const POOL: &str = "cache";

struct Cache {
    servers: Vec<RedisServer>,
    links: Vec<FaultLink>,
    _proxy: Proxy,
    port: u16,
    admin: u16,
    /// Preloaded keys (`key_i` = `val_i`) by shard index.
    keys: Vec<Vec<(String, String)>>,
}

/// Three shards, each behind a fault link, in a cache pool with `extra` lines.
fn start(extra: &str) -> Cache {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let links: Vec<FaultLink> = servers
        .iter()
        .map(|s| FaultLink::start(&s.addr()))
        .collect();
    let port = free_port();
    let admin = free_port();
    let mut yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  timeout: 1000\n  cache: true\n  fail_open: true\n{extra}  servers:\n"
    );
    for (i, l) in links.iter().enumerate() {
        yaml.push_str(&format!("    - {}:1 s{i}\n", l.addr()));
    }
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("c.yml", &yaml)
        .args(["-c", "{dir}/c.yml", "--workers", "2", "-s"])
        .arg(free_port().to_string())
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    let mut keys = vec![Vec::new(); 3];
    for i in 0..600 {
        let (k, v) = (format!("key_{i}"), format!("val_{i}"));
        assert_eq!(c.cmd(&["SET", &k, &v]), Reply::ok());
        let shard = servers
            .iter()
            .position(|s| s.cmd(&["EXISTS", &k]) == Reply::Int(1))
            .unwrap_or_else(|| panic!("{k} is on no server"));
        keys[shard].push((k, v));
    }
    assert!(
        keys.iter().all(|k| k.len() > 50),
        "keys per shard: {:?}",
        keys.iter().map(Vec::len).collect::<Vec<_>>()
    );
    Cache {
        servers,
        links,
        _proxy: proxy,
        port,
        admin,
        keys,
    }
}

impl Cache {
    /// The `(kind, shard)` of every event in `GET /api/events`.
    fn events(&self) -> Vec<(String, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.admin))
            .unwrap_or_else(|e| panic!("admin: {e}"));
        let req = format!(
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).unwrap_or_else(|e| panic!("{e}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                        (f("kind"), f("shard"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn client(&self) -> Client {
        let mut c = Client::connect(&format!("127.0.0.1:{}", self.port));
        c.set_read_timeout(Some(Duration::from_secs(5)));
        c
    }

    /// `circuit_open`, `fail_open_misses` and `fail_open_drops` of `shard` in `INFO pools`.
    fn shard_info(&self, shard: &str) -> HashMap<String, String> {
        let text = match self.client().cmd(&["INFO", "pools"]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO pools: {other:?}"),
        };
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("shard_{POOL}_{shard}:")))
            .unwrap_or_else(|| panic!("no shard {shard} in INFO: {text}"));
        line.split_once(':')
            .map(|x| x.1)
            .unwrap_or_default()
            .split(',')
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn counter(&self, shard: &str, name: &str) -> i64 {
        self.shard_info(shard)
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    }
}

/// GETs of `keys` in turn for `run`: each latency, and how many answered nil / the value /
/// anything else.
fn read_for(
    c: &mut Client,
    keys: &[(String, String)],
    run: Duration,
) -> (Vec<Duration>, u64, u64, Vec<String>) {
    let (mut lat, mut nil, mut hit, mut other) = (Vec::new(), 0, 0, Vec::new());
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed() < run {
        let (k, v) = &keys[i % keys.len()];
        i += 1;
        let t0 = Instant::now();
        let r = c.cmd(&["GET", k]);
        lat.push(t0.elapsed());
        match r {
            Reply::Bulk(None) => nil += 1,
            Reply::Bulk(Some(b)) if b == v.as_bytes() => hit += 1,
            r => other.push(format!("GET {k}: {r:?}")),
        }
    }
    lat.sort();
    (lat, nil, hit, other)
}

fn p99(lat: &[Duration]) -> Duration {
    lat.get((lat.len().saturating_sub(1)) * 99 / 100)
        .copied()
        .unwrap_or_default()
}

#[test]
fn a_black_holed_shard_answers_misses_in_time_and_the_others_keep_their_latency() {
    let c = start("  fail_open_timeout: 100\n  fail_open_after: 3\n  fail_open_writes: drop\n");
    let (k0, others) = (&c.keys[0], [c.keys[1].clone(), c.keys[2].clone()].concat());
    let (mut a, mut b) = (c.client(), c.client());
    let run = Duration::from_secs(2);
    let before = std::thread::scope(|s| {
        let h = s.spawn(|| read_for(&mut b, &others, run));
        let (_, nil0, hit0, _) = read_for(&mut a, k0, run);
        assert_eq!(nil0, 0);
        assert!(hit0 > 0);
        h.join().unwrap_or_else(|_| panic!("reader"))
    });

    c.links[0].blackhole();
    let ((lat0, nil0, hit0, other0), after) = std::thread::scope(|s| {
        let h = s.spawn(|| read_for(&mut b, &others, run));
        let r0 = read_for(&mut a, k0, run);
        (r0, h.join().unwrap_or_else(|_| panic!("reader")))
    });
    println!(
        "black-holed shard s0: {} GETs, {nil0} misses, {hit0} hits, p99 {:?}, max {:?}",
        lat0.len(),
        p99(&lat0),
        lat0.last().copied().unwrap_or_default()
    );
    println!(
        "other shards: p99 {:?} before ({} GETs), {:?} during ({} GETs)",
        p99(&before.0),
        before.0.len(),
        p99(&after.0),
        after.0.len()
    );
    assert!(other0.is_empty(), "{other0:?}");
    assert_eq!(hit0, 0);
    assert_eq!(nil0 as usize, lat0.len(), "every read of s0 is a miss");
    assert!(
        p99(&lat0) <= Duration::from_millis(150),
        "misses took {:?} at p99 (fail_open_timeout 100 ms)",
        p99(&lat0)
    );
    assert!(after.3.is_empty(), "{:?}", &after.3[..after.3.len().min(5)]);
    assert_eq!(after.1, 0, "other shards answered misses");
    assert!(
        p99(&after.0) <= p99(&before.0) + Duration::from_millis(25),
        "other shards slowed down: p99 {:?} -> {:?}",
        p99(&before.0),
        p99(&after.0)
    );

    // Counted: every miss, on s0 only; the circuit is open.
    let info = c.shard_info("s0");
    assert_eq!(info["circuit_open"], "1", "{info:?}");
    let opened = ("circuit_open".to_string(), "s0".to_string());
    let events = c.events();
    assert!(events.contains(&opened), "{events:?}");
    assert_eq!(c.counter("s0", "fail_open_misses"), nil0 as i64);
    assert_eq!(c.counter("s1", "fail_open_misses"), 0);
    assert_eq!(c.counter("s2", "fail_open_misses"), 0);

    // MGET: nils in the places of s0's keys. Writes: SET dropped as +OK, INCR an error.
    let (x0, x1) = (&k0[0], &c.keys[1][0]);
    assert_eq!(
        a.cmd(&["MGET", &x0.0, &x1.0]),
        Reply::Array(Some(vec![Reply::Bulk(None), Reply::bulk(&x1.1)]))
    );
    assert_eq!(a.cmd(&["SET", &x0.0, "new"]), Reply::ok());
    match a.cmd(&["INCR", &x0.0]) {
        Reply::Error(e) => assert!(e.contains("cannot answer"), "{e}"),
        r => panic!("INCR on an open circuit answered {r:?}"),
    }
    assert_eq!(c.counter("s0", "fail_open_drops"), 1);
    assert_eq!(c.counter("s0", "fail_open_misses"), nil0 as i64 + 1);
    assert_eq!(c.counter("s1", "fail_open_drops"), 0);

    // Only a health check closes it: back in a few check intervals once the link passes.
    c.links[0].pass();
    let t = Instant::now();
    let closed = poll_until(Duration::from_secs(5), || {
        (c.shard_info("s0")["circuit_open"] == "0").then(|| t.elapsed())
    });
    println!("circuit closed {closed:?} after the link passed again");
    assert!(closed.is_some(), "the circuit stayed open");
    let events = c.events();
    assert!(
        events.contains(&("circuit_closed".to_string(), "s0".to_string())),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.0.starts_with("circuit_"))
            .count(),
        2,
        "one open and one close: {events:?}"
    );
    let back = poll_until(Duration::from_secs(5), || {
        (a.cmd(&["GET", &k0[1].0]) == Reply::bulk(&k0[1].1)).then_some(())
    });
    assert!(back.is_some(), "s0 never answered again");
    assert_eq!(
        c.servers[0].cmd(&["GET", &x0.0]),
        Reply::bulk(&x0.1),
        "the dropped SET was not applied"
    );
}

#[test]
fn a_reply_after_its_miss_reaches_no_one() {
    // The circuit never opens here: every request waits its 100 ms, then misses.
    let c = start("  fail_open_timeout: 100\n  fail_open_after: 1000000\n");
    let k0 = &c.keys[0];
    let mut a = c.client();
    assert_eq!(a.cmd(&["GET", &k0[0].0]), Reply::bulk(&k0[0].1));
    c.links[0].delay(Duration::from_millis(400));
    for (k, _) in &k0[1..6] {
        let t = Instant::now();
        assert_eq!(a.cmd(&["GET", k]), Reply::Bulk(None), "{k}");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    // The late replies arrive now; each of the next reads must get its own value.
    c.links[0].pass();
    std::thread::sleep(Duration::from_millis(600));
    for (k, v) in &k0[6..20] {
        assert_eq!(a.cmd(&["GET", k]), Reply::bulk(v), "{k}");
    }
    assert_eq!(c.counter("s0", "fail_open_misses"), 5);
    assert_eq!(c.shard_info("s0")["circuit_open"], "0");
}

#[test]
fn fail_open_needs_a_cache_pool() {
    let port = free_port();
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  redis: true\n  cache: false\n  fail_open: true\n  servers:\n    - 127.0.0.1:1:1\n"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bad.yml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("fail_open: only a cache pool"), "{text}");
}

/// A blocking command or WATCH on a shard whose circuit is open is answered at once with the
/// circuit's error, as every other command of that shard is: it neither opens a connection
/// to the shard nor waits the pool `timeout` (1 s here) for one.
#[test]
fn blocking_commands_and_watch_on_an_open_circuit_answer_at_once() {
    let c = start("  fail_open_after: 1\n  health_check: {interval: 10s}\n");
    let key = c.keys[0][0].0.clone();
    c.links[0].blackhole();
    let mut client = c.client();
    // One timed-out read opens the circuit.
    assert_eq!(client.cmd(&["GET", &key]), Reply::Bulk(None));
    assert_eq!(c.shard_info("s0")["circuit_open"], "1");
    for cmd in [
        vec!["BLPOP", key.as_str(), "0"],
        vec!["BZPOPMIN", key.as_str(), "5"],
        vec!["XREAD", "BLOCK", "0", "STREAMS", key.as_str(), "$"],
        vec!["WATCH", key.as_str()],
    ] {
        let t = Instant::now();
        let reply = client.cmd(&cmd);
        let took = t.elapsed();
        match &reply {
            Reply::Error(e) if e.contains("cannot answer: its circuit is open") => {}
            r => panic!("{cmd:?} on an open circuit answered {r:?}"),
        }
        assert!(took < Duration::from_millis(500), "{cmd:?} took {took:?}");
    }
    // The session goes on: a transaction is refused whole, as before.
    assert_eq!(client.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(client.cmd(&["SET", &key, "x"]), Reply::simple("QUEUED"));
    match client.cmd(&["EXEC"]) {
        Reply::Error(e) if e.contains("circuit is open") => {}
        r => panic!("EXEC on an open circuit answered {r:?}"),
    }
}

/// A write or transaction answered with an error because its reply was late says that it
/// was sent and may still be applied (it is: the transaction runs once the server answers),
/// where a write refused before it was sent (the circuit open) says only that the shard
/// cannot answer.
#[test]
fn a_late_write_error_says_the_write_may_still_be_applied() {
    let c = start("  fail_open_timeout: 100\n  fail_open_after: 1000000\n");
    let (key, other) = (c.keys[0][0].0.clone(), c.keys[0][1].0.clone());
    let mut a = c.client();
    c.links[0].delay(Duration::from_millis(400));
    assert_eq!(a.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(a.cmd(&["SET", &key, "tx"]), Reply::simple("QUEUED"));
    assert_eq!(a.cmd(&["SET", &other, "tx"]), Reply::simple("QUEUED"));
    for reply in [a.cmd(&["EXEC"]), a.cmd(&["INCR", &other])] {
        match &reply {
            Reply::Error(e)
                if e.contains("no reply within fail_open_timeout")
                    && e.contains("may still be applied") => {}
            r => panic!("a late write answered {r:?}"),
        }
    }
    c.links[0].pass();
    poll_until(Duration::from_secs(5), || {
        (c.servers[0].cmd(&["MGET", &key, &other]) == Reply::bulks(["tx", "tx"])).then_some(())
    })
    .expect("the transaction ran once its reply came");
}

/// Bytes read from `c` until `want` bytes came (or the read timed out): a RESP3 reply the
/// test client's RESP2 parser does not take.
fn read_bytes(c: &mut Client, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        match std::io::Read::read(&mut c.stream(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// A client that said `HELLO 3` gets its misses in RESP3, as Redis answers it for a missing
/// key (`_`, the empty set `~0`, the empty map `%0`), both when the reply is late (the first
/// read) and when the circuit is open (the ones after): a RESP3 parser reads them as the
/// types it expects, and an MGET across a live and a gone shard merges both.
#[test]
fn a_resp3_client_gets_its_misses_in_resp3() {
    let c =
        start("  fail_open_after: 1\n  fail_open_timeout: 200\n  health_check: {interval: 10s}\n");
    let (gone, _) = c.keys[0][0].clone();
    let (live, live_value) = c.keys[1][0].clone();
    let mut client = c.client();
    client.send_raw(b"HELLO 3\r\nPING\r\n").expect("send");
    let mut hello = Vec::new();
    while !hello.ends_with(b"+PONG\r\n") {
        let got = read_bytes(&mut client, 1);
        assert!(!got.is_empty(), "no reply to HELLO 3: {hello:?}");
        hello.extend_from_slice(&got);
    }
    c.links[0].blackhole();
    // The late reply: the miss within fail_open_timeout; it opens the circuit.
    client
        .send_raw(format!("GET {gone}\r\n").as_bytes())
        .expect("send");
    assert_eq!(read_bytes(&mut client, 3), b"_\r\n");
    assert_eq!(c.shard_info("s0")["circuit_open"], "1");
    let requests = format!(
        "GET {gone}\r\nHGETALL {gone}\r\nSMEMBERS {gone}\r\nHMGET {gone} a b\r\nLRANGE {gone} 0 -1\r\nMGET {gone} {live}\r\n"
    );
    let want = format!(
        "_\r\n%0\r\n~0\r\n*2\r\n_\r\n_\r\n*0\r\n*2\r\n_\r\n${}\r\n{live_value}\r\n",
        live_value.len()
    );
    client.send_raw(requests.as_bytes()).expect("send");
    let got = read_bytes(&mut client, want.len());
    assert_eq!(String::from_utf8_lossy(&got), want);
}

/// A fail-open `shards:` pool, whose nodes are health-checked: when a shard's primary dies
/// and its replica die (kill -9, so their checks fail and no node of it is left) its reads
/// get their misses and its writes what `fail_open_writes` says, at once, as when its
/// circuit is open: the shard cannot answer, whether live traffic or a health check found
/// it out. Before, every request of it got `no node available for reads` or `no primary
/// available`: fail_open did nothing for a shard its checks had taken out.
#[test]
fn a_checked_shard_whose_nodes_are_down_answers_misses_and_drops() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let replicas: Vec<RedisServer> = servers.iter().map(RedisServer::start_replica_of).collect();
    let port = free_port();
    let mut yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: md5\n  timeout: 1000\n  cache: true\n  fail_open: true\n  fail_open_writes: drop\n  fail_open_after: 1000000\n  health_check: {{interval: 100}}\n  shards:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        yaml.push_str(&format!(
            "    - name: s{i}\n      primary: {}\n      replicas: [{}]\n",
            s.addr(),
            replicas[i].addr()
        ));
    }
    let _proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("c.yml", &yaml)
        .args(["-c", "{dir}/c.yml", "--workers", "2", "-s"])
        .arg(free_port().to_string())
        .wait_port(port)
        .start();
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(5)));
    let info = |c: &mut Client| match c.cmd(&["INFO", "pools"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        r => panic!("INFO pools: {r:?}"),
    };
    // Nodes start down (a fail-open shard answers for them meanwhile) until checked.
    poll_until(Duration::from_secs(5), || {
        let text = info(&mut c);
        let nodes: Vec<&str> = text.lines().filter(|l| l.starts_with("node_")).collect();
        (nodes.len() == 4 && nodes.iter().all(|l| l.contains(",up=1"))).then_some(())
    })
    .unwrap_or_else(|| panic!("nodes not up: {}", info(&mut c)));
    // A key of each shard.
    let mut keys: Vec<Option<String>> = vec![None, None];
    for i in 0..200 {
        let k = format!("key_{i}");
        assert_eq!(c.cmd(&["SET", &k, "v"]), Reply::ok());
        let at = servers
            .iter()
            .position(|s| s.cmd(&["EXISTS", &k]) == Reply::Int(1))
            .unwrap_or_else(|| panic!("{k} is on no server"));
        keys[at].get_or_insert(k);
    }
    let [Some(dead), Some(live)] = [keys[0].clone(), keys[1].clone()] else {
        panic!("no key on one of the shards: {keys:?}")
    };
    let dead_addrs = [servers[0].addr(), replicas[0].addr()];
    let [mut s0, _s1] = <[RedisServer; 2]>::try_from(servers).unwrap_or_else(|_| panic!());
    let [mut r0, _r1] = <[RedisServer; 2]>::try_from(replicas).unwrap_or_else(|_| panic!());
    s0.kill9();
    r0.kill9();
    // Wait, sending nothing to the shard, until its health checks took its nodes out (the
    // circuit cannot open: it would take a million failures).
    poll_until(Duration::from_secs(5), || {
        let text = info(&mut c);
        dead_addrs
            .iter()
            .all(|a| {
                text.lines()
                    .any(|l| l.contains(&format!("addr={a},")) && l.contains(",up=0"))
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the dead nodes are still up: {}", info(&mut c)));

    let t = Instant::now();
    assert_eq!(c.cmd(&["GET", &dead]), Reply::Bulk(None));
    assert_eq!(c.cmd(&["TTL", &dead]), Reply::Int(-2));
    assert_eq!(
        c.cmd(&["MGET", &dead, &live]),
        Reply::Array(Some(vec![Reply::Bulk(None), Reply::bulk("v")]))
    );
    assert_eq!(c.cmd(&["SET", &dead, "w"]), Reply::ok());
    assert_eq!(c.cmd(&["DEL", &dead]), Reply::Int(0));
    assert_eq!(c.cmd(&["MSET", &dead, "m", &live, "m"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", &live]), Reply::bulk("m"));
    // A write with no fixed reply gets the error, naming the shard.
    match c.cmd(&["INCR", &dead]) {
        Reply::Error(e) => assert!(e.contains("'s0'"), "{e}"),
        r => panic!("INCR on a dead shard answered {r:?}"),
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "the dead shard's answers took {took:?}"
    );
    let info = info(&mut c);
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("shard_{POOL}_s0:")))
        .unwrap_or_else(|| panic!("{info}"));
    assert!(
        line.contains("circuit_open=0")
            && line.contains("fail_open_misses=3")
            && line.contains("fail_open_drops=3"),
        "{line}"
    );
}

/// With `fail_open_writes: error`, a write split over shards (MSET, DEL) with a shard whose
/// circuit is open is refused whole: the shard would refuse its part, so no other shard
/// applies its own. Before, the other shards applied theirs and the client got the error.
#[test]
fn a_split_write_over_an_open_circuit_changes_no_shard() {
    let c = start("  fail_open_after: 1\n  health_check: {interval: 10s}\n");
    let (down, _) = c.keys[0][0].clone();
    let (up, up_value) = c.keys[1][0].clone();
    let (up2, up2_value) = c.keys[1][1].clone();
    c.links[0].blackhole();
    let mut client = c.client();
    assert_eq!(client.cmd(&["GET", &down]), Reply::Bulk(None));
    assert_eq!(c.shard_info("s0")["circuit_open"], "1");
    for args in [
        vec!["MSET", up.as_str(), "split", down.as_str(), "split"],
        vec!["DEL", down.as_str(), up2.as_str()],
    ] {
        match client.cmd(&args) {
            Reply::Error(e) if e.contains("'s0'") && e.contains("circuit is open") => {}
            r => panic!("{args:?} over an open circuit answered {r:?}"),
        }
    }
    assert_eq!(
        c.servers[1].cmd(&["MGET", &up, &up2]),
        Reply::bulks([up_value.as_str(), up2_value.as_str()]),
        "a shard applied its part of a split write that answered an error"
    );
}

/// Writes alone open the circuit of a shard whose server is gone, as reads do: each write
/// that cannot reach it (the connection refused, or in its reconnect pause) is a failure
/// in a row, answered with its dropped reply, until `fail_open_after` opens the circuit.
#[test]
fn writes_to_a_dead_server_open_its_circuit() {
    let _ = dead_shard_with_open_circuit();
}

/// A pool whose shard `s0` is killed and gets ten writes (dropped, as `fail_open_writes`
/// says), which open its circuit; the pool, its keys of `s0` written, and a client.
fn dead_shard_with_open_circuit() -> (Cache, Vec<String>, Client) {
    let mut c =
        start("  fail_open_writes: drop\n  fail_open_after: 3\n  health_check: {interval: 10s}\n");
    let keys: Vec<String> = c.keys[0].iter().take(10).map(|(k, _)| k.clone()).collect();
    c.servers[0].kill9();
    let mut client = c.client();
    for k in &keys {
        assert_eq!(client.cmd(&["SET", k, "w"]), Reply::ok(), "SET {k}");
    }
    let info = c.shard_info("s0");
    assert_eq!(info["circuit_open"], "1", "{info:?}");
    assert_eq!(info["fail_open_drops"], "10", "{info:?}");
    (c, keys, client)
}

/// An injected `reset` fault closes the client in a fail-open pool too, as documented.
/// Before, it closed only the fail-open guard's own one-slot queue: the guard then passed
/// an empty reply on, so a pipelined `GET` (reset) and `PING` got `+PONG` alone, which the
/// client took as the `GET`'s reply.
#[test]
fn a_reset_fault_closes_the_client_of_a_fail_open_pool() {
    use std::io::{Read, Write};
    let c = start("");
    let (key, _) = c.keys[0][0].clone();
    let body = format!(r#"{{"pool":"{POOL}","shard":"s0","kind":"reset","duration_s":60}}"#);
    let mut h = std::net::TcpStream::connect(("127.0.0.1", c.admin))
        .unwrap_or_else(|e| panic!("admin: {e}"));
    let req = format!(
        "POST /api/faults HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        c.admin,
        body.len()
    );
    h.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    h.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.port))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let get = format!(
        "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n*1\r\n$4\r\nPING\r\n",
        key.len()
    );
    s.write_all(get.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    let closed = match s.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed && got.is_empty(),
        "a reset client got {:?} (closed: {closed})",
        String::from_utf8_lossy(&got)
    );
}

/// A reload keeps an open circuit open (and its counts): the dead server's requests keep
/// getting their answer at once, none waits `fail_open_timeout` again. Before, every reload
/// closed the circuit, and the next few requests waited until it opened again.
#[test]
fn a_reload_keeps_an_open_circuit_open() {
    let (c, keys, mut client) = dead_shard_with_open_circuit();
    let path = c._proxy.dir().join("c.yml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace("timeout: 1000", "timeout: 900")).expect("write");
    testkit::send_signal(c._proxy.pid(), "HUP");
    let reloaded = poll_until(Duration::from_secs(10), || {
        c._proxy
            .stderr()
            .contains("timeout 1000ms -> 900ms")
            .then_some(())
    });
    assert!(reloaded.is_some(), "no reload:\n{}", c._proxy.stderr());
    let info = c.shard_info("s0");
    assert_eq!(info["circuit_open"], "1", "{info:?}");
    assert_eq!(info["fail_open_drops"], "10", "{info:?}");
    assert_eq!(client.cmd(&["SET", &keys[0], "w"]), Reply::ok());
    assert_eq!(c.shard_info("s0")["fail_open_drops"], "11");
}
