//! A cluster pool over TLS: the nodes of a real Redis Cluster take clients on a TLS port
//! (and talk to each other over TLS), and the pool's `cluster:` seeds are those ports with
//! `backend_tls`. The first map, read at start, must come over TLS as every later one does.
//!
//! Run with `RUST_TEST_THREADS=2`: each test starts its own cluster of six servers.

mod common;

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use testkit::{free_port, Client, ClusterSetup, Reply, TlsFiles};

/// A CA and one leaf for `localhost` and 127.0.0.1 it signed, written into `dir`.
fn certificates(dir: &Path) -> TlsFiles {
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster-ca");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
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
