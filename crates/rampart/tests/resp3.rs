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
        let mut out = bytes::BytesMut::new();
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        resp::encode::command(&mut out, &argv);
        self.s.write_all(&out).unwrap_or_else(|e| panic!("{e}"));
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
