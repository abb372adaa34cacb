//! A server busy with a long script (`EVAL "while true do end" 0` past its
//! `busy-reply-threshold`) answers `-BUSY` to nearly everything, yet it is alive: rampart
//! neither ejects it (twemproxy `servers:` with `auto_eject_hosts`) nor takes it out of
//! rotation (a replica set's health checks), clients get Redis' own `BUSY` error as they
//! would directly, and once `SCRIPT KILL` ends the script everything works as before.
//! The same for a cluster pool is in `cluster.rs`. A switchover to a frozen replica is refused
//! before any write is held, in a replica-set, a Sentinel and a cluster pool.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::io::Read;
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

/// How long a script runs before the server answers `BUSY` to other clients (ms).
const THRESHOLD: &str = "100";

/// A server whose scripts count as busy after [`THRESHOLD`] ms.
fn busy_capable() -> RedisServer {
    RedisServer::start_with(&["--busy-reply-threshold", THRESHOLD])
}

/// Starts a script that never ends on `addr` (a connection of its own, straight to the
/// server) and waits until the server answers `BUSY`; the thread returns the script's reply
/// once it is killed.
fn run_endless_script(addr: &str) -> JoinHandle<Reply> {
    let a = addr.to_string();
    let script = std::thread::spawn(move || {
        let mut c = Client::connect(&a);
        c.set_read_timeout(Some(Duration::from_secs(60)));
        c.cmd(&["EVAL", "while true do end", "0"])
    });
    let busy = poll_until(Duration::from_secs(5), || {
        let mut c = Client::connect(addr);
        matches!(c.cmd(&["PING"]), Reply::Error(e) if e.starts_with("BUSY")).then_some(())
    });
    assert!(busy.is_some(), "the server never became busy");
    script
}

/// Ends the script with `SCRIPT KILL` sent through the proxy at `proxy` and checks its reply.
fn kill_script(proxy: &str, script: JoinHandle<Reply>) {
    assert_eq!(Client::connect(proxy).cmd(&["SCRIPT", "KILL"]), Reply::ok());
    let r = script.join().expect("script thread");
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("killed")),
        "the script's own reply: {r:?}"
    );
}

/// What the server itself answers `GET key` with now (on a direct connection).
fn direct(addr: &str, key: &str) -> Reply {
    Client::connect(addr).cmd(&["GET", key])
}

fn stats_json(port: u16) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("stats port");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("stats read");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats JSON: {e}: {text}"))
}

#[test]
fn a_busy_server_of_a_twemproxy_pool_is_not_ejected_and_its_clients_get_busy() {
    let servers: Vec<RedisServer> = (0..2).map(|_| busy_capable()).collect();
    let port = free_port();
    let stats = free_port();
    let mut yml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  timeout: 1000\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 30000\n  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        yml.push_str(&format!("   - {}:1 s{i}\n", s.addr()));
    }
    let _proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yml)
        .args(["-c", "{dir}/rampart.yml", "-a", "127.0.0.1"])
        .args(["--workers", "2", "-s"])
        .arg(stats.to_string())
        .wait_port(port)
        .start();
    let addr = format!("127.0.0.1:{port}");
    let mut c = Client::connect(&addr);
    let keys: Vec<String> = (0..40).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, "v"]), Reply::ok());
    }
    let on_busy: Vec<&String> = keys
        .iter()
        .filter(|k| servers[1].cmd(&["EXISTS", k]) == Reply::Int(1))
        .collect();
    let elsewhere: Vec<&String> = keys
        .iter()
        .filter(|k| servers[0].cmd(&["EXISTS", k]) == Reply::Int(1))
        .collect();
    assert!(!on_busy.is_empty() && !elsewhere.is_empty());

    let busy = servers[1].addr();
    let script = run_endless_script(&busy);
    let want = direct(&busy, on_busy[0]);
    assert!(
        matches!(&want, Reply::Error(e) if e.starts_with("BUSY")),
        "{want:?}"
    );
    // For well over a second (several of the proxy's clients, new connections too), every
    // request to the busy server gets the server's own BUSY error, the other server's keys
    // are served, and nothing is ejected.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut rounds = 0;
    while Instant::now() < until {
        let mut fresh = Client::connect(&addr);
        for k in &on_busy {
            assert_eq!(c.cmd(&["GET", k]), want, "{k}");
            assert_eq!(fresh.cmd(&["GET", k]), want, "{k} on a new client");
        }
        for k in &elsewhere {
            assert_eq!(c.cmd(&["GET", k]), Reply::bulk("v"), "{k}");
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rounds > 5, "{rounds} rounds");
    let j = stats_json(stats);
    assert_eq!(j["alpha"]["server_ejects"].as_i64(), Some(0), "{j}");
    assert_eq!(
        j["alpha"]["s1"]["server_ejected_at"].as_i64(),
        Some(0),
        "{j}"
    );

    kill_script(&addr, script);
    // Service resumes on the same server: its keys are still its own (nothing moved).
    for k in &on_busy {
        assert_eq!(c.cmd(&["GET", k]), Reply::bulk("v"), "{k}");
        assert_eq!(c.cmd(&["SET", k, "after"]), Reply::ok());
        assert_eq!(servers[1].cmd(&["GET", k]), Reply::bulk("after"), "{k}");
    }
}

#[test]
fn a_busy_primary_of_a_replica_set_stays_up_and_its_clients_get_busy() {
    let primary = busy_capable();
    let replica = RedisServer::start_replica_of(&primary);
    let body = ha::short_form(
        &primary.addr(),
        &[replica.addr()],
        "  timeout: 1000\n  failover_hold: 500ms\n  read_policy: primary\n",
    );
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());

    let script = run_endless_script(&primary.addr());
    let want = direct(&primary.addr(), "k");
    assert!(
        matches!(&want, Reply::Error(e) if e.starts_with("BUSY")),
        "{want:?}"
    );
    // Health checks every 200 ms, two failures take a node out: over 1.5 s they would have,
    // many times over. Writes and reads get the server's BUSY, not the hold's timeout.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(c.cmd(&["GET", "k"]), want);
        assert_eq!(c.cmd(&["SET", "k", "w"]), want);
        let node = proxy.node(&primary.addr()).expect("the primary is listed");
        assert!(node.routable(), "the busy primary left rotation: {node:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_script(&proxy.addr(), script);
    assert_eq!(c.cmd(&["SET", "k", "after"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("after"));
    let node = proxy.node(&primary.addr()).expect("the primary is listed");
    assert!(node.routable(), "{node:?}");
    assert!(
        proxy.log_lines(&["node down"]).is_empty(),
        "{:?}",
        proxy.log_lines(&["node down"])
    );
}

/// A switchover whose replica is busy with a script is refused at once with the server's
/// `BUSY`, and holds no write meanwhile: the replica cannot report its offset, let alone be
/// promoted, so holding writes while waiting for it would only fail them.
#[test]
fn a_switchover_to_a_busy_replica_is_refused_with_busy_and_holds_no_write() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    assert_eq!(
        replica.cmd(&["CONFIG", "SET", "busy-reply-threshold", THRESHOLD]),
        Reply::ok()
    );
    let body = ha::short_form(&primary.addr(), &[replica.addr()], "  failover_hold: 3s\n");
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    let script = run_endless_script(&replica.addr());
    let (reply, writes, errors, _) = switchover_while_writing(&proxy);
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("BUSY")),
        "the switchover's reply: {reply:?}"
    );
    assert_no_write_failed(writes, &errors);
    assert_eq!(
        primary
            .cmd(&["ROLE"])
            .as_array()
            .and_then(|r| r[0].as_str().map(str::to_string)),
        Some("master".into())
    );
    assert_eq!(
        Client::connect(&replica.addr()).cmd(&["SCRIPT", "KILL"]),
        Reply::ok()
    );
    let _ = script.join();
}

/// Every one of `writes` succeeded (`errors` lists the replies of those that did not).
fn assert_no_write_failed(writes: u64, errors: &[String]) {
    assert!(
        errors.is_empty(),
        "{} of {writes} writes failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
}

/// `RAMPART SWITCHOVER` of the pool while a client writes through `proxy` all along: the
/// switchover's reply, the writes made, the errors they got, and the longest a write took.
fn switchover_while_writing(proxy: &ha::HaProxy) -> (Reply, u64, Vec<String>, Duration) {
    switch_while_writing(proxy, ha::POOL, "k")
}

/// `RAMPART SWITCHOVER <shard>` while a client writes `key` through `proxy` all along; as
/// [`switchover_while_writing`].
fn switch_while_writing(
    proxy: &ha::HaProxy,
    shard: &str,
    key: &str,
) -> (Reply, u64, Vec<String>, Duration) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, addr, key) = (std::sync::Arc::clone(&stop), proxy.addr(), key.to_string());
        std::thread::spawn(move || {
            let mut c = Client::connect(&addr);
            c.set_read_timeout(Some(Duration::from_secs(30)));
            let (mut errors, mut longest) = (Vec::new(), Duration::ZERO);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let sent = std::time::Instant::now();
                let r = c.cmd(&["SET", &key, &n.to_string()]);
                longest = longest.max(sent.elapsed());
                if r != Reply::ok() {
                    errors.push(format!("{r:?}"));
                }
            }
            (n, errors, longest)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut admin = Client::connect(&proxy.addr());
    admin.set_read_timeout(Some(Duration::from_secs(30)));
    let reply = admin.cmd(&["RAMPART", "SWITCHOVER", shard]);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (writes, errors, longest) = writer.join().expect("writer");
    (reply, writes, errors, longest)
}

/// A switchover whose replica is frozen (SIGSTOP: the kernel still accepts connections, the
/// server answers nothing) is refused before any write is held: the writes go on to the
/// primary, none fails or waits. Before, the writes were held while the switchover waited
/// for the replica's offset, longer than `failover_hold`, and failed with "no primary".
#[test]
fn a_switchover_to_a_frozen_replica_is_refused_and_holds_no_write() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let body = ha::short_form(&primary.addr(), &[replica.addr()], "  failover_hold: 3s\n");
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    replica.stop();
    let outcome = switchover_while_writing(&proxy);
    replica.cont();
    assert_refused_before_holding(outcome, not_answering);
    assert_eq!(primary.role(), "master");
}

/// The error of a switchover stopped because its replica does not answer its offset.
fn not_answering(e: &str) -> bool {
    e.contains("cannot be promoted now") && e.contains("no write was held")
}

/// A switchover's outcome ([`switch_while_writing`]): refused with an error `refused`
/// accepts, while every write went on at once (none failed, none took 1 s).
fn assert_refused_before_holding(
    (reply, writes, errors, longest): (Reply, u64, Vec<String>, Duration),
    refused: impl Fn(&str) -> bool,
) {
    assert!(
        matches!(&reply, Reply::Error(e) if refused(e)),
        "the switchover's reply: {reply:?}"
    );
    assert_no_write_failed(writes, &errors);
    assert!(longest < Duration::from_secs(1), "a write took {longest:?}");
}

/// The same in a Sentinel pool, both replicas frozen: whichever way the switchover finds it
/// out (Sentinel lists no replica it could promote, rampart's health checks took them out,
/// or they do not answer their offset), it stops before any write is held.
#[test]
fn a_sentinel_switchover_to_frozen_replicas_is_refused_and_holds_no_write() {
    let s = ha::SentinelSetup::start("  failover_hold: 3s\n");
    for r in &s.replicas {
        r.stop();
    }
    let outcome = switch_while_writing(&s.proxy, ha::MASTER, "k");
    for r in &s.replicas {
        r.cont();
    }
    assert_refused_before_holding(outcome, |e| {
        e.contains("no write was held")
            || e.contains("no replica it could promote")
            || e.contains("not a healthy replica here")
    });
    assert_eq!(s.primary.role(), "master");
}

/// The same in a Redis Cluster pool: the shard's replica is frozen, so `CLUSTER FAILOVER`
/// is never sent to it; the writes to the shard's slots go on to its primary.
#[test]
fn a_cluster_switchover_to_a_frozen_replica_is_refused_and_holds_no_write() {
    let cluster = testkit::ClusterSetup::new().start();
    let seeds = cluster.addrs()[..2].join(", ");
    let proxy = ha::HaProxy::start_cluster(&format!(
        "  cluster: [{seeds}]\n  timeout: 2000\n  failover_hold: 3s\n"
    ));
    let old = cluster.primaries()[0];
    let (primary, replica) = (&cluster.nodes[old], replica_of(&cluster, old));
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    replica.stop();
    let key = cluster.key_on(old, "sw-");
    let outcome = switch_while_writing(&proxy, &primary.addr(), &key);
    replica.cont();
    assert_refused_before_holding(outcome, not_answering);
    assert_eq!(primary.role(), "master");
}

/// The replica of node `primary` of `cluster` (its `ROLE` names the primary's port).
fn replica_of(cluster: &testkit::RedisCluster, primary: usize) -> &RedisServer {
    let port = cluster.nodes[primary].port();
    cluster
        .nodes
        .iter()
        .find(|n| {
            matches!(Client::connect(&n.addr()).cmd(&["ROLE"]), Reply::Array(Some(items))
                if items.first() == Some(&Reply::bulk("slave")) && items.get(2) == Some(&Reply::Int(port.into())))
        })
        .expect("the primary has a replica")
}

/// A replica busy with a script answers every read `BUSY`, though it is alive: while it does,
/// it leaves the read rotation (it stays up, and is not failed over), so reads go to the
/// other nodes; once the script ends it serves reads again.
#[test]
fn a_busy_replica_leaves_the_read_rotation_while_the_others_serve() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    assert_eq!(
        replica.cmd(&["CONFIG", "SET", "busy-reply-threshold", THRESHOLD]),
        Reply::ok()
    );
    let body = ha::short_form(
        &primary.addr(),
        &[replica.addr()],
        "  read_policy: prefer-replica\n",
    );
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["WAIT", "1", "5000"]), Reply::Int(1));
    let script = run_endless_script(&replica.addr());
    // Within a few health checks (200 ms each) reads stop meeting the busy replica.
    let served = poll_until(Duration::from_secs(5), || {
        (0..20)
            .all(|_| c.cmd(&["GET", "k"]) == Reply::bulk("v"))
            .then_some(())
    });
    assert!(
        served.is_some(),
        "reads kept getting BUSY: {:?}",
        c.cmd(&["GET", "k"])
    );
    for _ in 0..200 {
        assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    let node = proxy.node(&replica.addr()).expect("the replica is listed");
    assert!(node.routable(), "the busy replica was taken down: {node:?}");
    assert!(node.reason.contains("busy running a script"), "{node:?}");
    assert_eq!(
        Client::connect(&replica.addr()).cmd(&["SCRIPT", "KILL"]),
        Reply::ok()
    );
    let _ = script.join();
    let before = ha::calls(&replica.addr(), "get");
    let back = poll_until(Duration::from_secs(5), || {
        c.cmd(&["GET", "k"]);
        (ha::calls(&replica.addr(), "get") > before).then_some(())
    });
    assert!(back.is_some(), "the replica never served reads again");
}
