//! Faults injected into live traffic through the admin API (`/api/faults`), against a real
//! rampart process and real redis-servers: a delay shows in latency and keeps the server's
//! order, an error answers its text and sends nothing, a black hole answers at the deadline, a
//! reset closes the client, and every fault ends by itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

const POOL: &str = "alpha";

struct Rampart {
    _proxy: Proxy,
    port: u16,
    admin: u16,
}

/// rampart over `servers` (shards `s0`, `s1`, ...) with the extra pool lines `extra`.
fn start(servers: &[RedisServer], extra: &str) -> Rampart {
    let port = free_port();
    let admin = free_port();
    let mut yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{extra}  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        yaml.push_str(&format!("    - {}:1 s{i}\n", s.addr()));
    }
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("f.yml", &yaml)
        .args(["-c", "{dir}/f.yml", "--workers", "2", "-s"])
        .arg(free_port().to_string())
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    Rampart {
        _proxy: proxy,
        port,
        admin,
    }
}

impl Rampart {
    fn client(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.port))
    }

    /// `POST /api/faults` with `body`; the status and the reply's JSON.
    fn inject(&self, body: &str) -> (u16, Value) {
        let (status, text) = http(self.admin, "POST", "/api/faults", body);
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    /// Injects a fault that must be accepted; its id.
    fn fault(&self, body: &str) -> u64 {
        let (status, v) = self.inject(body);
        assert_eq!(status, 201, "POST /api/faults {body}: {v}");
        v["id"].as_u64().unwrap_or_else(|| panic!("no id: {v}"))
    }

    fn faults(&self) -> Vec<Value> {
        let (status, text) = http(self.admin, "GET", "/api/faults", "");
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["faults"].as_array().cloned().unwrap_or_default()
    }

    fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = http(self.admin, "GET", "/metrics", "");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }
}

/// One HTTP/1.1 request as curl sends it (`Host` naming the listener, JSON for changes).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let json = if method == "GET" {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{json}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
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
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Time of one command and its reply.
fn timed(c: &mut Client, args: &[&str]) -> (Duration, Reply) {
    let t = Instant::now();
    let r = c.cmd(args);
    (t.elapsed(), r)
}

fn calls(server: &RedisServer, cmd: &str) -> u64 {
    server
        .info("commandstats")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_delay_fault_shows_in_latency_and_keeps_the_servers_order() {
    let servers = vec![RedisServer::start()];
    let r = start(&servers, "  timeout: 2000\n");
    let mut c = r.client();
    assert_eq!(c.cmd(&["SET", "k", "v1"]), Reply::ok());
    let (before, _) = timed(&mut c, &["GET", "k"]);
    let id = r.fault(&format!(
        r#"{{"pool":"{POOL}","command":"get","kind":"delay","delay_ms":200,"duration_s":60}}"#
    ));
    let mut gets = Vec::new();
    for _ in 0..5 {
        let (t, reply) = timed(&mut c, &["GET", "k"]);
        assert_eq!(reply, Reply::bulk("v1"));
        gets.push(t);
    }
    let (set, reply) = timed(&mut c, &["SET", "other", "x"]);
    assert_eq!(reply, Reply::ok());
    println!(
        "GET before {before:?}; with a 200 ms delay fault {gets:?}; SET (not matched) {set:?}"
    );
    assert!(
        gets.iter().all(|t| *t >= Duration::from_millis(200)),
        "{gets:?}"
    );
    assert!(
        set < Duration::from_millis(200),
        "an unmatched command was delayed: {set:?}"
    );

    // The request is sent at once, so the server's order holds: a delayed GET sees the value
    // before the SET pipelined after it, the next GET the value after.
    let replies = c.pipeline(&[vec!["GET", "k"], vec!["SET", "k", "v2"], vec!["GET", "k"]]);
    assert_eq!(
        replies,
        vec![Reply::bulk("v1"), Reply::ok(), Reply::bulk("v2")]
    );

    let listed = r.faults();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["kind"], "delay");
    assert_eq!(listed[0]["command"], "GET");
    assert_eq!(listed[0]["hits"], 7, "{listed:?}");
    assert_eq!(r.metric("rampart_faults_active{kind=\"delay\"}"), Some(1.0));
    let (status, body) = http(r.admin, "DELETE", &format!("/api/faults/{id}"), "");
    assert_eq!(status, 200, "{body}");
    let (after, _) = timed(&mut c, &["GET", "k"]);
    assert!(
        after < Duration::from_millis(200),
        "still delayed: {after:?}"
    );
    assert!(r.faults().is_empty());
    assert_eq!(r.metric("rampart_faults_active{kind=\"delay\"}"), Some(0.0));
    let (status, _) = http(r.admin, "DELETE", &format!("/api/faults/{id}"), "");
    assert_eq!(status, 404, "deleted twice");

    // A distribution: 50 ms plus up to 100 ms drawn per request.
    r.fault(&format!(
        r#"{{"pool":"{POOL}","command":"SET","kind":"delay","delay_ms":50,"jitter_ms":100,"duration_s":60}}"#
    ));
    let sets: Vec<Duration> = (0..20)
        .map(|i| {
            let (t, reply) = timed(&mut c, &["SET", "k", &i.to_string()]);
            assert_eq!(reply, Reply::ok());
            t
        })
        .collect();
    let (lo, hi) = (
        sets.iter().min().copied().unwrap_or_default(),
        sets.iter().max().copied().unwrap_or_default(),
    );
    println!("SET with a 50 ms + up to 100 ms delay: {lo:?} to {hi:?}");
    assert!(lo >= Duration::from_millis(50), "{sets:?}");
    assert!(hi - lo >= Duration::from_millis(10), "no spread: {sets:?}");
}

#[test]
fn an_error_fault_answers_its_text_and_sends_nothing_to_that_shard() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let r = start(&servers, "");
    let mut c = r.client();
    // A key of each shard.
    let key_on = |shard: usize| -> String {
        (0..1000)
            .map(|i| format!("key{i}"))
            .find(|k| {
                assert_eq!(c_set(&r, k), Reply::ok());
                calls_set(&servers, shard, k)
            })
            .unwrap_or_else(|| panic!("no key on s{shard}"))
    };
    let k0 = key_on(0);
    let k1 = key_on(1);
    r.fault(&format!(
        r#"{{"pool":"{POOL}","shard":"s0","kind":"error","error":"ERR injected by the test","all":true,"duration_s":60}}"#
    ));
    let gets0 = calls(&servers[0], "get");
    for _ in 0..10 {
        assert_eq!(
            c.cmd(&["GET", &k0]),
            Reply::Error("ERR injected by the test".into())
        );
        assert_eq!(c.cmd(&["GET", &k1]), Reply::bulk("1"));
    }
    assert_eq!(
        calls(&servers[0], "get"),
        gets0,
        "the faulted shard got requests"
    );
    assert_eq!(calls(&servers[1], "get"), 10);
    let listed = r.faults();
    assert_eq!(listed[0]["hits"], 10, "{listed:?}");
}

/// SET `key` 1 through the proxy.
fn c_set(r: &Rampart, key: &str) -> Reply {
    r.client().cmd(&["SET", key, "1"])
}

/// Whether `key` is on server `shard` (asked of the server itself).
fn calls_set(servers: &[RedisServer], shard: usize, key: &str) -> bool {
    servers[shard].cmd(&["EXISTS", key]) == Reply::Int(1)
}

#[test]
fn a_blackhole_answers_at_the_deadline_and_a_reset_closes_the_client() {
    let servers = vec![RedisServer::start()];
    let r = start(&servers, "  timeout: 300\n");
    let mut c = r.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    let hole = r.fault(&format!(
        r#"{{"pool":"{POOL}","node":"{}","kind":"blackhole","duration_s":60}}"#,
        servers[0].addr()
    ));
    let (t, reply) = timed(&mut c, &["GET", "k"]);
    println!("black-holed GET answered after {t:?}: {reply:?}");
    assert!(t >= Duration::from_millis(300), "{t:?}");
    assert!(t < Duration::from_millis(1300), "{t:?}");
    match reply {
        Reply::Error(e) => assert!(e.contains("timed out"), "{e}"),
        other => panic!("black hole answered {other:?}"),
    }
    let (status, _) = http(r.admin, "DELETE", &format!("/api/faults/{hole}"), "");
    assert_eq!(status, 200);
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));

    r.fault(&format!(
        r#"{{"pool":"{POOL}","command":"GET","kind":"reset","duration_s":60}}"#
    ));
    let mut victim = r.client();
    victim.set_read_timeout(Some(Duration::from_secs(5)));
    let got = victim.try_cmd(&["GET", "k"]);
    assert!(got.is_err(), "a reset client got a reply: {got:?}");
    // Other commands, and other clients' other commands, go on.
    assert_eq!(c.cmd(&["SET", "k", "w"]), Reply::ok());
}

#[test]
fn a_fault_ends_by_itself() {
    let servers = vec![RedisServer::start()];
    let r = start(&servers, "");
    let mut c = r.client();
    r.fault(&format!(
        r#"{{"pool":"{POOL}","kind":"error","error":"ERR brief","share":1,"duration_s":1}}"#
    ));
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::simple("PONG"),
        "local answers are not faulted"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Reply::Error("ERR brief".into()));
    assert_eq!(r.metric("rampart_faults_active{kind=\"error\"}"), Some(1.0));
    let t = Instant::now();
    let ended = poll_until(Duration::from_secs(5), || {
        (c.cmd(&["GET", "k"]) == Reply::Bulk(None)).then(|| t.elapsed())
    });
    println!("a 1 s fault stopped answering after {ended:?}");
    assert!(
        ended.is_some_and(|e| e <= Duration::from_millis(1500)),
        "{ended:?}"
    );
    let gone = poll_until(Duration::from_secs(2), || {
        r.faults().is_empty().then_some(())
    });
    assert!(gone.is_some(), "still listed: {:?}", r.faults());
    assert_eq!(r.metric("rampart_faults_active{kind=\"error\"}"), Some(0.0));
}

/// Latencies (sorted) of `per_thread` GETs from each of `threads` clients at once.
fn get_latencies(r: &Rampart, threads: usize, per_thread: usize) -> Vec<Duration> {
    let port = r.port;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(&format!("127.0.0.1:{port}"));
                (0..per_thread)
                    .map(|_| {
                        let (t, reply) = timed(&mut c, &["GET", "k"]);
                        assert_eq!(reply, Reply::bulk("v"));
                        t
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("a client thread panicked"))
        })
        .collect();
    all.sort();
    all
}

/// The `q` quantile of sorted `v`, in milliseconds.
fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

/// Injects a delay fault on GET with `params`, measures 400 GETs, removes it; the measured
/// quantiles `qs` (less the GET's own time without the fault) in milliseconds.
fn delay_quantiles(r: &Rampart, params: &str, base_ms: f64, qs: &[f64]) -> Vec<f64> {
    let id = r.fault(&format!(
        r#"{{"pool":"{POOL}","command":"GET","kind":"delay",{params},"duration_s":120}}"#
    ));
    let lat = get_latencies(r, 4, 100);
    let (status, body) = http(r.admin, "DELETE", &format!("/api/faults/{id}"), "");
    assert_eq!(status, 200, "{body}");
    qs.iter().map(|q| quantile_ms(&lat, *q) - base_ms).collect()
}

/// A delay drawn from a normal or an exponential distribution: the quantiles of the delays
/// measured through the proxy match the distribution's, and an exponential's tail stops at
/// the request's deadline.
#[test]
fn delay_distributions_give_their_quantiles_and_stop_at_the_deadline() {
    let servers = vec![RedisServer::start()];
    let r = start(&servers, "  timeout: 300\n");
    assert_eq!(r.client().cmd(&["SET", "k", "v"]), Reply::ok());
    let base = get_latencies(&r, 4, 100);
    let base_ms = quantile_ms(&base, 0.5);
    // Within a quarter, plus 4 ms for timers and a shared machine; 400 draws put a
    // quantile's own sampling error well inside that.
    let near = |got: &[f64], want: &[f64]| {
        got.iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= 0.25 * w + 4.0)
    };

    // Exponential, mean 40 ms: median 40 ln 2, 90th percentile 40 ln 10.
    let got = delay_quantiles(
        &r,
        r#""distribution":"exponential","delay_ms":40"#,
        base_ms,
        &[0.5, 0.9],
    );
    println!(
        "exponential, mean 40 ms: p50 {:.1} ms p90 {:.1} ms (want 27.7, 92.1)",
        got[0], got[1]
    );
    assert!(near(&got, &[27.7, 92.1]), "{got:?}");

    // Normal, mean 60 ms, standard deviation 15 ms: 60 -/+ 1.2816 * 15.
    let id = r.fault(&format!(
        r#"{{"pool":"{POOL}","command":"GET","kind":"delay","distribution":"normal","delay_ms":60,"stddev_ms":15,"duration_s":120}}"#
    ));
    let listed = r.faults();
    assert_eq!(listed[0]["distribution"], "normal", "{listed:?}");
    assert_eq!(listed[0]["stddev_ms"], 15, "{listed:?}");
    assert_eq!(listed[0]["delay_ms"], 60, "{listed:?}");
    let (status, _) = http(r.admin, "DELETE", &format!("/api/faults/{id}"), "");
    assert_eq!(status, 200);
    let got = delay_quantiles(
        &r,
        r#""distribution":"normal","delay_ms":60,"stddev_ms":15"#,
        base_ms,
        &[0.1, 0.5, 0.9],
    );
    println!(
        "normal, 60 ms +/- 15 ms: p10 {:.1} p50 {:.1} p90 {:.1} ms (want 40.8, 60, 79.2)",
        got[0], got[1], got[2]
    );
    assert!(near(&got, &[40.8, 60.0, 79.2]), "{got:?}");

    // Exponential, mean 5 s, pool timeout 300 ms: 94 % of the draws are over 300 ms and
    // are cut at the request's deadline, so the reply comes at about 300 ms, never seconds.
    let id = r.fault(&format!(
        r#"{{"pool":"{POOL}","command":"GET","kind":"delay","distribution":"exponential","delay_ms":5000,"duration_s":120}}"#
    ));
    let lat = get_latencies(&r, 4, 10);
    let (status, _) = http(r.admin, "DELETE", &format!("/api/faults/{id}"), "");
    assert_eq!(status, 200);
    let (p50, max) = (quantile_ms(&lat, 0.5), quantile_ms(&lat, 1.0));
    println!("exponential, mean 5 s, timeout 300 ms: p50 {p50:.1} ms, max {max:.1} ms");
    assert!((250.0..450.0).contains(&p50), "{lat:?}");
    assert!(max < 450.0, "a draw went past the deadline: {lat:?}");
}

#[test]
fn bad_fault_requests_are_refused_saying_why() {
    let servers = vec![RedisServer::start()];
    let r = start(&servers, "");
    let cases = [
        (r#"{"pool":"alpha","kind":"reset"}"#, 400, "duration_s"),
        (
            r#"{"pool":"alpha","kind":"reset","duration_s":7200}"#,
            400,
            "duration_s",
        ),
        (
            r#"{"pool":"nope","kind":"reset","duration_s":5}"#,
            404,
            "no pool 'nope'",
        ),
        (
            r#"{"pool":"alpha","shard":"x","kind":"reset","duration_s":5}"#,
            404,
            "no shard 'x'",
        ),
        (
            r#"{"pool":"alpha","node":"1.2.3.4:5","kind":"reset","duration_s":5}"#,
            404,
            "no node",
        ),
        (
            r#"{"pool":"alpha","kind":"melt","duration_s":5}"#,
            400,
            "not one of",
        ),
        (
            r#"{"pool":"alpha","kind":"delay","duration_s":5}"#,
            400,
            "delay_ms",
        ),
        (
            r#"{"pool":"alpha","kind":"error","duration_s":5}"#,
            400,
            "needs error",
        ),
        (
            r#"{"pool":"alpha","kind":"delay","distribution":"zipf","delay_ms":5,"duration_s":5}"#,
            400,
            "distribution 'zipf' is not one of fixed, uniform, normal, exponential",
        ),
        (
            r#"{"pool":"alpha","kind":"delay","distribution":"normal","delay_ms":5,"duration_s":5}"#,
            400,
            "a normal delay needs stddev_ms",
        ),
        (
            r#"{"pool":"alpha","kind":"delay","distribution":"exponential","delay_ms":5,"jitter_ms":3,"duration_s":5}"#,
            400,
            "jitter_ms only applies to distribution uniform",
        ),
        (
            r#"{"pool":"alpha","kind":"delay","distribution":"normal","delay_ms":5,"stddev_ms":70000,"duration_s":5}"#,
            400,
            "stddev_ms must be between 1 and 60000",
        ),
        (
            r#"{"pool":"alpha","kind":"reset","distribution":"normal","duration_s":5}"#,
            400,
            "distribution only applies to a delay fault",
        ),
        (
            r#"{"pool":"alpha","kind":"reset","share":1.5,"duration_s":5}"#,
            400,
            "share",
        ),
        (
            r#"{"pool":"alpha","command":"FROB","kind":"reset","duration_s":5}"#,
            400,
            "unknown command",
        ),
    ];
    for (body, status, words) in cases {
        let (got, v) = r.inject(body);
        assert_eq!(got, status, "{body}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(words), "{body}: {e}");
    }
    assert!(r.faults().is_empty());
    // Changes must be JSON, as every other changing call.
    let mut s = TcpStream::connect(("127.0.0.1", r.admin)).unwrap_or_else(|e| panic!("{e}"));
    let body = r#"{"pool":"alpha","kind":"reset","duration_s":5}"#;
    let req = format!(
        "POST /api/faults HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        r.admin,
        body.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 415"), "{out}");
    assert!(r.faults().is_empty());
}
