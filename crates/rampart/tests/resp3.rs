//! RESP3 through rampart: `HELLO 3` switches a session to RESP3 and from then on every reply
//! is the bytes redis-server sends a RESP3 client (compared byte for byte against a real
//! redis-server holding the same data), merged and local answers included; `HELLO 2` goes
//! back, and a RESP2 session is unchanged.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{reference, Setup};
use resp::{Limits, ReplyDecoder};

/// A client that returns each reply's raw bytes, whatever its protocol.
pub struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        Raw { s, buf: Vec::new() }
    }

    /// Send one command and return its reply, bytes as they came.
    pub fn call(&mut self, args: &[&str]) -> Vec<u8> {
        self.pipeline(&[args]).remove(0)
    }

    /// Send every command in one write, as clients pipeline their set-up, and return the
    /// replies in order.
    pub fn pipeline(&mut self, cmds: &[&[&str]]) -> Vec<Vec<u8>> {
        let mut out = bytes::BytesMut::new();
        for args in cmds {
            let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            resp::encode::command(&mut out, &argv);
        }
        self.s.write_all(&out).unwrap_or_else(|e| panic!("{e}"));
        cmds.iter().map(|c| self.read(c)).collect()
    }

    fn read(&mut self, args: &[&str]) -> Vec<u8> {
        let mut dec = ReplyDecoder::new(Limits::default());
        loop {
            if let Some(n) = dec.decode(&self.buf).unwrap_or_else(|e| panic!("{e}")) {
                return self.buf.drain(..n).collect();
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .s
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(n > 0, "{args:?}: connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\\r\\n")
}

/// Run `cmds` on both and assert the replies are the same bytes.
fn same_bytes(proxy: &mut Raw, direct: &mut Raw, cmds: &[&[&str]]) {
    for c in cmds {
        let got = proxy.call(c);
        let want = direct.call(c);
        assert_eq!(show(&got), show(&want), "{c:?}: rampart vs redis-server");
    }
}

/// The data both sides hold, spread over the shards through rampart.
const DATA: &[&[&str]] = &[
    &["HSET", "h", "f1", "v1", "f2", "v2"],
    &["SADD", "s", "a"],
    &["ZADD", "z", "1.5", "m", "2", "n"],
    &["SET", "n", "10"],
    &[
        "MSET", "k1", "a", "k2", "b", "k3", "c", "k4", "d", "k5", "e",
    ],
    &["RPUSH", "l", "x", "y"],
    &["XADD", "st", "1-1", "f", "v"],
    &["SCRIPT", "LOAD", "return 1"],
];

/// Commands whose RESP3 replies must be Redis' own bytes.
const COMPARED: &[&[&str]] = &[
    &["HGETALL", "h"],
    &["HGETALL", "missing"],
    &["SMEMBERS", "s"],
    &["ZSCORE", "z", "m"],
    &["ZSCORE", "z", "missing"],
    &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    &["ZPOPMIN", "z", "0"],
    &["INCRBYFLOAT", "f", "1.5"],
    &["GET", "missing"],
    &["HGET", "h", "missing"],
    &["LPOP", "missing"],
    &["GET", "n"],
    &["LRANGE", "l", "0", "-1"],
    &["XRANGE", "st", "-", "+"],
    &["XINFO", "STREAM", "st"],
    &["EXISTS", "k1", "k2", "missing", "k5"],
    &["MGET", "k1", "missing", "k2", "k3", "k4", "k5"],
    &["DEL", "k4", "missing"],
    &["DBSIZE"],
    &["KEYS", "k1"],
    &["INFO", "keyspace"],
    &[
        "SCRIPT",
        "EXISTS",
        "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
        "ffff",
    ],
    &["OBJECT", "ENCODING", "h"],
    &["TTL", "h"],
    &["PING"],
    &["ECHO", "x"],
    &["CLIENT", "GETNAME"],
    &["COMMAND", "INFO", "get", "nosuch", "mget"],
    &["COMMAND", "DOCS", "get", "set"],
    &["COMMAND", "COUNT"],
    &["EVAL", "return {1, 'two', {3}}", "0"],
    &["HELLO", "4"],
    &["NOSUCHCOMMAND"],
    // Blocking commands run on a connection of their own, in the session's protocol: a
    // timed-out pop is RESP3's null.
    &["BLPOP", "nolist", "0.01"],
    &["BZPOPMIN", "nozset", "0.01"],
    &["BZMPOP", "0.01", "1", "nozset", "MIN"],
    &["LPUSH", "bl", "x"],
    &["BLPOP", "bl", "0"],
];

#[test]
fn resp3_replies_are_redis_bytes() {
    let env = Setup::new(2).start();
    let server = reference();
    let mut p = Raw::connect(&env.addr());
    let mut d = Raw::connect(&server.addr());
    // HELLO 3: Redis' map, with the connection's own id.
    let hp = p.call(&["HELLO", "3"]);
    let hd = d.call(&["HELLO", "3"]);
    let id_of = |r: &mut Raw| String::from_utf8_lossy(&r.call(&["CLIENT", "ID"])).into_owned();
    let (ip, id) = (id_of(&mut p), id_of(&mut d));
    let want = show(&hd).replace(
        &format!("id\\r\\n{}", id.trim_end()),
        &format!("id\\r\\n{}", ip.trim_end()),
    );
    assert_eq!(show(&hp), want);
    assert!(hp.starts_with(b"%7\r\n"), "{}", show(&hp));
    same_bytes(&mut p, &mut d, DATA);
    same_bytes(&mut p, &mut d, COMPARED);
    // Back to RESP2: Redis' RESP2 bytes again.
    let hp = p.call(&["HELLO", "2"]);
    assert!(hp.starts_with(b"*14\r\n"), "{}", show(&hp));
    d.call(&["HELLO", "2"]);
    same_bytes(&mut p, &mut d, COMPARED);
}

/// A RESP2 session next to a RESP3 one on the same pool and worker gets RESP2 bytes, and the
/// RESP3 one RESP3 bytes, even when their requests interleave.
#[test]
fn resp2_sessions_are_unchanged_beside_resp3_ones() {
    let env = Setup::new(2).workers(1).start();
    let server = reference();
    let mut p2 = Raw::connect(&env.addr());
    let mut p3 = Raw::connect(&env.addr());
    let mut d2 = Raw::connect(&server.addr());
    let mut d3 = Raw::connect(&server.addr());
    p3.call(&["HELLO", "3"]);
    d3.call(&["HELLO", "3"]);
    same_bytes(&mut p2, &mut d2, DATA);
    for c in COMPARED {
        same_bytes(&mut p3, &mut d3, &[c]);
        same_bytes(&mut p2, &mut d2, &[c]);
    }
    // HELLO with no version says which protocol the session speaks.
    assert!(p3.call(&["HELLO"]).starts_with(b"%7\r\n"));
    assert!(p2.call(&["HELLO"]).starts_with(b"*14\r\n"));
    // RESET goes back to RESP2, as in Redis.
    assert_eq!(p3.call(&["RESET"]), b"+RESET\r\n");
    same_bytes(&mut p3, &mut d2, &[&["HGETALL", "h"], &["GET", "missing"]]);
}

/// HELLO's options as Redis takes them: AUTH and SETNAME at once, refused credentials change
/// nothing, and rampart's RESP3 connections to a server with a password authenticate first.
#[test]
fn hello_authenticates_and_names_the_client() {
    let env = Setup::new(2).password("s3cret").start();
    let mut p = Raw::connect(&env.addr());
    let refused = p.call(&["HELLO", "3", "AUTH", "default", "nope"]);
    assert!(refused.starts_with(b"-WRONGPASS"), "{}", show(&refused));
    let other = p.call(&["HELLO", "3", "AUTH", "someone", "s3cret"]);
    assert!(other.starts_with(b"-WRONGPASS"), "{}", show(&other));
    assert!(p.call(&["GET", "k"]).starts_with(b"-NOAUTH"));
    let hello = p.call(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "app"]);
    assert!(hello.starts_with(b"%7\r\n"), "{}", show(&hello));
    assert_eq!(p.call(&["CLIENT", "GETNAME"]), b"$3\r\napp\r\n");
    assert_eq!(p.call(&["HSET", "h", "a", "1"]), b":1\r\n");
    assert_eq!(p.call(&["HGETALL", "h"]), b"%1\r\n$1\r\na\r\n$1\r\n1\r\n");
    assert_eq!(p.call(&["GET", "missing"]), b"_\r\n");
    // The ACL form of AUTH: user `default` with the pool's password.
    let mut q = Raw::connect(&env.addr());
    assert!(q
        .call(&["AUTH", "other", "s3cret"])
        .starts_with(b"-WRONGPASS"));
    assert_eq!(q.call(&["AUTH", "default", "s3cret"]), b"+OK\r\n");
    assert_eq!(q.call(&["HELLO", "3"])[..4], b"%7\r\n"[..]);
    assert_eq!(q.call(&["HGET", "h", "a"]), b"$1\r\n1\r\n");
    let bad = q.call(&["HELLO", "3", "SETNAME", "a b"]);
    assert!(
        bad.starts_with(b"-ERR Client names cannot contain spaces"),
        "{}",
        show(&bad)
    );
    assert_eq!(
        q.call(&["HELLO", "4"]),
        b"-NOPROTO unsupported protocol version\r\n"
    );
}

/// What a reply must be in a client's set-up.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// `+OK`.
    Ok,
    /// A reply of this RESP type (first byte).
    Type(u8),
    /// An error that names the command rampart cannot serve; the connection stays usable.
    Refused(&'static str),
    /// Whatever the server answers (a command the client sends without checking it).
    Any,
}

/// Send a client's start-up commands as it sends them (pipelined), check each reply, then
/// check that the connection serves data. `CLIENT SETINFO` is answered as Redis 7.0 answers
/// it (it came with 7.2); every one of these clients ignores an error there.
fn handshake(addr: &str, client: &str, steps: &[(&[&str], Want)]) {
    let mut c = Raw::connect(addr);
    let cmds: Vec<&[&str]> = steps.iter().map(|(c, _)| *c).collect();
    let replies = c.pipeline(&cmds);
    for ((cmd, want), got) in steps.iter().zip(&replies) {
        let ok = match want {
            Want::Ok => got == b"+OK\r\n",
            Want::Type(t) => got.first() == Some(t),
            Want::Refused(word) => {
                got.starts_with(b"-ERR")
                    && String::from_utf8_lossy(got)
                        .to_lowercase()
                        .contains(&word.to_lowercase())
            }
            Want::Any => true,
        };
        assert!(ok, "{client}: {cmd:?} wants {want:?}, got {}", show(got));
    }
    let key = format!("{client}:k");
    let set = c.call(&["SET", &key, "v"]);
    assert_eq!(set, b"+OK\r\n", "{client}");
    assert_eq!(c.call(&["GET", &key]), b"$1\r\nv\r\n", "{client}");
    assert_eq!(c.call(&["PING"]), b"+PONG\r\n", "{client}");
}

/// The start-up sequences of go-redis v9, Jedis 5, Lettuce 6 and StackExchange.Redis, as
/// they send them to a server with a password, work through rampart: HELLO 3 with AUTH and
/// SETNAME, CLIENT SETINFO, CLIENT SETNAME, SELECT, CLIENT ID, INFO, COMMAND DOCS, CLIENT
/// NO-EVICT / NO-TOUCH; what rampart cannot do (CLIENT TRACKING) is a clear error and the
/// connection goes on.
#[test]
fn client_handshakes_work() {
    use Want::*;
    let env = Setup::new(2).password("pw").start();
    let addr = env.addr();
    // go-redis v9 (protocol 3 by default): HELLO with credentials and name, then its library
    // info, pipelined; SELECT only for a database other than 0.
    handshake(
        &addr,
        "go-redis",
        &[
            (
                &["hello", "3", "auth", "default", "pw", "setname", "app"],
                Type(b'%'),
            ),
            (
                &["client", "setinfo", "LIB-NAME", "go-redis(,go1.22.5)"],
                Any,
            ),
            (&["client", "setinfo", "LIB-VER", "9.7.0"], Any),
            (&["command", "docs", "get"], Type(b'%')),
            (&["client", "getname"], Type(b'$')),
        ],
    );
    // Jedis 5 (RESP2 unless asked): AUTH, CLIENT SETNAME, SELECT, CLIENT SETINFO.
    handshake(
        &addr,
        "jedis",
        &[
            (&["AUTH", "default", "pw"], Ok),
            (&["CLIENT", "SETNAME", "app"], Ok),
            (&["SELECT", "0"], Ok),
            (&["CLIENT", "SETINFO", "LIB-NAME", "jedis"], Any),
            (&["CLIENT", "SETINFO", "LIB-VER", "5.1.5"], Any),
            (&["CLIENT", "TRACKING", "ON"], Refused("TRACKING")),
        ],
    );
    // Jedis 5 with RESP3: HELLO 3 AUTH user password SETNAME.
    handshake(
        &addr,
        "jedis3",
        &[
            (
                &["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "app"],
                Type(b'%'),
            ),
            (&["CLIENT", "SETINFO", "LIB-NAME", "jedis"], Any),
            (&["CLIENT", "SETINFO", "LIB-VER", "5.1.5"], Any),
        ],
    );
    // Lettuce 6 (RESP3 first): HELLO 3 AUTH, then its library info, CLIENT ID, PING.
    handshake(
        &addr,
        "lettuce",
        &[
            (&["HELLO", "3", "AUTH", "default", "pw"], Type(b'%')),
            (&["CLIENT", "SETINFO", "lib-name", "Lettuce"], Any),
            (&["CLIENT", "SETINFO", "lib-ver", "6.3.2.RELEASE"], Any),
            (&["CLIENT", "ID"], Type(b':')),
            (&["CLIENT", "NO-EVICT", "on"], Any),
            (&["CLIENT", "NO-TOUCH", "on"], Any),
            (&["CLIENT", "TRACKING", "on", "BCAST"], Refused("TRACKING")),
            (&["PING"], Type(b'+')),
        ],
    );
    // StackExchange.Redis: AUTH, CLIENT SETNAME, CLIENT SETINFO, CLIENT ID, then INFO, its
    // configuration probes (admin commands: refused here, which it tolerates), CLUSTER NODES,
    // ECHO and its tie-breaker key.
    handshake(
        &addr,
        "se-redis",
        &[
            (&["AUTH", "pw"], Ok),
            (&["CLIENT", "SETNAME", "app"], Ok),
            (&["CLIENT", "SETINFO", "lib-name", "SE.Redis"], Any),
            (&["CLIENT", "SETINFO", "lib-ver", "2.7.33"], Any),
            (&["CLIENT", "ID"], Type(b':')),
            (&["INFO"], Type(b'$')),
            (&["CONFIG", "GET", "slave-read-only"], Any),
            (&["CONFIG", "GET", "databases"], Any),
            (&["CLUSTER", "NODES"], Any),
            (
                &["ECHO", "6c1a0bd9-4c3e-4a24-9b0f-5b5a1c2a7f1d"],
                Type(b'$'),
            ),
            (&["CLIENT", "INFO"], Type(b'$')),
            (&["CLIENT", "LIST"], Type(b'$')),
            (&["GET", "__Booksleeve_TieBreak"], Type(b'$')),
        ],
    );
    // The same in RESP3: INFO, CLIENT INFO and CLIENT LIST are verbatim strings, as
    // redis-server sends them.
    handshake(
        &addr,
        "se-redis3",
        &[
            (
                &["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "app"],
                Type(b'%'),
            ),
            (&["CLIENT", "SETINFO", "lib-name", "SE.Redis"], Any),
            (&["INFO"], Type(b'=')),
            (&["INFO", "replication"], Type(b'=')),
            (&["CLIENT", "INFO"], Type(b'=')),
            (&["CLIENT", "LIST"], Type(b'=')),
            (&["CLIENT", "LIST", "TYPE", "normal"], Type(b'=')),
            (&["GET", "__Booksleeve_TieBreak"], Type(b'_')),
            (&["COMMAND", "INFO", "get"], Type(b'*')),
        ],
    );
}

/// Merged replies with nothing to merge keep the RESP3 client's types: RANDOMKEY of an empty
/// pool is `_`, MGET of missing keys holds `_`, and CONFIG GET (admin_broadcast) is Redis' map.
#[test]
fn merged_replies_of_an_empty_pool_are_resp3() {
    let env = Setup::new(2).option("admin_broadcast", "true").start();
    let server = reference();
    let mut p = Raw::connect(&env.addr());
    let mut d = Raw::connect(&server.addr());
    p.call(&["HELLO", "3"]);
    d.call(&["HELLO", "3"]);
    same_bytes(
        &mut p,
        &mut d,
        &[
            &["RANDOMKEY"],
            &["MGET", "a", "b", "c", "d"],
            &["DBSIZE"],
            &["KEYS", "*"],
            &["EXISTS", "a", "b"],
            &["CONFIG", "GET", "maxmemory-policy"],
            &["INFO", "keyspace"],
        ],
    );
    // rampart's own command answers a map in RESP3, nil as `_`.
    let shard = p.call(&["RAMPART", "KEYSHARD", "k"]);
    assert!(
        shard.starts_with(b"%4\r\n$5\r\nshard\r\n"),
        "{}",
        show(&shard)
    );
    let scan = p.call(&["SCAN", "0"]);
    assert!(
        scan.starts_with(b"*2\r\n$") && scan.ends_with(b"*0\r\n"),
        "{}",
        show(&scan)
    );
}

/// A reload that keeps the connections moves each to the new pool view with its protocol:
/// afterwards RESP2 clients still get RESP2 bytes and RESP3 clients RESP3 bytes.
#[test]
fn connections_keep_their_protocol_across_a_reload() {
    let env = Setup::new(2).workers(1).option("timeout", 1000).start();
    let mut p2 = Raw::connect(&env.addr());
    let mut p3 = Raw::connect(&env.addr());
    p3.call(&["HELLO", "3"]);
    let keys: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    for k in &keys {
        assert_eq!(p2.call(&["HSET", k, "f", "v"]), b":1\r\n");
        assert_eq!(p3.call(&["HGETALL", k]), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    }
    let path = env.proxy.dir().join("x.yml");
    let before = env.proxy.stderr().matches("reload: applied").count();
    std::fs::write(&path, env.yaml.replace("timeout: 1000", "timeout: 1500"))
        .unwrap_or_else(|e| panic!("{e}"));
    env.proxy.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.proxy.stderr().matches("reload: applied").count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {}",
            env.proxy.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for k in &keys {
        assert_eq!(p2.call(&["HGETALL", k]), b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
        assert_eq!(p3.call(&["HGETALL", k]), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    }
    let mut fresh = Raw::connect(&env.addr());
    assert_eq!(
        fresh.call(&["HGETALL", "h0"]),
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
}

/// A client that changes protocol between WATCH and EXEC gets EXEC's reply in the protocol
/// it speaks at EXEC, byte for byte as from redis-server (the watch's connection was opened
/// in the protocol of WATCH): never RESP3 types on a RESP2 connection, nor the reverse.
#[test]
fn hello_between_watch_and_exec_shapes_exec_for_the_new_protocol() {
    let env = Setup::new(1).start();
    let r = reference();
    for (from, to) in [("3", "2"), ("2", "3")] {
        let mut proxy = Raw::connect(&env.addr());
        let mut direct = Raw::connect(&r.addr());
        let cmds: &[&[&str]] = &[
            &["HSET", "h", "a", "1"],
            &["HELLO", from],
            &["WATCH", "h"],
            &["HELLO", to],
            &["MULTI"],
            &["HGETALL", "h"],
            &["GET", "nokey"],
            &["EXEC"],
            // Touched: EXEC's nil in the new protocol.
            &["WATCH", "h"],
            &["HELLO", from],
            &["HSET", "h", "b", "2"],
            &["MULTI"],
            &["HGETALL", "h"],
            &["EXEC"],
            &["DEL", "h"],
        ];
        for c in cmds {
            if c[0] == "HELLO" {
                // Its connection id differs; its shape is compared elsewhere.
                proxy.call(c);
                direct.call(c);
            } else {
                same_bytes(&mut proxy, &mut direct, &[c]);
            }
        }
    }
}
