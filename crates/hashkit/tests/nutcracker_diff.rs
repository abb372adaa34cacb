//! Differential test: every key lands on the server real nutcracker 0.5.0 puts it on.
//!
//! Starts four `redis-server`s and one `nutcracker` with one pool per (hash, config) on
//! OS-chosen loopback ports, SETs a varied key set through each pool, finds the backend that
//! holds each key (EXISTS on every backend), and compares with `Continuum` + `HashKind`.
//! When port 11211 is free, a fifth redis-server there checks the memcached-port identity rule.
//! Skips (with a message) when redis-server or nutcracker is not installed.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hashkit::{ring_identity, Continuum, Distribution, HashKind, HashTag, ServerPoint};

/// A child process killed (by its own PID) and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners at once so the ports are distinct, then release them.
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Minimal RESP client: pipelined commands of bulk strings, replies read one by one.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

#[derive(Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
}

impl Client {
    fn connect(port: u16) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    let r = BufReader::new(s.try_clone().expect("clone"));
                    return Client { w: s, r };
                }
                Err(e) if Instant::now() > deadline => panic!("connect {port}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn pipeline(&mut self, cmds: &[Vec<&[u8]>]) -> Vec<Reply> {
        let mut buf = Vec::new();
        for args in cmds {
            buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                buf.extend_from_slice(a);
                buf.extend_from_slice(b"\r\n");
            }
        }
        self.w.write_all(&buf).expect("write");
        (0..cmds.len()).map(|_| self.read_reply()).collect()
    }

    fn read_reply(&mut self) -> Reply {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).expect("read");
        assert!(line.ends_with(b"\r\n"), "short reply {line:?}");
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'+' => Reply::Status(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(text.parse().expect("int")),
            b'$' => {
                let n: i64 = text.parse().expect("len");
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut data = vec![0; n as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut data).expect("bulk");
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
            other => panic!("unexpected reply type {other}"),
        }
    }
}

fn start_redis(port: u16, dir: &std::path::Path) -> Guard {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    Guard(child)
}

/// One pool of the nutcracker config.
struct Pool {
    hash: HashKind,
    dist: Distribution,
    tag: Option<HashTag>,
    /// (host:port text, port, name, weight, backend number)
    servers: Vec<(String, u16, Option<String>, u32, usize)>,
    listen: u16,
    /// Extra generated keys, for pools where few keys would tell implementations apart.
    extra_keys: usize,
}

impl Pool {
    fn yaml(&self, name: &str, out: &mut String) {
        let _ = writeln!(out, "{name}:");
        let _ = writeln!(out, "  listen: 127.0.0.1:{}", self.listen);
        let _ = writeln!(out, "  hash: {}", self.hash);
        let _ = writeln!(out, "  distribution: {}", self.dist);
        let _ = writeln!(
            out,
            "  redis: true\n  timeout: 5000\n  auto_eject_hosts: false"
        );
        if let Some(t) = self.tag {
            let [a, b] = t.delimiters();
            let _ = writeln!(out, "  hash_tag: \"{}{}\"", a as char, b as char);
        }
        let _ = writeln!(out, "  servers:");
        for (text, _, name, weight, _) in &self.servers {
            let name = name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
            let _ = writeln!(out, "   - {text}:{weight}{name}");
        }
    }

    /// The backend our implementation says holds `key`.
    fn expected_backend(&self, ring: &Continuum, key: &[u8]) -> usize {
        let part = self.tag.map_or(key, |t| t.extract(key));
        let index = ring.dispatch(self.hash.hash(part)).expect("live server");
        self.servers[index].4
    }

    fn ring(&self) -> Continuum {
        let points: Vec<ServerPoint> = self
            .servers
            .iter()
            .map(|(text, port, name, weight, _)| ServerPoint {
                identity: ring_identity(text, *port, name.as_deref()),
                weight: *weight,
            })
            .collect();
        Continuum::build(self.dist, &points, &[])
    }
}

fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..40 {
        keys.push(format!("key:{i}").into_bytes());
    }
    for s in [
        "a",
        "foo",
        "bar",
        "user:1000",
        "123456789",
        "abc",
        "abcd",
        "abcde",
    ] {
        keys.push(s.as_bytes().to_vec());
    }
    for s in ["ключ", "日本語キー", "é", "naïve", "emoji😀"] {
        keys.push(s.as_bytes().to_vec());
    }
    // Bytes >= 0x80 in every position of every tail length (signed char handling).
    for len in 1..=13u8 {
        keys.push((0..len).map(|i| 0x80u8.wrapping_add(i * 9)).collect());
        keys.push(
            (0..len)
                .map(|i| if i % 2 == 0 { b'k' } else { 0xfe })
                .collect(),
        );
    }
    keys.push(vec![b'a', b'b', 0xc8]);
    keys.push(vec![0x00, 0x01, 0xff, 0x7f, 0x80]);
    keys.push(b"bin\r\n\x00key".to_vec());
    for s in [
        "{user1}:a",
        "{user1}:b",
        "x{user2}y",
        "{}x",
        "{}{a}",
        "{abc",
        "a}b{c}",
    ] {
        keys.push(s.as_bytes().to_vec());
    }
    keys.push(vec![b'L'; 300]);
    keys.push((0..301u32).map(|i| (i * 37 % 256) as u8).collect());
    keys.push(Vec::new());
    keys
}

fn pools(backends: &[u16], listen: &mut impl Iterator<Item = u16>) -> Vec<Pool> {
    let tag = HashTag::new("{}").ok();
    let names = ["alpha", "beta", "gamma", "delta"];
    let srv = |b: usize, name: Option<&str>, w: u32| {
        let port = backends[b];
        (
            format!("127.0.0.1:{port}"),
            port,
            name.map(str::to_owned),
            w,
            b,
        )
    };
    let mut out = Vec::new();
    for hash in HashKind::ALL {
        let mut add = |dist, tag, servers| {
            let listen = listen.next().expect("port");
            out.push(Pool {
                hash,
                dist,
                tag,
                servers,
                listen,
                extra_keys: 0,
            });
        };
        // Named servers, equal weights, hash tag.
        add(
            Distribution::Ketama,
            tag,
            (0..4).map(|b| srv(b, Some(names[b]), 1)).collect(),
        );
        // host:port identities, unequal weights, no tag.
        add(
            Distribution::Ketama,
            None,
            (0..4).map(|b| srv(b, None, [1, 2, 3, 5][b])).collect(),
        );
        add(
            Distribution::Modula,
            tag,
            (0..4).map(|b| srv(b, None, 1)).collect(),
        );
        add(
            Distribution::Modula,
            None,
            (0..4)
                .map(|b| srv(b, Some(names[b]), [3, 1, 4, 2][b]))
                .collect(),
        );
    }
    // 25 equal servers (156 points each) spread over the 4 backends by name.
    for hash in [HashKind::Fnv1a_64, HashKind::Md5] {
        let servers = (0..25)
            .map(|i| srv(i % 4, Some(&format!("shard{i:02}")), 1))
            .collect();
        let listen = listen.next().expect("port");
        // 4 of 160 points per server differ from a naive count: only ~2.5% of keys can tell.
        out.push(Pool {
            hash,
            dist: Distribution::Ketama,
            tag,
            servers,
            listen,
            extra_keys: 1500,
        });
    }
    // Port 11211 is left out of the identity ("127.0.0.1"), which also sorts first.
    if backends.len() > 4 {
        for hash in [HashKind::Fnv1a_64, HashKind::Md5, HashKind::Murmur] {
            for dist in [Distribution::Ketama, Distribution::Modula] {
                let listen = listen.next().expect("port");
                let servers = [4, 0, 1, 2].into_iter().map(|b| srv(b, None, 1)).collect();
                out.push(Pool {
                    hash,
                    dist,
                    tag: None,
                    servers,
                    listen,
                    extra_keys: 0,
                });
            }
        }
    }
    out
}

#[test]
fn placement_matches_nutcracker() {
    if !installed("redis-server") || !installed("nutcracker") {
        eprintln!("skipping: redis-server or nutcracker not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = free_ports(80).into_iter();
    let mut backend_ports: Vec<u16> = ports.by_ref().take(4).collect();
    if TcpListener::bind(("127.0.0.1", 11211)).is_ok() {
        backend_ports.push(11211);
    } else {
        eprintln!("port 11211 busy: skipping the memcached-port identity pools");
    }
    let stats_port = ports.next().expect("port");
    let _redis: Vec<Guard> = backend_ports
        .iter()
        .map(|&p| start_redis(p, dir.path()))
        .collect();
    let pools = pools(&backend_ports, &mut ports);

    let mut yaml = String::new();
    for (i, pool) in pools.iter().enumerate() {
        pool.yaml(&format!("p{i}"), &mut yaml);
    }
    let conf = dir.path().join("nutcracker.yml");
    std::fs::write(&conf, &yaml).expect("write conf");
    let nutcracker = Command::new("nutcracker")
        .arg("-c")
        .arg(&conf)
        .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
        .arg("-p")
        .arg(dir.path().join("nutcracker.pid"))
        .arg("-o")
        .arg(dir.path().join("nutcracker.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nutcracker");
    let _nutcracker = Guard(nutcracker);

    let mut backends: Vec<Client> = backend_ports.iter().map(|&p| Client::connect(p)).collect();
    let base_keys = keys();
    let mut mismatches = Vec::new();
    for (pi, pool) in pools.iter().enumerate() {
        let ring = pool.ring();
        let mut keys = base_keys.clone();
        keys.extend((0..pool.extra_keys).map(|i| format!("extra:{i}").into_bytes()));
        let mut proxy = Client::connect(pool.listen);
        let sets: Vec<Vec<&[u8]>> = keys.iter().map(|k| vec![&b"SET"[..], k, b"v"]).collect();
        let replies = proxy.pipeline(&sets);
        let exists: Vec<Vec<&[u8]>> = keys.iter().map(|k| vec![&b"EXISTS"[..], k]).collect();
        let held: Vec<Vec<Reply>> = backends.iter_mut().map(|b| b.pipeline(&exists)).collect();
        for (ki, key) in keys.iter().enumerate() {
            let on: Vec<usize> = (0..backends.len())
                .filter(|&b| held[b][ki] == Reply::Int(1))
                .collect();
            if replies[ki] != Reply::Status("OK".into()) {
                // nutcracker refuses some keys (the empty one); then nothing may be stored.
                assert!(on.is_empty(), "p{pi}: refused key {key:?} stored on {on:?}");
                assert!(key.is_empty(), "p{pi}: {key:?} got {:?}", replies[ki]);
                continue;
            }
            assert_eq!(on.len(), 1, "p{pi}: key {key:?} on backends {on:?}");
            let want = pool.expected_backend(&ring, key);
            if on[0] != want {
                mismatches.push(format!(
                    "p{pi} {} {} key {:?}: nutcracker {} rampart {want}",
                    pool.hash,
                    pool.dist,
                    String::from_utf8_lossy(key),
                    on[0]
                ));
            }
        }
        for b in backends.iter_mut() {
            assert_eq!(
                b.pipeline(&[vec![b"FLUSHALL"]]),
                [Reply::Status("OK".into())]
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
