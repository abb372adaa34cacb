//! TLS on both sides, against real TLS redis-servers (`--tls-port`) and `redis-cli --tls`:
//! a TLS listener beside the plaintext one, backend TLS for a sharded pool and for a
//! health-checked replica set, both at once with client certificates, mTLS accepted and
//! refused, a server certificate from another CA refused with a log line naming the node,
//! a renewed certificate taken on reload under load with no client dropped, a bad file on
//! reload changing nothing, and certificate expiry in /metrics.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "common/ca.rs"]
mod ca;

use ca::Ca;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use testkit::{
    encode_command, free_port, poll_until, redis_cli_tls, send_signal, Proxy, RedisServer, Reply,
    TlsFiles, TlsRedis,
};

/// The year `ahead` years from now (certificates expire on 1 January of such a year).
fn year(ahead: i32) -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Average Gregorian year; off by at most a day around New Year, harmless here.
    1970 + i32::try_from(secs / 31_556_952).expect("year") + ahead
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

    /// notAfter of the certificate the server presented.
    fn peer_not_after(&self) -> i64 {
        let certs = self
            .io
            .get_ref()
            .conn
            .peer_certificates()
            .expect("peer certs");
        let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).expect("x509");
        cert.validity().not_after.timestamp()
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

/// Send SIGHUP and wait for the reload's log line (applied or refused).
fn reload(proxy: &Proxy) -> String {
    let lines = |log: String| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("reload: ") || l.contains("reload refused"))
            .map(str::to_string)
            .collect()
    };
    let before = lines(proxy.stderr()).len();
    send_signal(proxy.pid(), "HUP");
    poll_until(Duration::from_secs(10), || {
        lines(proxy.stderr()).get(before).cloned()
    })
    .unwrap_or_else(|| panic!("no reload line after SIGHUP:\n{}", proxy.stderr()))
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

/// `when_down: close` over TLS: a client whose request meets a dead server reads the
/// replies before it whole (here 4 MiB, more than the socket takes at once), then the TLS
/// close (close_notify, then the end), not a reset or a cut record.
#[test]
fn a_tls_client_closed_when_its_shard_is_down_reads_every_reply_then_a_clean_close() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue_until("proxy", "rampart", year(5));
    let live = RedisServer::start();
    let mut dead = RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n  timeout: 500\n  when_down: close\n{}  servers:\n   - {}:1 s0\n   - {}:1 s1\n",
        listener_block(&server, ""),
        live.addr(),
        dead.addr()
    );
    let _proxy = rampart(&yaml, port, admin);
    let mut plain = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    let big = "t".repeat(4 << 20);
    let (mut on_live, mut on_dead) = (None, None);
    for i in 0..100 {
        let k = format!("when-down-{}-{i}", i * 7919 % 1000);
        assert_eq!(plain.cmd(&["SET", &k, "v"]), Reply::ok());
        if live.cmd(&["EXISTS", &k]) == Reply::Int(1) {
            on_live.get_or_insert(k);
        } else {
            on_dead.get_or_insert(k);
        }
    }
    let (on_live, on_dead) = (on_live.expect("a key on s0"), on_dead.expect("a key on s1"));
    assert_eq!(plain.cmd(&["SET", &on_live, &big]), Reply::ok());
    dead.kill9();
    let mut c = TlsClient::connect(tls_port, &ca.pem(), None).expect("TLS connect");
    let mut raw = encode_command(&["GET", &on_live]);
    raw.extend(encode_command(&["GET", &on_dead]));
    raw.extend(encode_command(&["PING"]));
    c.io.get_mut().write_all(&raw).expect("send");
    c.io.get_mut().flush().expect("flush");
    match testkit::reply::read_reply(&mut c.io) {
        Ok(Reply::Bulk(Some(b))) => assert_eq!(b.len(), big.len()),
        other => panic!("the reply before the close: {other:?}"),
    }
    // close_notify then the end: rustls reads it as a clean end of stream.
    let mut rest = Vec::new();
    let n = std::io::Read::read_to_end(&mut c.io, &mut rest).expect("a clean TLS close");
    assert_eq!(n, 0, "nothing after the close: {rest:?}");
}

#[test]
fn redis_cli_over_tls_and_plaintext_clients_share_one_pool() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue_until("proxy", "rampart", year(5));
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
        Some(jan1(year(5)) as f64)
    );
    let topology = get(admin, "/api/topology");
    assert!(
        topology.contains(&format!(
            "\"tls_certificates\":[{{\"role\":\"listener\",\"file\":\"{}\",\"subject\":\"CN=rampart\",\"not_after\":{}}}]",
            server.cert.display(),
            jan1(year(5))
        )),
        "{topology}"
    );
}

/// `backend_tls:` with the CA (and, with `client`, a client certificate), its name check
/// left to each node's host or set with `server_name`.
fn backend_block(ca: &Path, client: Option<&TlsFiles>, server_name: Option<&str>) -> String {
    let mut y = format!("  backend_tls:\n    ca: {}\n", ca.display());
    if let Some(c) = client {
        y.push_str(&format!(
            "    cert: {}\n    key: {}\n",
            c.cert.display(),
            c.key.display()
        ));
    }
    if let Some(n) = server_name {
        y.push_str(&format!("    server_name: {n}\n"));
    }
    y
}

const CHECKS: &str =
    "  health_check:\n    interval: 100ms\n    timeout: 500ms\n    fall: 2\n    rise: 2\n";

#[test]
fn a_sharded_pool_of_tls_servers_serves_requests_blocking_commands_and_pubsub() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let redis_files = ca.issue_until("redis", "redis", year(5));
    let client_files = ca.issue_until("cli", "cli", year(5));
    let a = TlsRedis::start(&redis_files, "no", &[]);
    let b = TlsRedis::start(&redis_files, "no", &[]);
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  timeout: 2000\n{}  servers:\n   - {}:1 s0\n   - {}:1 s1\n",
        backend_block(&ca.pem(), None, None),
        a.addr(),
        b.addr()
    );
    let proxy = rampart(&yaml, port, admin);
    let addr = format!("127.0.0.1:{port}");
    let mut c = testkit::Client::connect(&addr);
    for i in 0..100 {
        let r = c.cmd(&["SET", &format!("k{i}"), &i.to_string()]);
        assert_eq!(r, Reply::ok(), "log:\n{}", proxy.stderr());
    }
    let sizes: Vec<i64> = [&a, &b]
        .iter()
        .map(|s| {
            cli_ok(s.port(), Some(&client_files), &ca.pem(), &["DBSIZE"])
                .parse()
                .expect("DBSIZE")
        })
        .collect();
    assert_eq!(sizes.iter().sum::<i64>(), 100, "{sizes:?}");
    assert!(
        sizes.iter().all(|n| *n > 0),
        "both shards hold keys: {sizes:?}"
    );
    assert_eq!(c.cmd(&["GET", "k42"]), Reply::bulk("42"));
    // A blocking command on a dedicated connection, woken by a push from another client.
    let waiter = std::thread::spawn({
        let addr = addr.clone();
        move || testkit::Client::connect(&addr).cmd(&["BLPOP", "queue", "5"])
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.cmd(&["LPUSH", "queue", "job"]), Reply::Int(1));
    assert_eq!(
        waiter.join().expect("BLPOP thread"),
        Reply::bulks(["queue", "job"])
    );
    // WATCH leases a dedicated connection; EXEC checks it still stands as it was.
    let mut w = testkit::Client::connect(&addr);
    assert_eq!(w.cmd(&["WATCH", "k1"]), Reply::ok());
    assert_eq!(w.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(w.cmd(&["SET", "k1", "watched"]), Reply::simple("QUEUED"));
    assert_eq!(w.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
    assert_eq!(c.cmd(&["GET", "k1"]), Reply::bulk("watched"));
    // Pub/Sub through the subscriber connections.
    let mut sub = testkit::Client::connect(&addr);
    let confirm = sub.cmd(&["SUBSCRIBE", "news"]);
    assert!(confirm.as_array().is_some(), "{confirm:?}");
    assert_eq!(c.cmd(&["PUBLISH", "news", "hello"]), Reply::Int(1));
    assert_eq!(
        sub.read_reply().expect("message"),
        Reply::bulks(["message", "news", "hello"])
    );
    assert_eq!(
        metric(
            admin,
            "rampart_tls_server_handshake_failures_total{pool=\"p\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn a_replica_set_is_health_checked_and_switched_over_over_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let redis_files = ca.issue_until("redis", "redis", year(5));
    // Both replicate over TLS: FAILOVER makes the old primary a replica of the new one.
    let primary = TlsRedis::start(&redis_files, "no", &["--tls-replication", "yes"]);
    let port_s = primary.port().to_string();
    let replica = TlsRedis::start(
        &redis_files,
        "no",
        &[
            "--tls-replication",
            "yes",
            "--replicaof",
            "127.0.0.1",
            &port_s,
        ],
    );
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  primary: {}\n  replicas: [{}]\n  failover_hold: 5s\n{CHECKS}{}",
        primary.addr(),
        replica.addr(),
        backend_block(&ca.pem(), None, Some("localhost"))
    );
    let proxy = rampart(&yaml, port, admin);
    let up = || {
        get(admin, "/metrics")
            .lines()
            .filter(|l| l.starts_with("rampart_node_role{") && l.contains("status=\"up\""))
            .count()
    };
    poll_until(Duration::from_secs(15), || (up() == 2).then_some(())).unwrap_or_else(|| {
        panic!(
            "both nodes up over TLS checks:\n{}\n{}",
            get(admin, "/metrics"),
            proxy.stderr()
        )
    });
    let mut c = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    c.set_read_timeout(Some(Duration::from_secs(20)));
    let r = c.cmd(&["RAMPART", "SWITCHOVER", "p"]);
    assert!(
        matches!(&r, Reply::Simple(s) if s.contains("switched to")),
        "{r:?}\nlog:\n{}",
        proxy.stderr()
    );
    let files = ca.issue_until("cli", "cli", year(5));
    let role = cli_ok(replica.port(), Some(&files), &ca.pem(), &["ROLE"]);
    assert!(role.starts_with("master"), "{role}");
    assert_eq!(c.cmd(&["SET", "after", "2"]), Reply::ok());
    assert_eq!(
        cli_ok(replica.port(), Some(&files), &ca.pem(), &["GET", "before"]),
        "1"
    );
    assert_eq!(
        cli_ok(replica.port(), Some(&files), &ca.pem(), &["GET", "after"]),
        "2"
    );
}

#[test]
fn client_certificates_both_ways_accept_the_ca_and_refuse_others() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let redis_files = ca.issue_until("redis", "redis", year(5));
    let rampart_client = ca.issue_until("rampart-client", "rampart", year(4));
    let proxy_files = ca.issue_until("proxy", "rampart", year(5));
    let app = ca.issue_until("app", "app", year(5));
    let stranger = other.issue_until("stranger", "stranger", year(5));
    // The server requires client certificates: rampart shows its own.
    let server = TlsRedis::start(&redis_files, "yes", &[]);
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}{}  servers:\n   - {}:1 s0\n",
        listener_block(&proxy_files, &format!("    client_ca: {}\n", ca.pem().display())),
        backend_block(&ca.pem(), Some(&rampart_client), Some("localhost")),
        server.addr()
    );
    let proxy = rampart(&yaml, port, admin);
    assert_eq!(
        cli_ok(tls_port, Some(&app), &ca.pem(), &["SET", "k", "v"]),
        "OK"
    );
    assert_eq!(cli_ok(tls_port, Some(&app), &ca.pem(), &["GET", "k"]), "v");
    assert_eq!(
        cli_ok(server.port(), Some(&app), &ca.pem(), &["GET", "k"]),
        "v"
    );
    // No certificate, and one from another CA: refused, each counted and logged.
    assert!(TlsClient::connect(tls_port, &ca.pem(), None)
        .and_then(|mut c| c.try_cmd(&["PING"]))
        .is_err());
    let (ok, out) = redis_cli_tls(tls_port, Some(&stranger), &ca.pem(), &["PING"]);
    assert!(!ok || !out.contains("PONG"), "{out}");
    let log = poll_until(Duration::from_secs(5), || {
        let log = proxy.stderr();
        (log.matches("TLS client refused").count() >= 2).then_some(log)
    })
    .unwrap_or_else(|| panic!("two refusals logged:\n{}", proxy.stderr()));
    assert!(log.contains("the client sent no certificate"), "{log}");
    assert!(
        log.contains("TLS client refused: 127.0.0.1:")
            && log.contains("the client certificate was not trusted"),
        "{log}"
    );
    assert_eq!(
        metric(
            admin,
            "rampart_tls_client_handshake_failures_total{pool=\"p\"}"
        ),
        Some(2.0)
    );
    for (role, expires) in [
        ("backend_client", year(4)),
        ("client_ca", 4096),
        ("backend_ca", 4096),
    ] {
        let line = get(admin, "/metrics")
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "rampart_tls_certificate_not_after_seconds{{pool=\"p\",role=\"{role}\""
                ))
            })
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {role} expiry"));
        assert!(line.ends_with(&format!(" {}", jan1(expires))), "{line}");
    }
}

/// A client of a `tls_listen` address that speaks plaintext: it is refused and closed.
fn refused_handshake(tls_port: u16) {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", tls_port)).expect("tls port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"PING\r\n").expect("write");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

/// Anyone who reaches a `tls_listen` address can make handshakes fail, as fast as it
/// connects: every refusal is counted, but their log lines keep to a bounded rate (10 a
/// second), and a later line says how many were left out.
#[test]
fn a_flood_of_refused_handshakes_is_counted_but_logged_at_a_bounded_rate() {
    const FLOOD: usize = 300;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let files = ca.issue_until("proxy", "rampart", year(5));
    let server = RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}  servers:\n   - {}:1 s0\n",
        listener_block(&files, ""),
        server.addr()
    );
    let proxy = rampart(&yaml, port, admin);
    let failures = || {
        metric(
            admin,
            "rampart_tls_client_handshake_failures_total{pool=\"p\"}",
        )
    };
    let started = std::time::Instant::now();
    for _ in 0..FLOOD {
        refused_handshake(tls_port);
    }
    poll_until(Duration::from_secs(10), || {
        (failures() == Some(FLOOD as f64)).then_some(())
    })
    .unwrap_or_else(|| panic!("{FLOOD} refusals counted, got {:?}", failures()));
    // Lines of at most as many one-second windows as the flood spanned, and one more.
    let windows = started.elapsed().as_secs() + 2;
    let lines = proxy.stderr().matches("TLS client refused").count() as u64;
    assert!(
        (1..=10 * windows).contains(&lines),
        "{lines} lines for {FLOOD} refusals over at most {windows} windows"
    );
    // The next line written says how many were left out.
    poll_until(Duration::from_secs(10), || {
        refused_handshake(tls_port);
        proxy
            .stderr()
            .contains("more refusals since the last line)")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no line counts the refusals left out:\n{}", proxy.stderr()));
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_and_the_log_names_the_node() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let impostor = TlsRedis::start(
        &other.issue_until("impostor", "impostor", year(5)),
        "no",
        &[],
    );
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  timeout: 1000\n{}  servers:\n   - {}:1 s0\n",
        backend_block(&ca.pem(), None, None),
        impostor.addr()
    );
    let proxy = rampart(&yaml, port, admin);
    let r = testkit::Client::connect(&format!("127.0.0.1:{port}")).cmd(&["GET", "k"]);
    assert!(r.is_error(), "{r:?}");
    let log = proxy.stderr();
    let line = log
        .lines()
        .find(|l| {
            l.contains(&format!(
                "TLS handshake with node {} failed",
                impostor.addr()
            ))
        })
        .unwrap_or_else(|| panic!("no TLS failure line:\n{log}"));
    assert!(
        line.contains(&impostor.addr()) && line.contains("the server certificate was not trusted"),
        "{line}"
    );
    assert!(
        metric(
            admin,
            "rampart_tls_server_handshake_failures_total{pool=\"p\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn a_renewed_certificate_is_taken_on_reload_under_load_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let old = ca.issue_until("proxy", "rampart", year(5));
    let redis = RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}  servers:\n   - {}:1 s0\n",
        listener_block(&old, ""),
        redis.addr()
    );
    let proxy = rampart(&yaml, port, admin);
    let expiry = format!(
        "rampart_tls_certificate_not_after_seconds{{pool=\"p\",role=\"listener\",file=\"{}\"}}",
        old.cert.display()
    );
    assert_eq!(metric(admin, &expiry), Some(jan1(year(5)) as f64));
    // Clients that keep one connection each and run commands until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, done, ca) = (Arc::clone(&stop), Arc::clone(&done), ca.pem());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut c = TlsClient::connect(tls_port, &ca, None).map_err(|e| e.to_string())?;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
                    let key = format!("load:{t}:{}", n % 100);
                    let v = n.to_string();
                    match c.try_cmd(&["SET", &key, &v]) {
                        Ok(r) if r == Reply::ok() => {}
                        other => return Err(format!("SET: {other:?}")),
                    }
                    match c.try_cmd(&["GET", &key]) {
                        Ok(r) if r == Reply::bulk(&v) => {}
                        other => return Err(format!("GET: {other:?}")),
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(n)
            })
        })
        .collect();
    let progressed = |min: u64| {
        let from = done.load(Ordering::Relaxed);
        poll_until(Duration::from_secs(10), || {
            (done.load(Ordering::Relaxed) >= from + min).then_some(())
        })
        .expect("the clients make progress");
    };
    progressed(200);
    // Renewed: a new key and a later expiry, same files.
    let renewed = ca.issue_until("proxy", "rampart", year(6));
    let line = reload(&proxy);
    assert!(
        line.contains("reload: applied")
            && line.contains(&format!(
                "p: certificates renewed: listener {} expires {}-01-01T00:00:00Z",
                renewed.cert.display(),
                year(6)
            )),
        "{line}"
    );
    progressed(200);
    let fresh = TlsClient::connect(tls_port, &ca.pem(), None).expect("connect after reload");
    assert_eq!(
        fresh.peer_not_after(),
        jan1(year(6)),
        "new connections get the renewed certificate"
    );
    assert_eq!(metric(admin, &expiry), Some(jan1(year(6)) as f64));
    // A bad file: the reload is refused naming it, and nothing changes.
    std::fs::write(&renewed.cert, "not a certificate\n").expect("spoil");
    let line = reload(&proxy);
    assert!(
        line.contains("reload refused")
            && line.contains(&renewed.cert.display().to_string())
            && line.contains("no certificate"),
        "{line}"
    );
    progressed(200);
    let mut after = TlsClient::connect(tls_port, &ca.pem(), None).expect("connect after refusal");
    assert_eq!(after.peer_not_after(), jan1(year(6)));
    assert_eq!(after.cmd(&["PING"]), Reply::simple("PONG"));
    assert_eq!(metric(admin, &expiry), Some(jan1(year(6)) as f64));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        match c.join().expect("client thread") {
            Ok(n) => total += n,
            Err(e) => panic!(
                "a client saw an error or was dropped: {e}\n{}",
                proxy.stderr()
            ),
        }
    }
    assert!(total >= 600, "{total}");
    assert_eq!(
        metric(admin, "rampart_pool_client_errors_total{pool=\"p\"}"),
        Some(0.0)
    );
}

/// GET `path` over HTTPS on the admin listener: the certificate's notAfter and the body.
fn https_get(port: u16, ca: &Path, path: &str) -> std::io::Result<(i64, String)> {
    use std::io::Read;
    let mut c = TlsClient::connect(port, ca, None)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    c.io.get_mut().write_all(req.as_bytes())?;
    c.io.get_mut().flush()?;
    let mut out = String::new();
    // The server closes without close_notify after `Connection: close`: what came is kept.
    let _ = c.io.read_to_string(&mut out);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out);
    Ok((c.peer_not_after(), body))
}

#[test]
fn the_admin_listener_serves_https_and_takes_a_renewed_certificate_on_reload() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let admin_files = ca.issue_until("admin", "admin", year(5));
    let redis = RedisServer::start();
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}:1 s0\n",
        redis.addr()
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &yaml)
        .args(["-c", "{dir}/rampart.yml", "--no-stats", "--workers", "1"])
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--admin-tls-cert")
        .arg(admin_files.cert.display().to_string())
        .arg("--admin-tls-key")
        .arg(admin_files.key.display().to_string())
        .wait_port(port)
        .start();
    let (not_after, body) = https_get(admin, &ca.pem(), "/metrics").expect("HTTPS");
    assert_eq!(not_after, jan1(year(5)));
    let line = format!(
        "rampart_tls_certificate_not_after_seconds{{pool=\"\",role=\"admin\",file=\"{}\"}} {}",
        admin_files.cert.display(),
        jan1(year(5))
    );
    assert!(body.contains(&line), "{body}");
    assert!(proxy
        .stderr()
        .contains(&format!("admin interface on https://127.0.0.1:{admin}/")));
    // Plain HTTP gets no page.
    assert!(!get(admin, "/healthz").contains("ok"));
    ca.issue_until("admin", "admin", year(6));
    assert!(reload(&proxy).contains("reload: applied"));
    let (not_after, body) = https_get(admin, &ca.pem(), "/healthz").expect("HTTPS after reload");
    assert_eq!(not_after, jan1(year(6)), "the renewed certificate");
    assert_eq!(body.trim(), "ok");
}

#[test]
fn a_sentinel_pool_follows_a_failover_with_sentinel_and_servers_over_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let files = ca.issue_until("redis", "redis", year(5));
    let repl = ["--tls-replication", "yes"];
    let mut primary = TlsRedis::start(&files, "no", &repl);
    let p_port = primary.port().to_string();
    let replica = TlsRedis::start(
        &files,
        "no",
        &[
            "--tls-replication",
            "yes",
            "--replicaof",
            "127.0.0.1",
            &p_port,
        ],
    );
    let monitor = testkit::Monitor::new("mymaster", primary.port())
        .down_after(Duration::from_millis(1000))
        .failover_timeout(Duration::from_millis(5000));
    let sentinel = testkit::TlsSentinel::start(&files, &[monitor]);
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  sentinels: [{}]\n  master: mymaster\n  failover_hold: 10s\n{CHECKS}{}",
        sentinel.addr(),
        backend_block(&ca.pem(), None, None)
    );
    let proxy = rampart(&yaml, port, admin);
    let up = || {
        get(admin, "/metrics")
            .lines()
            .filter(|l| l.starts_with("rampart_node_role{") && l.contains("status=\"up\""))
            .count()
    };
    poll_until(Duration::from_secs(20), || (up() == 2).then_some(())).unwrap_or_else(|| {
        panic!(
            "primary and replica up through Sentinel over TLS:\n{}\n{}",
            get(admin, "/metrics"),
            proxy.stderr()
        )
    });
    let mut c = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(30)));
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    // Replication is asynchronous: the write must be on the replica before its primary dies.
    let cli = ca.issue_until("cli", "cli", year(5));
    poll_until(Duration::from_secs(10), || {
        (cli_ok(replica.port(), Some(&cli), &ca.pem(), &["GET", "before"]) == "1").then_some(())
    })
    .expect("the replica has the write");
    primary.kill9();
    // Sentinel promotes the replica; the write waits in the hold and lands there.
    let r = poll_until(Duration::from_secs(30), || {
        let r = c.cmd(&["SET", "after", "2"]);
        (r == Reply::ok()).then_some(r)
    });
    assert!(
        r.is_some(),
        "a write after the failover:\n{}\n{}",
        proxy.stderr(),
        sentinel.log()
    );
    assert_eq!(
        cli_ok(replica.port(), Some(&cli), &ca.pem(), &["GET", "after"]),
        "2"
    );
    assert_eq!(
        cli_ok(replica.port(), Some(&cli), &ca.pem(), &["GET", "before"]),
        "1"
    );
    // The write may land as soon as the promoted replica answers as a primary, before
    // Sentinel has told everyone (+switch-master comes after the other replicas moved).
    let switched = poll_until(Duration::from_secs(20), || {
        sentinel.log().contains("+switch-master").then_some(())
    });
    assert!(switched.is_some(), "{}", sentinel.log());
}

/// A Sentinel whose certificate another CA signed: one warning names the Sentinel and why
/// (nothing more while the refusals go on, each counted), the pool serves no write, and a
/// reload with the Sentinel's CA follows the primary and says the Sentinel accepts again.
#[test]
fn a_sentinel_certificate_from_another_ca_is_logged_once_and_a_reload_with_its_ca_recovers() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let files = ca.issue_until("redis", "redis", year(5));
    let primary = TlsRedis::start(&files, "no", &[]);
    let sentinel =
        testkit::TlsSentinel::start(&files, &[testkit::Monitor::new("mymaster", primary.port())]);
    let (port, admin) = (free_port(), free_port());
    let yaml = |trusted: &Path| {
        format!(
            "p:\n  listen: 127.0.0.1:{port}\n  sentinels: [{}]\n  master: mymaster\n{CHECKS}{}",
            sentinel.addr(),
            backend_block(trusted, None, None)
        )
    };
    let proxy = rampart(&yaml(&other.pem()), port, admin);
    let refusals = || {
        metric(
            admin,
            &format!(
                "rampart_backend_auth_failures_total{{pool=\"p\",peer=\"sentinel\",addr=\"{}\"}}",
                sentinel.addr()
            ),
        )
    };
    poll_until(Duration::from_secs(10), || {
        refusals().filter(|n| *n >= 3.0).map(|_| ())
    })
    .unwrap_or_else(|| panic!("refusals counted:\n{}", proxy.stderr()));
    let log = proxy.stderr();
    let warned = format!(
        "TLS handshake with sentinel {} failed: the server certificate was not trusted",
        sentinel.addr()
    );
    assert_eq!(log.matches(&warned).count(), 1, "{log}");
    let mut c = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(10)));
    assert!(
        matches!(c.cmd(&["SET", "k", "v"]), Reply::Error(_)),
        "a write with no trusted Sentinel"
    );
    std::fs::write(proxy.dir().join("rampart.yml"), yaml(&ca.pem())).expect("write");
    let line = reload(&proxy);
    assert!(line.contains("reload: applied"), "{line}");
    poll_until(Duration::from_secs(10), || {
        (c.cmd(&["SET", "k", "v"]) == Reply::ok()).then_some(())
    })
    .unwrap_or_else(|| panic!("a write after the reload:\n{}", proxy.stderr()));
    assert!(
        proxy.stderr().contains(&format!(
            "sentinel {} accepts rampart's credentials again",
            sentinel.addr()
        )),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn rampart_t_reads_the_certificates_and_names_the_bad_file_where_the_config_names_it() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let good = ca.issue_until("proxy", "rampart", year(5));
    let other = ca.issue_until("other", "other", year(5));
    let run = |yaml: &str| {
        let path = dir.path().join("t.yml");
        std::fs::write(&path, yaml).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run rampart -t");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            path.display().to_string(),
        )
    };
    let yaml = |cert: &Path, key: &Path| {
        format!(
            "p:\n  listen: 127.0.0.1:1\n  tls_listen: 127.0.0.1:2\n  tls:\n    cert: {}\n    key: {}\n  servers:\n   - 127.0.0.1:3:1\n",
            cert.display(),
            key.display()
        )
    };
    let (ok, err, _) = run(&yaml(&good.cert, &good.key));
    assert!(ok, "{err}");
    let missing = dir.path().join("missing.pem");
    let (ok, err, path) = run(&yaml(&missing, &good.key));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{path}:5:11: pool \"p\": tls.cert: {}: cannot read it",
            missing.display()
        )),
        "{err}"
    );
    let (ok, err, path) = run(&yaml(&good.cert, &other.key));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{path}:6:10: pool \"p\": tls.key: {}: does not go with",
            other.key.display()
        )),
        "{err}"
    );
}

#[test]
fn a_client_certificate_names_its_user_with_auth_clients_user_cn() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let proxy_files = ca.issue_until("proxy", "rampart", year(5));
    let app = ca.issue_until("app", "app", year(5));
    let reader = ca.issue_until("reader", "reader", year(5));
    let nobody = ca.issue_until("nobody", "nobody", year(5));
    let server = testkit::RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}  users:\n    - name: app\n      password_sha256: {hash}\n      rules: on +@all ~*\n    - name: reader\n      password_sha256: {hash}\n      rules: on +@read ~*\n  servers:\n   - {}:1 s0\n",
        listener_block(
            &proxy_files,
            &format!(
                "    client_ca: {}\n    client_auth: optional\n    auth_clients_user: CN\n",
                ca.pem().display()
            )
        ),
        server.addr(),
        // No password hashes to this: only the certificate logs these users in.
        hash = "0".repeat(64),
    );
    let _proxy = rampart(&yaml, port, admin);
    // The certificate's CN is the user: no AUTH, that user's rules.
    assert_eq!(
        cli_ok(tls_port, Some(&app), &ca.pem(), &["ACL", "WHOAMI"]),
        "app"
    );
    assert_eq!(
        cli_ok(tls_port, Some(&app), &ca.pem(), &["SET", "k", "v"]),
        "OK"
    );
    assert_eq!(
        cli_ok(tls_port, Some(&reader), &ca.pem(), &["GET", "k"]),
        "v"
    );
    let denied = cli_ok(tls_port, Some(&reader), &ca.pem(), &["SET", "k", "w"]);
    assert!(denied.contains("NOPERM"), "{denied}");
    // A CN that names no user, and no certificate: not authenticated.
    let (_, out) = redis_cli_tls(tls_port, Some(&nobody), &ca.pem(), &["GET", "k"]);
    assert!(out.contains("NOAUTH"), "{out}");
    let (_, out) = redis_cli_tls(tls_port, None, &ca.pem(), &["GET", "k"]);
    assert!(out.contains("NOAUTH"), "{out}");
    // The plaintext listener has no certificate: AUTH as before.
    let mut c = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    assert!(matches!(c.cmd(&["GET", "k"]), Reply::Error(e) if e.starts_with("NOAUTH")));
}

#[test]
fn a_request_and_close_notify_in_one_flight_get_the_reply_and_then_the_end() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue_until("proxy", "rampart", year(5));
    let redis = RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}  servers:\n   - {}:1 s0\n",
        listener_block(&server, ""),
        redis.addr()
    );
    let _proxy = rampart(&yaml, port, admin);
    let mut c = TlsClient::connect(tls_port, &ca.pem(), None).expect("TLS connect");
    // The request and the client's close_notify leave in one write; the TCP connection stays
    // open, so only the TLS alert tells rampart the client is done.
    let stream = c.io.get_mut();
    stream
        .conn
        .writer()
        .write_all(&encode_command(&["SET", "k", "v"]))
        .expect("request");
    stream.conn.send_close_notify();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock).expect("send");
    }
    assert_eq!(
        testkit::reply::read_reply(&mut c.io).expect("reply"),
        Reply::ok()
    );
    // Then rampart ends the session (within the client's 10 s read timeout).
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut c.io, &mut rest) {
        Ok(_) => assert!(rest.is_empty(), "nothing after the reply: {rest:?}"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the session was not ended: {e}"
        ),
    }
}

/// A password-protected replica set over TLS where one replica's certificate comes from
/// another CA: that replica is down, named with the reason in one log line; reads
/// (`read_policy: replica`) all go to the good replica; a switchover to the untrusted one is
/// refused and one to the good one works; the backend password is in no log line.
#[test]
fn a_replica_set_with_a_password_and_one_untrusted_replica_serves_from_the_others() {
    const PW: &str = "tls-backend-pw-7c1";
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let redis_files = ca.issue_until("redis", "redis", year(5));
    let auth = [
        "--tls-replication",
        "yes",
        "--requirepass",
        PW,
        "--masterauth",
        PW,
    ];
    let primary = TlsRedis::start(&redis_files, "no", &auth);
    let port_s = primary.port().to_string();
    let mut replica_args = auth.to_vec();
    replica_args.extend(["--replicaof", "127.0.0.1", &port_s]);
    let good = TlsRedis::start(&redis_files, "no", &replica_args);
    // Its own certificate from another CA; it still trusts the primary's for replication.
    let impostor = other.issue_until("impostor", "impostor", year(5));
    let bad_files = TlsFiles {
        cert: impostor.cert.clone(),
        key: impostor.key.clone(),
        ca: redis_files.ca.clone(),
    };
    let bad = TlsRedis::start(&bad_files, "no", &replica_args);
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  primary: {}\n  replicas: [{}, {}]\n  redis_auth: {PW}\n  read_policy: replica\n  failover_hold: 5s\n{CHECKS}{}",
        primary.addr(),
        good.addr(),
        bad.addr(),
        backend_block(&ca.pem(), None, Some("localhost"))
    );
    let proxy = rampart(&yaml, port, admin);
    let status = |addr: &str| {
        get(admin, "/metrics")
            .lines()
            .find(|l| l.starts_with("rampart_node_role{") && l.contains(addr))
            .map(str::to_string)
            .unwrap_or_default()
    };
    poll_until(Duration::from_secs(15), || {
        (status(&primary.addr()).contains("status=\"up\"")
            && status(&good.addr()).contains("status=\"up\""))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("the trusted nodes up:\n{}", proxy.stderr()));
    assert!(
        !status(&bad.addr()).contains("status=\"up\""),
        "{}",
        status(&bad.addr())
    );
    let mut c = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    c.set_read_timeout(Some(Duration::from_secs(20)));
    assert_eq!(c.cmd(&["AUTH", PW]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["WAIT", "2", "5000"]), Reply::Int(2));
    for _ in 0..100 {
        assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    let r = c.cmd(&["RAMPART", "SWITCHOVER", "p", &bad.addr()]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("not a healthy replica")),
        "{r:?}"
    );
    let r = c.cmd(&["RAMPART", "SWITCHOVER", "p"]);
    assert!(
        matches!(&r, Reply::Simple(s) if s.contains(&good.addr())),
        "{r:?}\n{}",
        proxy.stderr()
    );
    assert_eq!(c.cmd(&["SET", "k", "w"]), Reply::ok());
    let log = proxy.stderr();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("TLS handshake with node {} failed", bad.addr())))
        .collect();
    assert_eq!(named.len(), 1, "{log}");
    assert!(named[0].contains("not trusted"), "{}", named[0]);
    assert!(!log.contains(PW), "the backend password reached the log");
}

/// Session features over the TLS listener: a RESP3 MONITOR sees a TLS client's commands
/// (with the client's address), a TLS client in MULTI runs its transaction, and a TLS client
/// blocked in BLPOP and killed with CLIENT KILL swallows nothing (its server connection
/// closes: an element pushed afterwards stays in the list).
#[test]
fn monitor_transactions_and_client_kill_over_the_tls_listener() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue_until("proxy", "rampart", year(5));
    let a = RedisServer::start();
    let (port, tls_port, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  tls_listen: 127.0.0.1:{tls_port}\n{}  servers:\n   - {}:1 s0\n",
        listener_block(&server, ""),
        a.addr()
    );
    let _proxy = rampart(&yaml, port, admin);
    let mut mon = TlsClient::connect(tls_port, &ca.pem(), None).expect("TLS connect");
    // HELLO 3 (a map, which the test client does not parse: read up to PING's reply).
    let mut hello = encode_command(&["HELLO", "3"]);
    hello.extend_from_slice(&encode_command(&["PING"]));
    mon.io.get_mut().write_all(&hello).expect("write");
    mon.io.get_mut().flush().expect("flush");
    let mut got = Vec::new();
    while !got.ends_with(b"+PONG\r\n") {
        let mut line = Vec::new();
        std::io::BufRead::read_until(&mut mon.io, b'\n', &mut line).expect("HELLO reply");
        assert!(
            !line.is_empty(),
            "closed after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&line);
    }
    assert!(
        got.starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(mon.cmd(&["MONITOR"]), Reply::ok());
    let mut c = TlsClient::connect(tls_port, &ca.pem(), None).expect("TLS connect");
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "tx", "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "tx"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::ok(), Reply::Int(2)]))
    );
    let Reply::Int(id) = c.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is an integer")
    };
    let seen = (0..4)
        .map(
            |_| match testkit::reply::read_reply(&mut mon.io).expect("monitor line") {
                Reply::Simple(s) => s,
                r => panic!("a monitor line is a simple string: {r:?}"),
            },
        )
        .collect::<Vec<_>>();
    assert!(seen[0].ends_with(r#""MULTI""#), "{seen:?}");
    assert!(seen[1].ends_with(r#""SET" "tx" "1""#), "{seen:?}");
    assert!(seen.iter().all(|l| l.contains("[p 127.0.0.1:")), "{seen:?}");
    // Blocked, then killed: nothing pushed afterwards is taken.
    c.io.get_mut()
        .write_all(&encode_command(&["BLPOP", "q", "0"]))
        .expect("write");
    c.io.get_mut().flush().expect("flush");
    let mut plain = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    poll_until(Duration::from_secs(10), || {
        (a.info("clients").contains("blocked_clients:1")).then_some(())
    })
    .expect("BLPOP blocked on the server");
    assert_eq!(
        plain.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]),
        Reply::Int(1)
    );
    poll_until(Duration::from_secs(10), || {
        (a.info("clients").contains("blocked_clients:0")).then_some(())
    })
    .expect("the server connection closed");
    assert_eq!(plain.cmd(&["RPUSH", "q", "kept"]), Reply::Int(1));
    assert_eq!(a.cmd(&["LLEN", "q"]), Reply::Int(1));
}

/// TLS turned on for an address by a reload (`listen` moves to another port, its old port
/// becomes `tls_listen`), then off again: no "address in use", the plaintext client already
/// on it keeps working, and a new client there speaks what the address serves now.
#[test]
fn a_reload_turns_tls_on_and_off_for_an_address_it_already_listens_on() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue_until("proxy", "rampart", year(5));
    let redis = RedisServer::start();
    let (port, other, admin) = (free_port(), free_port(), free_port());
    let plain = format!(
        "p:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}:1 s0\n",
        redis.addr()
    );
    let proxy = rampart(&plain, port, admin);
    let mut before = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(before.cmd(&["SET", "k", "1"]), Reply::ok());
    let tls_on = format!(
        "p:\n  listen: 127.0.0.1:{other}\n  tls_listen: 127.0.0.1:{port}\n{}  servers:\n   - {}:1 s0\n",
        listener_block(&server, ""),
        redis.addr()
    );
    std::fs::write(proxy.dir().join("rampart.yml"), &tls_on).expect("write");
    let line = reload(&proxy);
    assert!(line.contains("reload: applied"), "{line}");
    let mut tls = TlsClient::connect(port, &ca.pem(), None).expect("a TLS client on the old port");
    assert_eq!(tls.cmd(&["GET", "k"]), Reply::bulk("1"));
    assert_eq!(
        before.cmd(&["GET", "k"]),
        Reply::bulk("1"),
        "the plaintext client from before"
    );
    let mut moved = testkit::Client::connect(&format!("127.0.0.1:{other}"));
    assert_eq!(moved.cmd(&["GET", "k"]), Reply::bulk("1"));
    // And back: the address serves plaintext again.
    std::fs::write(proxy.dir().join("rampart.yml"), &plain).expect("write");
    let line = reload(&proxy);
    assert!(line.contains("reload: applied"), "{line}");
    let mut again = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(again.cmd(&["GET", "k"]), Reply::bulk("1"));
    assert_eq!(
        tls.cmd(&["GET", "k"]),
        Reply::bulk("1"),
        "the TLS client from before"
    );
}

/// A reload whose backend TLS the pool's servers refuse is refused whole, as a wrong
/// password is: a CA that did not sign their certificate, or TLS turned off towards servers
/// that speak only TLS. Applied, every server connection would fail. The pool goes on as
/// it was; a CA that does sign them applies.
#[test]
fn a_reload_with_backend_tls_the_servers_refuse_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let server = TlsRedis::start(&ca.issue_until("redis", "redis", year(5)), "no", &[]);
    let (port, admin) = (free_port(), free_port());
    let with = |block: &str| {
        format!(
            "p:\n  listen: 127.0.0.1:{port}\n  timeout: 1000\n{block}  servers:\n   - {}:1 s0\n",
            server.addr()
        )
    };
    let good = with(&backend_block(&ca.pem(), None, None));
    let proxy = rampart(&good, port, admin);
    let mut c = testkit::Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    let path = proxy.dir().join("rampart.yml");
    for (what, yaml) in [
        ("another CA", with(&backend_block(&other.pem(), None, None))),
        ("no TLS", with("")),
    ] {
        std::fs::write(&path, &yaml).expect("write");
        let line = reload(&proxy);
        assert!(
            line.contains("reload refused") && line.contains("backend_tls"),
            "{what}: {line}"
        );
        let mut fresh = testkit::Client::connect(&format!("127.0.0.1:{port}"));
        assert_eq!(
            fresh.cmd(&["GET", "k"]),
            Reply::bulk("1"),
            "{what}: a new client"
        );
        assert_eq!(
            c.cmd(&["GET", "k"]),
            Reply::bulk("1"),
            "{what}: a client from before"
        );
    }
    // The right CA in another file applies.
    let copy = dir.path().join("ca-copy.pem");
    std::fs::copy(ca.pem(), &copy).expect("copy");
    std::fs::write(&path, with(&backend_block(&copy, None, None))).expect("write");
    let line = reload(&proxy);
    assert!(line.contains("reload: applied"), "{line}");
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("1"));
}
