//! The control calls of a replica-set pool on a cluster pool: a planned switchover
//! (`RAMPART SWITCHOVER`, as `POST /api/shards/switchover` runs it) promotes the replica the
//! way Redis Cluster does it (`CLUSTER FAILOVER` on the replica), with the shard's writes held
//! meanwhile and none lost; the admin plane names the pool's kind and shows its slot map.
//!
//! Run with `RUST_TEST_THREADS=2`: each test starts its own cluster of six servers.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::{free_port, poll_until, Client, ClusterSetup, Proxy, Reply};

#[test]
fn a_switchover_of_a_cluster_shard_promotes_its_replica_and_loses_no_write() {
    let cluster = ClusterSetup::new().start();
    let port = free_port();
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\n  failover_hold: 5000\n"
    );
    let _proxy = common::start_rampart(&yaml, port, 2);
    let addr = format!("127.0.0.1:{port}");
    let old = cluster.primaries()[0];
    let key = cluster.key_on(old, "sw-");
    let shard = cluster.nodes[old].addr();
    // Writes to the shard's slot run throughout; every one must be acknowledged and counted.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, addr, key) = (Arc::clone(&stop), addr.clone(), key.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let mut acked = 0i64;
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.cmd(&["INCR", &key]) {
                    Reply::Int(_) => acked += 1,
                    other => errors.push(format!("{other:?}")),
                }
            }
            (acked, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut admin = Client::connect(&addr);
    // Nodes start down until their health checks pass: until then there is nothing to
    // switch (the call says so and changes nothing).
    let reply = poll_until(Duration::from_secs(5), || {
        let r = admin.cmd(&["RAMPART", "SWITCHOVER", &shard]);
        (!format!("{r:?}").contains("no healthy")).then_some(r)
    })
    .expect("the shard's nodes come up");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writer.join().expect("writer");
    let text = format!("{reply:?}");
    assert!(text.contains("switched to"), "switchover: {text}");
    assert!(errors.is_empty(), "client errors: {errors:?}");
    // The old primary is a replica now, and its replica the primary of the slot.
    let demoted = poll_until(Duration::from_secs(5), || {
        (cluster.nodes[old].role() == "slave").then_some(())
    });
    assert!(demoted.is_some(), "the old primary became a replica");
    let new = poll_until(Duration::from_secs(5), || {
        let n = cluster.owner_of(&key);
        (n != old).then_some(n)
    })
    .expect("the cluster names a new owner of the slot");
    assert_eq!(cluster.nodes[new].role(), "master");
    let mut direct = Client::connect(&cluster.nodes[new].addr());
    assert_eq!(direct.cmd(&["GET", &key]), Reply::bulk(acked.to_string()));
    // Writes keep going to the new primary through the pool.
    let mut c = Client::connect(&addr);
    assert_eq!(c.cmd(&["INCR", &key]), Reply::Int(acked + 1));
}

/// The body of `GET path` on the admin listener at `port`.
fn admin_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("admin write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("admin read");
    assert!(text.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn the_admin_plane_names_a_cluster_pool_and_shows_its_slot_map() {
    let cluster = ClusterSetup::new().start();
    let (port, admin) = (free_port(), free_port());
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!("c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\n");
    let _proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yaml)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--admin"])
        .arg(format!("127.0.0.1:{admin}"))
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let topology: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/api/topology")).expect("topology JSON");
    assert_eq!(topology["pools"][0]["kind"], "cluster", "{topology}");
    let metrics = admin_get(admin, "/metrics");
    let value = |name: &str| -> Option<f64> {
        let prefix = format!("{name}{{pool=\"c\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    };
    assert!(
        value("rampart_cluster_maps_adopted_total") >= Some(1.0),
        "{metrics}"
    );
    assert_eq!(value("rampart_cluster_maps_refused_total"), Some(0.0));
    assert_eq!(value("rampart_cluster_slots_uncovered"), Some(0.0));
}

#[test]
fn a_backend_user_that_lets_scripts_run_cluster_is_named_in_a_warning() {
    // The nodes' default user may run everything, CLUSTER SETSLOT included, and a client's
    // script runs with its rights: `redis.call('cluster', 'setslot', ...)` would change the
    // cluster under rampart, which refuses CLUSTER from the clients themselves.
    let cluster = ClusterSetup::new().replicas(0).start();
    let port = free_port();
    let seeds = cluster.addrs()[..2].join(", ");
    let yaml = format!("c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\n");
    let proxy = common::start_rampart(&yaml, port, 2);
    let warned = poll_until(Duration::from_secs(10), || {
        let log = proxy.stderr();
        log.lines()
            .find(|l| l.contains("backend user 'default' may run"))
            .map(str::to_string)
    })
    .expect("a warning about the backend user");
    assert!(
        warned.contains("SELECT, CLUSTER:") && warned.contains("-cluster +cluster|nodes"),
        "{warned}"
    );
}
