//! TLS on both sides, against real TLS redis-servers (`--tls-port`) and `redis-cli --tls`:
//! a TLS listener beside the plaintext one, backend TLS for a sharded pool and for a
//! health-checked replica set, both at once with client certificates, mTLS accepted and
//! refused, a server certificate from another CA refused with a log line naming the node,
//! a renewed certificate taken on reload under load with no client dropped, a bad file on
//! reload changing nothing, and certificate expiry in /metrics.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use testkit::{
    encode_command, free_port, poll_until, redis_cli_tls, Proxy, RedisServer, Reply, TlsFiles,
};

/// A certificate authority that issues certificates into a directory.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA");
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).expect("write CA");
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A leaf for `localhost` and 127.0.0.1 that expires on 1 January of `year`, written to
    /// `<file>.pem` and `<file>.key`; its files, with this CA as the peer's CA.
    fn issue(&self, file: &str, cn: &str, year: i32) -> TlsFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = TlsFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            ca: self.pem(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

/// notAfter (seconds since the epoch) of 1 January `year`.
fn jan1(year: i32) -> i64 {
    rcgen::date_time_ymd(year, 1, 1).unix_timestamp()
}

/// A blocking RESP client over TLS (rustls, trusting `ca`, with an optional client
/// certificate).
struct TlsClient {
    io: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(port: u16, ca: &Path, cert: Option<&TlsFiles>) -> std::io::Result<TlsClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).expect("ca") {
            roots.add(c.expect("ca cert")).expect("add");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match cert {
            Some(f) => {
                let chain = CertificateDer::pem_file_iter(&f.cert)
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert");
                let key = PrivateKeyDer::from_pem_file(&f.key).expect("key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("localhost").expect("name");
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        // Drive the handshake now, so a refusal shows here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            io: BufReader::new(stream),
        })
    }

    fn try_cmd(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        self.io.get_mut().write_all(&encode_command(args))?;
        self.io.get_mut().flush()?;
        testkit::reply::read_reply(&mut self.io)
    }

    fn cmd(&mut self, args: &[&str]) -> Reply {
        self.try_cmd(args).expect("command over TLS")
    }
}

/// rampart with `yaml` and an admin listener; waits for `port`.
fn rampart(yaml: &str, port: u16, admin: u16) -> Proxy {
    Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yaml)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "2"])
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .wait_port(port)
        .start()
}

/// GET on the admin listener; the body.
fn get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

/// The value of the metric line that starts with `prefix`.
fn metric(admin: u16, prefix: &str) -> Option<f64> {
    get(admin, "/metrics")
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn cli_ok(port: u16, files: Option<&TlsFiles>, ca: &Path, args: &[&str]) -> String {
    let (ok, out) = redis_cli_tls(port, files, ca, args);
    assert!(ok, "redis-cli --tls {args:?} failed: {out}");
    out.trim().to_string()
}

fn listener_block(server: &TlsFiles, extra: &str) -> String {
    format!(
        "  tls:\n    cert: {}\n    key: {}\n{extra}",
        server.cert.display(),
        server.key.display()
    )
}

#[test]
fn redis_cli_over_tls_and_plaintext_clients_share_one_pool() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue("proxy", "rampart", 2031);
    let a = RedisServer::start();
    let b = RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}  servers:\n   - {}:1 s0\n   - {}:1 s1\n",
        listener_block(&server, ""),
        a.addr(),
        b.addr()
    );
    let proxy = rampart(&yaml, port, admin);
    assert_eq!(
        cli_ok(tls_port, None, &ca.pem(), &["SET", "k", "over tls"]),
        "OK"
    );
    assert_eq!(
        testkit::Client::connect(&format!("127.0.0.1:{port}")).cmd(&["GET", "k"]),
        Reply::bulk("over tls"),
        "the plaintext listener serves the same pool"
    );
    // A pipelining client: 200 commands in one write, replies in order.
    let mut c = TlsClient::connect(tls_port, &ca.pem(), None).expect("TLS connect");
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(&encode_command(&[
            "SET",
            &format!("key:{i}"),
            &"v".repeat(i * 50),
        ]));
    }
    c.io.get_mut().write_all(&batch).expect("write");
    for _ in 0..200 {
        assert_eq!(
            testkit::reply::read_reply(&mut c.io).expect("reply"),
            Reply::ok()
        );
    }
    assert_eq!(
        c.cmd(&["GET", "key:199"]),
        Reply::bulk("v".repeat(199 * 50))
    );
    // A large value both ways (many TLS records).
    let big = "x".repeat(3 << 20);
    assert_eq!(c.cmd(&["SET", "big", &big]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "big"]), Reply::bulk(&big));
    // A plaintext client on the TLS port is refused, counted and logged.
    let mut plain = testkit::Client::connect(&format!("127.0.0.1:{tls_port}"));
    plain.set_read_timeout(Some(Duration::from_secs(5)));
    assert!(plain.try_cmd(&["PING"]).is_err(), "no reply in plaintext");
    poll_until(Duration::from_secs(5), || {
        proxy.stderr().contains("TLS client refused").then_some(())
    })
    .unwrap_or_else(|| panic!("no refusal line:\n{}", proxy.stderr()));
    assert!(metric(admin, "rampart_tls_client_handshakes_total{pool=\"p\"}").unwrap_or(0.0) >= 2.0);
    assert_eq!(
        metric(
            admin,
            "rampart_tls_client_handshake_failures_total{pool=\"p\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            admin,
            &format!(
                "rampart_tls_certificate_not_after_seconds{{pool=\"p\",role=\"listener\",file=\"{}\"}}",
                server.cert.display()
            )
        ),
        Some(jan1(2031) as f64)
    );
}
