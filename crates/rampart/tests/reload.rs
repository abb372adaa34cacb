//! Reload without dropping clients: clients pipeline commands through several reloads (a pool
//! added, a timeout changed, a replica added) with no error and no dropped connection; an
//! invalid file changes nothing; a ring change is refused unless forced. A reload applies
//! every changed setting to what is running (health checks, request deadlines, the
//! connection handshake) in every pool kind, and says what changed.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha::{HaProxy, SentinelSetup, FAST_CHECKS};
use rampart_config::HealthCheck;
use testkit::{free_port, poll_until, send_signal, Client, Proxy, RedisServer, Reply};

fn pool(name: &str, port: u16, servers: &[&RedisServer], extra: &str) -> String {
    let mut y = format!("{name}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  hash_tag: \"{{}}\"\n{extra}  servers:\n");
    for (i, s) in servers.iter().enumerate() {
        y.push_str(&format!("   - {}:1 s{i}\n", s.addr()));
    }
    y
}

/// rampart with `yaml` as `rampart.yml` in its directory (`--no-stats`, `workers` workers,
/// info logs, an admin listener on `admin` when given), once the pool's `port` accepts.
fn start_file(yaml: impl AsRef<str>, port: u16, workers: u32, admin: Option<u16>) -> Proxy {
    let mut b = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yaml.as_ref())
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers"])
        .arg(workers.to_string())
        .env("RAMPART_LOG", "info");
    if let Some(a) = admin {
        b = b.args(["--admin".to_string(), format!("127.0.0.1:{a}")]);
    }
    b.wait_port(port).start()
}

/// POST with no body to the admin listener; the whole HTTP response.
fn post(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn info_pools(c: &mut Client) -> String {
    match c.cmd(&["INFO", "pools"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO pools: {other:?}"),
    }
}

#[test]
fn clients_keep_working_through_reloads_and_bad_files_change_nothing() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let (port, port2) = (free_port(), free_port());
    let first = pool("alpha", port, &[&a, &b], "  timeout: 1000\n");
    let admin = free_port();
    let proxy = start_file(&first, port, 2, Some(admin));
    let path = proxy.dir().join("rampart.yml");
    let addr = format!("127.0.0.1:{port}");

    // Clients pipelining the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                let mut rounds = 0u64;
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) && rounds < 100_000 {
                    let key = format!("{{t{t}}}:{}", rounds % 50);
                    let v = rounds.to_string();
                    let r = c.pipeline(&[
                        vec!["SET", key.as_str(), v.as_str()],
                        vec!["GET", key.as_str()],
                        vec!["INCR", "{t}:n"],
                    ]);
                    if r[0] != Reply::ok() || r[1] != Reply::bulk(&v) || r[2].as_int().is_none() {
                        errors.push(format!("{r:?}"));
                    }
                    rounds += 1;
                }
                (rounds, errors)
            })
        })
        .collect();

    let reload = |text: &str| {
        std::fs::write(&path, text).expect("write config");
        send_signal(proxy.pid(), "HUP");
    };
    let mut c = Client::connect(&addr);
    std::thread::sleep(Duration::from_millis(300));
    let accepted = |s: &RedisServer| -> i64 {
        s.info("stats")
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let b_before = accepted(&b);

    // 1. Add a pool on a new port.
    reload(&format!("{first}{}", pool("beta", port2, &[&a], "")));
    let up = poll_until(Duration::from_secs(5), || {
        Client::try_connect(&format!("127.0.0.1:{port2}")).ok()
    });
    let mut beta = up.expect("the new pool listens");
    assert_eq!(beta.cmd(&["PING"]), Reply::simple("PONG"));
    assert_eq!(beta.cmd(&["SET", "x", "1"]), Reply::ok());

    // 2. An invalid file changes nothing.
    reload("alpha:\n  listen: 127.0.0.1:1\n  hsah: nope\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        beta.cmd(&["GET", "x"]),
        Reply::bulk("1"),
        "the running pools still serve"
    );
    assert!(
        proxy.stderr().contains("reload refused"),
        "the refusal is logged:\n{}",
        proxy.stderr()
    );

    // 3. A changed timeout, and the second pool gone.
    let third = pool("alpha", port, &[&a, &b], "  timeout: 2000\n");
    reload(&third);
    let gone = poll_until(Duration::from_secs(5), || {
        Client::try_connect(&format!("127.0.0.1:{port2}"))
            .err()
            .map(|_| ())
    });
    assert!(gone.is_some(), "the removed pool stops listening");

    // 4. A ring change (a third server) is refused without force.
    let c3 = RedisServer::start();
    reload(&pool("alpha", port, &[&a, &b, &c3], "  timeout: 2000\n"));
    let refused = poll_until(Duration::from_secs(5), || {
        proxy.stderr().contains("would move").then_some(())
    });
    assert!(
        refused.is_some(),
        "a ring change needs force:\n{}",
        proxy.stderr()
    );
    assert!(
        !info_pools(&mut c).contains("shards=3"),
        "the ring did not change"
    );
    // Forced through the admin API, the same file applies.
    let forced = post(admin, "/api/reload?force=true");
    assert!(
        forced.contains("200 OK") && forced.contains("moved"),
        "{forced}"
    );
    assert!(
        info_pools(&mut c).contains("shards=3"),
        "the third server is on the ring"
    );

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loaders {
        let (rounds, errors) = l.join().expect("loader");
        assert!(
            errors.is_empty(),
            "replies went wrong during reloads: {:?}",
            &errors[..errors.len().min(3)]
        );
        total += rounds;
    }
    assert!(total > 100, "the clients kept going ({total} rounds)");
    // `b` is only in pool alpha, which stayed: its connections were kept across the reloads
    // (the one new connection is this check's own).
    let b_after = accepted(&b);
    assert!(
        b_after - b_before <= 1,
        "the unchanged server got new connections: {b_before} -> {b_after}\n{}",
        proxy.stderr()
    );
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::simple("PONG"),
        "a connection from before the reloads still works"
    );
    let log = proxy.stderr();
    assert!(log.matches("reload: applied").count() >= 2, "{log}");
}

/// Write `text` to the proxy's configuration file, send SIGHUP, and return the reload's log
/// line once it is written.
fn reload_hup(proxy: &Proxy, path: &Path, text: &str) -> String {
    let lines = |log: String| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("reload: ") || l.contains("reload refused"))
            .map(str::to_string)
            .collect()
    };
    let before = lines(proxy.stderr()).len();
    std::fs::write(path, text).expect("write config");
    send_signal(proxy.pid(), "HUP");
    poll_until(Duration::from_secs(10), || {
        lines(proxy.stderr()).get(before).cloned()
    })
    .unwrap_or_else(|| panic!("no reload line after SIGHUP:\n{}", proxy.stderr()))
}

/// A script that keeps its server busy for `ms` milliseconds on `key`'s node; its reply
/// and how long it took through `c`.
fn busy_script(c: &mut Client, key: &str, ms: u32) -> (Reply, Duration) {
    let script = format!(
        "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
         while true do local n = redis.call('TIME') \
         if n[1] * 1000000 + n[2] - s >= {} then break end end return 1",
        ms * 1000
    );
    let t0 = Instant::now();
    let r = c.cmd(&["EVAL", script.as_str(), "1", key]);
    (r, t0.elapsed())
}

/// After a reload to `timeout: 300`, a request on a connection opened before it (warmed
/// with a SET) times out after about 300 ms instead of waiting for a 700 ms reply.
fn assert_new_timeout_applies(c: &mut Client, key: &str) {
    let (r, took) = busy_script(c, key, 700);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("timed out")),
        "a 700 ms request must time out under the new 300 ms timeout: {r:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(500),
        "timed out after {took:?}, not about 300 ms"
    );
    println!("700 ms request under timeout 300 ms: error after {took:?}");
}

/// Waits until the node at `addr` is marked down by the proxy (and still listed); how long
/// that took since `since`.
fn time_to_down(proxy: &HaProxy, addr: &str, since: Instant) -> Duration {
    let seen = poll_until(Duration::from_secs(8), || match proxy.node(addr) {
        Some(n) if !n.up => Some(Ok(since.elapsed())),
        Some(_) => None,
        None => Some(Err(since.elapsed())),
    });
    match seen {
        Some(Ok(t)) => t,
        Some(Err(t)) => panic!(
            "{addr} left the topology after {t:?} without being marked down by its checks; log:\n{}",
            proxy.log()
        ),
        None => panic!(
            "{addr} was never marked down; view {:#?}\nlog:\n{}",
            proxy.nodes(),
            proxy.log()
        ),
    }
}

#[test]
fn a_reload_that_shortens_checks_takes_a_node_killed_afterwards_down_within_the_new_bounds() {
    let (primary, mut replicas) = ha::replica_set(1);
    // Check timeouts above the 700 ms script below, so the busy primary stays up.
    let slow = "  health_check:\n    interval: 3s\n    fast_interval: 1s\n    timeout: 800ms\n    rise: 1\n    fall: 3\n";
    let fast = "  health_check:\n    interval: 100ms\n    fast_interval: 50ms\n    timeout: 800ms\n    rise: 1\n    fall: 1\n";
    let replica = replicas[0].addr();
    // A long first timeout: a connection timer still armed with it would fire late.
    let body = ha::short_form(
        &primary.addr(),
        std::slice::from_ref(&replica),
        &format!("{slow}  timeout: 3000\n"),
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.clone()], Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());

    let path = proxy.proxy.dir().join("ha.yml");
    let new_yaml = proxy
        .yaml
        .replace(slow, fast)
        .replace("timeout: 3000", "timeout: 300");
    let line = reload_hup(&proxy.proxy, &path, &new_yaml);
    assert!(
        line.contains(
            "alpha: timeout 3000ms -> 300ms, health_check.interval 3s -> 100ms, \
             health_check.fall 3 -> 1, health_check.fast_interval 1s -> 50ms"
        ),
        "the reload names each change: {line}"
    );

    let bound = HealthCheck {
        interval: Duration::from_millis(100),
        fast_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(800),
        rise: 1,
        fall: 1,
        jitter: rampart_config::defaults::HEALTH_JITTER,
    }
    .worst_detection();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    replicas[0].kill9();
    let took = time_to_down(&proxy, &replica, t0);
    println!("replica killed after the reload: down after {took:?} (new bound {bound:?})");
    // The old settings need at least two more checks 1 s apart after the first failure.
    assert!(
        took < bound + Duration::from_millis(300),
        "down after {took:?}; the new settings bound it to {bound:?}"
    );

    assert_new_timeout_applies(&mut c, "k");
}

#[test]
fn a_reload_applies_timeout_and_database_to_open_connections_and_says_what_changed() {
    let server = RedisServer::start();
    let port = free_port();
    let admin = free_port();
    let yaml = |extra: &str| pool("demo", port, &[&server], extra);
    let proxy = start_file(yaml("  timeout: 1000\n"), port, 1, Some(admin));
    let path = proxy.dir().join("rampart.yml");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    let (r, took) = busy_script(&mut c, "k", 700);
    assert_eq!(r, Reply::Int(1), "a 700 ms request within timeout 1000 ms");
    println!("700 ms request under timeout 1000 ms: {took:?}");

    // Both changes at once: the request deadline and the database of every connection.
    let line = reload_hup(&proxy, &path, &yaml("  timeout: 300\n  redis_db: 3\n"));
    assert!(
        line.contains("demo: timeout 1000ms -> 300ms, redis_db 0 -> 3"),
        "{line}"
    );
    assert_eq!(c.cmd(&["SET", "after", "1"]), Reply::ok());
    assert_eq!(
        server.cmd(&["EXISTS", "after"]),
        Reply::Int(0),
        "a connection opened before the reload still writes to database 0"
    );
    let mut direct = Client::connect(&server.addr());
    assert_eq!(direct.cmd(&["SELECT", "3"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "after"]), Reply::bulk("1"));

    assert_new_timeout_applies(&mut c, "k");

    // The same file again: the reply and the event say that nothing changed.
    let same = post(admin, "/api/reload");
    assert!(
        same.contains("200 OK") && same.contains("nothing changed"),
        "{same}"
    );
    let events = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).expect("admin");
        let req = format!(
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(
        events.contains("demo: timeout 1000ms -\\u003e 300ms")
            || events.contains("demo: timeout 1000ms -> 300ms"),
        "the reload event lists the changes: {events}"
    );
}

#[test]
fn a_reload_reaches_the_checks_and_requests_of_a_sentinel_pool() {
    let mut setup = SentinelSetup::start("  timeout: 3000\n");
    let replica = setup.replicas[0].addr();
    setup.proxy.wait_up(
        &[setup.primary.addr(), replica.clone()],
        Duration::from_secs(10),
    );
    let mut c = Client::connect(&setup.proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());

    // A check timeout above the 700 ms script below, so the busy primary stays up.
    let faster = "  health_check:\n    interval: 50ms\n    timeout: 1s\n    fall: 1\n    rise: 2\n";
    let path = setup.proxy.proxy.dir().join("ha.yml");
    let new_yaml = setup
        .proxy
        .yaml
        .replace(FAST_CHECKS, faster)
        .replace("timeout: 3000", "timeout: 300");
    let line = reload_hup(&setup.proxy.proxy, &path, &new_yaml);
    assert!(
        line.contains(
            "alpha: timeout 3000ms -> 300ms, health_check.interval 100ms -> 50ms, \
             health_check.timeout 100ms -> 1s, health_check.fall 2 -> 1"
        ),
        "{line}"
    );

    // Sentinel drops a node from its replicas 1 s after it stops answering; the proxy's
    // own checks must mark it down first (a refused connection fails at once).
    let bound = HealthCheck {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        fall: 1,
        rise: 2,
        ..HealthCheck::default()
    }
    .worst_detection();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    setup.replicas[0].kill9();
    let took = time_to_down(&setup.proxy, &replica, t0);
    println!(
        "Sentinel pool replica killed after the reload: down after {took:?} (bound {bound:?})"
    );
    assert!(
        took < bound + Duration::from_millis(300),
        "down after {took:?}; the new settings bound it to {bound:?}"
    );

    assert_new_timeout_applies(&mut c, "k");
}

#[test]
fn a_backend_user_that_may_flush_or_configure_is_named_at_start_and_when_a_reload_adds_a_pool() {
    let open = RedisServer::start();
    let restricted = RedisServer::start();
    assert_eq!(
        restricted.cmd(&[
            "ACL",
            "SETUSER",
            "default",
            "-flushall",
            "-flushdb",
            "-config",
            "-select"
        ]),
        Reply::ok()
    );
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let first = format!(
        "{}{}",
        pool("open", p1, &[&open], ""),
        pool("restricted", p2, &[&restricted], "")
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &first)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "1"])
        .env("RAMPART_LOG", "info,rampart::control::rights=debug")
        .wait_port(p2)
        .start();
    let warned = |pool: &str| {
        proxy.stderr().lines().any(|l| {
            l.contains("WARN")
                && l.contains(&format!("pool {pool}: the backend user 'default' may run"))
        })
    };
    let seen = poll_until(Duration::from_secs(5), || {
        let log = proxy.stderr();
        (warned("open") && log.contains("backend user 'default' may not run")).then_some(())
    });
    assert!(
        seen.is_some(),
        "both pools were checked:\n{}",
        proxy.stderr()
    );
    assert!(
        proxy.stderr().contains(
            "pool open: the backend user 'default' may run FLUSHALL, FLUSHDB, CONFIG, SELECT"
        ),
        "{}",
        proxy.stderr()
    );
    assert!(!warned("restricted"), "{}", proxy.stderr());

    // A reload that adds a pool checks the new one.
    let path = proxy.dir().join("rampart.yml");
    let line = reload_hup(
        &proxy,
        &path,
        &format!("{first}{}", pool("added", p3, &[&open], "")),
    );
    assert!(line.contains("added: added"), "{line}");
    let added = poll_until(Duration::from_secs(5), || warned("added").then_some(()));
    assert!(
        added.is_some(),
        "the added pool was checked:\n{}",
        proxy.stderr()
    );
}

/// The connections `server` lists (`CLIENT LIST`) whose last command was `cmd`, as
/// `(database, line)`.
fn server_conns(server: &RedisServer, cmd: &str) -> Vec<(String, String)> {
    let list = match server.cmd(&["CLIENT", "LIST"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("CLIENT LIST: {other:?}"),
    };
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == format!("cmd={cmd}")))
        .map(|l| {
            let db = l
                .split(' ')
                .find_map(|f| f.strip_prefix("db="))
                .unwrap_or("?")
                .to_string();
            (db, l.to_string())
        })
        .collect()
}

/// rampart with one worker and pool `demo` over `server` (its file `rampart.yml` in the
/// proxy's directory), and the pool's port.
fn one_worker_on(server: &RedisServer) -> (Proxy, u16) {
    let port = free_port();
    let proxy = start_file(pool("demo", port, &[server], ""), port, 1, None);
    (proxy, port)
}

/// Clients `server` holds blocked (`INFO clients`).
fn blocked_clients(server: &RedisServer) -> Option<u64> {
    server
        .info("clients")
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_reload_that_changes_the_database_closes_the_dedicated_connections_made_before_it() {
    let server = RedisServer::start();
    let (proxy, port) = one_worker_on(&server);
    let yaml = |extra: &str| pool("demo", port, &[&server], extra);
    let path = proxy.dir().join("rampart.yml");
    let addr = format!("127.0.0.1:{port}");

    // Two dedicated connections made in database 0: one idle (its BLPOP timed out), one
    // blocked across the reload.
    let mut idle = Client::connect(&addr);
    assert_eq!(idle.cmd(&["BLPOP", "q", "0.05"]), Reply::Array(None));
    let mut held = Client::connect(&addr);
    held.send_raw(&testkit::encode_command(&["BLPOP", "held", "0"]))
        .expect("send BLPOP");
    let blocked = poll_until(Duration::from_secs(5), || {
        (blocked_clients(&server) == Some(1)).then_some(())
    });
    assert!(blocked.is_some(), "the BLPOP reached the server");

    let line = reload_hup(&proxy, &path, &yaml("  redis_db: 1\n"));
    assert!(line.contains("demo: redis_db 0 -> 1"), "{line}");

    // The command blocked in database 0 ends (the pushes it waits for now go to database
    // 1): its client is closed, as a server's clients are when it goes away, so it
    // reconnects and blocks again; the log says why. Its server connection is closed, so a
    // push into database 0 afterwards stays there (nothing swallowed).
    held.assert_closed(Duration::from_secs(5));
    assert!(
        proxy.stderr().contains("reloaded with another redis_db"),
        "{}",
        proxy.stderr()
    );
    let gone = poll_until(Duration::from_secs(2), || {
        (blocked_clients(&server) == Some(0)).then_some(())
    });
    assert!(gone.is_some(), "the server still has a blocked client");
    assert_eq!(server.cmd(&["RPUSH", "held", "x"]), Reply::Int(1));
    assert_eq!(server.cmd(&["LLEN", "held"]), Reply::Int(1));

    // No connection of database 0 serves again: two clients block at once (as many as
    // there were connections before), and pushes through rampart, into database 1, wake both.
    let mut waiting: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(&addr);
            c.send_raw(&testkit::encode_command(&["BLPOP", "q", "5"]))
                .expect("send BLPOP");
            c
        })
        .collect();
    let blocked = poll_until(Duration::from_secs(5), || {
        (blocked_clients(&server) == Some(2)).then_some(())
    });
    assert!(blocked.is_some(), "both BLPOPs reached the server");
    // The two before the reload are closed (the server may take a moment to see it).
    let only_new = poll_until(Duration::from_secs(2), || {
        let dbs = server_conns(&server, "blpop");
        (dbs.len() == 2 && dbs.iter().all(|(db, _)| db == "1")).then_some(())
    });
    assert!(
        only_new.is_some(),
        "the dedicated connections left are the two new ones, in database 1: {:#?}",
        server_conns(&server, "blpop")
    );
    let mut w = Client::connect(&addr);
    assert_eq!(w.cmd(&["RPUSH", "q", "a", "b"]), Reply::Int(2));
    let mut got: Vec<Reply> = waiting
        .iter_mut()
        .map(|c| c.read_reply().expect("BLPOP reply"))
        .collect();
    got.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        got,
        vec![Reply::bulks(["q", "a"]), Reply::bulks(["q", "b"])]
    );
    assert_eq!(
        server.cmd(&["LLEN", "q"]),
        Reply::Int(0),
        "nothing was pushed into database 0"
    );
    drop(idle);
}

/// A WATCH held across a reload that changes `redis_db` does not run its transaction in the
/// old database: the session's reads already see the new one, so a value read there and
/// written at EXEC would land where the client's own reads never find it, checked against
/// watched keys of the other database. EXEC aborts (nil, as for a changed watched key), nothing runs anywhere, and the client's
/// next WATCH ... EXEC runs in the new database.
#[test]
fn a_watch_held_across_a_reload_that_changes_the_database_aborts_its_exec() {
    let server = RedisServer::start();
    let (proxy, port) = one_worker_on(&server);
    let yaml = |extra: &str| pool("demo", port, &[&server], extra);
    let path = proxy.dir().join("rampart.yml");
    let addr = format!("127.0.0.1:{port}");
    let in_db = |db: &str, key: &str| {
        server.cmd(&[
            "EVAL",
            "redis.call('SELECT', ARGV[1]) return redis.call('GET', KEYS[1])",
            "1",
            key,
            db,
        ])
    };

    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["WATCH", "k"]), Reply::ok());
    let line = reload_hup(&proxy, &path, &yaml("  redis_db: 1\n"));
    assert!(line.contains("demo: redis_db 0 -> 1"), "{line}");
    assert_eq!(c.cmd(&["GET", "k"]), Reply::nil(), "reads see database 1");
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::simple("QUEUED"));
    // The watch was lost with its connection: aborted as when a watched key changed.
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(None),
        "EXEC across the reload"
    );
    assert_eq!(
        in_db("0", "k"),
        Reply::nil(),
        "nothing written to database 0"
    );
    assert_eq!(in_db("1", "k"), Reply::nil(), "nor to database 1");

    // The connection stays usable; the next transaction runs in database 1.
    assert_eq!(c.cmd(&["WATCH", "k"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "w"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("w"));
    assert_eq!(in_db("1", "k"), Reply::bulk("w"));
    assert_eq!(in_db("0", "k"), Reply::nil());
}

/// What one client of [`set_get_load`] saw: (acknowledged writes as key and value, errors).
type Seen = (Vec<(String, String)>, Vec<String>);

/// Clients doing SET then GET of their own keys, each on its own connection, until told to
/// stop.
fn set_get_load(
    addr: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Seen>> {
    (0..clients)
        .map(|t| {
            let addr = addr.to_string();
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.set_read_timeout(Some(Duration::from_secs(10)));
                let (mut acked, mut errors) = (Vec::new(), Vec::new());
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (k, v) = (format!("kind:{t}:{n}"), n.to_string());
                    n += 1;
                    match c.try_cmd(&["SET", &k, &v]) {
                        Ok(r) if r == Reply::ok() => acked.push((k.clone(), v.clone())),
                        other => {
                            errors.push(format!("SET {k}: {other:?}"));
                            continue;
                        }
                    }
                    match c.try_cmd(&["GET", &k]) {
                        Ok(r) if r == Reply::bulk(&v) => {}
                        other => errors.push(format!("GET {k}: {other:?}")),
                    }
                }
                (acked, errors)
            })
        })
        .collect()
}

/// A pool changes kind under load: `servers:` -> `primary:`/`replicas:` -> `sentinels:`, over
/// the same primary. Its one shard gets another name each time; the first change keeps the
/// primary the file names, so it moves no key and needs no force, the second one is forced
/// (the new primary is Sentinel's to name). The new shard's nodes are checked before the
/// swap, so 20 clients doing SET then GET get no error, and every acknowledged write is on
/// the primary.
#[test]
fn a_pool_changes_kind_under_load_without_an_error_or_a_lost_write() {
    let (primary, replicas) = ha::replica_set(1);
    let monitor = testkit::Monitor::new("kind", primary.port()).quorum(1);
    let sentinel = testkit::Sentinel::start_monitors(std::slice::from_ref(&monitor));
    let (port, admin) = (free_port(), free_port());
    let head = format!("alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n");
    let servers = format!("{head}  servers:\n   - {}:1 s0\n", primary.addr());
    let proxy = start_file(&servers, port, 2, Some(admin));
    let path = proxy.dir().join("rampart.yml");
    let stop = Arc::new(AtomicBool::new(false));
    let load = set_get_load(&format!("127.0.0.1:{port}"), 20, &stop);
    let steps = [
        (
            format!(
                "{head}  primary: {}\n  replicas: [{}]\n{FAST_CHECKS}",
                primary.addr(),
                replicas[0].addr()
            ),
            "/api/reload",
        ),
        (
            format!(
                "{head}  sentinels: [{}]\n  master: kind\n{FAST_CHECKS}",
                sentinel.addr()
            ),
            "/api/reload?force=true",
        ),
    ];
    for (yaml, call) in &steps {
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&path, yaml).expect("write config");
        let r = post(admin, call);
        assert!(r.contains("200 OK") && r.contains("applied"), "{r}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut errors) = (Vec::new(), Vec::new());
    for l in load {
        let (a, e) = l.join().expect("client");
        acked.extend(a);
        errors.extend(e);
    }
    assert!(
        acked.len() > 1000,
        "the clients kept going ({})",
        acked.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(5)],
        proxy.stderr()
    );
    let missing: Vec<_> = acked
        .iter()
        .filter(|(k, v)| primary.cmd(&["GET", k]) != Reply::bulk(v))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:?}"
    );
}

/// `client_connections` lowered by a reload below the clients connected: they stay and are
/// served, and the very next client is refused with Redis' error (the accept loop judges each
/// client by the settings of the moment it arrives, not those it had when it began waiting).
#[test]
fn client_connections_lowered_below_those_connected_keeps_them_and_refuses_the_next() {
    let a = RedisServer::start();
    let port = free_port();
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file(
            "rampart.yml",
            pool("alpha", port, &[&a], "  client_connections: 10\n"),
        )
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "2"])
        .env("RAMPART_LOG", "info")
        .wait_port(port)
        .start();
    let path = proxy.dir().join("rampart.yml");
    let addr = format!("127.0.0.1:{port}");
    let mut held: Vec<Client> = (0..4).map(|_| Client::connect(&addr)).collect();
    for c in &mut held {
        assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
    }
    let line = reload_hup(
        &proxy,
        &path,
        &pool("alpha", port, &[&a], "  client_connections: 2\n"),
    );
    assert!(line.contains("client_connections 10 -> 2"), "{line}");
    let mut next = Client::connect(&addr);
    next.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        next.read_reply().ok(),
        Some(Reply::Error("ERR max number of clients reached".into())),
        "the first client after the reload"
    );
    for c in &mut held {
        assert_eq!(
            c.cmd(&["PING"]),
            Reply::simple("PONG"),
            "a client from before"
        );
    }
}

/// A reload may give an address rampart listens on to another pool or another role: a pool
/// renamed on the same port, `listen` and `read_listen` swapped. The socket is kept (no
/// bind, so no "address in use"), new clients get what it serves now, and clients already
/// on it go on as their pool does (those of a pool that left are closed).
#[test]
fn an_address_moves_to_another_pool_or_role_without_a_new_bind() {
    let (primary, replicas) = ha::replica_set(1);
    let (port, port2) = (free_port(), free_port());
    let body = format!(
        "  hash: fnv1a_64\n  primary: {}\n  replicas: [{}]\n{FAST_CHECKS}",
        primary.addr(),
        replicas[0].addr()
    );
    let first =
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  read_listen: 127.0.0.1:{port2}\n{body}");
    let proxy = start_file(&first, port, 2, None);
    let path = proxy.dir().join("rampart.yml");
    let mut before = Client::connect(&format!("127.0.0.1:{port}"));
    let up = poll_until(Duration::from_secs(5), || {
        (before.cmd(&["SET", "k", "1"]) == Reply::ok()).then_some(())
    });
    assert!(up.is_some(), "the primary never came up");

    // listen and read_listen swap their ports.
    let swapped =
        format!("alpha:\n  listen: 127.0.0.1:{port2}\n  read_listen: 127.0.0.1:{port}\n{body}");
    let line = reload_hup(&proxy, &path, &swapped);
    assert!(line.contains("reload: applied"), "{line}");
    let mut reads = Client::connect(&format!("127.0.0.1:{port}"));
    assert_err_starts(&reads.cmd(&["SET", "k", "2"]), "ERR");
    let mut all = Client::connect(&format!("127.0.0.1:{port2}"));
    assert_eq!(all.cmd(&["SET", "k", "3"]), Reply::ok());
    assert_eq!(
        before.cmd(&["GET", "k"]),
        Reply::bulk("3"),
        "a client from before"
    );

    // The pool renamed on the same ports: its clients are closed, new ones served.
    let renamed = swapped.replace("alpha:", "beta:");
    let line = reload_hup(&proxy, &path, &renamed);
    assert!(
        line.contains("beta: added") && line.contains("alpha: removed"),
        "{line}"
    );
    let mut beta = Client::connect(&format!("127.0.0.1:{port2}"));
    assert_eq!(beta.cmd(&["GET", "k"]), Reply::bulk("3"));
    assert!(
        poll_until(Duration::from_secs(5), || all.try_cmd(&["PING"]).err()).is_some(),
        "a client of the removed pool stays"
    );
}

fn assert_err_starts(r: &Reply, prefix: &str) {
    assert!(
        matches!(r, Reply::Error(e) if e.starts_with(prefix)),
        "{r:?}"
    );
}

/// A reload refused by a later listener (its port taken by another process) leaves a unix
/// socket listener that moved to another pool as it was: still bound and serving.
#[test]
fn a_refused_reload_leaves_a_unix_listener_serving() {
    let a = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("p.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").port();
    let unix = |name: &str| {
        format!(
            "{name}:\n  listen: {}\n  servers:\n   - {}:1 s0\n",
            sock.display(),
            a.addr()
        )
    };
    let port = free_port();
    let tcp = pool("tcp", port, &[&a], "");
    let proxy = start_file(format!("{}{tcp}", unix("alpha")), port, 2, None);
    let path = proxy.dir().join("rampart.yml");
    let ping = || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        use std::io::{Read, Write};
        s.write_all(b"PING\r\n").ok()?;
        let mut b = [0u8; 7];
        s.read_exact(&mut b).ok()?;
        Some(b.to_vec())
    };
    assert_eq!(ping().as_deref(), Some(&b"+PONG\r\n"[..]));
    // The unix pool renamed, and a new pool on a port another process holds.
    let line = reload_hup(
        &proxy,
        &path,
        &format!("{}{tcp}{}", unix("beta"), pool("extra", busy, &[&a], "")),
    );
    assert!(line.contains("reload refused"), "{line}");
    assert_eq!(
        ping().as_deref(),
        Some(&b"+PONG\r\n"[..]),
        "the unix listener after a refused reload\n{}",
        proxy.stderr()
    );
    drop(taken);
}

/// A reload that removes `redis_auth` while the servers still require a password is refused
/// whole, as a wrong password is: applied, every server connection would get `NOAUTH`.
#[test]
fn a_reload_that_removes_a_password_the_servers_require_is_refused() {
    let a = RedisServer::start();
    assert_eq!(
        a.cmd(&["CONFIG", "SET", "requirepass", "pw-0k8"]),
        Reply::ok()
    );
    let port = free_port();
    let with = pool("alpha", port, &[&a], "  redis_auth: pw-0k8\n");
    let proxy = start_file(&with, port, 2, None);
    let path = proxy.dir().join("rampart.yml");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["AUTH", "pw-0k8"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    let line = reload_hup(&proxy, &path, &pool("alpha", port, &[&a], ""));
    assert!(
        line.contains("reload refused") && line.contains("NOAUTH") && !line.contains("pw-0k8"),
        "{line}"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("1"), "the pool as it was");
    let mut d = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(d.cmd(&["AUTH", "pw-0k8"]), Reply::ok());
    assert_eq!(d.cmd(&["GET", "k"]), Reply::bulk("1"), "a new client");
}

/// A reload that gives a `servers:` pool a key only pools with replicas use (`failover_hold`)
/// is refused, naming the key and the kind; the pool serves as it was.
#[test]
fn a_reload_with_a_key_the_pool_kind_ignores_is_refused() {
    let a = RedisServer::start();
    let port = free_port();
    let yaml = pool("alpha", port, &[&a], "");
    let proxy = start_file(&yaml, port, 1, None);
    let path = proxy.dir().join("rampart.yml");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    let line = reload_hup(
        &proxy,
        &path,
        &pool("alpha", port, &[&a], "  failover_hold: 5s\n"),
    );
    assert!(
        line.contains("reload refused")
            && line.contains("pool \"alpha\": failover_hold: does nothing in a servers: pool"),
        "{line}"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("1"), "the pool as it was");
}

/// `max_dedicated_connections` lowered by a reload below the connections in use: the blocked
/// commands on them go on, and as they end their connections close until the new bound
/// holds (they were kept idle and leased again, over the bound).
#[test]
fn max_dedicated_connections_lowered_below_those_in_use_closes_the_extra_ones_as_they_end() {
    let server = RedisServer::start();
    let (proxy, port) = one_worker_on(&server);
    let path = proxy.dir().join("rampart.yml");
    let addr = format!("127.0.0.1:{port}");
    let mut blocked: Vec<Client> = (0..5)
        .map(|i| {
            let mut c = Client::connect(&addr);
            c.send_raw(&testkit::encode_command(&["BLPOP", &format!("dq{i}"), "0"]))
                .expect("send BLPOP");
            c
        })
        .collect();
    assert!(
        poll_until(Duration::from_secs(5), || (blocked_clients(&server)
            == Some(5))
        .then_some(()))
        .is_some(),
        "five blocked"
    );
    let line = reload_hup(
        &proxy,
        &path,
        &pool("demo", port, &[&server], "  max_dedicated_connections: 2\n"),
    );
    assert!(line.contains("max_dedicated_connections"), "{line}");
    let mut w = Client::connect(&addr);
    for (i, c) in blocked.iter_mut().enumerate() {
        assert_eq!(w.cmd(&["RPUSH", &format!("dq{i}"), "x"]), Reply::Int(1));
        c.set_read_timeout(Some(Duration::from_secs(5)));
        assert_eq!(
            c.read_reply().ok(),
            Some(Reply::Array(Some(vec![
                Reply::bulk(format!("dq{i}")),
                Reply::bulk("x")
            ])))
        );
    }
    // Idle dedicated connections last ran BLPOP; at most the new bound of them stays.
    let left = poll_until(Duration::from_secs(5), || {
        let n = server_conns(&server, "blpop").len();
        (n <= 2).then_some(n)
    });
    assert!(
        left.is_some(),
        "dedicated connections over the new bound: {}",
        server_conns(&server, "blpop").len()
    );
}

/// SIGTERM while a reload waits stops rampart at once: here the reload's trial connection
/// with the new `redis_auth` waits for a node that does not answer (SIGSTOP: the kernel
/// accepts the connection, the server says nothing) for up to the pool's 30 s timeout.
/// Before, the signal was read only once the reload was over; now the reload is abandoned
/// (and says so) and the drain starts.
#[test]
fn sigterm_during_a_reload_that_waits_stops_at_once() {
    let a = RedisServer::start();
    let port = free_port();
    let body = pool("alpha", port, &[&a], "  timeout: 30000\n");
    let mut proxy = start_file(&body, port, 1, None);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    drop(c);
    a.stop();
    let path = proxy.dir().join("rampart.yml");
    let changed = pool(
        "alpha",
        port,
        &[&a],
        "  timeout: 30000\n  redis_auth: pw-x1\n",
    );
    std::fs::write(&path, changed).expect("write config");
    send_signal(proxy.pid(), "HUP");
    let started = poll_until(Duration::from_secs(5), || {
        proxy
            .stderr()
            .contains("SIGHUP: reloading the configuration")
            .then_some(())
    });
    assert!(started.is_some(), "no reload started:\n{}", proxy.stderr());
    // The trial connection is made and waits for the frozen node's answer.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    send_signal(proxy.pid(), "TERM");
    let status = proxy.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
    a.cont();
    let log = proxy.stderr();
    let status = status.unwrap_or_else(|| panic!("no exit 20 s after SIGTERM:\n{log}"));
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM, behind the reload:\n{log}"
    );
    assert!(
        log.contains("the reload was abandoned") && !log.contains("reload: reload: "),
        "the reload says it was abandoned and applied nothing:\n{log}"
    );
}

/// A reload that changes `hash_tag` moves every key with a tag (`{user7}:name` was placed by
/// `user7`, now by the whole key): it is refused unless forced, saying what share moves, and
/// every key stays readable. Before, the share was measured on keys without a tag, found 0,
/// and the reload was applied: 199 of 300 tagged keys read nil afterwards.
#[test]
fn a_reload_that_changes_the_hash_tag_moves_keys_so_needs_force() {
    let (a, b, c) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let port = free_port();
    let body = pool("alpha", port, &[&a, &b, &c], "");
    assert!(body.contains("hash_tag: \"{}\""), "{body}");
    let proxy = start_file(&body, port, 1, None);
    let path = proxy.dir().join("rampart.yml");
    let mut cl = Client::connect(&format!("127.0.0.1:{port}"));
    let keys: Vec<String> = (0..300).map(|i| format!("{{user{i}}}:name")).collect();
    for k in &keys {
        assert_eq!(cl.cmd(&["SET", k, k]), Reply::ok());
    }
    for changed in [
        body.replace("hash_tag: \"{}\"", "hash_tag: \"[]\""),
        body.replace("  hash_tag: \"{}\"\n", ""),
    ] {
        let line = reload_hup(&proxy, &path, &changed);
        assert!(
            line.contains("reload refused") && line.contains("would move"),
            "{line}"
        );
        let unread = keys
            .iter()
            .filter(|k| cl.cmd(&["GET", k]) != Reply::bulk(k.as_str()))
            .count();
        assert_eq!(unread, 0, "keys unreadable after a refused reload");
    }
}

/// An ejected server (`auto_eject_hosts`) that a reload keeps stays ejected until its retry
/// time, and the reload says nothing moved: requests keep going to the live servers. Before,
/// any reload put the dead server back on the ring (its keys failed again until it was
/// ejected anew) and said a third of the keys had moved.
#[test]
fn an_ejected_server_stays_ejected_across_a_reload() {
    let (a, mut b) = (RedisServer::start(), RedisServer::start());
    let port = free_port();
    let extra = "  timeout: 300\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n";
    let body = pool("alpha", port, &[&a, &b], extra);
    let proxy = start_file(&body, port, 1, None);
    let path = proxy.dir().join("rampart.yml");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    b.kill9();
    // Requests to the dead server eject it; then every key goes to the live one.
    let all_ok = || {
        let mut c = Client::connect(&format!("127.0.0.1:{port}"));
        (0..100).all(|i| c.cmd(&["SET", &format!("k{i}"), "v"]) == Reply::ok())
    };
    let ejected = poll_until(Duration::from_secs(10), || all_ok().then_some(()));
    assert!(ejected.is_some(), "the dead server was never ejected");
    assert!(
        info_pools(&mut c).contains("ejected=1"),
        "{}",
        info_pools(&mut c)
    );
    let line = reload_hup(&proxy, &path, &body.replace("timeout: 300", "timeout: 400"));
    assert!(
        line.contains("reload: ") && !line.contains("of its keys"),
        "the reload moved keys: {line}"
    );
    assert!(
        info_pools(&mut c).contains("ejected=1"),
        "the dead server is back on the ring: {}",
        info_pools(&mut c)
    );
    assert!(all_ok(), "requests failed after the reload");
}

/// How the last switchover ended (INFO's `switchover_<pool>_<shard>`, the admin API's
/// progress call) is still there after a reload; before, the new generation of the shard
/// started with none.
#[test]
fn the_last_switchover_outcome_survives_a_reload() {
    let (primary, replicas) = ha::replica_set(1);
    let body = ha::short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        "  failover_hold: 5s\n",
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(10),
    );
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(20)));
    let reply = c.cmd(&["RAMPART", "SWITCHOVER", ha::POOL]);
    assert!(
        matches!(&reply, Reply::Simple(m) if m.contains("switched to")),
        "{reply:?}"
    );
    let outcome = |c: &mut Client| {
        info_pools(c)
            .lines()
            .find(|l| l.starts_with("switchover_"))
            .map(str::to_string)
    };
    let before = outcome(&mut c).expect("INFO names the switchover's outcome");
    assert!(before.contains("done"), "{before}");
    let path = proxy.proxy.dir().join("ha.yml");
    let line = reload_hup(
        &proxy.proxy,
        &path,
        &proxy.yaml.replace("failover_hold: 5s", "failover_hold: 6s"),
    );
    assert!(line.contains("reload: "), "{line}");
    assert_eq!(outcome(&mut c), Some(before), "after the reload");
}

/// rampart over two servers of three (with an admin listener), its file already naming the
/// third: a forced reload (`POST /api/reload?force=true`) adds it and moves keys. Returns
/// the servers, the proxy, the pool's port and the admin port.
fn a_third_server_to_come() -> ([RedisServer; 3], Proxy, u16, u16) {
    let servers = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let (port, admin) = (free_port(), free_port());
    let two = pool("alpha", port, &[&servers[0], &servers[1]], "");
    let proxy = start_file(&two, port, 1, Some(admin));
    let three = pool("alpha", port, &servers.iter().collect::<Vec<_>>(), "");
    std::fs::write(proxy.dir().join("rampart.yml"), &three).expect("write config");
    (servers, proxy, port, admin)
}

/// A forced reload that moves keys (here a server added) ends the commands blocked under the
/// old placement: their clients are closed, so they block again where the keys live now.
/// Before, a client blocked on a key that moved waited for ever while the push for it went
/// to the key's new server (and one blocked on a removed server, there).
#[test]
fn a_forced_ring_change_ends_blocked_commands_so_they_block_where_their_keys_live() {
    let ([a, b, _c], _proxy, port, admin) = a_third_server_to_come();
    let addr = format!("127.0.0.1:{port}");
    // Blocked under the old placement; the reload may move its key or not, the command
    // cannot tell, so it ends either way.
    let key = "q1".to_string();
    let mut blocked = Client::connect(&addr);
    blocked
        .send_raw(&testkit::encode_command(&["BLPOP", &key, "0"]))
        .expect("send BLPOP");
    let on_server = poll_until(Duration::from_secs(5), || {
        (blocked_clients(&a).unwrap_or(0) + blocked_clients(&b).unwrap_or(0) == 1).then_some(())
    });
    assert!(on_server.is_some(), "the BLPOP reached its server");
    let forced = post(admin, "/api/reload?force=true");
    assert!(
        forced.contains("200 OK") && forced.contains("moved"),
        "{forced}"
    );
    blocked.assert_closed(Duration::from_secs(5));
    // Blocked again on a new connection, it gets what is pushed through rampart.
    let mut again = Client::connect(&addr);
    again
        .send_raw(&testkit::encode_command(&["BLPOP", &key, "5"]))
        .expect("send BLPOP");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        Client::connect(&addr).cmd(&["RPUSH", &key, "x"]),
        Reply::Int(1)
    );
    again.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(
        again.read_reply().expect("BLPOP"),
        Reply::bulks([key.as_str(), "x"])
    );
}

/// A reload that points a Sentinel pool at Sentinels none of which answers (here a port
/// nobody listens on) is refused and changes nothing: the pool keeps following the Sentinels
/// it had. Before, it was applied, nothing was logged, and failovers were no longer
/// followed. A pool whose Sentinels do not answer says so in the log.
#[test]
fn a_reload_to_sentinels_that_do_not_answer_is_refused() {
    let setup = SentinelSetup::start("");
    let path = setup.proxy.proxy.dir().join("ha.yml");
    let nobody = free_port();
    let mut lines = setup.proxy.yaml.lines();
    let mut body = String::new();
    // Every sentinel line replaced by the one nobody answers on.
    for l in lines.by_ref() {
        if l.starts_with("    - ") {
            continue;
        }
        body.push_str(l);
        body.push('\n');
        if l == "  sentinels:" {
            body.push_str(&format!("    - 127.0.0.1:{nobody}\n"));
        }
    }
    let line = reload_hup(&setup.proxy.proxy, &path, &body);
    assert!(
        line.contains("reload refused")
            && line.contains(&format!("127.0.0.1:{nobody}"))
            && line.contains(ha::MASTER)
            && line.contains("nothing changed"),
        "{line}"
    );
    let mut c = Client::connect(&setup.proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());

    // Started with only that list: the log says nobody answers.
    let lonely = HaProxy::start(&format!(
        "  sentinels:\n    - 127.0.0.1:{nobody}\n  master: {}\n",
        ha::MASTER
    ));
    let said = poll_until(Duration::from_secs(5), || {
        lonely
            .log()
            .contains("no Sentinel answers about master")
            .then_some(())
    });
    assert!(said.is_some(), "{}", lonely.log());
}

/// A replica-set pool made a Sentinel pool whose master is the same primary moves no key:
/// the reload asks the new Sentinels where the master is before it measures the move, so it
/// needs no `force` and says nothing moved. Before, the primary was unknown then, and the
/// reload was refused as moving every key.
#[test]
fn a_replica_set_made_a_sentinel_pool_over_the_same_primary_moves_no_key() {
    let setup = SentinelSetup::start("");
    let rs = HaProxy::start(&ha::short_form(
        &setup.primary.addr(),
        &[setup.replicas[0].addr()],
        "",
    ));
    rs.wait_up(
        &[setup.primary.addr(), setup.replicas[0].addr()],
        Duration::from_secs(10),
    );
    let mut c = Client::connect(&rs.addr());
    assert_eq!(c.cmd(&["SET", "conv", "1"]), Reply::ok());
    let body = setup.proxy.yaml.replace(
        &format!("listen: 127.0.0.1:{}", setup.proxy.port),
        &format!("listen: 127.0.0.1:{}", rs.port),
    );
    let line = reload_hup(&rs.proxy, &rs.proxy.dir().join("ha.yml"), &body);
    assert!(
        line.contains("reload: ")
            && !line.contains("of its keys")
            && line.contains("sentinels none"),
        "{line}"
    );
    assert_eq!(c.cmd(&["GET", "conv"]), Reply::bulk("1"));
}

/// A WATCH across a forced reload that changes where keys live: the watched key may have
/// moved, so EXEC runs nothing and answers nil (as for a changed watched key; the client's
/// retry watches again), not that the transaction's keys live on different shards (one key:
/// no hash tag could help). The retry runs.
#[test]
fn a_watch_across_a_forced_ring_change_answers_nil_and_the_retry_runs() {
    let (_servers, _proxy, port, admin) = a_third_server_to_come();
    let mut cl = Client::connect(&format!("127.0.0.1:{port}"));
    let tx = |cl: &mut Client, key: &str| {
        assert_eq!(cl.cmd(&["WATCH", key]), Reply::ok());
        cl.pipeline(&[vec!["MULTI"], vec!["SET", key, "v"], vec!["EXEC"]])
    };
    // Every key watched before the reload: each EXEC after it answers nil.
    let keys: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let mut watchers: Vec<Client> = keys
        .iter()
        .map(|k| {
            let mut w = Client::connect(&format!("127.0.0.1:{port}"));
            assert_eq!(w.cmd(&["WATCH", k]), Reply::ok());
            w
        })
        .collect();
    let forced = post(admin, "/api/reload?force=true");
    assert!(
        forced.contains("200 OK") && forced.contains("moved"),
        "{forced}"
    );
    for (w, k) in watchers.iter_mut().zip(&keys) {
        let r = w.pipeline(&[vec!["MULTI"], vec!["SET", k, "v"], vec!["EXEC"]]);
        assert_eq!(
            r[2],
            Reply::Array(None),
            "EXEC of {k} after the reload: {r:?}"
        );
    }
    for k in &keys {
        let r = tx(&mut cl, k);
        assert_eq!(
            r[2],
            Reply::Array(Some(vec![Reply::ok()])),
            "retry of {k}: {r:?}"
        );
    }
}
