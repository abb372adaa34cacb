//! `when_down: close` on every kind of pool: a request that meets a shard that is down (a
//! killed server, a primary with no successor, a cluster node gone) closes its client in
//! its turn, after the replies before it, as a TCP proxy in front of a dead server does;
//! the same pool without it answers the error and keeps the client. Kinds: `servers:`
//! (beside a pool without the key, over the same servers), `primary:`/`replicas:` with a
//! backend password and clients that AUTH, `sentinels:` (a write held past
//! `failover_hold`), a Redis Cluster pool, and a reload that turns it on for connections
//! already open.
//!
//! Run with `RUST_TEST_THREADS=2`: the cluster test starts three servers of its own.

mod common;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::time::{Duration, Instant};

use ha::{HaProxy, SentinelSetup, FAST_CHECKS};
use testkit::{free_port, poll_until, Client, ClusterSetup, RedisServer, Reply};

/// The body and headers of `GET path` from the admin listener on `port`.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("admin timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("admin write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("admin read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Replies before the failing request, then the close; nothing after it.
fn pipeline_then_closed(addr: &str, auth: Option<&str>, failing: &[&str]) {
    let mut c = Client::connect(addr);
    if let Some(pw) = auth {
        assert_eq!(c.cmd(&["AUTH", pw]), Reply::ok());
    }
    let mut raw = Vec::new();
    for cmd in [&["PING", "before"][..], failing, &["PING", "after"][..]] {
        raw.extend(resp_command(cmd));
    }
    c.send_raw(&raw).expect("send the pipeline");
    c.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        c.read_reply()
            .expect("the reply before the failing request"),
        Reply::bulk("before")
    );
    c.assert_closed(Duration::from_secs(5));
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    out
}

/// A key that `pool` places on `server` (written through the pool, found on the server).
fn key_on(pool: &str, server: &RedisServer, prefix: &str) -> String {
    let mut c = Client::connect(pool);
    for i in 0..200 {
        let k = format!("{prefix}:{i}");
        assert_eq!(c.cmd(&["SET", &k, "v"]), Reply::ok());
        if server.cmd(&["EXISTS", &k]) == Reply::Int(1) {
            return k;
        }
    }
    panic!("no key of 200 went to {}", server.addr());
}

#[test]
fn a_servers_pool_closes_the_client_whose_request_meets_a_dead_server_and_one_without_answers_the_error(
) {
    let live = RedisServer::start();
    let mut dead = RedisServer::start();
    let (close_port, error_port) = (free_port(), free_port());
    let pool = |name: &str, port: u16, extra: &str| {
        format!(
            "{name}:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  timeout: 500\n{extra}  servers:\n   - {}:1 s0\n   - {}:1 s1\n",
            live.addr(),
            dead.addr()
        )
    };
    let yaml =
        pool("closing", close_port, "  when_down: close\n") + &pool("erring", error_port, "");
    let proxy = common::start_rampart(&yaml, close_port, 2);
    let (closing, erring) = (
        format!("127.0.0.1:{close_port}"),
        format!("127.0.0.1:{error_port}"),
    );
    let on_dead = key_on(&closing, &dead, "k");
    let on_live = key_on(&closing, &live, "k");
    dead.kill9();

    // A single-key read, a write, and a multi-key read with one key on the dead server.
    for failing in [
        &["GET", on_dead.as_str()][..],
        &["SET", on_dead.as_str(), "x"][..],
        &["MGET", on_live.as_str(), on_dead.as_str()][..],
    ] {
        pipeline_then_closed(&closing, None, failing);
    }
    // What the live server holds is served as before, on a new connection.
    let mut c = Client::connect(&closing);
    assert_eq!(c.cmd(&["GET", &on_live]), Reply::bulk("v"));

    // A reply larger than the socket takes at once, before the failing request, arrives
    // whole before the close; so in the pool without the key before a blocking command
    // whose server is down (a blocked client is always closed).
    let big = "x".repeat(20 << 20);
    assert_eq!(c.cmd(&["SET", &on_live, &big]), Reply::ok());
    for (pool, failing) in [
        (&closing, ["GET", on_dead.as_str(), ""]),
        (&erring, ["BLPOP", on_dead.as_str(), "0"]),
    ] {
        let failing: Vec<&str> = failing.into_iter().filter(|a| !a.is_empty()).collect();
        let mut c = Client::connect(pool);
        let mut raw = resp_command(&["GET", &on_live]);
        raw.extend(resp_command(&failing));
        c.send_raw(&raw).expect("send");
        c.set_read_timeout(Some(Duration::from_secs(10)));
        match c.read_reply().expect("the large reply") {
            Reply::Bulk(Some(b)) => assert_eq!(b.len(), big.len(), "{pool} {failing:?}"),
            other => panic!("{pool} {failing:?}: {other:?}"),
        }
        c.assert_closed(Duration::from_secs(5));
    }
    assert_eq!(c.cmd(&["SET", &on_live, "v"]), Reply::ok());

    // The pool without the key: the error, and the client stays.
    let mut e = Client::connect(&erring);
    match e.cmd(&["GET", &on_dead]) {
        Reply::Error(msg) => assert!(msg.contains("rampart:"), "{msg}"),
        other => panic!("expected the error reply, got {other:?}"),
    }
    assert_eq!(e.cmd(&["PING"]), Reply::Simple("PONG".into()));

    // INFO needs no one shard: it answers with the keyspace of those that do, in both.
    for pool in [&closing, &erring] {
        let mut c = Client::connect(pool);
        match c.cmd(&["INFO"]) {
            Reply::Bulk(Some(b)) => {
                let text = String::from_utf8_lossy(&b);
                assert!(
                    text.contains("# Keyspace") && text.contains("shards_not_counted:1"),
                    "{text}"
                );
            }
            other => panic!("INFO through {pool}: {other:?}"),
        }
        assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    }

    let log = proxy.stderr();
    assert!(
        log.contains("closing a client (when_down: close)"),
        "the close is logged:\n{log}"
    );
}

/// A pool whose every server is ejected (`auto_eject_hosts`) has no server for a request:
/// with `when_down: close` that closes its client too, rather than answering
/// `no server available`.
#[test]
fn a_pool_with_every_server_ejected_closes_the_client() {
    let mut only = RedisServer::start();
    let port = free_port();
    let yaml = format!(
        "ej:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 300\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n  when_down: close\n  servers:\n   - {}:1 s0\n",
        only.addr()
    );
    let admin = free_port();
    let proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &yaml)
        .args([
            "-c",
            "{dir}/rampart.yml",
            "-a",
            "127.0.0.1",
            "--workers",
            "1",
        ])
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .args(["-s".to_string(), free_port().to_string()])
        .wait_port(port)
        .start();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(Client::connect(&addr).cmd(&["SET", "a", "1"]), Reply::ok());
    only.kill9();
    // Each request closes its client: first for the dead server, then, once it is
    // ejected, for the pool having no server.
    let no_server = "when_down: close): ERR rampart: pool 'ej' has no server available";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    while !proxy.stderr().contains(no_server) {
        assert!(
            Instant::now() < deadline,
            "the server was never ejected:\n{}",
            proxy.stderr()
        );
        pipeline_then_closed(&addr, None, &["GET", "a"]);
        closed += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    pipeline_then_closed(&addr, None, &["GET", "a"]);
    closed += 1;
    // INFO still answers, without the ejected server's keyspace.
    let mut c = Client::connect(&addr);
    match c.cmd(&["INFO", "keyspace"]) {
        Reply::Bulk(Some(b)) => assert!(
            String::from_utf8_lossy(&b).contains("shards_not_counted:1"),
            "{b:?}"
        ),
        other => panic!("INFO keyspace: {other:?}"),
    }
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    // Every closing is counted for the pool.
    let metrics = http_get(admin, "/metrics");
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("rampart_pool_clients_closed_when_down_total{pool=\"ej\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(counted, Some(closed), "{metrics}");
}

/// A Redis Cluster that requires full coverage answers `CLUSTERDOWN` for every key once a
/// primary without a replica is gone: with `when_down: close` a key on a live node closes
/// its client too.
#[test]
fn a_cluster_that_answers_clusterdown_closes_the_client() {
    let mut cluster = ClusterSetup::new().node_timeout_ms(1000).start();
    let port = free_port();
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 500\n  when_down: close\n"
    );
    let proxy = common::start_rampart(&yaml, port, 2);
    let addr = format!("127.0.0.1:{port}");
    let primaries = cluster.primaries();
    let victim = primaries[2];
    let live = cluster.key_on(primaries[0], "live");
    assert_eq!(
        Client::connect(&addr).cmd(&["SET", &live, "v"]),
        Reply::ok()
    );
    // Only the killed node's slots lose their primary (its replica is killed first).
    let replica_port = cluster.nodes[victim].port();
    let replica = cluster.nodes.iter().position(|n| {
        n.role() == "slave"
            && n.info("replication")
                .contains(&format!("master_port:{replica_port}"))
    });
    if let Some(r) = replica {
        cluster.nodes[r].kill9();
    }
    cluster.nodes[victim].kill9();
    let node = Client::connect(&cluster.nodes[primaries[0]].addr());
    let mut node = node;
    testkit::wait_until(
        Duration::from_secs(15),
        "the cluster to say it is down",
        || matches!(node.cmd(&["GET", &live]), Reply::Error(e) if e.starts_with("CLUSTERDOWN")),
    );
    pipeline_then_closed(&addr, None, &["GET", live.as_str()]);
    assert!(
        proxy.stderr().contains("CLUSTERDOWN"),
        "the close names CLUSTERDOWN:\n{}",
        proxy.stderr()
    );
}

#[test]
fn a_replica_set_with_a_password_closes_writers_while_its_primary_is_dead_and_keeps_serving_reads()
{
    const PW: &str = "s3cret-backend";
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    replica.wait_replication_up(Duration::from_secs(10));
    assert_eq!(primary.cmd(&["SET", "k", "v"]), Reply::ok());
    testkit::wait_until(Duration::from_secs(5), "k to replicate", || {
        replica.cmd(&["GET", "k"]) == Reply::bulk("v")
    });
    for s in [&replica, &primary] {
        assert_eq!(s.cmd(&["CONFIG", "SET", "masterauth", PW]), Reply::ok());
        assert_eq!(s.cmd(&["CONFIG", "SET", "requirepass", PW]), Reply::ok());
    }
    let body = format!(
        "  primary: {}\n  replicas: [{}]\n  redis_auth: {PW}\n  read_policy: prefer-replica\n  when_down: close\n  failover_hold: 300ms\n{FAST_CHECKS}",
        primary.addr(),
        replica.addr()
    );
    let proxy = HaProxy::start(&body);
    let addr = proxy.addr();
    // The proxy's view of a node (INFO pools, as a client that gave the password).
    let routable = |node: &str| -> Option<bool> {
        let mut c = Client::try_connect(&addr).ok()?;
        (c.try_cmd(&["AUTH", PW]).ok()? == Reply::ok()).then_some(())?;
        let text = match c.try_cmd(&["INFO", "pools"]).ok()? {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => return None,
        };
        text.lines()
            .filter_map(ha::NodeState::parse)
            .find(|n| n.addr == node)
            .map(|n| n.routable())
    };
    let up = poll_until(Duration::from_secs(10), || {
        (routable(&primary.addr())? && routable(&replica.addr())?).then_some(())
    });
    assert!(up.is_some(), "the nodes never came up:\n{}", proxy.log());
    primary.kill9();
    let down = poll_until(Duration::from_secs(10), || {
        (!routable(&primary.addr())?).then_some(())
    });
    assert!(down.is_some(), "the proxy never saw the primary down");

    // Reads have a node: answered.
    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["AUTH", PW]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    // A write has none: its client is closed, after the replies before it.
    pipeline_then_closed(&addr, Some(PW), &["SET", "k", "w"]);
    // Nothing of the closed client's write reached the replica set.
    let mut direct = Client::connect(&replica.addr());
    assert_eq!(direct.cmd(&["AUTH", PW]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "k"]), Reply::bulk("v"));
}

#[test]
fn a_sentinel_pool_closes_a_writer_whose_write_was_held_past_failover_hold() {
    let mut s = SentinelSetup::start("  failover_hold: 200ms\n  when_down: close\n");
    let addr = s.proxy.addr();
    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["SET", "k", "before"]), Reply::ok());
    let t0 = Instant::now();
    s.primary.kill9();
    // Sentinel needs over a second to agree the primary is down: the write waits in the
    // hold for 200 ms, then its client is closed (nothing was sent).
    pipeline_then_closed(&addr, None, &["SET", "k", "during"]);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "closed only after {:?}: the failover came first, the test proves nothing",
        t0.elapsed()
    );
    // After the failover, the pool serves writes again.
    s.wait_switch(t0, Duration::from_secs(30));
    let ok = poll_until(Duration::from_secs(10), || {
        let mut c = Client::try_connect(&addr).ok()?;
        (c.try_cmd(&["SET", "k", "after"]).ok()? == Reply::ok()).then_some(())
    });
    assert!(ok.is_some(), "no write succeeded after the failover");
    let log = s.proxy.log_lines(&["when_down: close"]);
    assert!(
        log.iter().any(|l| l.contains("failover_hold")),
        "the close names the expired hold: {log:?}"
    );
}

#[test]
fn a_cluster_pool_closes_the_client_whose_slot_lost_its_node() {
    let mut cluster = ClusterSetup::new()
        .full_coverage(false)
        .node_timeout_ms(1000)
        .start();
    let port = free_port();
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 500\n  when_down: close\n"
    );
    let _proxy = common::start_rampart(&yaml, port, 2);
    let addr = format!("127.0.0.1:{port}");
    let victim = cluster.primaries()[2];
    let on_victim = cluster.key_on(victim, "gone");
    let elsewhere = cluster.key_on(cluster.primaries()[0], "kept");
    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["SET", &on_victim, "v"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", &elsewhere, "v"]), Reply::ok());
    cluster.nodes[victim].kill9();

    pipeline_then_closed(&addr, None, &["GET", on_victim.as_str()]);
    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["GET", &elsewhere]), Reply::bulk("v"));
}

#[test]
fn a_reload_that_sets_when_down_close_applies_to_clients_already_connected() {
    let live = RedisServer::start();
    let mut dead = RedisServer::start();
    let port = free_port();
    let (live_addr, dead_addr) = (live.addr(), dead.addr());
    let yaml = |extra: &str| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  timeout: 500\n{extra}  servers:\n   - {live_addr}:1 s0\n   - {dead_addr}:1 s1\n"
        )
    };
    let proxy = common::start_rampart(&yaml(""), port, 1);
    let addr = format!("127.0.0.1:{port}");
    let on_dead = key_on(&addr, &dead, "r");
    dead.kill9();
    let mut c = Client::connect(&addr);
    assert!(
        matches!(c.cmd(&["GET", &on_dead]), Reply::Error(_)),
        "without when_down, the error"
    );
    std::fs::write(
        proxy.dir().join("rampart.yml"),
        yaml("  when_down: close\n"),
    )
    .expect("write the configuration");
    proxy.signal("HUP");
    testkit::wait_until(Duration::from_secs(10), "the reload to be applied", || {
        proxy
            .stderr()
            .lines()
            .any(|l| l.contains("reload: applied") && l.contains("when_down"))
    });
    // The same connection, opened before the reload.
    c.send_raw(&resp_command(&["GET", &on_dead]))
        .expect("send after the reload");
    c.assert_closed(Duration::from_secs(5));
}

/// A request whose shard is known down when it is read (its primary failed its checks)
/// closes the client, and nothing the client pipelined after it is sent: the writes after
/// it, to a live shard, are not applied. Two shards, each a primary and a replica.
#[test]
fn nothing_pipelined_after_a_request_known_to_fail_is_sent() {
    let (a, a_replicas) = ha::replica_set(1);
    let (mut b, b_replicas) = ha::replica_set(1);
    let body = format!(
        "  hash_tag: \"{{}}\"\n  when_down: close\n  failover_hold: 0\n{FAST_CHECKS}  shards:\n    - name: a\n      primary: {}\n      replicas: [{}]\n    - name: b\n      primary: {}\n      replicas: [{}]\n",
        a.addr(),
        a_replicas[0].addr(),
        b.addr(),
        b_replicas[0].addr()
    );
    let proxy = HaProxy::start(&body);
    proxy.wait_up(
        &[
            a.addr(),
            a_replicas[0].addr(),
            b.addr(),
            b_replicas[0].addr(),
        ],
        Duration::from_secs(10),
    );
    let addr = proxy.addr();
    // A hash tag on each shard.
    let tag_on = |server: &RedisServer| {
        let k = key_on(&addr, server, "t");
        format!("{{{k}}}")
    };
    let (on_a, on_b) = (tag_on(&a), tag_on(&b));
    b.kill9();
    let down = poll_until(Duration::from_secs(10), || {
        proxy.node(&b.addr()).filter(|n| !n.routable()).map(|_| ())
    });
    assert!(down.is_some(), "the proxy never saw b's primary down");

    let mut c = Client::connect(&addr);
    let (counter, dead, after) = (
        format!("{on_a}c"),
        format!("{on_b}k"),
        format!("{on_a}after"),
    );
    let mut raw = Vec::new();
    for cmd in [
        &["INCR", counter.as_str()][..],
        &["SET", dead.as_str(), "x"],
        &["INCR", counter.as_str()],
        &["SET", after.as_str(), "1"],
    ] {
        raw.extend(resp_command(cmd));
    }
    c.send_raw(&raw).expect("send the pipeline");
    c.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(c.read_reply().expect("the INCR before"), Reply::Int(1));
    c.assert_closed(Duration::from_secs(5));
    assert_eq!(a.cmd(&["GET", &counter]), Reply::bulk("1"));
    assert_eq!(a.cmd(&["EXISTS", &after]), Reply::Int(0));
}

/// Two servers, one killed, and a pool with `when_down: close` over them: the proxy, its
/// address, a key on the live server and one on the dead one.
fn half_dead(tag: &str) -> (RedisServer, testkit::Proxy, String, String, String) {
    let live = RedisServer::start();
    let mut dead = RedisServer::start();
    let port = free_port();
    let yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  timeout: 500\n  when_down: close\n  servers:\n   - {}:1 s0\n   - {}:1 s1\n",
        live.addr(),
        dead.addr()
    );
    let proxy = common::start_rampart(&yaml, port, 1);
    let addr = format!("127.0.0.1:{port}");
    let on_dead = key_on(&addr, &dead, tag);
    let on_live = key_on(&addr, &live, tag);
    dead.kill9();
    (live, proxy, addr, on_live, on_dead)
}

/// A client still sending a long pipeline when rampart closes it reads every reply before
/// the close, then the end: rampart ends its side and reads (dropping) the rest, instead of
/// closing a socket with unread bytes, which resets the connection and made the client lose
/// the replies it had not read yet (128 KB of a 2 MB reply).
#[test]
fn a_client_still_sending_when_it_is_closed_reads_every_reply_before_the_close() {
    use std::io::Write;
    let (_live, _proxy, addr, on_live, on_dead) = half_dead("p");
    let big = "y".repeat(2 << 20);
    assert_eq!(
        Client::connect(&addr).cmd(&["SET", &on_live, &big]),
        Reply::ok()
    );
    let mut c = Client::connect(&addr);
    let mut sender = c.stream().try_clone().expect("clone the socket");
    let mut raw = resp_command(&["GET", &on_live]);
    raw.extend(resp_command(&["GET", &on_dead]));
    let pings = resp_command(&["PING"]).repeat(100_000);
    let writer = std::thread::spawn(move || {
        let _ = sender.write_all(&raw);
        let _ = sender.write_all(&pings);
    });
    std::thread::sleep(Duration::from_millis(500));
    c.set_read_timeout(Some(Duration::from_secs(10)));
    match c.read_reply() {
        Ok(Reply::Bulk(Some(b))) => assert_eq!(b.len(), big.len()),
        other => panic!("the reply before the close: {other:?}"),
    }
    match c.read_reply() {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        Ok(r) => panic!("a reply after the close: {r:?}"),
    }
    writer.join().expect("writer");
}

/// SIGTERM while a client's replies before a close are still being written: they all go
/// out (within the drain timeout), then the end, as for any client at shutdown.
#[test]
fn sigterm_writes_the_replies_before_a_pending_close() {
    let (_live, proxy, addr, on_live, on_dead) = half_dead("s");
    let value = "z".repeat(1 << 20);
    assert_eq!(
        Client::connect(&addr).cmd(&["SET", &on_live, &value]),
        Reply::ok()
    );
    let mut c = Client::connect(&addr);
    let mut raw = resp_command(&["GET", &on_live]).repeat(20);
    raw.extend(resp_command(&["GET", &on_dead]));
    c.send_raw(&raw).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    proxy.signal("TERM");
    c.set_read_timeout(Some(Duration::from_secs(10)));
    for i in 0..20 {
        match c.read_reply() {
            Ok(Reply::Bulk(Some(b))) => assert_eq!(b.len(), value.len(), "reply {i}"),
            other => panic!("reply {i} of 20: {other:?}"),
        }
    }
    c.assert_closed(Duration::from_secs(5));
}
