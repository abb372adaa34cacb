//! Credentials a Sentinel or a node refuses to rampart are logged once, not on every try: a
//! redis-sentinel with a password and a wrong `sentinel_password`, a replica set with a wrong
//! `redis_auth`. Each refusing address gets one warning naming it and the server's reason
//! (never the password), every refusal is counted in `/metrics`, and once the file is fixed
//! and reloaded each says once that it accepts again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::{free_port, poll_until, Monitor, Proxy, RedisServer, Reply, Sentinel};

/// The data nodes' password.
const NODES_PASS: &str = "nodes-pass-71c2";
/// The Sentinel's own password.
const SENTINEL_PASS: &str = "sentinel-pass-3f9a";
/// What rampart is given instead: a wrong `redis_auth`, a wrong `sentinel_password`.
const WRONG_AUTH: &str = "wrong-auth-5d0e";
const WRONG_SENTINEL: &str = "wrong-sentinel-a84b";

/// Fast health checks: a refusal every 100 ms per node.
const CHECKS: &str =
    "  health_check:\n    interval: 100ms\n    timeout: 300ms\n    fall: 2\n    rise: 2\n";

/// A primary and one replica requiring `NODES_PASS`.
fn protected_set() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    for s in [&replica, &primary] {
        assert_eq!(
            s.cmd(&["CONFIG", "SET", "masterauth", NODES_PASS]),
            Reply::ok()
        );
    }
    for s in [&replica, &primary] {
        assert_eq!(
            s.cmd(&["CONFIG", "SET", "requirepass", NODES_PASS]),
            Reply::ok()
        );
    }
    (primary, replica)
}

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
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the first `/metrics` sample whose line holds every one of `parts`.
fn sample(metrics: &str, parts: &[&str]) -> Option<u64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Lines of `log` at `level` that mention `addr`.
/// The log lines at `level` about refused credentials that name `addr` (not the follower's
/// line that no Sentinel answers, which names the Sentinels it asked).
fn lines<'a>(log: &'a str, level: &str, addr: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(level) && l.contains(addr))
        .filter(|l| !l.contains(UNANSWERED))
        .collect()
}

/// The follower's warning that no Sentinel answers about a master.
const UNANSWERED: &str = "no Sentinel answers about master";

#[test]
fn refused_credentials_are_logged_once_counted_and_their_recovery_said_once() {
    let (primary, replica) = protected_set();
    let (s_primary, _s_replica) = protected_set();
    let monitor = Monitor::new("mymaster", s_primary.port()).auth_pass(NODES_PASS);
    let sentinel = Sentinel::start_monitors(&[monitor]);
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
    let (rs, sp, admin) = (free_port(), free_port(), free_port());
    let yaml = |auth: &str, sentinel_password: &str| {
        format!(
            "rs:\n  listen: 127.0.0.1:{rs}\n  redis_auth: {auth}\n  primary: {}\n  replicas: [{}]\n{CHECKS}\
             sp:\n  listen: 127.0.0.1:{sp}\n  redis_auth: {NODES_PASS}\n  sentinels: [{}]\n  master: mymaster\n  sentinel_password: {sentinel_password}\n{CHECKS}",
            primary.addr(),
            replica.addr(),
            sentinel.addr(),
        )
    };
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yaml(WRONG_AUTH, WRONG_SENTINEL))
        .args(["-c", "{dir}/rampart.yml", "--workers", "2"])
        .args(["-o", "{dir}/rampart.log", "--no-stats"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(sp)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let log = || std::fs::read_to_string(proxy.dir().join("rampart.log")).unwrap_or_default();
    let metrics = || http_get(admin, "/metrics");
    let sentinel_series = [
        "rampart_backend_auth_failures_total{",
        "pool=\"sp\"",
        "peer=\"sentinel\"",
    ];
    let refusals = |addr: &str| {
        sample(
            &metrics(),
            &["rampart_backend_auth_failures_total{", "peer=", addr],
        )
        .unwrap_or(0)
    };

    // Four seconds of refusals: the follower asks the Sentinel twice a second and its
    // subscriber reconnects every second; each node fails a check every 100 ms.
    std::thread::sleep(Duration::from_secs(4));
    let text = log();
    let s_addr = sentinel.addr();
    let warned = lines(&text, "WARN", &s_addr);
    assert_eq!(warned.len(), 1, "one warning for the Sentinel:\n{text}");
    // The follower, left with no Sentinel that answers, says so once (at most once a minute).
    assert_eq!(text.matches(UNANSWERED).count(), 1, "{text}");
    assert!(
        warned[0].contains("sentinel") && warned[0].contains("WRONGPASS"),
        "the warning names the Sentinel and its reason: {}",
        warned[0]
    );
    for node in [primary.addr(), replica.addr()] {
        let warned = lines(&text, "WARN", &node);
        assert_eq!(warned.len(), 1, "one warning for node {node}:\n{text}");
        assert!(warned[0].contains("WRONGPASS"), "{}", warned[0]);
        assert!(
            refusals(&node) >= 10,
            "node {node}'s refusals are counted: {}",
            metrics()
        );
    }
    let counted = sample(&metrics(), &sentinel_series).unwrap_or(0);
    assert!(
        counted >= 5,
        "the Sentinel's refusals are counted ({counted}): {}",
        metrics()
    );
    for secret in [NODES_PASS, SENTINEL_PASS, WRONG_AUTH, WRONG_SENTINEL] {
        assert!(!text.contains(secret), "the log shows {secret}:\n{text}");
        assert!(!metrics().contains(secret), "/metrics shows {secret}");
    }

    // The operator fixes the file and reloads: each address says once that it accepts
    // again, and nothing more is counted.
    std::fs::write(
        proxy.dir().join("rampart.yml"),
        yaml(NODES_PASS, SENTINEL_PASS),
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    proxy.signal("HUP");
    let recovered = |addr: &str| {
        lines(&log(), "INFO", addr)
            .iter()
            .filter(|l| l.contains("accepts rampart's credentials again"))
            .count()
    };
    let addrs = [s_addr.clone(), primary.addr(), replica.addr()];
    poll_until(Duration::from_secs(10), || {
        addrs.iter().all(|a| recovered(a) == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no recovery line for each address:\n{}", log()));
    let before: Vec<u64> = addrs.iter().map(|a| refusals(a)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let text = log();
    for (a, n) in addrs.iter().zip(before) {
        assert_eq!(recovered(a), 1, "one recovery line for {a}:\n{text}");
        assert_eq!(lines(&text, "WARN", a).len(), 1, "no new warning: {text}");
        assert_eq!(refusals(a), n, "no refusal after the fix for {a}");
    }
}
