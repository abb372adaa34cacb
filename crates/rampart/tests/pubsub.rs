//! Pub/Sub through rampart against real redis-servers: every command's bytes compared with
//! one redis-server in RESP2 and RESP3, placement over three shards (hash tags, patterns,
//! keyspace notifications), fan-out to many subscribers over few server connections, the
//! per-client bounds, and resubscription after a Sentinel failover.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Setup;
use testkit::RedisServer;

/// A client that reads raw RESP frames, so replies and pushes are compared byte for byte.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).ok();
        Raw { s, buf: Vec::new() }
    }

    fn send(&mut self, words: &[&str]) {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
        }
        self.s.write_all(&out).expect("write");
    }

    /// The next complete frame, waiting up to `wait`; `None` if none came.
    fn try_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let until = Instant::now() + wait;
        loop {
            if let Ok(Some(n)) = resp::reply::reply_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).ok();
            let mut b = [0u8; 65536];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(_) => return None,
            }
        }
    }

    fn frame(&mut self) -> Vec<u8> {
        self.try_frame(Duration::from_secs(10))
            .expect("a frame within 10 s")
    }

    /// Every frame that arrives until the connection is quiet for `quiet`.
    fn drain(&mut self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(f) = self.try_frame(quiet) {
            v.push(f);
        }
        v
    }

    /// Whether the server closed the connection (waiting up to `wait`).
    fn closed(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let mut b = [0u8; 65536];
        while Instant::now() < until {
            self.s
                .set_read_timeout(Some(Duration::from_millis(100)))
                .ok();
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn show(frames: &[Vec<u8>]) -> String {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).replace("\r\n", "\\r\\n"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One step of a comparison script: which connection sends what.
enum Step<'a> {
    /// Connection `i` sends the command; its frames are compared.
    Cmd(usize, &'a [&'a str]),
    /// Connection `i` reads what has arrived (messages); compared.
    Read(usize),
    /// Connection `i` sends the command; its reply is read but not compared.
    Skip(usize, &'a [&'a str]),
    /// Connection `i` sends the command; the frames are compared in any order (a client
    /// that publishes to itself: the reply and the message travel on different server
    /// connections).
    Unordered(usize, &'a [&'a str]),
}

/// Runs `script` on two connections to the proxy and two to a plain redis-server and asserts
/// that every connection receives the same bytes from both.
fn compare(proxy: &str, direct: &str, script: &[Step<'_>]) {
    let mut p = [Raw::connect(proxy), Raw::connect(proxy)];
    let mut d = [Raw::connect(direct), Raw::connect(direct)];
    for step in script {
        let (i, words) = match step {
            Step::Cmd(i, w) | Step::Skip(i, w) | Step::Unordered(i, w) => (*i, Some(*w)),
            Step::Read(i) => (*i, None),
        };
        if let Some(w) = words {
            d[i].send(w);
            p[i].send(w);
        }
        // Every step draws at least one frame (a reply, or the message it reads).
        let mut want = vec![d[i].frame()];
        want.extend(d[i].drain(Duration::from_millis(150)));
        let mut got: Vec<Vec<u8>> = (0..want.len()).map(|_| p[i].frame()).collect();
        if matches!(step, Step::Unordered(..)) {
            want.sort();
            got.sort();
        }
        if !matches!(step, Step::Skip(..)) {
            assert_eq!(
                show(&got),
                show(&want),
                "connection {i} after {:?}",
                words.unwrap_or(&["(read)"])
            );
        }
        let extra = p[i].drain(Duration::from_millis(20));
        assert!(extra.is_empty(), "rampart sent more: {}", show(&extra));
    }
}

#[test]
fn every_command_matches_redis_in_resp2_and_resp3() {
    let env = Setup::new(1).start();
    let reference = RedisServer::start();
    use Step::*;
    compare(
        &env.addr(),
        &reference.addr(),
        &[
            // Nothing subscribed yet.
            Cmd(0, &["UNSUBSCRIBE"]),
            Cmd(0, &["PUNSUBSCRIBE"]),
            Cmd(0, &["SUNSUBSCRIBE"]),
            Cmd(0, &["SUBSCRIBE"]),
            Cmd(0, &["PSUBSCRIBE"]),
            Cmd(0, &["SSUBSCRIBE"]),
            Cmd(0, &["PUBLISH", "a"]),
            // Subscribed mode (RESP2).
            Cmd(0, &["SUBSCRIBE", "a", "b", "a"]),
            Cmd(0, &["PSUBSCRIBE", "p*", "q?"]),
            Cmd(0, &["SSUBSCRIBE", "s1"]),
            Cmd(0, &["GET", "x"]),
            Cmd(0, &["CLIENT", "LIST"]),
            Cmd(0, &["MULTI"]),
            Cmd(0, &["PUBLISH", "a", "b"]),
            Cmd(0, &["NOSUCHCOMMAND"]),
            Cmd(0, &["PING"]),
            Cmd(0, &["PING", "hi"]),
            Cmd(0, &["PING", "a", "b"]),
            Cmd(1, &["PUBLISH", "a", "hello"]),
            Read(0),
            Cmd(1, &["PUBLISH", "pq", "world"]),
            Read(0),
            Cmd(1, &["SPUBLISH", "s1", "sharded"]),
            Read(0),
            Cmd(1, &["PUBLISH", "nobody", "x"]),
            Cmd(1, &["PUBSUB", "NUMSUB", "a", "nobody", "b"]),
            Cmd(1, &["PUBSUB", "NUMSUB"]),
            Cmd(1, &["PUBSUB", "NUMPAT"]),
            Cmd(1, &["PUBSUB", "CHANNELS", "a*"]),
            Cmd(1, &["PUBSUB", "SHARDCHANNELS"]),
            Cmd(1, &["PUBSUB", "SHARDNUMSUB", "s1", "s2"]),
            Cmd(1, &["PUBSUB", "NOSUCH"]),
            Cmd(0, &["UNSUBSCRIBE", "a", "zz"]),
            Cmd(0, &["PUNSUBSCRIBE", "q?"]),
            Cmd(0, &["PUNSUBSCRIBE"]),
            Cmd(0, &["SUNSUBSCRIBE"]),
            Cmd(0, &["UNSUBSCRIBE"]),
            Cmd(0, &["UNSUBSCRIBE"]),
            // Out of subscribed mode again.
            Cmd(0, &["GET", "x"]),
            Cmd(0, &["PING"]),
            // RESET leaves every subscription.
            Cmd(0, &["SUBSCRIBE", "a"]),
            Cmd(0, &["RESET"]),
            Cmd(1, &["PUBLISH", "a", "after-reset"]),
            Read(0),
            // RESP3: pushes, and any command while subscribed.
            Skip(0, &["HELLO", "3"]),
            Cmd(0, &["UNSUBSCRIBE"]),
            Cmd(0, &["SUBSCRIBE", "a", "b"]),
            Cmd(0, &["GET", "x"]),
            Cmd(0, &["PING"]),
            Cmd(1, &["PUBLISH", "a", "hello3"]),
            Read(0),
            Cmd(0, &["PSUBSCRIBE", "p*"]),
            Cmd(1, &["PUBLISH", "pz", "pattern3"]),
            Read(0),
            Cmd(0, &["SSUBSCRIBE", "s1"]),
            Cmd(1, &["SPUBLISH", "s1", "shard3"]),
            Read(0),
            Unordered(0, &["PUBLISH", "b", "to-myself"]),
            Cmd(0, &["UNSUBSCRIBE", "a"]),
            Cmd(0, &["UNSUBSCRIBE"]),
            Cmd(0, &["PUNSUBSCRIBE"]),
            Cmd(0, &["SUNSUBSCRIBE", "s1"]),
            Cmd(0, &["SUNSUBSCRIBE"]),
            Cmd(0, &["RESET"]),
        ],
    );
}

#[test]
fn subscriptions_per_client_are_bounded_and_nothing_is_half_applied() {
    let env = Setup::new(1)
        .option("max_subscriptions_per_client", 3)
        .start();
    let mut c = Raw::connect(&env.addr());
    c.send(&["SUBSCRIBE", "a", "b"]);
    c.frame();
    c.frame();
    c.send(&["PSUBSCRIBE", "x*", "y*"]);
    let err = String::from_utf8(c.frame()).unwrap();
    assert!(
        err.starts_with(
            "-ERR rampart: this client would hold more than max_subscriptions_per_client (3)"
        ),
        "{err}"
    );
    // Nothing of the refused command was subscribed: the next one counts from 2.
    c.send(&["PSUBSCRIBE", "x*"]);
    assert_eq!(c.frame(), b"*3\r\n$10\r\npsubscribe\r\n$2\r\nx*\r\n:3\r\n");
    let mut p = env.client();
    let n = p.cmd(&["PUBSUB", "NUMPAT"]);
    assert_eq!(n.as_int(), Some(1), "{n:?}");
}

#[test]
fn a_slow_subscriber_is_closed_alone_and_the_others_get_every_message() {
    let env = Setup::new(1)
        .workers(1)
        .option("pubsub_output_hard", "1mb")
        .option("pubsub_output_soft", "512kb")
        .start();
    let mut slow = Raw::connect(&env.addr());
    let mut fast = Raw::connect(&env.addr());
    for c in [&mut slow, &mut fast] {
        c.send(&["SUBSCRIBE", "news"]);
        c.frame();
    }
    let body = "x".repeat(64 * 1024);
    let n = 400;
    let publisher = std::thread::spawn({
        let addr = env.addr();
        let body = body.clone();
        move || {
            let mut p = Raw::connect(&addr);
            for i in 0..n {
                p.send(&["PUBLISH", "news", &format!("{i}:{body}")]);
                p.frame();
            }
        }
    });
    for i in 0..n {
        let want = format!("{i}:{body}");
        let m = fast.frame();
        let expect = format!(
            "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n${}\r\n{want}\r\n",
            want.len()
        );
        assert!(m == expect.as_bytes(), "message {i} out of order or lost");
    }
    publisher.join().unwrap();
    // The slow one never read: it was closed once over its limit.
    assert!(
        slow.closed(Duration::from_secs(10)),
        "the slow subscriber was not closed"
    );
    assert!(env.proxy_log().contains("Pub/Sub message bytes held"));
}
