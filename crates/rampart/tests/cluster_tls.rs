//! A cluster pool over TLS: the nodes of a real Redis Cluster take clients on a TLS port
//! (and talk to each other over TLS), and the pool's `cluster:` seeds are those ports with
//! `backend_tls`. The first map, read at start, must come over TLS as every later one does,
//! and a pool rebuilt because the cluster grew keeps TLS on both sides.
//!
//! Run with `RUST_TEST_THREADS=2`: each test starts its own cluster of six servers.

mod common;

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use testkit::{free_port, poll_until, Client, ClusterSetup, Reply, TlsFiles};

/// A CA and one leaf for `localhost` and 127.0.0.1 it signed, written into `dir`.
fn certificates(dir: &Path) -> TlsFiles {
    certificates_for(dir, &["localhost", "127.0.0.1"])
}

/// A CA and one leaf for `names` it signed, written into `dir`.
fn certificates_for(dir: &Path, names: &[&str]) -> TlsFiles {
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster-ca");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &ca).expect("sign");
    let files = TlsFiles {
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
        ca: dir.join("ca.pem"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write CA");
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

#[test]
fn a_cluster_pool_reads_its_first_map_and_serves_over_backend_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = certificates(dir.path());
    let cluster = ClusterSetup::new().tls(&files).start();
    let port = free_port();
    let seeds = cluster.tls_addrs()[..2].join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{seeds}]\n  timeout: 2000\n  backend_tls:\n    ca: {}\n",
        files.ca.display()
    );
    let _proxy = common::start_rampart(&yaml, port, 2);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    // A key on every primary, then one MGET over their slots.
    let primaries = cluster.primaries();
    let keys: Vec<String> = primaries
        .iter()
        .map(|&p| cluster.key_on(p, &format!("tls{p}-")))
        .collect();
    for k in &keys {
        assert_eq!(c.cmd(&["SET", k, &format!("v-{k}")]), Reply::ok());
    }
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    let want: Vec<Reply> = keys.iter().map(|k| Reply::bulk(format!("v-{k}"))).collect();
    assert_eq!(c.cmd(&mget), Reply::Array(Some(want)));
    // Each write is on the primary that owns its slot.
    for (k, &p) in keys.iter().zip(&primaries) {
        let mut direct = Client::connect(&cluster.nodes[p].addr());
        assert_eq!(direct.cmd(&["GET", k]), Reply::bulk(format!("v-{k}")));
    }
}

#[test]
fn a_shard_added_to_a_tls_cluster_pool_keeps_tls_on_both_sides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = certificates(dir.path());
    let mut cluster = ClusterSetup::new().replicas(0).tls(&files).start();
    let (port, tls_port) = (free_port(), free_port());
    let seeds = cluster.tls_addrs().join(", ");
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n  tls:\n    cert: {}\n    key: {}\n  cluster: [{seeds}]\n  timeout: 2000\n  backend_tls:\n    ca: {}\n",
        files.cert.display(),
        files.key.display(),
        files.ca.display()
    );
    let _proxy = common::start_rampart(&yaml, port, 2);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    let old = cluster.primaries()[0];
    let key = cluster.key_on(old, "tls-old-");
    assert_eq!(c.cmd(&["SET", &key, "1"]), Reply::ok());
    // A fourth primary, TLS like the others, given one empty slot: rampart makes it a shard
    // (the pool is rebuilt without a reload).
    let (bus, node_tls) = (free_port().to_string(), free_port());
    let node_tls_s = node_tls.to_string();
    let (cert, key_file, ca) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
        files.ca.display().to_string(),
    );
    let new = testkit::RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-port",
        &bus,
        "--tls-port",
        &node_tls_s,
        "--tls-cluster",
        "yes",
        "--tls-replication",
        "yes",
        "--tls-auth-clients",
        "no",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca,
    ]);
    let from = &cluster.nodes[old];
    let from_bus = from
        .cmd(&["CONFIG", "GET", "cluster-port"])
        .as_array()
        .and_then(|a| a.get(1).and_then(Reply::as_str).map(str::to_string))
        .expect("cluster-port");
    let meet = new.cmd(&[
        "CLUSTER",
        "MEET",
        "127.0.0.1",
        &from.port().to_string(),
        &from_bus,
    ]);
    assert_eq!(meet, Reply::ok());
    let new_id = new
        .cmd(&["CLUSTER", "MYID"])
        .as_str()
        .expect("id")
        .to_string();
    let from_id = cluster.id(old);
    // An empty slot of `old`'s: nothing to migrate.
    let slot = (0..16384u16)
        .find(|&s| {
            cluster.owner_of_slot(s) == old
                && from.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &s.to_string()]) == Reply::Int(0)
        })
        .expect("an empty slot")
        .to_string();
    cluster.nodes.push(new);
    let added = cluster.nodes.len() - 1;
    cluster.wait_ok(Duration::from_secs(10));
    let new = &cluster.nodes[added];
    let from = &cluster.nodes[old];
    assert_eq!(
        new.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        Reply::ok()
    );
    assert_eq!(
        from.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &new_id]),
        Reply::ok()
    );
    assert_eq!(
        new.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &new_id]),
        Reply::ok()
    );
    assert_eq!(
        from.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &new_id]),
        Reply::ok()
    );
    cluster.wait_ok(Duration::from_secs(10));
    let grown = poll_until(Duration::from_secs(10), || {
        let info = c.cmd(&["INFO", "cluster"]);
        info.as_str()
            .is_some_and(|t| t.contains("rampart_cluster_c:shards=4,"))
            .then_some(())
    });
    assert!(grown.is_some(), "no shard for the new primary");
    // The rebuilt pool still reaches its nodes over TLS (its connections to `old` closed,
    // so that new ones are opened), and still takes TLS clients.
    cluster.nodes[old].cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let read = poll_until(Duration::from_secs(5), || {
        (c.cmd(&["GET", &key]) == Reply::bulk("1")).then_some(())
    });
    assert!(read.is_some(), "no read of {key} after the rebuild");
    let fresh = cluster.key_on(old, "tls-after-");
    assert_eq!(c.cmd(&["SET", &fresh, "2"]), Reply::ok());
    let (ok, out) = testkit::redis_cli_tls(tls_port, None, &files.ca, &["GET", &fresh]);
    assert!(ok && out.trim() == "2", "TLS client: {out}");
}

/// The value of the `/metrics` sample that starts with `prefix`, from the admin listener
/// on `admin`.
fn metric(admin: u16, prefix: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Node certificates that name `localhost` only, and seeds written as `localhost`: the first
/// map comes over TLS from the seeds, but it names the nodes by their IP addresses, which
/// the certificates do not name, so no node answers after it and the map is asked for every
/// 100 ms (no shard has a writable primary). Every refused map is counted, but the log says
/// it once (then at most once a minute), not once per ask.
#[test]
fn maps_refused_again_and_again_are_counted_but_logged_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = certificates_for(dir.path(), &["localhost"]);
    let cluster = ClusterSetup::new().replicas(0).tls(&files).start();
    let (port, admin) = (free_port(), free_port());
    let seeds: Vec<String> = cluster
        .tls_addrs()
        .iter()
        .map(|a| a.replace("127.0.0.1", "localhost"))
        .collect();
    let yaml = format!(
        "c:\n  listen: 127.0.0.1:{port}\n  cluster: [{}]\n  timeout: 2000\n  backend_tls:\n    ca: {}\n",
        seeds.join(", "),
        files.ca.display()
    );
    let proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &yaml)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "2"])
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .wait_port(port)
        .start();
    let refused = || metric(admin, "rampart_cluster_maps_refused_total{pool=\"c\"}");
    poll_until(Duration::from_secs(30), || {
        refused().filter(|n| *n >= 20.0).map(|_| ())
    })
    .unwrap_or_else(|| panic!("20 maps refused: {:?}\n{}", refused(), proxy.stderr()));
    let log = proxy.stderr();
    assert_eq!(log.matches("cluster map not adopted").count(), 1, "{log}");
}
