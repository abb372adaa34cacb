//! No secret rampart knows ever shows: one rampart is configured with every secret it can
//! hold (backend passwords of a `servers:`, a `primary:`/`replicas:` and a `sentinels:` pool,
//! Sentinel's own password, the admin token), some of them wrong so that the errors that
//! could echo them happen (a backend refusing the password, a Sentinel refusing its password,
//! failed AUTH from a client, reloads of invalid files, a wrong admin token); then every
//! place rampart writes to is read and searched for each secret: INFO (every section), CLIENT
//! LIST, SLOWLOG, MONITOR, every error reply, every admin route, the stats port, the page,
//! `rampart -t`, and the log file at the most verbose level.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::{free_port, poll_until, Client, Monitor, Proxy, RedisServer, Reply, Sentinel};

/// The `servers:` pool's backend password (the nodes require it).
const SERVERS_PASS: &str = "sekrit-servers-a91f07";
/// The `primary:`/`replicas:` pool's backend password.
const REPLICAS_PASS: &str = "sekrit-replicas-b72e55";
/// The `sentinels:` pool's backend password.
const SENTINEL_NODES_PASS: &str = "sekrit-sentnodes-c5d3e1";
/// The Sentinel's own password (`sentinel_password`).
const SENTINEL_PASS: &str = "sekrit-sentinel-d04b8a";
/// A `redis_auth` the nodes refuse, in a `servers:` pool and in a `primary:` pool.
const WRONG_PASS: &str = "sekrit-wrongpass-e6a832";
/// A `sentinel_password` the Sentinel refuses.
const WRONG_SENTINEL_PASS: &str = "sekrit-wrongsent-f1c9d4";
/// The admin token, and the one it is rotated to.
const TOKEN: &str = "sekrit-token-0a1b2c3d";
const TOKEN_NEXT: &str = "sekrit-token-next-4e5f";
/// What clients send that is almost a secret: a typo of a password, a wrong token.
const CLIENT_TYPO: &str = "sekrit-servers-a91f08";
const TOKEN_TYPO: &str = "sekrit-token-0a1b2c3e";

/// Every secret of this file's main test (proxy users' passwords have their own test,
/// `proxy_users_passwords_never_show`).
fn secrets() -> Vec<&'static str> {
    vec![
        SERVERS_PASS,
        REPLICAS_PASS,
        SENTINEL_NODES_PASS,
        SENTINEL_PASS,
        WRONG_PASS,
        WRONG_SENTINEL_PASS,
        TOKEN,
        TOKEN_NEXT,
        CLIENT_TYPO,
        TOKEN_TYPO,
    ]
}

const CHECKS: &str =
    "  health_check:\n    interval: 100ms\n    timeout: 300ms\n    fall: 2\n    rise: 2\n";

/// Everything rampart showed, by where it was seen.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    fn reply(&mut self, place: impl Into<String>, r: &Reply) {
        self.add(place, reply_text(r));
    }

    /// Every place that holds a secret, with the line it is on.
    fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (place, text) in &self.0 {
            for s in secrets() {
                if let Some(line) = text.lines().find(|l| l.contains(s)) {
                    out.push(format!("{place}: {s} in {line:?}"));
                }
            }
        }
        out
    }
}

/// A reply as text, one line per element of nested arrays, binary shown lossily.
fn reply_text(r: &Reply) -> String {
    match r {
        Reply::Simple(t) => t.clone(),
        Reply::Error(t) => format!("-{t}"),
        Reply::Int(n) => n.to_string(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        Reply::Bulk(None) | Reply::Array(None) => "(nil)".to_string(),
        Reply::Array(Some(items)) => items.iter().map(reply_text).collect::<Vec<_>>().join("\n"),
    }
}

/// Servers requiring `pass`: a primary and `replicas` replicas (`masterauth` set so that
/// they replicate).
fn protected(pass: &str, replicas: usize) -> (RedisServer, Vec<RedisServer>) {
    let primary = RedisServer::start();
    let reps: Vec<RedisServer> = (0..replicas)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    for s in reps.iter().chain([&primary]) {
        assert_eq!(s.cmd(&["CONFIG", "SET", "masterauth", pass]), Reply::ok());
    }
    for s in reps.iter().chain([&primary]) {
        assert_eq!(s.cmd(&["CONFIG", "SET", "requirepass", pass]), Reply::ok());
    }
    (primary, reps)
}

/// One HTTP/1.1 request; the status line, headers and body as one text.
fn http(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything the stats port sends on one connection.
fn stats_port(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The pools: `servers:` (right and wrong password), `primary:`/`replicas:` (right and
/// wrong), `sentinels:` (right, and a wrong Sentinel password).
fn yaml(
    ports: &[u16; 6],
    servers: &RedisServer,
    set: &(RedisServer, Vec<RedisServer>),
    sentinel: &Sentinel,
) -> String {
    let (primary, replicas) = set;
    format!(
        "servers_pool:\n  listen: 127.0.0.1:{p0}\n  redis: true\n  redis_auth: {SERVERS_PASS}\n  servers:\n   - {srv}:1 s0\n\
         wrong_servers:\n  listen: 127.0.0.1:{p1}\n  redis: true\n  redis_auth: {WRONG_PASS}\n  server_failure_limit: 1\n  auto_eject_hosts: false\n  servers:\n   - {srv}:1 s0\n\
         replicas_pool:\n  listen: 127.0.0.1:{p2}\n  redis_auth: {REPLICAS_PASS}\n  primary: {prim}\n  replicas: [{rep}]\n  read_policy: replica\n{CHECKS}\
         wrong_replicas:\n  listen: 127.0.0.1:{p3}\n  redis_auth: {WRONG_PASS}\n  primary: {prim}\n  replicas: [{rep}]\n{CHECKS}\
         sentinel_pool:\n  listen: 127.0.0.1:{p4}\n  redis_auth: {SENTINEL_NODES_PASS}\n  sentinels: [{sent}]\n  master: mymaster\n  sentinel_password: {SENTINEL_PASS}\n{CHECKS}\
         wrong_sentinel:\n  listen: 127.0.0.1:{p5}\n  redis_auth: {SENTINEL_NODES_PASS}\n  sentinels: [{sent}]\n  master: mymaster\n  sentinel_password: {WRONG_SENTINEL_PASS}\n{CHECKS}",
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        p3 = ports[3],
        p4 = ports[4],
        p5 = ports[5],
        srv = servers.addr(),
        prim = primary.addr(),
        rep = replicas[0].addr(),
        sent = sentinel.addr(),
    )
}

/// Invalid files whose error is on a line that holds a secret. (A secret written as the value
/// of another key, say `timeout:`, is not known to be one: that key's error shows its value.)
fn bad_files(good: &str) -> Vec<(&'static str, String)> {
    let first = |from: &str, to: String| good.replacen(from, &to, 1);
    let auth = format!("redis_auth: {SERVERS_PASS}");
    let sent = format!("sentinel_password: {SENTINEL_PASS}");
    vec![
        (
            "a password as a list",
            first(&auth, format!("redis_auth: [{SERVERS_PASS}]")),
        ),
        (
            "a password as a map",
            first(&auth, format!("redis_auth: {{{SERVERS_PASS}: 1}}")),
        ),
        (
            "an unterminated quote",
            first(&auth, format!("redis_auth: \"{SERVERS_PASS}")),
        ),
        (
            "a misspelt key",
            first(&auth, format!("redis_auht: {SERVERS_PASS}")),
        ),
        (
            "a duplicated key",
            first(&auth, format!("{auth}\n  {auth}")),
        ),
        (
            "a bad indent",
            first(&auth, format!("   redis_auth: {SERVERS_PASS}")),
        ),
        (
            "a tab as indent",
            first(&format!("  {auth}"), format!("\t{auth}")),
        ),
        (
            "a sentinel password as a list",
            first(&sent, format!("sentinel_password: [{SENTINEL_PASS}]")),
        ),
    ]
}

/// Clients of every pool: AUTH right and wrong, HELLO with AUTH, commands that reach the
/// nodes or fail because the nodes refuse the password, commands that would show a
/// password; every reply is kept.
fn drive_clients(ports: &[u16; 6], seen: &mut Seen) {
    let connect = |port: u16| {
        let mut c = Client::connect(&format!("127.0.0.1:{port}"));
        // A write to a pool whose nodes refuse the password waits out its failover hold
        // before its error: generous on a loaded machine (the replies are what is checked).
        c.set_read_timeout(Some(Duration::from_secs(20)));
        c
    };
    let mut run = |c: &mut Client, pool: &str, args: &[&str]| {
        // The arguments are the test's own: keep only the reply.
        match c.try_cmd(args) {
            Ok(r) => {
                seen.reply(format!("{pool}: reply to {}", args[0]), &r);
                r
            }
            Err(e) => panic!("{pool}: {args:?}: {e}"),
        }
    };
    let passes = [
        ("servers_pool", SERVERS_PASS),
        ("wrong_servers", WRONG_PASS),
        ("replicas_pool", REPLICAS_PASS),
        ("wrong_replicas", WRONG_PASS),
        ("sentinel_pool", SENTINEL_NODES_PASS),
        ("wrong_sentinel", SENTINEL_NODES_PASS),
    ];
    for (i, (pool, pass)) in passes.iter().enumerate() {
        let mut c = connect(ports[i]);
        run(&mut c, pool, &["GET", "before-auth"]);
        run(&mut c, pool, &["AUTH", CLIENT_TYPO]);
        run(&mut c, pool, &["AUTH", "default", CLIENT_TYPO]);
        run(
            &mut c,
            pool,
            &["HELLO", "2", "AUTH", "default", CLIENT_TYPO],
        );
        assert_eq!(run(&mut c, pool, &["AUTH", pass]), Reply::ok(), "{pool}");
        run(&mut c, pool, &["HELLO", "2", "AUTH", "default", pass]);
        for args in [
            &["SET", "k", "v"][..],
            &["GET", "k"],
            &["MGET", "k", "k2"],
            &["CONFIG", "GET", "requirepass"],
            &["CONFIG", "GET", "masterauth"],
            &["CONFIG", "GET", "*"],
            &["CONFIG", "SET", "requirepass", CLIENT_TYPO],
            &["ACL", "LIST"],
            &["CLIENT", "LIST"],
            &["CLIENT", "INFO"],
            &["INFO", "everything"],
            &["INFO", "all"],
            &["INFO", "pools"],
            &["INFO", "server"],
            &["SLOWLOG", "GET", "1000"],
            &["RAMPART", "KEYSHARD", "k"],
            &["RAMPART", "HELP"],
            &[
                "MIGRATE",
                "127.0.0.1",
                "1",
                "k",
                "0",
                "10",
                "AUTH",
                CLIENT_TYPO,
            ],
        ] {
            run(&mut c, pool, args);
        }
    }
}

#[test]
fn no_secret_appears_in_anything_rampart_shows() {
    // The nodes: each pool's servers require its password.
    let servers = RedisServer::start();
    assert_eq!(
        servers.cmd(&["CONFIG", "SET", "requirepass", SERVERS_PASS]),
        Reply::ok()
    );
    let set = protected(REPLICAS_PASS, 1);
    let sentinel_set = protected(SENTINEL_NODES_PASS, 1);
    let monitor = Monitor::new("mymaster", sentinel_set.0.port()).auth_pass(SENTINEL_NODES_PASS);
    let sentinel = Sentinel::start_monitors(&[monitor]);
    testkit::wait_until(
        Duration::from_secs(15),
        "the sentinel to see the replica",
        || {
            sentinel
                .cmd(&["SENTINEL", "REPLICAS", "mymaster"])
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
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

    let ports = [(); 6].map(|_| free_port());
    let (admin, stats) = (free_port(), free_port());
    let good = yaml(&ports, &servers, &set, &sentinel);
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &good)
        .file("token", format!("{TOKEN}\n"))
        .args(["-c", "{dir}/rampart.yml", "--workers", "2", "-v", "11"])
        .args(["-o", "{dir}/rampart.log", "--slowlog-slower-than", "0"])
        .args(["-a", "127.0.0.1", "-s"])
        .arg(stats.to_string())
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .args(["--admin-token-file", "{dir}/token"])
        .wait_port(ports[5])
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let dir = proxy.dir().to_path_buf();
    let mut seen = Seen::default();

    // The good pools come up; the wrong ones are down (and say why).
    let topology = || http(admin, "GET", "/api/topology", &[], "");
    poll_until(Duration::from_secs(15), || {
        let t = topology();
        (t.matches("\"status\":\"up\"").count() >= 4).then_some(())
    })
    .unwrap_or_else(|| panic!("the good pools never came up: {}", topology()));

    // A MONITOR client sees everything the other clients send.
    let mut monitor = Client::connect(&format!("127.0.0.1:{}", ports[0]));
    assert_eq!(monitor.cmd(&["AUTH", SERVERS_PASS]), Reply::ok());
    assert_eq!(monitor.cmd(&["MONITOR"]), Reply::ok());
    monitor.set_read_timeout(Some(Duration::from_millis(500)));

    drive_clients(&ports, &mut seen);
    let mut monitored = String::new();
    while let Ok(r) = monitor.read_reply() {
        monitored.push_str(&reply_text(&r));
        monitored.push('\n');
    }
    assert!(
        monitored.contains("\"MIGRATE\"") && monitored.contains("\"AUTH\" \"(redacted)\""),
        "MONITOR saw: {monitored}"
    );
    seen.add("MONITOR", monitored);

    // Changing calls: without the token, with a wrong one, and reloads of invalid files
    // (through the API and SIGHUP), then `rampart -t` on each.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let typo = format!("Authorization: Bearer {TOKEN_TYPO}");
    seen.add(
        "POST /api/reload without a token",
        http(admin, "POST", "/api/reload", &[], ""),
    );
    seen.add(
        "POST /api/reload with a wrong token",
        http(admin, "POST", "/api/reload", &[&typo], ""),
    );
    let conf = dir.join("rampart.yml");
    for (what, text) in bad_files(&good) {
        std::fs::write(&conf, &text).unwrap_or_else(|e| panic!("{e}"));
        let answer = http(admin, "POST", "/api/reload", &[&bearer], "");
        assert!(answer.starts_with("HTTP/1.1 409 "), "{what}: {answer}");
        seen.add(format!("POST /api/reload of {what}"), answer);
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("rampart -t: {e}"));
        assert!(!check.status.success(), "{what}: rampart -t accepted it");
        seen.add(
            format!("rampart -t of {what} (stdout)"),
            String::from_utf8_lossy(&check.stdout),
        );
        seen.add(
            format!("rampart -t of {what} (stderr)"),
            String::from_utf8_lossy(&check.stderr),
        );
    }
    proxy.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    // Back to the good file, with a rotated token.
    std::fs::write(&conf, &good).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("token"), TOKEN_NEXT).unwrap_or_else(|e| panic!("{e}"));
    let answer = http(admin, "POST", "/api/reload", &[&bearer], "");
    assert!(answer.contains("\"admin_token\":\"changed\""), "{answer}");
    seen.add("POST /api/reload (good)", answer);
    let next = format!("Authorization: Bearer {TOKEN_NEXT}");
    let fault = "{\"pool\":\"servers_pool\",\"kind\":\"error\",\"error\":\"ERR injected\",\"duration_s\":60}";
    seen.add(
        "POST /api/faults",
        http(admin, "POST", "/api/faults", &[&next], fault),
    );
    seen.add(
        "POST /api/nodes/maintenance",
        http(
            admin,
            "POST",
            "/api/nodes/maintenance",
            &[&next],
            "{\"pool\":\"wrong_servers\",\"node\":\"s0\",\"on\":true}",
        ),
    );
    seen.add(
        "POST /api/shards/switchover",
        http(
            admin,
            "POST",
            "/api/shards/switchover",
            &[&next],
            "{\"pool\":\"wrong_replicas\",\"shard\":\"wrong_replicas\"}",
        ),
    );

    // Every route of the admin interface, the stats port, MONITOR, and the log.
    for path in [
        "/",
        "/assets/app.js",
        "/assets/style.css",
        "/metrics",
        "/stats",
        "/healthz",
        "/readyz",
        "/api/topology",
        "/api/events",
        "/api/history",
        "/api/faults",
        "/api/shards/switchover?pool=replicas_pool&shard=replicas_pool",
        "/api/shards/switchover?pool=wrong_replicas&shard=wrong_replicas",
        "/nope",
    ] {
        seen.add(format!("GET {path}"), http(admin, "GET", path, &[], ""));
    }
    seen.add("stats port", stats_port(stats));

    let log = std::fs::read_to_string(dir.join("rampart.log")).unwrap_or_default();
    assert!(log.contains("reload"), "the log holds no reload: {log}");
    seen.add("log file", log);
    seen.add("stderr", proxy.stderr());

    let leaks = seen.leaks();
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// docs/SECURITY.md's rotation of a backend password: the servers accept both passwords, the
/// file names the new one and is reloaded, the old one is removed. Clients connected before
/// keep working throughout, new ones log in with the new password, and rampart's own
/// connections (requests and health checks) use it.
#[test]
fn a_backend_password_is_rotated_with_a_reload_and_connected_clients_keep_working() {
    const OLD: &str = "rotate-old-5b1e";
    const NEW: &str = "rotate-new-9c4f";
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    for s in [&primary, &replica] {
        assert_eq!(s.cmd(&["CONFIG", "SET", "masterauth", OLD]), Reply::ok());
    }
    for s in [&primary, &replica] {
        let r = s.cmd(&["ACL", "SETUSER", "default", "on", &format!(">{OLD}")]);
        assert_eq!(r, Reply::ok());
    }
    let (port, admin) = (free_port(), free_port());
    let conf = |pass: &str| {
        format!(
            "main:\n  listen: 127.0.0.1:{port}\n  redis_auth: {pass}\n  primary: {}\n  replicas: [{}]\n{CHECKS}",
            primary.addr(),
            replica.addr()
        )
    };
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", conf(OLD))
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "2"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let up = || {
        let t = http(admin, "GET", "/api/topology", &[], "");
        t.matches("\"status\":\"up\"").count() == 2
    };
    testkit::wait_until(Duration::from_secs(10), "both nodes up", up);
    let login = |pass: &str| {
        let mut c = Client::connect(&format!("127.0.0.1:{port}"));
        let r = c.cmd(&["AUTH", pass]);
        (c, r)
    };
    let (mut before, r) = login(OLD);
    assert_eq!(r, Reply::ok());
    assert_eq!(before.cmd(&["SET", "k", "1"]), Reply::ok());

    // 0. A file naming a password the servers do not take is refused whole: applied, it
    // would take the pool down. Nothing changes, and the refusal shows no password.
    const TYPO: &str = "rotate-typo-7d2a";
    std::fs::write(proxy.dir().join("rampart.yml"), conf(TYPO)).unwrap_or_else(|e| panic!("{e}"));
    let answer = http(admin, "POST", "/api/reload", &[], "");
    assert!(
        answer.contains("refuses the new redis_auth") && answer.contains("nothing changed"),
        "{answer}"
    );
    assert!(!answer.contains(TYPO) && !answer.contains(OLD), "{answer}");
    assert_eq!(before.cmd(&["SET", "k", "1"]), Reply::ok());
    let (mut fresh, r) = login(OLD);
    assert_eq!(r, Reply::ok(), "the old password still logs in");
    assert_eq!(fresh.cmd(&["GET", "k"]), Reply::bulk("1"));

    // 1. The servers take both passwords.
    for s in [&primary, &replica] {
        let mut c = Client::connect(&s.addr());
        assert_eq!(c.cmd(&["AUTH", OLD]), Reply::ok());
        let r = c.cmd(&["ACL", "SETUSER", "default", &format!(">{NEW}")]);
        assert_eq!(r, Reply::ok());
        assert_eq!(c.cmd(&["CONFIG", "SET", "masterauth", NEW]), Reply::ok());
    }
    // 2. The file names the new one; a reload applies it.
    std::fs::write(proxy.dir().join("rampart.yml"), conf(NEW)).unwrap_or_else(|e| panic!("{e}"));
    let answer = http(admin, "POST", "/api/reload", &[], "");
    assert!(answer.contains("redis_auth changed"), "{answer}");
    assert!(!answer.contains(NEW) && !answer.contains(OLD), "{answer}");
    // 3. The old password goes.
    for s in [&primary, &replica] {
        let mut c = Client::connect(&s.addr());
        assert_eq!(c.cmd(&["AUTH", NEW]), Reply::ok());
        let r = c.cmd(&["ACL", "SETUSER", "default", &format!("<{OLD}")]);
        assert_eq!(r, Reply::ok());
        // Every connection is closed too, so rampart's next ones must log in with the new
        // password (removing a password leaves logged-in connections as they are).
        let killed = c.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        assert!(killed.as_int().is_some(), "{killed:?}");
    }
    std::thread::sleep(Duration::from_millis(300));

    // The client connected before goes on, through new server connections.
    for i in 0..20 {
        let r = before.cmd(&["SET", "k", &i.to_string()]);
        assert_eq!(r, Reply::ok(), "write {i} after the rotation");
    }
    assert_eq!(before.cmd(&["GET", "k"]), Reply::bulk("19"));
    let (mut after, r) = login(NEW);
    assert_eq!(r, Reply::ok());
    assert_eq!(after.cmd(&["GET", "k"]), Reply::bulk("19"));
    let (_, r) = login(OLD);
    assert!(
        matches!(r, Reply::Error(ref e) if e.starts_with("WRONGPASS")),
        "{r:?}"
    );
    // Health checks use the new password: both nodes stay up.
    std::thread::sleep(Duration::from_millis(500));
    assert!(up(), "{}", http(admin, "GET", "/api/topology", &[], ""));
    let log = proxy.stderr();
    assert!(
        !log.contains(OLD) && !log.contains(NEW) && !log.contains(TYPO),
        "{log}"
    );
}

/// With `admin_broadcast: true`, CONFIG GET reaches the servers; the parameters that hold
/// their credentials are left out of its reply (RESP2 and RESP3), and a transaction cannot
/// carry it past that filter.
#[test]
fn config_get_leaves_out_the_servers_credentials() {
    let (a, _) = protected(SERVERS_PASS, 0);
    let (b, _) = protected(SERVERS_PASS, 0);
    let port = free_port();
    let conf = format!(
        "main:\n  listen: 127.0.0.1:{port}\n  redis_auth: {SERVERS_PASS}\n  admin_broadcast: true\n  servers:\n    - {}:1\n    - {}:1\n",
        a.addr(),
        b.addr()
    );
    let _proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", conf)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--no-admin"])
        .wait_port(port)
        .start();
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["AUTH", SERVERS_PASS]), Reply::ok());
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "requirepass"]),
        Reply::Array(Some(vec![]))
    );
    let all = reply_text(&c.cmd(&["CONFIG", "GET", "*"]));
    assert!(
        !all.contains(SERVERS_PASS),
        "CONFIG GET * shows the password"
    );
    assert!(all.contains("maxmemory-policy"), "the rest is there: {all}");
    // Several parameters at once: the others stay.
    let r = reply_text(&c.cmd(&["CONFIG", "GET", "masterauth", "maxclients"]));
    assert!(r.contains("maxclients") && !r.contains("masterauth"), "{r}");
    // RESP3: a map, filtered the same way.
    let mut raw = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    raw.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut req = testkit::encode_command(&["HELLO", "3", "AUTH", "default", SERVERS_PASS]);
    req.extend(testkit::encode_command(&["CONFIG", "GET", "*pass*"]));
    req.extend(testkit::encode_command(&["PING"]));
    raw.write_all(&req).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"+PONG\r\n") {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    // Every parameter matching *pass* holds a credential: the map is empty.
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("%0\r\n+PONG\r\n"), "{text}");
    assert!(!text.contains(SERVERS_PASS), "{text}");
    // Not inside a transaction, whose EXEC array would carry the server's reply as it is.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    let r = c.cmd(&["CONFIG", "GET", "requirepass"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("cannot be part of a transaction")),
        "{r:?}"
    );
    assert!(matches!(c.cmd(&["EXEC"]), Reply::Error(e) if e.starts_with("EXECABORT")));
}

/// Proxy users' passwords (given as a SHA-256, in a file, in an environment variable) never
/// show: clients log in right and wrong (AUTH, HELLO AUTH), an admin user reads ACL LIST and
/// GETUSER (hashes only, as Redis shows them), and every place rampart writes is searched.
#[test]
fn proxy_users_passwords_never_show() {
    const APP: &str = "sekrit-user-app-7d1e";
    const FILE: &str = "sekrit-user-file-88a0";
    const ENV: &str = "sekrit-user-env-3c4b";
    const TYPO: &str = "sekrit-user-app-7d1f";
    let hex = |p: &str| -> String {
        rampart_config::sha256(p.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let server = RedisServer::start();
    let (port, admin) = (free_port(), free_port());
    let files = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pw = files.path().join("pw");
    std::fs::write(&pw, format!("{FILE}\n")).unwrap_or_else(|e| panic!("{e}"));
    let conf = format!(
        "main:\n  listen: 127.0.0.1:{port}\n  servers:\n    - {}:1\n  users:\n    - name: app\n      password_sha256: {}\n      rules: on +@all ~*\n    - name: filer\n      password_file: {}\n      rules: on +@read ~*\n    - name: envy\n      password_env: USERS_TEST_PW\n      rules: on +@read ~*\n",
        server.addr(),
        hex(APP),
        pw.display()
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .env("USERS_TEST_PW", ENV)
        .args([
            "-c",
            "{dir}/rampart.yml",
            "--workers",
            "2",
            "-v",
            "11",
            "--no-stats",
        ])
        .args(["-o", "{dir}/rampart.log", "--slowlog-slower-than", "0"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .file("rampart.yml", conf)
        .wait_port(port)
        .start();
    let dir = proxy.dir().to_path_buf();
    let mut seen = Seen::default();
    let mut monitor = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(monitor.cmd(&["AUTH", "app", APP]), Reply::ok());
    assert_eq!(monitor.cmd(&["MONITOR"]), Reply::ok());
    monitor.set_read_timeout(Some(Duration::from_millis(500)));
    for (user, pass) in [("app", APP), ("filer", FILE), ("envy", ENV)] {
        let mut c = Client::connect(&format!("127.0.0.1:{port}"));
        seen.reply("AUTH typo", &c.cmd(&["AUTH", user, TYPO]));
        seen.reply("HELLO typo", &c.cmd(&["HELLO", "2", "AUTH", user, TYPO]));
        assert_eq!(c.cmd(&["AUTH", user, pass]), Reply::ok(), "{user}");
        seen.reply("HELLO", &c.cmd(&["HELLO", "2", "AUTH", user, pass]));
        seen.reply("GET", &c.cmd(&["GET", "k"]));
    }
    let mut op = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(op.cmd(&["AUTH", "app", APP]), Reply::ok());
    for args in [
        &["ACL", "LIST"][..],
        &["ACL", "GETUSER", "filer"],
        &["ACL", "GETUSER", "envy"],
        &["ACL", "WHOAMI"],
        &["CLIENT", "LIST"],
        &["SLOWLOG", "GET", "100"],
        &["INFO", "everything"],
        &["CONFIG", "GET", "*"],
    ] {
        seen.reply(args.join(" "), &op.cmd(args));
    }
    let mut monitored = String::new();
    while let Ok(r) = monitor.read_reply() {
        monitored.push_str(&reply_text(&r));
        monitored.push('\n');
    }
    assert!(monitored.contains("\"AUTH\""), "MONITOR saw: {monitored}");
    seen.add("MONITOR", monitored);
    // A reload that fails on a user's file, and the good one again.
    std::fs::remove_file(&pw).unwrap_or_else(|e| panic!("{e}"));
    seen.add(
        "reload, file gone",
        http(admin, "POST", "/api/reload", &[], ""),
    );
    std::fs::write(&pw, FILE).unwrap_or_else(|e| panic!("{e}"));
    seen.add("reload", http(admin, "POST", "/api/reload", &[], ""));
    for path in ["/metrics", "/api/topology", "/api/events", "/"] {
        seen.add(format!("GET {path}"), http(admin, "GET", path, &[], ""));
    }
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["-t", "-c"])
        .arg(dir.join("rampart.yml"))
        .output()
        .unwrap_or_else(|e| panic!("rampart -t: {e}"));
    seen.add("rampart -t", String::from_utf8_lossy(&check.stdout));
    seen.add("rampart -t", String::from_utf8_lossy(&check.stderr));
    let log = std::fs::read_to_string(dir.join("rampart.log")).unwrap_or_default();
    assert!(log.contains("app"), "the log names the users: {log}");
    seen.add("log file", log);
    seen.add("stderr", proxy.stderr());
    let mut leaks = Vec::new();
    for (place, text) in &seen.0 {
        for s in [APP, FILE, ENV, TYPO] {
            if let Some(line) = text.lines().find(|l| l.contains(s)) {
                leaks.push(format!("{place}: {s} in {line:?}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    // ACL LIST shows the SHA-256 as Redis does (#<hash>), never the password.
    assert!(
        seen.0
            .iter()
            .any(|(p, t)| p == "ACL LIST" && t.contains(&hex(APP))),
        "ACL LIST shows the app user's hash"
    );
}

/// Files refused for a problem on, beside, or carried from a line that holds a secret, each
/// secret a distinct recognisable text: `(what, file)`. `good` holds `redis_auth: {AUTH}`,
/// a user with `password_sha256: {HASH}`, and `timeout: 400` on the line after
/// `redis_auth`.
fn files_with_secrets(good: &str) -> Vec<(&'static str, String)> {
    let auth = format!("redis_auth: {CFG_AUTH}");
    let hash = format!("password_sha256: {CFG_HASH}");
    let first = |from: &str, to: String| {
        assert!(good.contains(from), "{from} not in the file");
        good.replacen(from, &to, 1)
    };
    let s = CFG_SECRET;
    vec![
        (
            "a password as a list",
            first(&auth, format!("redis_auth: [{s}]")),
        ),
        (
            "a password as a map",
            first(&auth, format!("redis_auth: {{{s}: 1}}")),
        ),
        (
            "an unterminated quote",
            first(&auth, format!("redis_auth: \"{s}")),
        ),
        (
            "junk after a quote",
            first(&auth, format!("redis_auth: '{s}' x")),
        ),
        (
            "a colon in the value",
            first(&auth, format!("redis_auth: {s}: x")),
        ),
        ("a misspelt key", first(&auth, format!("redis_auht: {s}"))),
        (
            "a duplicated key",
            first(&auth, format!("redis_auth: {s}\n  redis_auth: {s}")),
        ),
        ("a bad indent", first(&auth, format!("   redis_auth: {s}"))),
        (
            "a tab as indent",
            first(&format!("  {auth}"), format!("\tredis_auth: {s}")),
        ),
        (
            "a bad escape",
            first(&auth, format!("redis_auth: \"{s}\\q\"")),
        ),
        (
            "a binary tag",
            first(&auth, format!("redis_auth: !!binary {s}")),
        ),
        (
            "an integer tag",
            first(&auth, format!("redis_auth: !!int {s}")),
        ),
        (
            "a block scalar badly indented",
            first(&auth, format!("redis_auth: |\n {s}")),
        ),
        (
            "an address in brackets",
            first(&auth, format!("redis_auth: [fe80::1]:{s}")),
        ),
        (
            "the password carried to timeout by an alias",
            first(
                &format!("{auth}\n  timeout: 400"),
                format!("redis_auth: &pw {s}\n  timeout: *pw"),
            ),
        ),
        (
            "a bad value on the next line",
            first(
                &format!("{auth}\n  timeout: 400"),
                format!("redis_auth: {s}\n  timeout: 400 {s}"),
            ),
        ),
        (
            "a list item on the next line",
            first(
                &format!("{auth}\n  timeout: 400"),
                format!("redis_auth: {s}\n  timeout: - 400"),
            ),
        ),
        (
            "a Sentinel password in a pool without Sentinels",
            first(&auth, format!("{auth}\n  sentinel_password: {s}")),
        ),
        (
            "a Sentinel password as a list",
            first(&auth, format!("{auth}\n  sentinel_password: [{s}]")),
        ),
        (
            "a user's password in clear",
            first(&hash, format!("password: {s}")),
        ),
        (
            "a user's hash that is not one",
            first(&hash, format!("password_sha256: {s}")),
        ),
        (
            "a user's hash as a list",
            first(&hash, format!("password_sha256: [{s}]")),
        ),
        (
            "a misspelt user key",
            first(&hash, format!("{hash}\n      pasword: {s}")),
        ),
        (
            "a user's rule with a hash that is not one",
            first("rules: on", format!("rules: \"#{s} on")).replacen("~*\n", "~*\"\n", 1),
        ),
        (
            "a user's rule removing a hash that is not one",
            first("rules: on", format!("rules: \"!{s} on")).replacen("~*\n", "~*\"\n", 1),
        ),
        (
            "a user's rule with a clear password",
            first("rules: on", format!("rules: \">{s} on")).replacen("~*\n", "~*\"\n", 1),
        ),
    ]
}

/// A recognisable secret placed in the refused files.
const CFG_SECRET: &str = "sekrit-cfg-5a7e19";
/// The good file's `redis_auth`, and its user's password hash.
const CFG_AUTH: &str = "sekrit-cfg-auth-0c42";
const CFG_HASH: &str = "9b74c9897bac770ffc029102a200c5de0c1f3b6fcd44b0dc4fc8a3b2d7a9e6e1";

/// docs/SECURITY.md: a configuration error never shows the value of a secret key, whether the
/// error is about that key, a line beside it, or text YAML carried from it; seen through
/// `rampart -t`, `POST /api/reload` and SIGHUP (the log), for every file of
/// [`files_with_secrets`]. Each is still refused with its file:line.
#[test]
fn configuration_errors_never_show_a_secret() {
    let server = RedisServer::start();
    let (port, admin) = (free_port(), free_port());
    let good = format!(
        "main:\n  listen: 127.0.0.1:{port}\n  redis_auth: {CFG_AUTH}\n  timeout: 400\n  servers:\n    - {}:1\n  users:\n    - name: app\n      password_sha256: {CFG_HASH}\n      rules: on +@all ~*\n",
        server.addr(),
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &good)
        .args(["-c", "{dir}/rampart.yml", "--workers", "1", "-v", "11"])
        .args(["-o", "{dir}/rampart.log", "--no-stats"])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let dir = proxy.dir().to_path_buf();
    let conf = dir.join("rampart.yml");
    let log = || std::fs::read_to_string(dir.join("rampart.log")).unwrap_or_default();
    let refusals = || log().matches("reload refused").count();
    let mut leaks = Vec::new();
    for (what, text) in files_with_secrets(&good) {
        std::fs::write(&conf, &text).unwrap_or_else(|e| panic!("{e}"));
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("rampart -t: {e}"));
        assert!(!check.status.success(), "{what}: rampart -t accepted it");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            said.contains("rampart.yml:"),
            "{what}: no file:line: {said}"
        );
        let answer = http(admin, "POST", "/api/reload", &[], "");
        assert!(answer.starts_with("HTTP/1.1 409 "), "{what}: {answer}");
        let before = refusals();
        proxy.signal("HUP");
        poll_until(Duration::from_secs(5), || {
            (refusals() > before).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: SIGHUP logged no refusal:\n{}", log()));
        for (place, text) in [("rampart -t", &said), ("POST /api/reload", &answer)] {
            for secret in [CFG_SECRET, CFG_AUTH, CFG_HASH] {
                if text.contains(secret) {
                    leaks.push(format!("{what}: {place} shows {secret}: {text}"));
                }
            }
        }
    }
    let log = log();
    for secret in [CFG_SECRET, CFG_AUTH, CFG_HASH] {
        for line in log.lines().filter(|l| l.contains(secret)) {
            leaks.push(format!("the log shows {secret}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
