//! Failures and limits with real faults: frozen and killed servers, ejection, connection
//! limits, graceful shutdown, oversized and runaway clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::{free_port, Client, FaultLink, Proxy, RedisServer, Reply};

/// A rampart process over `servers` (addresses), with extra pool lines.
fn rampart(servers: &[String], extra: &str) -> (Proxy, u16) {
    let port = free_port();
    let stats = free_port();
    let mut yml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n{extra}  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        yml.push_str(&format!("   - {s}:1 s{i}\n"));
    }
    let p = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yml)
        .args([
            "-c",
            "{dir}/rampart.yml",
            "-a",
            "127.0.0.1",
            "--workers",
            "2",
        ])
        .args(["-s".to_string(), stats.to_string()])
        .wait_port(port)
        .start();
    (p, stats)
}

fn stats_json(port: u16) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("stats port");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("stats read");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats JSON: {e}: {text}"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The index of the backend that holds `key` after a SET through the proxy.
fn holder(servers: &[RedisServer], key: &str) -> usize {
    servers
        .iter()
        .position(|s| s.cmd(&["EXISTS", key]) == Reply::Int(1))
        .expect("key on some backend")
}

#[test]
fn a_timeout_closes_the_connection_so_no_late_reply_answers_another_request() {
    let redis = RedisServer::start();
    let (proxy, stats) = rampart(&[redis.addr()], "  timeout: 300\n");
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "first"]), Reply::ok());

    redis.stop();
    let t = Instant::now();
    let r = c.cmd(&["GET", "k"]);
    let waited = t.elapsed();
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("timed out")),
        "{r:?}"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "answered before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "timeout not enforced: {waited:?}"
    );
    redis.cont();

    // The stalled GET is answered by Redis on the old connection, which the proxy closed:
    // every reply below must belong to its own request.
    for i in 0..50 {
        let v = format!("v{i}");
        assert_eq!(c.cmd(&["SET", "k", &v]), Reply::ok());
        assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk(&v));
    }
    let j = stats_json(stats);
    let server = &j["alpha"]["s0"];
    assert!(server["server_timedout"].as_i64().unwrap_or(0) >= 1, "{j}");
}

#[test]
fn without_auto_eject_a_dead_server_answers_errors_and_keys_never_move() {
    let mut servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let (proxy, _) = rampart(&addrs, "  timeout: 500\n  auto_eject_hosts: false\n");
    let mut c = Client::connect(&proxy.addr());
    let keys: Vec<String> = (0..40).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, "1"]), Reply::ok());
    }
    let on: Vec<usize> = keys.iter().map(|k| holder(&servers, k)).collect();
    assert!(
        on.contains(&0) && on.contains(&1),
        "keys spread over both servers"
    );

    servers[1].kill9();
    for _ in 0..3 {
        for (k, &s) in keys.iter().zip(&on) {
            let t = Instant::now();
            let r = c.cmd(&["GET", k]);
            if s == 1 {
                assert!(matches!(&r, Reply::Error(e) if e.contains("s1")), "{r:?}");
                assert!(t.elapsed() < Duration::from_millis(600), "slow failure");
            } else {
                assert_eq!(r, Reply::bulk("1"), "a live server's keys keep working");
            }
        }
    }
    // Nothing moved to the live server.
    for (k, &s) in keys.iter().zip(&on) {
        if s == 1 {
            assert_eq!(servers[0].cmd(&["EXISTS", k]), Reply::Int(0));
        }
    }
    servers[1].restart();
    let back = testkit::poll_until(Duration::from_secs(5), || {
        (c.cmd(&["SET", &keys[on.iter().position(|&s| s == 1)?], "2"]) == Reply::ok()).then_some(())
    });
    assert!(back.is_some(), "the restarted server serves its keys again");
}

#[test]
fn auto_eject_moves_an_ejected_servers_keys_and_brings_it_back() {
    let mut servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let (proxy, stats) = rampart(
        &addrs,
        "  timeout: 500\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 1500\n",
    );
    let mut c = Client::connect(&proxy.addr());
    let keys: Vec<String> = (0..40).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, "1"]), Reply::ok());
    }
    let victim = keys
        .iter()
        .find(|k| holder(&servers, k) == 1)
        .expect("a key on server 1")
        .clone();
    servers[1].kill9();

    let t = Instant::now();
    let moved = testkit::poll_until(Duration::from_secs(5), || {
        (c.cmd(&["SET", &victim, "moved"]) == Reply::ok()).then_some(t.elapsed())
    });
    assert!(
        moved.is_some(),
        "after the failure limit the key is served by the other server"
    );
    assert_eq!(servers[0].cmd(&["GET", &victim]), Reply::bulk("moved"));
    let j = stats_json(stats);
    assert!(
        j["alpha"]["server_ejects"].as_i64().unwrap_or(0) >= 1,
        "{j}"
    );
    assert!(
        j["alpha"]["s1"]["server_ejected_at"].as_i64().unwrap_or(0) > 0,
        "{j}"
    );

    servers[1].restart();
    let home = testkit::poll_until(Duration::from_secs(6), || {
        let _ = c.cmd(&["SET", &victim, "home"]);
        (servers[1].cmd(&["GET", &victim]) == Reply::bulk("home")).then_some(())
    });
    assert!(
        home.is_some(),
        "after server_retry_timeout the server is back on the ring"
    );
}

/// A key WATCHed on a server that is then ejected (killed, `auto_eject_hosts`): the watch is
/// lost with its server, so EXEC runs nothing and answers nil, as when a watched key changed
/// (the client retries), not that the transaction's keys live on different shards (one key:
/// no hash tag could help).
#[test]
fn exec_after_the_watched_server_was_ejected_runs_nothing_and_answers_nil() {
    let mut servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let (proxy, _) = rampart(
        &addrs,
        "  timeout: 500\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 30000\n",
    );
    let mut c = Client::connect(&proxy.addr());
    let key = (0..100)
        .map(|i| format!("key:{i}"))
        .find(|k| c.cmd(&["SET", k, "1"]) == Reply::ok() && holder(&servers, k) == 1)
        .expect("a key on server 1");
    assert_eq!(c.cmd(&["WATCH", &key]), Reply::ok());
    servers[1].kill9();
    let mut other = Client::connect(&proxy.addr());
    let ejected = testkit::poll_until(Duration::from_secs(5), || {
        (other.cmd(&["SET", &key, "elsewhere"]) == Reply::ok()).then_some(())
    });
    assert!(ejected.is_some(), "server 1 was never ejected");
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &key, "2"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(None),
        "EXEC after the watch was lost"
    );
    assert_eq!(servers[0].cmd(&["GET", &key]), Reply::bulk("elsewhere"));
}

#[test]
fn client_connections_is_enforced_with_redis_wording() {
    let redis = RedisServer::start();
    let (proxy, _) = rampart(&[redis.addr()], "  client_connections: 2\n");
    // The start-up probe of the port held a slot for a moment; wait until it is released.
    let ping = || {
        testkit::poll_until(Duration::from_secs(3), || {
            let mut c = Client::try_connect(&proxy.addr()).ok()?;
            (c.try_cmd(&["PING"]).ok()? == Reply::simple("PONG")).then_some(c)
        })
        .expect("a client within the limit is served")
    };
    let mut a = ping();
    let b = ping();
    let mut third = Client::connect(&proxy.addr());
    let r = third.read_reply().expect("an error reply before the close");
    assert_eq!(r, Reply::Error("ERR max number of clients reached".into()));
    drop(b);
    let ok = testkit::poll_until(Duration::from_secs(3), || {
        let mut d = Client::try_connect(&proxy.addr()).ok()?;
        (d.try_cmd(&["PING"]).ok()? == Reply::simple("PONG")).then_some(())
    });
    assert!(ok.is_some(), "a freed slot is usable again");
    assert_eq!(a.cmd(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let redis = RedisServer::start();
    let link = FaultLink::start(&redis.addr());
    let (mut proxy, _) = rampart(&[link.addr()], "  timeout: 3000\n");
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    link.delay(Duration::from_millis(600));
    c.send_raw(&testkit::encode_command(&["GET", "k"]))
        .expect("send");
    std::thread::sleep(Duration::from_millis(150));
    proxy.signal("TERM");
    let r = c.read_reply().expect("the in-flight request is answered");
    assert_eq!(r, Reply::bulk("v"));
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the drain");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_client_declaring_a_huge_bulk_costs_only_what_it_sent() {
    let redis = RedisServer::start();
    let (proxy, _) = rampart(&[redis.addr()], "");
    let before = rss_kib(proxy.pid());
    let mut hogs = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(proxy.addr()).expect("connect");
        s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870000\r\nabcdefgh")
            .expect("write");
        hogs.push(s);
    }
    let mut c = Client::connect(&proxy.addr());
    for i in 0..100 {
        assert_eq!(c.cmd(&["SET", "other", &i.to_string()]), Reply::ok());
    }
    let grown = rss_kib(proxy.pid()).saturating_sub(before);
    assert!(grown < 40 * 1024, "200 hogs grew the proxy by {grown} KiB");
}

#[test]
fn a_runaway_pipeline_is_paced_and_answered_in_order() {
    let redis = RedisServer::start();
    let (proxy, _) = rampart(&[redis.addr()], "  max_inflight_per_client: 64\n");
    let mut c = Client::connect(&proxy.addr());
    const N: usize = 30_000;
    let mut w = c.stream().try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..N {
            let _ = i;
            buf.extend(testkit::encode_command(&["INCR", "counter"]));
            if buf.len() > 64 * 1024 {
                w.write_all(&buf).expect("write");
                buf.clear();
            }
        }
        w.write_all(&buf).expect("write");
    });
    for i in 0..N {
        let r = c.read_reply().expect("reply");
        assert_eq!(r, Reply::Int(i as i64 + 1), "reply {i} out of order");
    }
    writer.join().expect("writer");
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

#[test]
fn running_out_of_file_descriptors_does_not_spin_the_accept_loop() {
    let redis = RedisServer::start();
    let port = free_port();
    let yml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}:1 s0\n",
        redis.addr()
    );
    // A descriptor limit far below the number of clients below.
    let mut proxy = Proxy::builder("prlimit")
        .file("rampart.yml", yml)
        .args(["--nofile=40:40", env!("CARGO_BIN_EXE_rampart")])
        .args([
            "-c",
            "{dir}/rampart.yml",
            "--no-stats",
            "--no-admin",
            "--workers",
            "1",
        ])
        .wait_port(port)
        .start();
    let mut clients: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("the kernel queues the connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let pid = proxy.pid();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // 100 ticks a second per core: a spinning accept loop burns ~100.
    assert!(
        used < 20,
        "rampart used {used} ticks in 1 s while out of descriptors"
    );
    assert!(
        proxy.stderr().contains("out of file descriptors"),
        "{}",
        proxy.stderr()
    );
    // Free descriptors: the clients waiting in the backlog are accepted and served.
    clients.drain(..50);
    let mut last = clients.pop().expect("a waiting client");
    last.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    last.write_all(b"PING\r\n").expect("write");
    let mut buf = [0u8; 7];
    last.read_exact(&mut buf)
        .expect("a reply once descriptors are free");
    assert_eq!(&buf, b"+PONG\r\n");
    drop(clients);
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(5)).is_some());
}

/// An ejected server that comes back to the ring takes its keys back: a command blocked on
/// such a key on the server that stood in for it is ended (its client closed, so it blocks
/// again where the pushes go now), and a WATCH held there makes EXEC answer nil. Before, the
/// blocked client waited for ever while pushes went to the returning server, and EXEC said
/// the transaction's one key lived on different shards.
#[test]
fn a_server_back_on_the_ring_ends_what_waits_for_its_keys_elsewhere() {
    let mut servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let (proxy, _) = rampart(
        &addrs,
        "  timeout: 500\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 1500\n",
    );
    let mut c = Client::connect(&proxy.addr());
    let key = (0..100)
        .map(|i| format!("key:{i}"))
        .find(|k| c.cmd(&["SET", k, "1"]) == Reply::ok() && holder(&servers, k) == 1)
        .expect("a key on server 1");
    assert_eq!(c.cmd(&["DEL", &key]), Reply::Int(1));
    servers[1].kill9();
    // Ejected: the key's commands go to server 0 now.
    let ejected = testkit::poll_until(Duration::from_secs(5), || {
        (c.cmd(&["SET", "probe", "1"]) == Reply::ok() && c.cmd(&["EXISTS", &key]) == Reply::Int(0))
            .then_some(())
    });
    assert!(ejected.is_some(), "server 1 was never ejected");
    let mut blocked = Client::connect(&proxy.addr());
    blocked
        .send_raw(&testkit::encode_command(&["BLPOP", &key, "0"]))
        .unwrap();
    let mut watcher = Client::connect(&proxy.addr());
    assert_eq!(watcher.cmd(&["WATCH", &key]), Reply::ok());
    let on_zero = testkit::poll_until(Duration::from_secs(5), || {
        servers[0]
            .info("clients")
            .contains("blocked_clients:1")
            .then_some(())
    });
    assert!(on_zero.is_some(), "the BLPOP did not block on server 0");
    servers[1].restart();
    // Past server_retry_timeout a request puts server 1 back on the ring.
    let back = testkit::poll_until(Duration::from_secs(10), || {
        (c.cmd(&["SET", &key, "x"]) == Reply::ok()
            && servers[1].cmd(&["EXISTS", &key]) == Reply::Int(1))
        .then_some(())
    });
    assert!(
        back.is_some(),
        "server 1 never came back to the ring:\n{}",
        proxy.stderr()
    );
    blocked.assert_closed(Duration::from_secs(5));
    assert_eq!(watcher.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(watcher.cmd(&["SET", &key, "2"]), Reply::simple("QUEUED"));
    assert_eq!(
        watcher.cmd(&["EXEC"]),
        Reply::Array(None),
        "EXEC after the ring changed"
    );
}
