//! The harness tested against real processes: redis-server, sentinel, nutcracker,
//! the generic proxy guard and the fault link.

use std::io;
use std::time::{Duration, Instant};

use testkit::{
    free_port, is_timeout, Client, FaultLink, Mode, Nutcracker, Proxy, RedisServer, Reply, Sentinel,
};

#[test]
fn client_sets_and_gets_on_a_real_redis() {
    let redis = RedisServer::start();
    let mut c = Client::connect(&redis.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(c.cmd(&["GET", "missing"]), Reply::nil());
    assert!(c.cmd(&["NOSUCHCOMMAND"]).is_error());
    let replies = c.pipeline(&[vec!["INCR", "n"], vec!["INCR", "n"], vec!["MGET", "k", "n"]]);
    assert_eq!(
        replies,
        vec![Reply::Int(1), Reply::Int(2), Reply::bulks(["v", "2"])]
    );
    c.send_raw(b"PING\r\n").unwrap();
    assert_eq!(c.read_reply().unwrap(), Reply::simple("PONG"));
    assert_eq!(redis.cmd(&["DBSIZE"]), Reply::Int(2));
}

#[test]
fn free_ports_are_not_handed_out_twice() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn sigstop_freezes_and_sigcont_recovers() {
    let redis = RedisServer::start();
    let mut c = Client::connect(&redis.addr());
    c.set_read_timeout(Some(Duration::from_millis(300)));
    redis.stop();
    let err = c.try_cmd(&["PING"]).unwrap_err();
    assert!(is_timeout(&err), "expected a timeout, got {err:?}");
    redis.cont();
    c.set_read_timeout(Some(Duration::from_secs(5)));
    // The PING sent while frozen is answered first.
    assert_eq!(c.read_reply().unwrap(), Reply::simple("PONG"));
    assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn kill9_then_restart_on_the_same_port() {
    let mut redis = RedisServer::start_with(&["--maxmemory", "50mb"]);
    let (port, pid) = (redis.port(), redis.pid());
    assert_eq!(redis.cmd(&["SET", "k", "v"]), Reply::ok());
    redis.kill9();
    assert!(
        Client::try_connect(&redis.addr()).is_err(),
        "port still open after kill -9"
    );
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(
        redis.cmd(&["GET", "k"]),
        Reply::nil(),
        "no persistence expected"
    );
    let maxmemory = redis.cmd(&["CONFIG", "GET", "maxmemory"]);
    assert_eq!(maxmemory, Reply::bulks(["maxmemory", "52428800"]));
}

#[test]
fn replica_follows_its_primary() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    assert_eq!(replica.role(), "slave");
    assert_eq!(primary.cmd(&["SET", "k", "v"]), Reply::ok());
    testkit::wait_until(Duration::from_secs(5), "the write to replicate", || {
        replica.cmd(&["GET", "k"]) == Reply::bulk("v")
    });
    assert_eq!(replica.replica_of_no_one(), Reply::ok());
    assert_eq!(replica.role(), "master");
}

#[test]
fn fault_link_passes_traffic_and_delays_it() {
    let redis = RedisServer::start();
    let link = FaultLink::start(&redis.addr());
    let mut c = Client::connect(&link.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    let fast = timed(|| assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v")));
    let delay = Duration::from_millis(150);
    link.delay(delay);
    assert_eq!(link.mode(), Mode::Delay(delay));
    let slow = timed(|| assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v")));
    assert!(slow >= delay, "delayed round trip took only {slow:?}");
    assert!(fast < delay, "undelayed round trip took {fast:?}");
    link.pass();
    let again = timed(|| assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v")));
    assert!(again < delay, "round trip after pass() took {again:?}");
    assert_eq!(link.accepted(), 1);
}

#[test]
fn blackhole_makes_reads_time_out() {
    let redis = RedisServer::start();
    let link = FaultLink::start(&redis.addr());
    let mut old = Client::connect(&link.addr());
    assert_eq!(old.cmd(&["PING"]), Reply::simple("PONG"));
    link.blackhole();
    // Both an existing connection and a new one go silent.
    let mut new = Client::connect(&link.addr());
    for c in [&mut old, &mut new] {
        c.set_read_timeout(Some(Duration::from_millis(300)));
        let err = c.try_cmd(&["SET", "bh", "1"]).unwrap_err();
        assert!(is_timeout(&err), "expected a timeout, got {err:?}");
    }
    // Nothing was forwarded to the server.
    assert_eq!(redis.cmd(&["EXISTS", "bh"]), Reply::Int(0));
}

#[test]
fn reset_fails_open_and_new_connections() {
    let redis = RedisServer::start();
    let link = FaultLink::start(&redis.addr());
    let mut old = Client::connect(&link.addr());
    assert_eq!(old.cmd(&["PING"]), Reply::simple("PONG"));
    link.reset();
    let err = old.try_cmd(&["PING"]).unwrap_err();
    assert!(!is_timeout(&err), "expected a failed read, got a timeout");
    let mut new = Client::connect(&link.addr());
    let err = new.try_cmd(&["PING"]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err:?}");
    link.pass();
    assert_eq!(
        Client::connect(&link.addr()).cmd(&["PING"]),
        Reply::simple("PONG")
    );
}

#[test]
fn close_all_ends_connections_but_keeps_accepting() {
    let redis = RedisServer::start();
    let link = FaultLink::start(&redis.addr());
    let mut c = Client::connect(&link.addr());
    assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
    assert_eq!(link.open_connections(), 1);
    link.close_all();
    assert!(
        c.read_reply().is_err(),
        "connection still open after close_all"
    );
    assert_eq!(
        Client::connect(&link.addr()).cmd(&["PING"]),
        Reply::simple("PONG")
    );
}

#[test]
fn nutcracker_forwards_to_a_one_server_pool() {
    let redis = RedisServer::start();
    let yml = Nutcracker::pool_yml(free_port(), &[redis.port()]);
    let nc = Nutcracker::start(&yml);
    assert_eq!(redis.cmd(&["SET", "k", "through"]), Reply::ok());
    let mut c = Client::connect(&nc.addr());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("through"));
    assert!(nc.stats().contains("\"alpha\""), "stats: {}", nc.stats());
}

#[test]
fn sentinel_names_the_primary() {
    let redis = RedisServer::start();
    let s = Sentinel::start(
        "mymaster",
        redis.port(),
        1,
        Duration::from_millis(1000),
        Duration::from_millis(5000),
    );
    let reply = s.cmd(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
    let port = redis.port().to_string();
    assert_eq!(reply, Reply::bulks(["127.0.0.1", port.as_str()]));
    assert_eq!(s.master_addr("nosuch"), None);
}

#[test]
fn proxy_guard_runs_any_binary_and_delivers_signals() {
    let port = free_port();
    let mut p = Proxy::builder("redis-server")
        .file("extra.conf", "maxclients 77\n")
        .args(["{dir}/extra.conf", "--bind", "127.0.0.1", "--save", ""])
        .args(["--port".to_string(), port.to_string()])
        .wait_port(port)
        .start();
    let maxclients = Client::connect(&p.addr()).cmd(&["CONFIG", "GET", "maxclients"]);
    assert_eq!(maxclients, Reply::bulks(["maxclients", "77"]));
    assert_eq!(p.wait_exit(Duration::from_millis(100)), None);
    p.signal("TERM");
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(p.stderr().contains("SIGTERM"), "output: {}", p.stderr());
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

#[test]
fn sentinel_promotes_the_replica_after_kill9() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let s = Sentinel::start_monitors(&[testkit::Monitor::new("ha", primary.port())
        .down_after(Duration::from_millis(500))
        .failover_timeout(Duration::from_secs(3))]);
    s.wait_for_master("ha", primary.port(), Duration::from_secs(1));
    // Sentinel learns about replicas from the primary's INFO; wait until it has.
    testkit::wait_until(
        Duration::from_secs(10),
        "sentinel to see the replica",
        || {
            let replicas = s.cmd(&["SENTINEL", "replicas", "ha"]);
            replicas.as_array().is_some_and(|r| !r.is_empty())
        },
    );
    primary.kill9();
    s.wait_for_master("ha", replica.port(), Duration::from_secs(20));
    testkit::wait_until(
        Duration::from_secs(5),
        "the replica to become master",
        || replica.role() == "master",
    );
    // get-master-addr-by-name names the replica once it is promoted; the failover
    // ends (and +switch-master is logged) a little later.
    testkit::wait_until(Duration::from_secs(10), "+switch-master in the log", || {
        s.log().contains("+switch-master ha")
    });
}

#[test]
fn a_cluster_of_three_primaries_with_a_replica_each_comes_up_agreed() {
    let cluster = testkit::ClusterSetup::new().start();
    assert_eq!(cluster.primaries().len(), 3);
    let owners: std::collections::HashSet<usize> = (0..3)
        .map(|i| cluster.owner_of(&cluster.key_on(cluster.primaries()[i], "k")))
        .collect();
    assert_eq!(owners.len(), 3, "keys land on every primary");
}
