//! The admin HTTP interface against a real rampart process and real redis-servers: liveness
//! and readiness, Prometheus metrics, the stats JSON, the topology API, maintenance (drain), planned
//! switchover, and the token that protects changes. The HTTP client is a few lines of std.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

const POOL: &str = "alpha";

/// A rampart process with its admin and stats ports.
struct Rampart {
    proxy: Proxy,
    port: u16,
    admin: u16,
    stats: u16,
}

fn start(body: &str, extra: &[&str], env: &[(&str, &str)]) -> Rampart {
    let port = free_port();
    let admin = free_port();
    let stats = free_port();
    let yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{body}"
    );
    let mut b = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("a.yml", &yaml)
        .args([
            "-c",
            "{dir}/a.yml",
            "-a",
            "127.0.0.1",
            "--workers",
            "2",
            "-s",
        ])
        .arg(stats.to_string())
        .args(
            extra
                .iter()
                .map(|a| a.replace("{admin}", &admin.to_string())),
        )
        .wait_port(port);
    if !extra.contains(&"--admin") {
        b = b.args(["--admin".to_string(), format!("127.0.0.1:{admin}")]);
    }
    for (k, v) in env {
        b = b.env(k, v);
    }
    let proxy = b.start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    Rampart {
        proxy,
        port,
        admin,
        stats,
    }
}

impl Rampart {
    fn client(&self) -> Client {
        Client::connect(&format!("127.0.0.1:{}", self.port))
    }
    fn get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, &[], "")
    }
    fn post(&self, path: &str, body: &str) -> (u16, String) {
        http(self.admin, "POST", path, &[], body)
    }
    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
    /// Waits until `/readyz` answers `status`; returns its body.
    fn wait_ready(&self, status: u16, timeout: Duration) -> String {
        poll_until(timeout, || {
            let (s, b) = self.get("/readyz");
            (s == status).then_some(b)
        })
        .unwrap_or_else(|| {
            panic!(
                "/readyz never answered {status}: {:?}\nlog:\n{}",
                self.get("/readyz"),
                self.proxy.stderr()
            )
        })
    }
    fn node<'a>(topo: &'a Value, label: &str) -> &'a Value {
        topo["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["shards"].as_array().into_iter().flatten())
            .flat_map(|s| s["nodes"].as_array().into_iter().flatten())
            .find(|n| n["label"] == label)
            .unwrap_or_else(|| panic!("node {label} not in the topology: {topo}"))
    }
}

/// One HTTP/1.1 request on a fresh connection, as curl sends it (`Host` naming the listener,
/// JSON for changes); returns the status and the body.
fn http(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut all = vec![format!("Host: 127.0.0.1:{port}")];
    if method != "GET" {
        all.push("Content-Type: application/json".to_string());
    }
    all.extend(headers.iter().map(|h| h.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    raw(port, method, path, &all, body)
}

/// One HTTP/1.1 request with exactly these headers (plus `Content-Length` and
/// `Connection: close`); returns the status and the body.
fn raw(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    read_response(&mut s)
}

/// Reads one response until the server closes; its status and body.
fn read_response(s: &mut TcpStream) -> (u16, String) {
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

/// The value of the sample `name{labels}` (labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Calls of `cmd` on a redis-server (INFO commandstats).
fn server_calls(server: &RedisServer, cmd: &str) -> u64 {
    let info = server.info("commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn metrics_stats_and_topology_of_a_twemproxy_pool() {
    let mut redis: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let servers = format!(
        "  servers:\n   - {}:1 s0\n   - {}:1 s1\n",
        redis[0].addr(),
        redis[1].addr()
    );
    let r = start(&servers, &[], &[]);
    assert_eq!(r.get("/healthz"), (200, "ok\n".to_string()));
    r.wait_ready(200, Duration::from_secs(5));

    let before = r.get("/metrics").1;
    let mut c = r.client();
    for i in 0..10 {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    const GETS: usize = 37;
    for i in 0..GETS {
        assert_eq!(c.cmd(&["GET", &format!("k{}", i % 10)]), Reply::bulk("v"));
    }
    let (status, text) = r.get("/metrics");
    assert_eq!(status, 200);
    for family in [
        "rampart_node_requests_total",
        "rampart_node_errors_total",
        "rampart_node_sent_bytes_total",
        "rampart_node_received_bytes_total",
        "rampart_node_server_connections",
        "rampart_pool_client_connections",
        "rampart_node_role",
        "rampart_node_up",
        "rampart_node_maintenance",
        "rampart_node_health_check_duration_seconds",
        "rampart_node_ejections_total",
        "rampart_node_replication_lag_seconds",
        "rampart_shard_failovers_total",
        "rampart_shard_switchovers_total",
        "rampart_pubsub_resubscriptions_total",
        "rampart_command_calls_total",
        "rampart_command_duration_seconds",
        "rampart_process_resident_memory_bytes",
        "rampart_process_open_fds",
        "rampart_process_uptime_seconds",
        "rampart_workers",
    ] {
        assert_eq!(
            text.matches(&format!("# HELP {family} ")).count(),
            1,
            "HELP of {family}"
        );
        assert_eq!(
            text.matches(&format!("# TYPE {family} ")).count(),
            1,
            "TYPE of {family}"
        );
    }
    // Exactly the GETs sent, in the calls counter and in the histogram.
    let get = "{command=\"get\"}";
    assert_eq!(
        sample(&text, &format!("rampart_command_calls_total{get}")),
        Some(GETS as f64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("rampart_command_duration_seconds_count{get}")
        ),
        Some(GETS as f64)
    );
    assert_eq!(
        sample(
            &text,
            "rampart_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"}"
        ),
        Some(GETS as f64)
    );
    // Counters moved by the traffic: requests and bytes, summed over both nodes.
    let addrs = [redis[0].addr(), redis[1].addr()];
    let total = |t: &str, family: &str| -> f64 {
        ["s0", "s1"]
            .iter()
            .zip(&addrs)
            .map(|(n, a)| {
                let series = format!("{family}{{pool=\"{POOL}\",shard=\"{n}\",node=\"{a}\"}}");
                sample(t, &series).unwrap_or_else(|| panic!("{series} missing:\n{t}"))
            })
            .sum()
    };
    let sent =
        total(&text, "rampart_node_requests_total") - total(&before, "rampart_node_requests_total");
    assert_eq!(sent, (10 + GETS) as f64);
    assert!(
        total(&text, "rampart_node_sent_bytes_total")
            > total(&before, "rampart_node_sent_bytes_total")
    );
    assert_eq!(
        sample(
            &text,
            &format!("rampart_pool_client_connections{{pool=\"{POOL}\"}}")
        ),
        Some(1.0)
    );

    // /stats is the stats port's document: same fields at every level.
    let (status, stats) = r.get("/stats");
    assert_eq!(status, 200);
    let ours: Value = serde_json::from_str(&stats).unwrap_or_else(|e| panic!("{e}: {stats}"));
    let mut raw = String::new();
    TcpStream::connect(("127.0.0.1", r.stats))
        .and_then(|mut s| s.read_to_string(&mut raw))
        .unwrap_or_else(|e| panic!("stats port: {e}"));
    let port: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(shape(&ours), shape(&port), "/stats vs the stats port");
    assert_eq!(ours[POOL]["s1"]["requests"], port[POOL]["s1"]["requests"]);

    // The topology lists every node; the page and its assets are served.
    let topo = r.json("/api/topology");
    for n in ["s0", "s1"] {
        let node = Rampart::node(&topo, n);
        assert_eq!(node["up"], true, "{node}");
        assert_eq!(node["role"], "primary");
    }
    assert_eq!(topo["pools"][0]["kind"], "twemproxy");
    let (status, page) = r.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("/assets/app.js") && page.contains("/assets/style.css"));
    assert_eq!(r.get("/assets/app.js").0, 200);
    assert_eq!(r.get("/assets/style.css").0, 200);
    assert_eq!(r.get("/nope").0, 404);

    // Killing shard s1's only server: once traffic tries it, not ready, and the node is
    // down in the topology.
    redis[1].kill9();
    for i in 0..10 {
        let _ = c.cmd(&["GET", &format!("k{i}")]);
    }
    let body = r.wait_ready(503, Duration::from_secs(5));
    assert!(body.contains(&format!("{POOL}/s1")), "{body}");
    assert!(!body.contains(&format!("{POOL}/s0")), "{body}");
    let topo = r.json("/api/topology");
    assert_eq!(Rampart::node(&topo, "s1")["up"], false);
    assert_eq!(Rampart::node(&topo, "s0")["up"], true);
    let text = r.get("/metrics").1;
    let up =
        |n: &str, a: &str| format!("rampart_node_up{{pool=\"{POOL}\",shard=\"{n}\",node=\"{a}\"}}");
    assert_eq!(sample(&text, &up("s1", &addrs[1])), Some(0.0));
    assert_eq!(sample(&text, &up("s0", &addrs[0])), Some(1.0));
}

/// The keys at every level of a JSON document, values ignored.
fn shape(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, v) in m {
                let p = format!("{path}/{k}");
                out.push(p.clone());
                walk(v, &p, out);
            }
        }
    }
    walk(v, "", &mut out);
    out.sort();
    out
}

#[test]
fn maintenance_switchover_and_readiness_of_a_replica_set() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&primary);
    replica.wait_replication_up(Duration::from_secs(10));
    let body = format!(
        "  primary: {}\n  replicas:\n    - {}\n  read_policy: prefer-replica\n  failover_hold: 3s\n",
        primary.addr(),
        replica.addr()
    );
    let r = start(&body, &[], &[]);
    r.wait_ready(200, Duration::from_secs(10));
    let rep = replica.addr();
    let routable = |want: bool| {
        poll_until(Duration::from_secs(10), || {
            let topo = r.json("/api/topology");
            (Rampart::node(&topo, &rep)["routable"] == want).then_some(())
        })
        .unwrap_or_else(|| panic!("replica never became routable={want}"));
    };
    routable(true);
    let mut c = r.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    let reads = |c: &mut Client| {
        let before = (server_calls(&primary, "get"), server_calls(&replica, "get"));
        for _ in 0..20 {
            let got = c.cmd(&["GET", "k"]);
            assert!(matches!(got, Reply::Bulk(_)), "{got:?}");
        }
        (
            server_calls(&primary, "get") - before.0,
            server_calls(&replica, "get") - before.1,
        )
    };
    assert_eq!(
        reads(&mut c).1,
        20,
        "prefer-replica reads go to the replica"
    );

    // Drain the replica: reads stop reaching it; then bring it back.
    let req = |on: bool| {
        format!("{{\"pool\":\"{POOL}\",\"shard\":\"{POOL}\",\"node\":\"{rep}\",\"on\":{on}}}")
    };
    let (status, body) = r.post("/api/nodes/maintenance", &req(true));
    assert_eq!(status, 200, "{body}");
    assert_eq!(reads(&mut c), (20, 0), "a drained replica gets no reads");
    let topo = r.json("/api/topology");
    assert_eq!(Rampart::node(&topo, &rep)["maintenance"], true);
    let (status, body) = r.post("/api/nodes/maintenance", &req(false));
    assert_eq!(status, 200, "{body}");
    routable(true);
    assert_eq!(reads(&mut c).1, 20, "back in rotation");
    let unknown = r.post(
        "/api/nodes/maintenance",
        &format!("{{\"pool\":\"{POOL}\",\"node\":\"nope\",\"on\":true}}"),
    );
    assert_eq!(unknown.0, 404, "{unknown:?}");
    assert_eq!(r.post("/api/nodes/maintenance", "{").0, 400);
    // A misspelled field is refused, not ignored: with "to" for "target", the replica
    // rampart picks would be promoted instead of the one named.
    let (status, body) = r.post(
        "/api/shards/switchover",
        &format!(
            "{{\"pool\":\"{POOL}\",\"shard\":\"{POOL}\",\"to\":\"{}\"}}",
            primary.addr()
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field `to`"), "{body}");
    assert_eq!(primary.role(), "master");
    let (status, body) = r.post(
        "/api/nodes/maintenance",
        &format!("{{\"pool\":\"{POOL}\",\"node\":\"{rep}\",\"on\":true,\"shrad\":\"x\"}}"),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(r.post("/api/reload", "{\"forse\":true}").0, 400);

    // Planned switchover: 202 at once, progress until done, the replica is the primary.
    let (status, body) = r.post(
        "/api/shards/switchover",
        &format!("{{\"pool\":\"{POOL}\",\"shard\":\"{POOL}\"}}"),
    );
    assert_eq!(status, 202, "{body}");
    let progress = format!("/api/shards/switchover?pool={POOL}&shard={POOL}");
    let end = poll_until(Duration::from_secs(15), || {
        let v = r.json(&progress);
        (v["done"] == true || v["failed"] == true).then_some(v)
    })
    .unwrap_or_else(|| panic!("switchover never ended: {}", r.get(&progress).1));
    assert_eq!(end["done"], true, "{end}");
    assert_eq!(end["primary"], rep.as_str(), "{end}");
    assert_eq!(replica.role(), "master");
    assert_eq!(c.cmd(&["SET", "k2", "v2"]), Reply::ok());
    assert_eq!(replica.cmd(&["GET", "k2"]), Reply::bulk("v2"));
    let text = r.get("/metrics").1;
    let series = format!("rampart_shard_switchovers_total{{pool=\"{POOL}\",shard=\"{POOL}\"}}");
    assert_eq!(sample(&text, &series), Some(1.0), "{text}");
    let events = r.json("/api/events");
    assert!(
        events
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["kind"] == "switchover"),
        "{events}"
    );

    // The new primary dies: the shard has no writable primary, so not ready.
    replica.kill9();
    let body = r.wait_ready(503, Duration::from_secs(10));
    assert!(body.contains(&format!("{POOL}/{POOL}")), "{body}");
}

#[test]
fn changes_need_the_token_when_the_listener_is_not_loopback() {
    let redis = RedisServer::start();
    let servers = format!("  servers:\n   - {}:1 s0\n", redis.addr());
    // Without a token, a listener reachable from other machines refuses to start.
    let mut refused = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file(
            "a.yml",
            format!("{POOL}:\n  listen: 127.0.0.1:{}\n{servers}", free_port()),
        )
        .args(["-c", "{dir}/a.yml", "--no-stats", "--admin"])
        .arg(format!("0.0.0.0:{}", free_port()))
        .start();
    let status = refused
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("rampart started without a token"));
    assert!(!status.success());
    assert!(
        refused.stderr().contains("--admin-token"),
        "{}",
        refused.stderr()
    );

    // The token from the environment; a loopback peer still needs it on a public listener.
    let r = start(
        &servers,
        &["--admin", "0.0.0.0:{admin}"],
        &[("RAMPART_ADMIN_TOKEN", "secret")],
    );
    let body = format!("{{\"pool\":\"{POOL}\",\"node\":\"s0\",\"on\":false}}");
    let path = "/api/nodes/maintenance";
    assert_eq!(r.post(path, &body).0, 401);
    let wrong = http(
        r.admin,
        "POST",
        path,
        &["Authorization: Bearer nope"],
        &body,
    );
    assert_eq!(wrong.0, 401, "{wrong:?}");
    let right = http(
        r.admin,
        "POST",
        path,
        &["Authorization: Bearer secret"],
        &body,
    );
    assert_eq!(right.0, 200, "{right:?}");
    assert_eq!(r.post("/api/shards/switchover", "{}").0, 401);
    assert_eq!(r.post("/api/reload", "").0, 401);
    let auth = ["Authorization: Bearer secret"];
    let reload = http(r.admin, "POST", "/api/reload", &auth, "");
    assert_eq!(reload.0, 200, "{reload:?}");
    assert!(reload.1.contains("\"ok\":true"), "{reload:?}");
    assert!(r.get("/api/events").1.contains("\"kind\":\"reload\""));
    // Reading needs no token.
    assert_eq!(r.get("/metrics").0, 200);
    assert_eq!(r.get("/api/topology").0, 200);
    // On every address, the listener also answers to the machine's name; not to others.
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = format!("Host: {}:{}", name.trim(), r.admin);
    assert_eq!(raw(r.admin, "GET", "/api/topology", &[&name], "").0, 200);
    let evil = format!("Host: evil.example:{}", r.admin);
    assert_eq!(raw(r.admin, "GET", "/api/topology", &[&evil], "").0, 421);
}

#[test]
fn a_web_page_can_neither_change_nor_read_through_a_foreign_name() {
    let redis = RedisServer::start();
    let servers = format!("  servers:\n   - {}:1 s0\n", redis.addr());
    let r = start(&servers, &["--admin-host", "tunnel.example:9000"], &[]);
    let a = r.admin;
    let host = format!("Host: 127.0.0.1:{a}");
    let path = "/api/nodes/maintenance";
    let on = format!("{{\"pool\":\"{POOL}\",\"node\":\"s0\",\"on\":true}}");
    let untouched = |what: &str| {
        let topo = r.json("/api/topology");
        assert_eq!(Rampart::node(&topo, "s0")["maintenance"], false, "{what}");
    };

    // What a page may send across origins without asking: form and text bodies, no type.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let ct_line = ct.map(|c| format!("Content-Type: {c}"));
        let mut headers = vec![host.as_str()];
        headers.extend(ct_line.as_deref());
        let (status, body) = raw(a, "POST", path, &headers, &on);
        assert_eq!(status, 415, "{ct:?}: {body}");
        assert!(body.contains("application/json"), "{body}");
        untouched(&format!("{ct:?}"));
    }
    let (status, body) = raw(a, "POST", "/api/reload", &[&host], "");
    assert_eq!(status, 415, "{body}");
    assert!(!r.get("/api/events").1.contains("\"kind\":\"reload\""));

    // A foreign Origin, even with a JSON body.
    for origin in [
        "http://evil.example",
        &format!("http://evil.example:{a}"),
        "null",
        &format!("http://127.0.0.1:{}", a.wrapping_add(1)),
    ] {
        let o = format!("Origin: {origin}");
        let (status, body) = http(a, "POST", path, &[&o], &on);
        assert_eq!(status, 403, "{origin}: {body}");
        assert!(body.contains("origin"), "{body}");
        untouched(origin);
    }

    // DNS rebinding: the page's own host name in Host, on reads and on changes.
    let evil = format!("Host: evil.example:{a}");
    let (status, body) = raw(a, "GET", "/api/topology", &[&evil], "");
    assert_eq!(status, 421, "{body}");
    assert!(
        body.contains("evil.example") && !body.contains("pools"),
        "{body}"
    );
    for p in ["/metrics", "/", "/stats", "/nope"] {
        assert_eq!(raw(a, "GET", p, &[&evil], "").0, 421, "{p}");
    }
    let json = "Content-Type: application/json";
    let (status, body) = raw(a, "POST", path, &[&evil, json], &on);
    assert_eq!(status, 421, "{body}");
    untouched("foreign Host");
    let (status, _) = raw(a, "GET", "/api/topology", &[], "");
    assert_eq!(status, 421, "no Host at all");
    let absolute = format!("http://evil.example:{a}/api/topology");
    assert_eq!(raw(a, "GET", &absolute, &[&host], "").0, 421);

    // The listener's own names work, with or without the page's own Origin.
    for h in [
        format!("localhost:{a}"),
        format!("LOCALHOST:{a}"),
        format!("[::1]:{a}"),
        format!("127.0.0.1:{a}"),
        "tunnel.example:9000".to_string(),
    ] {
        let hl = format!("Host: {h}");
        let (status, body) = raw(a, "GET", "/api/topology", &[&hl], "");
        assert_eq!(status, 200, "{h}: {body}");
    }
    assert_eq!(
        raw(
            a,
            "GET",
            "/api/topology",
            &["Host: tunnel.example:9001"],
            ""
        )
        .0,
        421
    );
    let own = format!("Origin: http://127.0.0.1:{a}");
    let (status, body) = http(a, "POST", path, &[&own], &on);
    assert_eq!(status, 200, "{body}");
    let topo = r.json("/api/topology");
    assert_eq!(Rampart::node(&topo, "s0")["maintenance"], true);
    let off = on.replace("true", "false");
    let tunnel = [
        "Host: tunnel.example:9000",
        json,
        "Origin: http://tunnel.example:9000",
    ];
    let (status, body) = raw(a, "POST", path, &tunnel, &off);
    assert_eq!(status, 200, "{body}");
    untouched("turned off through the tunnel name");
    let (status, body) = r.post("/api/reload", "{\"force\":true}");
    assert_eq!(status, 200, "{body}");
    let (status, body) = r.post("/api/reload", "{\"force\":1}");
    assert_eq!(status, 400, "{body}");
}

/// Whether the server closed `s`, read without blocking; what it sent is appended to `got`.
fn closed(s: &mut TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn half_sent_requests_time_out_and_cannot_take_the_descriptors_of_redis_clients() {
    // docs/ADMIN.md: at most 32 connections; 5 s for a header, 5 s for a body.
    const CAP: usize = 32;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    const HALF_SENT: usize = 300;
    const CLIENTS: usize = 40;
    let redis = RedisServer::start();
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "{POOL}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - {}:1 s0\n",
        redis.addr()
    );
    // 256 descriptors, as in a tight service unit: fewer than the half-sent requests.
    let _proxy = Proxy::builder("sh")
        .file("a.yml", &yaml)
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_rampart"))
        .args(["-c", "{dir}/a.yml", "--no-stats", "--workers", "2"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");

    // A change whose body never completes, then many requests whose header never does.
    let host = format!("Host: 127.0.0.1:{admin}\r\n");
    let connect =
        || TcpStream::connect(("127.0.0.1", admin)).unwrap_or_else(|e| panic!("connect: {e}"));
    let mut slow = connect();
    let head = format!(
        "POST /api/nodes/maintenance HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"pool\""
    );
    slow.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let slow_sent = std::time::Instant::now();
    let started = std::time::Instant::now();
    let mut half: Vec<(TcpStream, Vec<u8>)> = (0..HALF_SENT)
        .map(|_| {
            let mut s = connect();
            s.write_all(format!("GET /api/topology HTTP/1.1\r\n{host}").as_bytes())
                .unwrap_or_else(|e| panic!("write: {e}"));
            s.set_nonblocking(true)
                .unwrap_or_else(|e| panic!("nonblocking: {e}"));
            (s, Vec::new())
        })
        .collect();

    // (c) Meanwhile the proxy accepts and serves Redis clients.
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = Client::try_connect(&format!("127.0.0.1:{port}"))
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            c.set_read_timeout(Some(Duration::from_secs(3)));
            c
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let k = format!("k{i}");
        let set = c.try_cmd(&["SET", k.as_str(), "v"]);
        assert!(
            matches!(set, Ok(ref r) if *r == Reply::ok()),
            "client {i}: {set:?}"
        );
    }

    // (b) Connections over the cap are closed at once, well before any timeout; the slow body
    // and the first ones accepted hold the slots.
    let over = HALF_SENT - (CAP - 1);
    let count = |half: &mut Vec<(TcpStream, Vec<u8>)>| {
        half.iter_mut()
            .map(|(s, got)| closed(s, got))
            .filter(|&c| c)
            .count()
    };
    let early = poll_until(HEADER_TIMEOUT / 2, || {
        let n = count(&mut half);
        (n >= over).then_some(n)
    })
    .unwrap_or_else(|| panic!("only {} connections closed at once", count(&mut half)));
    assert_eq!(early, over, "the cap holds {CAP} connections");
    assert!(started.elapsed() < HEADER_TIMEOUT);
    let answered: Vec<&Vec<u8>> = half
        .iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect();
    for got in &answered {
        let text = String::from_utf8_lossy(got);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    }

    // (a) The held ones are closed once the header time is up, not before.
    let done = poll_until(HEADER_TIMEOUT * 2, || {
        (count(&mut half) == HALF_SENT).then(|| started.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} half-sent requests still open",
            HALF_SENT - count(&mut half)
        )
    });
    assert!(
        done >= HEADER_TIMEOUT - Duration::from_millis(500),
        "{done:?}"
    );
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let (status, body) = read_response(&mut slow);
    assert_eq!(status, 408, "{body}");
    assert!(slow_sent.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500));

    // Everything works again: the admin interface, the Redis clients, new ones.
    let (status, body) = http(admin, "GET", "/api/topology", &[], "");
    assert_eq!(status, 200, "{body}");
    for c in &mut clients {
        assert_eq!(c.cmd(&["GET", "k0"]), Reply::bulk("v"));
    }
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn a_token_file_is_rotated_by_reload_and_refusals_are_counted_and_logged_without_it() {
    let redis = RedisServer::start();
    let servers = format!("  servers:\n   - {}:1 s0\n", redis.addr());
    // The file lives in the proxy's own directory: {dir} is replaced by the builder.
    let (first, second, third) = ("tok-first-7f3a9c", "tok-second-51be02", "tok-third-c4d8e1");
    let port = free_port();
    let admin = free_port();
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file(
            "a.yml",
            format!("{POOL}:\n  listen: 127.0.0.1:{port}\n  redis: true\n{servers}"),
        )
        .file("token", format!("{first}\n"))
        .args(["-c", "{dir}/a.yml", "--no-stats", "--workers", "1"])
        .args(["--admin".to_string(), format!("0.0.0.0:{admin}")])
        .args(["--admin-token-file", "{dir}/token"])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let token_file = proxy.dir().join("token");
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let maint = format!("{{\"pool\":\"{POOL}\",\"node\":\"s0\",\"on\":false}}");
    let post = |path: &str, auth: &[&str], body: &str| http(admin, "POST", path, auth, body);

    // Every changing route needs it, also DELETE, also a path that does not exist.
    assert_eq!(post("/api/nodes/maintenance", &[], &maint).0, 401);
    let fault = format!("{{\"pool\":\"{POOL}\",\"kind\":\"error\",\"duration_s\":60}}");
    assert_eq!(post("/api/faults", &[], &fault).0, 401);
    assert_eq!(http(admin, "DELETE", "/api/faults/1", &[], "").0, 401);
    assert_eq!(post("/api/nope", &[], "{}").0, 401);
    let (status, body) = post("/api/reload", &["Authorization: Basic dXNlcjpwdw=="], "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let wrong = bearer("tok-first-7f3a9d");
    assert_eq!(post("/api/reload", &[&wrong], "").0, 401);
    let ok = post("/api/nodes/maintenance", &[&bearer(first)], &maint);
    assert_eq!(ok.0, 200, "{ok:?}");
    let lower = format!("Authorization: bearer {first}");
    assert_eq!(post("/api/nodes/maintenance", &[&lower], &maint).0, 200);

    // Refusals are counted in /metrics.
    let (_, metrics) = http(admin, "GET", "/metrics", &[], "");
    assert_eq!(
        sample(&metrics, "rampart_admin_auth_failures_total"),
        Some(6.0),
        "{metrics}"
    );

    // Rotation through the API: the call that carries the old token reads the new one.
    std::fs::write(&token_file, format!("{second}\n")).unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = post("/api/reload", &[&bearer(first)], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"admin_token\":\"changed\""), "{body}");
    assert_eq!(
        post("/api/nodes/maintenance", &[&bearer(first)], &maint).0,
        401
    );
    assert_eq!(
        post("/api/nodes/maintenance", &[&bearer(second)], &maint).0,
        200
    );

    // Rotation through SIGHUP.
    std::fs::write(&token_file, third).unwrap_or_else(|e| panic!("{e}"));
    proxy.signal("HUP");
    poll_until(Duration::from_secs(5), || {
        (post("/api/nodes/maintenance", &[&bearer(third)], &maint).0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("SIGHUP did not read the new token:\n{}", proxy.stderr()));
    assert_eq!(
        post("/api/nodes/maintenance", &[&bearer(second)], &maint).0,
        401
    );

    // A file that holds no usable token keeps the one in use, and says why.
    std::fs::write(&token_file, "two words\n").unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = post("/api/reload", &[&bearer(third)], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("the previous token stays"), "{body}");
    assert!(!body.contains("two words"), "{body}");
    assert_eq!(
        post("/api/nodes/maintenance", &[&bearer(third)], &maint).0,
        200
    );
    let (_, metrics) = http(admin, "GET", "/metrics", &[], "");
    assert_eq!(
        sample(&metrics, "rampart_admin_token_reload_failures_total"),
        Some(1.0),
        "{metrics}"
    );

    // The log says who was refused and why, never what they sent or the tokens.
    let log = proxy.stderr();
    assert!(
        log.contains("refused POST /api/nodes/maintenance from 127.0.0.1:"),
        "{log}"
    );
    for secret in [first, second, third, "tok-first-7f3a9d", "two words"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn an_unreadable_token_stops_the_start_with_the_reason() {
    let redis = RedisServer::start();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut b = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
            .file(
                "a.yml",
                format!(
                    "{POOL}:\n  listen: 127.0.0.1:{}\n  servers:\n   - {}:1 s0\n",
                    free_port(),
                    redis.addr()
                ),
            )
            .file("empty", "\n")
            .args(["-c", "{dir}/a.yml", "--no-stats", "--admin"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(args.iter().copied());
        for (k, v) in env {
            b = b.env(k, v);
        }
        let mut p = b.start();
        let status = p
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("rampart started with {args:?}"));
        assert!(!status.success());
        p.stderr()
    };
    let e = run(&["--admin-token-file", "{dir}/missing"], &[]);
    assert!(e.contains("cannot read the admin token file"), "{e}");
    let e = run(&["--admin-token-file", "{dir}/empty"], &[]);
    assert!(e.contains("is empty"), "{e}");
    let e = run(&["--admin-token-env", "RAMPART_TEST_NO_SUCH_VAR"], &[]);
    assert!(e.contains("RAMPART_TEST_NO_SUCH_VAR"), "{e}");
    let e = run(&["--admin-token", "has space"], &[]);
    assert!(
        e.contains("printable ASCII") && !e.contains("has space"),
        "{e}"
    );
    let e = run(&[], &[("RAMPART_ADMIN_TOKEN", "")]);
    assert!(e.contains("RAMPART_ADMIN_TOKEN is empty"), "{e}");
}

/// Sends `head` then `step` every `every` until the server closes or `limit` passes; the
/// time from the first byte to the close and what the server sent.
fn trickle(
    admin: u16,
    head: &str,
    step: &[u8],
    every: Duration,
    limit: Duration,
) -> (Duration, String) {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_nonblocking(true)
        .unwrap_or_else(|e| panic!("nonblocking: {e}"));
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = s.write_all(head.as_bytes());
    while started.elapsed() < limit {
        std::thread::sleep(every);
        if closed(&mut s, &mut got) {
            return (
                started.elapsed(),
                String::from_utf8_lossy(&got).into_owned(),
            );
        }
        // A write may fail once the server closed; the next read says so.
        let _ = s.write(step);
    }
    panic!(
        "still open after {limit:?}; received {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// One request with a body of `n` bytes sent with `Content-Length` (only the header is sent:
/// the limit is checked before the body is read) or chunked (all of it); the status.
fn oversize(admin: u16, method: &str, path: &str, n: usize, chunked: bool) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nContent-Type: application/json\r\n"
    );
    if chunked {
        req.push_str(&format!(
            "Transfer-Encoding: chunked\r\n\r\n{n:x}\r\n{}\r\n0\r\n\r\n",
            " ".repeat(n)
        ));
    } else {
        req.push_str(&format!("Content-Length: {n}\r\n\r\n"));
    }
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    // The server may close before reading the rest of a chunked body: keep what came.
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {text:?}"));
    (status, text)
}

#[test]
fn slow_and_oversize_requests_are_cut_on_every_route() {
    // docs/ADMIN.md: 5 s for the header, 5 s more for the body, 65,536 bytes of body.
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    const BODY_TIMEOUT: Duration = Duration::from_secs(5);
    const MAX_BODY: usize = 65_536;
    let redis = RedisServer::start();
    let servers = format!("  servers:\n   - {}:1 s0\n", redis.addr());
    let r = start(&servers, &[], &[]);
    let a = r.admin;
    let host = format!("Host: 127.0.0.1:{a}\r\n");
    let every = Duration::from_millis(200);
    let slack = Duration::from_millis(1500);

    // A header that keeps coming, a byte at a time, is cut when its time is up.
    let head = format!("GET /api/topology HTTP/1.1\r\n{host}X-Slow: ");
    let (took, got) = trickle(a, &head, b"a", every, HEADER_TIMEOUT * 3);
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(300) && took <= HEADER_TIMEOUT + slack,
        "header cut after {took:?}"
    );
    assert!(!got.contains(" 200 "), "{got}");

    // A body that keeps coming is cut too, on a changing call and on a read.
    for (method, path) in [("POST", "/api/reload"), ("GET", "/metrics")] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
             Content-Length: 10000\r\n\r\n"
        );
        let (took, got) = trickle(a, &head, b" ", every, BODY_TIMEOUT * 3);
        assert!(
            took >= BODY_TIMEOUT - Duration::from_millis(300) && took <= BODY_TIMEOUT + slack,
            "{method} {path}: body cut after {took:?}"
        );
        assert!(got.starts_with("HTTP/1.1 408 "), "{method} {path}: {got}");
    }
    assert!(!r.get("/api/events").1.contains("\"kind\":\"reload\""));

    // Too large a body, declared or chunked, on every route, known or not.
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/stats"),
        ("GET", "/api/topology"),
        ("GET", "/healthz"),
        ("POST", "/api/reload"),
        ("POST", "/api/nodes/maintenance"),
        ("POST", "/api/shards/switchover"),
        ("POST", "/api/faults"),
        ("DELETE", "/api/faults/1"),
        ("GET", "/nope"),
        ("PUT", "/nope"),
    ] {
        for chunked in [false, true] {
            let (status, text) = oversize(a, method, path, MAX_BODY + 1, chunked);
            assert_eq!(status, 413, "{method} {path} chunked={chunked}: {text}");
            assert!(text.contains("larger than 65536 bytes"), "{text}");
        }
    }
    // The limit itself is accepted.
    let (status, text) = oversize(a, "GET", "/healthz", MAX_BODY, true);
    assert_eq!(status, 200, "{text}");
    assert!(!r.get("/api/events").1.contains("\"kind\":\"reload\""));
    assert_eq!(r.get("/healthz").0, 200);
}
