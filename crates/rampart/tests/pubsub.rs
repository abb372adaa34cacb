//! Pub/Sub through rampart against real redis-servers: every command's bytes compared with
//! one redis-server in RESP2 and RESP3, placement over three shards (hash tags, patterns,
//! keyspace notifications), fan-out to many subscribers over few server connections, the
//! per-client bounds, and resubscription after a Sentinel failover.

mod common;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

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

    /// Send every command in one write (a pipeline the proxy reads at once).
    fn send_all(&mut self, cmds: &[&[&str]]) {
        let mut out = Vec::new();
        for words in cmds {
            out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
            for w in *words {
                out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
            }
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
    /// Nothing arrives on connection `i` (from either side) for a while.
    Quiet(usize),
    /// Connection `i` sends the command; nothing arrives on it (from either side).
    Silent(usize, &'a [&'a str]),
    /// Connection `i` sends the command; its reply is read but not compared.
    Skip(usize, &'a [&'a str]),
    /// Connection `i` sends the command; the frames are compared in any order (a client
    /// that publishes to itself: the reply and the message travel on different server
    /// connections).
    Unordered(usize, &'a [&'a str]),
}

/// How long a connection must stay silent to count as quiet.
const QUIET: Duration = Duration::from_millis(300);

/// Runs `script` on two connections to the proxy and two to a plain redis-server and asserts
/// that every connection receives the same bytes from both.
fn compare(proxy: &str, direct: &str, script: &[Step<'_>]) {
    let mut p = [Raw::connect(proxy), Raw::connect(proxy)];
    let mut d = [Raw::connect(direct), Raw::connect(direct)];
    for step in script {
        if let Step::Silent(i, w) = step {
            d[*i].send(w);
            p[*i].send(w);
        }
        if let Step::Quiet(i) | Step::Silent(i, _) = step {
            let (got, want) = (p[*i].drain(QUIET), d[*i].drain(QUIET));
            assert!(
                got.is_empty() && want.is_empty(),
                "{} / {}",
                show(&got),
                show(&want)
            );
            continue;
        }
        let (i, words) = match step {
            Step::Cmd(i, w) | Step::Skip(i, w) | Step::Unordered(i, w) => (*i, Some(*w)),
            Step::Read(i) | Step::Quiet(i) | Step::Silent(i, _) => (*i, None),
        };
        if let Some(w) = words {
            d[i].send(w);
            p[i].send(w);
        }
        // Every step draws at least one frame (a reply, or the message it reads).
        let what = words.unwrap_or(&["(read)"]);
        let first = d[i].try_frame(Duration::from_secs(10));
        let mut want = vec![first.unwrap_or_else(|| panic!("redis: nothing after {what:?}"))];
        want.extend(d[i].drain(Duration::from_millis(150)));
        let mut got: Vec<Vec<u8>> = (0..want.len())
            .map(|n| {
                p[i].try_frame(Duration::from_secs(10)).unwrap_or_else(|| {
                    panic!(
                        "rampart: frame {n} missing after {what:?}; redis sent {}",
                        show(&want)
                    )
                })
            })
            .collect();
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
            Quiet(0),
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
fn client_reply_off_keeps_subscribe_confirmations_as_redis_does() {
    let env = Setup::new(1).start();
    let reference = RedisServer::start();
    use Step::*;
    compare(
        &env.addr(),
        &reference.addr(),
        &[
            // RESP2: the confirmations are replies, and still sent.
            Silent(0, &["CLIENT", "REPLY", "OFF"]),
            Cmd(0, &["PSUBSCRIBE", "*"]),
            Cmd(1, &["SET", "foo", "bar"]),
            Silent(0, &["CLIENT", "REPLY", "SKIP"]),
            Cmd(0, &["PUNSUBSCRIBE", "*"]),
            Cmd(0, &["CLIENT", "REPLY", "ON"]),
            // RESP3: pushes.
            Skip(0, &["HELLO", "3"]),
            Silent(0, &["CLIENT", "REPLY", "OFF"]),
            Cmd(0, &["SUBSCRIBE", "channel"]),
            Cmd(0, &["PSUBSCRIBE", "ch*"]),
            Cmd(1, &["PUBLISH", "channel", "hello"]),
            Read(0),
            Silent(0, &["GET", "x"]),
            Cmd(0, &["UNSUBSCRIBE", "channel"]),
            Cmd(0, &["PUNSUBSCRIBE", "ch*"]),
            Cmd(0, &["CLIENT", "REPLY", "ON"]),
            Cmd(0, &["GET", "x"]),
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
    // The publisher sends a message only once the fast subscriber read the one before, so
    // only the slow one (which never reads) falls behind, whatever the machine's load.
    let (read, next) = std::sync::mpsc::channel::<()>();
    let publisher = std::thread::spawn({
        let addr = env.addr();
        let body = body.clone();
        move || {
            let mut p = Raw::connect(&addr);
            for i in 0..n {
                p.send(&["PUBLISH", "news", &format!("{i}:{body}")]);
                p.frame();
                if next.recv_timeout(Duration::from_secs(10)).is_err() {
                    return;
                }
            }
        }
    });
    for i in 0..n {
        let want = format!("{i}:{body}");
        let m = fast.frame();
        read.send(()).ok();
        let expect = message("message", "news", &want);
        assert!(m == expect, "message {i} out of order or lost");
    }
    publisher.join().unwrap();
    // The slow one never read: it was closed once over its limit.
    assert!(
        slow.closed(Duration::from_secs(10)),
        "the slow subscriber was not closed"
    );
    assert!(env.proxy_log().contains("Pub/Sub message bytes held"));
}

/// A `message` (or `smessage`) frame as Redis writes it.
fn message(word: &str, channel: &str, body: &str) -> Vec<u8> {
    format!(
        "*3\r\n${}\r\n{word}\r\n${}\r\n{channel}\r\n${}\r\n{body}\r\n",
        word.len(),
        channel.len(),
        body.len()
    )
    .into_bytes()
}

/// A `pmessage` frame as Redis writes it.
fn pmessage(pattern: &str, channel: &str, body: &str) -> Vec<u8> {
    format!(
        "*4\r\n$8\r\npmessage\r\n${}\r\n{pattern}\r\n${}\r\n{channel}\r\n${}\r\n{body}\r\n",
        pattern.len(),
        channel.len(),
        body.len()
    )
    .into_bytes()
}

/// The channels backend `i` has subscribers for (`PUBSUB CHANNELS` or `SHARDCHANNELS`).
fn server_channels(env: &common::Env, i: usize, sub: &str) -> Vec<String> {
    names(&env.backend(i).cmd(&["PUBSUB", sub]))
}

/// The strings of an array reply, sorted.
fn names(r: &testkit::Reply) -> Vec<String> {
    let mut v: Vec<String> = r
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {r:?}"))
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn channels_live_on_their_shard_and_patterns_hear_every_shard() {
    let env = Setup::new(3).hash_tag().start();
    // Channel placement is key placement: one channel name per shard.
    let chans = env.key_per_shard("ch:");
    let mut pat = Raw::connect(&env.addr());
    pat.send(&["PSUBSCRIBE", "ch:*"]);
    assert_eq!(
        pat.frame(),
        b"*3\r\n$10\r\npsubscribe\r\n$4\r\nch:*\r\n:1\r\n"
    );
    let mut sub = Raw::connect(&env.addr());
    let mut ssub = Raw::connect(&env.addr());
    let mut words: Vec<&str> = vec!["SUBSCRIBE"];
    words.extend(chans.iter().map(String::as_str));
    sub.send(&words);
    words[0] = "SSUBSCRIBE";
    ssub.send(&words);
    for (n, c) in chans.iter().enumerate() {
        let count = format!(":{}\r\n", n + 1);
        assert!(sub.frame().ends_with(count.as_bytes()), "{c}");
        assert!(ssub.frame().ends_with(count.as_bytes()), "{c}");
    }
    // Each server holds the channel of its own shard, the pattern is on every shard.
    for (i, c) in chans.iter().enumerate() {
        assert_eq!(
            server_channels(&env, i, "CHANNELS"),
            vec![c.clone()],
            "shard {i}"
        );
        assert_eq!(server_channels(&env, i, "SHARDCHANNELS"), vec![c.clone()]);
        assert_eq!(env.backend(i).cmd(&["PUBSUB", "NUMPAT"]).as_int(), Some(1));
    }
    let mut p = env.client();
    for c in &chans {
        // That shard's receivers: the subscriber connection of the worker of `sub`, and the
        // one of `pat` (the same connection when both sessions share a worker).
        let n = p.cmd(&["PUBLISH", c, "hello"]).as_int().unwrap_or(0);
        assert!((1..=2).contains(&n), "PUBLISH {c}: {n}");
        assert_eq!(sub.frame(), message("message", c, "hello"));
        assert_eq!(pat.frame(), pmessage("ch:*", c, "hello"));
        assert_eq!(p.cmd(&["SPUBLISH", c, "s"]).as_int(), Some(1));
        assert_eq!(ssub.frame(), message("smessage", c, "s"));
    }
    // Hash tags put a channel with its keys.
    sub.send(&["SUBSCRIBE", "{user1}:events"]);
    sub.frame();
    p.cmd(&["SET", "{user1}:name", "x"]);
    let home = env.shard_holding("{user1}:name");
    assert!(server_channels(&env, home, "CHANNELS").contains(&"{user1}:events".to_string()));
    assert_eq!(
        p.cmd(&["PUBLISH", "{user1}:events", "tagged"]).as_int(),
        Some(1)
    );
    assert_eq!(sub.frame(), message("message", "{user1}:events", "tagged"));
    // PUBSUB through the proxy merges the shards.
    let mut all = chans.clone();
    all.push("{user1}:events".into());
    all.sort();
    assert_eq!(names(&p.cmd(&["PUBSUB", "CHANNELS"])), all);
    let numsub = p.cmd(&["PUBSUB", "NUMSUB", &chans[2], "nobody", &chans[0]]);
    assert_eq!(
        numsub,
        testkit::Reply::Array(Some(vec![
            testkit::Reply::bulk(&chans[2]),
            testkit::Reply::Int(1),
            testkit::Reply::bulk("nobody"),
            testkit::Reply::Int(0),
            testkit::Reply::bulk(&chans[0]),
            testkit::Reply::Int(1),
        ]))
    );
    assert_eq!(p.cmd(&["PUBSUB", "NUMPAT"]).as_int(), Some(1));
    // The last subscriber to leave unsubscribes the servers.
    sub.send(&["UNSUBSCRIBE"]);
    for _ in 0..chans.len() + 1 {
        sub.frame();
    }
    testkit::wait_until(Duration::from_secs(5), "servers unsubscribed", || {
        (0..3).all(|i| server_channels(&env, i, "CHANNELS").is_empty())
    });
}

#[test]
fn keyspace_notifications_arrive_from_every_shard() {
    let env = Setup::new(3).hash_tag().start();
    for i in 0..3 {
        env.backend(i)
            .cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    }
    let keys = env.key_per_shard("user:");
    let mut space = Raw::connect(&env.addr());
    let mut words: Vec<String> = vec!["SUBSCRIBE".into()];
    words.extend(keys.iter().map(|k| format!("__keyspace@0__:{k}")));
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    space.send(&refs);
    for _ in &keys {
        space.frame();
    }
    // The keyspace channel of a key lives on the key's shard.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            server_channels(&env, i, "CHANNELS"),
            vec![format!("__keyspace@0__:{k}")]
        );
    }
    let mut event = Raw::connect(&env.addr());
    event.send(&["SUBSCRIBE", "__keyevent@0__:set"]);
    event.frame();
    let mut pat = Raw::connect(&env.addr());
    pat.send(&["PSUBSCRIBE", "__keyspace@0__:user:*"]);
    pat.frame();
    let mut p = env.client();
    for k in &keys {
        p.cmd(&["SET", k, "v"]);
        let ch = format!("__keyspace@0__:{k}");
        assert_eq!(space.frame(), message("message", &ch, "set"));
        assert_eq!(event.frame(), message("message", "__keyevent@0__:set", k));
        assert_eq!(pat.frame(), pmessage("__keyspace@0__:user:*", &ch, "set"));
    }
}

#[test]
fn a_thousand_subscribers_share_a_few_server_connections_and_hear_every_message_in_order() {
    let workers = 2;
    let env = Setup::new(1).workers(workers).start();
    let clients = 1000;
    let mut subs: Vec<Raw> = (0..clients).map(|_| Raw::connect(&env.addr())).collect();
    for s in &mut subs {
        s.send(&["SUBSCRIBE", "fan"]);
    }
    for s in &mut subs {
        assert_eq!(s.frame(), b"*3\r\n$9\r\nsubscribe\r\n$3\r\nfan\r\n:1\r\n");
    }
    // The server sees at most one subscriber connection per worker and node.
    let listed = env.backend(0).cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    let conns = listed.as_str().map_or(0, |t| t.lines().count());
    println!("{clients} subscribing clients, {conns} subscriber connections on the server");
    assert!(
        (1..=workers).contains(&conns),
        "{conns} subscriber connections:\n{listed:?}"
    );
    let burst = 200;
    let mut p = Raw::connect(&env.addr());
    for i in 0..burst {
        p.send(&["PUBLISH", "fan", &format!("m{i}")]);
    }
    for _ in 0..burst {
        let n = String::from_utf8(p.frame()).unwrap();
        assert!(n == format!(":{conns}\r\n"), "PUBLISH answered {n}");
    }
    for (c, s) in subs.iter_mut().enumerate() {
        for i in 0..burst {
            assert_eq!(
                s.frame(),
                message("message", "fan", &format!("m{i}")),
                "client {c}, message {i}"
            );
        }
    }
}

#[test]
fn subscriptions_follow_a_sentinel_failover_within_a_second() {
    let mut setup = ha::SentinelSetup::start("");
    let addr = setup.proxy.addr();
    let mut sub = Raw::connect(&addr);
    sub.send(&["SUBSCRIBE", "news"]);
    sub.frame();
    sub.send(&["PSUBSCRIBE", "n*"]);
    sub.frame();
    let mut p = Raw::connect(&addr);
    p.send(&["PUBLISH", "news", "before"]);
    // One receiver for the channel and one for the pattern, as Redis counts them.
    assert_eq!(p.frame(), b":2\r\n");
    assert_eq!(sub.frame(), message("message", "news", "before"));
    assert_eq!(sub.frame(), pmessage("n*", "news", "before"));

    let killed = Instant::now();
    setup.primary.kill9();
    let (switch, port) = setup.wait_switch(killed, Duration::from_secs(30));
    let new = format!("127.0.0.1:{port}");
    // Publish straight to the new primary until the subscriber hears it again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        let new = new.clone();
        move || {
            let mut c = Raw::connect(&new);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send(&["PUBLISH", "news", &format!("after{i}")]);
                c.frame();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let known = testkit::poll_until(Duration::from_secs(10), || {
        setup
            .proxy
            .node(&new)
            .filter(|n| n.role == "primary" && n.routable())
            .map(|_| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the proxy never applied the new primary\n{}",
            setup.proxy.log()
        )
    });
    let first = sub.frame();
    let heard = killed.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    let text = String::from_utf8_lossy(&first).into_owned();
    assert!(text.contains("after"), "{text}");
    println!(
        "kill -9 at 0; Sentinel named {new} at {switch:?}; the proxy routed to it by {known:?}; \
         the subscriber heard the new primary at {heard:?} ({:?} after the proxy knew it)",
        heard.saturating_sub(known)
    );
    assert!(
        heard.saturating_sub(known) < Duration::from_secs(1),
        "resubscribed {:?} after the new primary was known\n{}",
        heard.saturating_sub(known),
        setup.proxy.log()
    );
    // Both the channel and the pattern were subscribed again.
    let mut c = testkit::Client::connect(&new);
    assert_eq!(
        c.cmd(&["PUBSUB", "NUMSUB", "news"])
            .as_array()
            .map(|a| a[1].clone()),
        Some(testkit::Reply::Int(1))
    );
    assert_eq!(c.cmd(&["PUBSUB", "NUMPAT"]).as_int(), Some(1));
    let mut i = testkit::Client::connect(&addr);
    let info = i.cmd(&["INFO", "pools"]);
    let info = info.as_str().unwrap_or_default().to_string();
    let resubscribed: u64 = info
        .split("pubsub_resubscriptions=")
        .nth(1)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(resubscribed >= 1, "{info}");
}

/// Subscriber connections (`CLIENT LIST TYPE pubsub`) on `server`.
fn pubsub_connections(server: &RedisServer) -> usize {
    let mut c = testkit::Client::connect(&server.addr());
    let r = c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    r.as_str().map_or(0, |t| t.lines().count())
}

#[test]
fn pubsub_from_replica_reads_messages_replicated_from_the_primary() {
    for (from, on_primary) in [("primary", true), ("replica", false)] {
        let (primary, replicas) = ha::replica_set(1);
        let body = ha::short_form(
            &primary.addr(),
            &[replicas[0].addr()],
            &format!(
                "{}  read_policy: replica\n  pubsub_from: {from}\n",
                ha::FAST_CHECKS
            ),
        );
        let proxy = ha::HaProxy::start(&body);
        proxy.wait_up(
            &[primary.addr(), replicas[0].addr()],
            Duration::from_secs(10),
        );
        let mut sub = Raw::connect(&proxy.addr());
        sub.send(&["SUBSCRIBE", "news"]);
        sub.frame();
        let (there, not) = if on_primary {
            (&primary, &replicas[0])
        } else {
            (&replicas[0], &primary)
        };
        assert_eq!(pubsub_connections(there), 1, "pubsub_from: {from}");
        assert_eq!(pubsub_connections(not), 0, "pubsub_from: {from}");
        let mut p = Raw::connect(&proxy.addr());
        p.send(&["PUBLISH", "news", from]);
        p.frame();
        assert_eq!(sub.frame(), message("message", "news", from));
    }
}

#[test]
fn a_broken_subscriber_connection_is_opened_again_and_resubscribed() {
    let env = Setup::new(1).workers(1).start();
    let mut sub = Raw::connect(&env.addr());
    sub.send(&["SUBSCRIBE", "news"]);
    sub.frame();
    sub.send(&["PSUBSCRIBE", "n*"]);
    sub.frame();
    let mut server = env.backend(0);
    assert_eq!(pubsub_connections(&env.redis[0]), 1);
    // The server drops rampart's subscriber connection.
    let killed = server.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.as_int(), Some(1), "{killed:?}");
    testkit::wait_until(Duration::from_secs(5), "resubscribed", || {
        server.cmd(&["PUBSUB", "NUMPAT"]).as_int() == Some(1)
            && server
                .cmd(&["PUBSUB", "CHANNELS"])
                .as_array()
                .map(<[_]>::len)
                == Some(1)
    });
    let mut p = env.client();
    assert_eq!(p.cmd(&["PUBLISH", "news", "again"]).as_int(), Some(2));
    assert_eq!(sub.frame(), message("message", "news", "again"));
    assert_eq!(sub.frame(), pmessage("n*", "news", "again"));
    let info = p.cmd(&["INFO", "pools"]);
    assert!(
        info.as_str()
            .is_some_and(|t| t.contains("pubsub_resubscriptions=1,")),
        "{info:?}"
    );
}

#[test]
fn a_frozen_server_does_not_hold_a_subscribe_reply_forever() {
    let env = Setup::new(1).workers(1).option("timeout", 300).start();
    let mut a = Raw::connect(&env.addr());
    a.send(&["SUBSCRIBE", "a"]);
    a.frame();
    testkit::send_signal(env.redis[0].pid(), "STOP");
    // The server takes nothing now: the confirmation of `b` never comes. The link gives up
    // on that connection after the pool timeout and the reply goes out.
    let mut b = Raw::connect(&env.addr());
    b.send(&["SUBSCRIBE", "b"]);
    let reply = b.try_frame(Duration::from_secs(10));
    testkit::send_signal(env.redis[0].pid(), "CONT");
    assert_eq!(
        reply.as_deref(),
        Some(&b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:1\r\n"[..])
    );
    // Once the server is back, both are subscribed on a new connection.
    let mut p = env.client();
    testkit::wait_until(Duration::from_secs(10), "resubscribed", || {
        p.cmd(&["PUBSUB", "NUMSUB", "a", "b"])
            == testkit::Reply::Array(Some(vec![
                testkit::Reply::bulk("a"),
                testkit::Reply::Int(1),
                testkit::Reply::bulk("b"),
                testkit::Reply::Int(1),
            ]))
    });
    assert_eq!(p.cmd(&["PUBLISH", "b", "back"]).as_int(), Some(1));
    assert_eq!(b.frame(), message("message", "b", "back"));
}

#[test]
fn publish_runs_in_a_transaction_on_its_channels_shard() {
    let env = Setup::new(3).start();
    let mut sub = Raw::connect(&env.addr());
    sub.send(&["SUBSCRIBE", "meta{t}"]);
    sub.frame();
    // A result stored and announced in one MULTI, the channel named as the key.
    let mut c = Raw::connect(&env.addr());
    for cmd in [
        &["MULTI"][..],
        &["SET", "meta{t}", "done"],
        &["PUBLISH", "meta{t}", "done"],
        &["SPUBLISH", "meta{t}", "s"],
    ] {
        c.send(cmd);
        c.frame();
    }
    c.send(&["EXEC"]);
    assert_eq!(c.frame(), b"*3\r\n+OK\r\n:1\r\n:0\r\n".to_vec());
    assert_eq!(sub.frame(), message("message", "meta{t}", "done"));
    let mut p = env.client();
    assert_eq!(p.cmd(&["GET", "meta{t}"]), testkit::Reply::bulk("done"));
}

#[test]
fn an_unsubscribe_is_confirmed_and_keeps_the_subscriber_connection() {
    let env = Setup::new(1).workers(1).option("timeout", 300).start();
    let mut sub = Raw::connect(&env.addr());
    sub.send(&["SUBSCRIBE", "stays", "goes"]);
    sub.frame();
    sub.frame();
    sub.send(&["UNSUBSCRIBE", "goes"]);
    sub.frame();
    let mut server = env.backend(0);
    let id = |server: &mut testkit::Client| {
        let list = server.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        list.as_str()
            .unwrap_or_default()
            .split(' ')
            .next()
            .map(str::to_string)
    };
    let before = id(&mut server);
    assert!(before.is_some());
    // Well past the pool timeout and several checks of the link: an unconfirmed
    // unsubscribe would have made it drop the connection and subscribe again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        id(&mut server),
        before,
        "the subscriber connection was replaced"
    );
    let mut p = env.client();
    assert_eq!(p.cmd(&["PUBLISH", "stays", "x"]).as_int(), Some(1));
    assert_eq!(sub.frame(), message("message", "stays", "x"));
    let info = p.cmd(&["INFO", "pools"]);
    assert!(
        info.as_str()
            .is_some_and(|t| t.contains("pubsub_resubscriptions=0,")),
        "{info:?}"
    );
}

#[test]
fn subscriptions_survive_a_reload_on_the_same_connection() {
    let env = Setup::new(1)
        .workers(1)
        .option("timeout", 1000)
        .env("RAMPART_LOG", "info")
        .start();
    let mut old = Raw::connect(&env.addr());
    old.send(&["SUBSCRIBE", "news"]);
    old.frame();
    let path = env.proxy.dir().join("x.yml");
    std::fs::write(&path, env.yaml.replace("timeout: 1000", "timeout: 900")).unwrap();
    testkit::send_signal(env.proxy.pid(), "HUP");
    testkit::wait_until(Duration::from_secs(10), "the reload", || {
        env.proxy_log().contains("timeout 1000ms -> 900ms")
    });
    // A session that starts after the reload joins the same subscription.
    let mut new = Raw::connect(&env.addr());
    new.send(&["SUBSCRIBE", "news"]);
    new.frame();
    assert_eq!(pubsub_connections(&env.redis[0]), 1);
    let mut p = env.client();
    assert_eq!(p.cmd(&["PUBLISH", "news", "after"]).as_int(), Some(1));
    assert_eq!(old.frame(), message("message", "news", "after"));
    assert_eq!(new.frame(), message("message", "news", "after"));
}

#[test]
fn a_pattern_bomb_is_answered_and_leaves_other_clients_alone() {
    let env = Setup::new(2).start();
    // Exponential for a naive glob matcher: rampart matches nothing itself (the server names
    // the pattern of each pmessage) and Redis bounds its own matching.
    let bomb = format!("{}b", "*a".repeat(200));
    let mut sub = Raw::connect(&env.addr());
    sub.send(&["PSUBSCRIBE", &bomb]);
    assert!(sub.frame().ends_with(b":1\r\n"));
    let mut other = Raw::connect(&env.addr());
    other.send(&["SUBSCRIBE", "plain"]);
    other.frame();
    let mut p = env.client();
    let channel = "a".repeat(5000);
    assert_eq!(p.cmd(&["PUBLISH", &channel, "x"]).as_int(), Some(0));
    assert_eq!(p.cmd(&["PUBLISH", "plain", "y"]).as_int(), Some(1));
    assert_eq!(other.frame(), message("message", "plain", "y"));
    assert!(sub.drain(Duration::from_millis(200)).is_empty());
}

/// With a password on the servers and the pool, the workers' subscriber connections
/// authenticate like every other connection: a subscriber hears what another client
/// publishes, on every shard, and WAIT (which publishes on a connection of its own) answers.
#[test]
fn subscriptions_and_wait_work_with_a_password() {
    let env = Setup::new(2).password("s3cret").start();
    let mut sub = env.client();
    assert_eq!(sub.cmd(&["AUTH", "s3cret"]), testkit::Reply::ok());
    sub.set_read_timeout(Some(Duration::from_secs(10)));
    let mut publisher = env.client();
    assert_eq!(publisher.cmd(&["AUTH", "s3cret"]), testkit::Reply::ok());
    let names: Vec<String> = (0..40).map(|i| format!("ch{i}")).collect();
    let channels: Vec<&str> = names.iter().map(String::as_str).collect();
    for &ch in &channels {
        let r = sub.cmd(&["SUBSCRIBE", ch]);
        assert!(
            matches!(r, testkit::Reply::Array(Some(_))),
            "SUBSCRIBE {ch}: {r:?}"
        );
    }
    for &ch in &channels {
        assert_eq!(
            publisher.cmd(&["PUBLISH", ch, "hi"]),
            testkit::Reply::Int(1),
            "PUBLISH {ch}"
        );
        let m = sub.read_reply().unwrap();
        assert_eq!(m, testkit::Reply::bulks(["message", ch, "hi"]));
    }
    // The forty channels span both shards: each server holds some of them.
    for r in &env.redis {
        let mut direct = testkit::Client::connect(&r.addr());
        assert_eq!(direct.cmd(&["AUTH", "s3cret"]), testkit::Reply::ok());
        let held = direct.cmd(&["PUBSUB", "CHANNELS"]);
        assert!(
            matches!(&held, testkit::Reply::Array(Some(v)) if !v.is_empty()),
            "{held:?}"
        );
    }
    assert_eq!(publisher.cmd(&["WAIT", "0", "0"]), testkit::Reply::Int(0));
}

/// A reload that changes how server connections are opened (here `redis_db`; also
/// `redis_auth`, `redis_username`, `backend_tls`) replaces the subscriber connections too,
/// as it replaces request connections: none goes on under the old settings (a server
/// reached in plaintext after TLS was turned on, credentials that were rotated). The
/// subscriber keeps hearing its channel.
#[test]
fn a_reload_that_changes_connection_settings_replaces_subscriber_connections() {
    let env = Setup::new(1).workers(1).env("RAMPART_LOG", "info").start();
    let mut sub = Raw::connect(&env.addr());
    sub.send(&["SUBSCRIBE", "news"]);
    sub.frame();
    let dbs = || {
        let mut c = testkit::Client::connect(&env.redis[0].addr());
        let r = c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        r.as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split(' ')
                    .find(|f| f.starts_with("db="))
                    .map(str::to_string)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(dbs(), ["db=0"]);
    let path = env.proxy.dir().join("x.yml");
    let yaml = env.yaml.replace("  servers:", "  redis_db: 3\n  servers:");
    assert_ne!(yaml, env.yaml);
    std::fs::write(&path, yaml).unwrap();
    testkit::send_signal(env.proxy.pid(), "HUP");
    testkit::wait_until(Duration::from_secs(10), "the reload", || {
        env.proxy_log().contains("redis_db 0 -> 3")
    });
    testkit::wait_until(
        Duration::from_secs(5),
        "a subscriber connection opened as the reload says",
        || dbs() == ["db=3"],
    );
    let mut p = env.client();
    testkit::wait_until(
        Duration::from_secs(5),
        "the channel subscribed again",
        || p.cmd(&["PUBLISH", "news", "after"]).as_int() == Some(1),
    );
    assert_eq!(sub.frame(), message("message", "news", "after"));
}

/// A SUBSCRIBE the servers refuse (their user may not use the channel), with commands sent
/// in the same write after it: the client never entered subscribed mode, so they are answered
/// as in normal mode, byte for byte as Redis answers the same user (`+PONG`, not the
/// subscribed `pong` array; GET runs; a later SUBSCRIBE counts from 1), in RESP2.
#[test]
fn commands_pipelined_after_a_refused_subscribe_are_answered_in_normal_mode() {
    let env = Setup::new(1)
        .workers(1)
        .option("redis_auth", "pw")
        .option("redis_username", "app")
        .start();
    let set = env.redis[0].cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">pw",
        "~*",
        "+@all",
        "resetchannels",
        "&chan:*",
    ]);
    assert_eq!(set, testkit::Reply::ok());
    let script: &[&[&str]] = &[
        &["SUBSCRIBE", "other"],
        &["PING"],
        &["PING", "hi"],
        &["GET", "x"],
        &["SUBSCRIBE", "chan:a"],
        &["PING"],
    ];
    let run = |addr: &str, auth: &[&str]| {
        let mut c = Raw::connect(addr);
        c.send(auth);
        assert_eq!(c.frame(), b"+OK\r\n");
        c.send_all(script);
        show(&(0..script.len()).map(|_| c.frame()).collect::<Vec<_>>())
    };
    let mut up = env.client();
    testkit::wait_until(Duration::from_secs(5), "the node up", || {
        up.cmd(&["AUTH", "pw"]);
        up.cmd(&["SET", "up", "1"]) == testkit::Reply::ok()
    });
    let want = run(&env.redis[0].addr(), &["AUTH", "app", "pw"]);
    assert!(want.starts_with("-NOPERM"), "{want}");
    for _ in 0..3 {
        assert_eq!(run(&env.addr(), &["AUTH", "pw"]), want);
    }
}

/// The servers' user (`redis_username`) may use only `chan:*` channels, as a Redis 7 user
/// created without `allchannels` may use none. A SUBSCRIBE or PSUBSCRIBE the servers refuse
/// gets their error, as that client would get it from Redis directly, and subscribes nothing
/// (the client is not left in subscribed mode); the subscriber connection is not restarted
/// over it, and a client subscribed to an allowed channel keeps hearing it, across a
/// resubscription too.
#[test]
fn a_subscription_the_servers_refuse_is_an_error_and_others_keep_hearing() {
    let env = Setup::new(1)
        .workers(1)
        .option("redis_auth", "pw")
        .option("redis_username", "app")
        .option("timeout", 400)
        .env("RAMPART_LOG", "info")
        .start();
    let set = env.redis[0].cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">pw",
        "~*",
        "+@all",
        "resetchannels",
        "&chan:*",
    ]);
    assert_eq!(set, testkit::Reply::ok());
    let login = |c: &mut Raw| {
        c.send(&["AUTH", "pw"]);
        assert_eq!(c.frame(), b"+OK\r\n");
    };
    let mut keep = Raw::connect(&env.addr());
    login(&mut keep);
    testkit::wait_until(Duration::from_secs(5), "the node up", || {
        keep.send(&["SET", "up", "1"]);
        keep.frame() == b"+OK\r\n"
    });
    keep.send(&["SUBSCRIBE", "chan:a"]);
    assert_eq!(
        keep.frame(),
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nchan:a\r\n:1\r\n"
    );
    // What Redis answers the same user directly.
    let mut direct = Raw::connect(&env.redis[0].addr());
    direct.send(&["AUTH", "app", "pw"]);
    direct.frame();
    direct.send(&["SUBSCRIBE", "chan:b", "other"]);
    let refusal = direct.frame();
    assert!(
        refusal.starts_with(b"-NOPERM"),
        "{}",
        show(std::slice::from_ref(&refusal))
    );
    let mut bad = Raw::connect(&env.addr());
    login(&mut bad);
    let mut p = Raw::connect(&env.addr());
    login(&mut p);
    for (cmd, names) in [
        ("SUBSCRIBE", &["chan:b", "other"][..]),
        ("SUBSCRIBE", &["other"][..]),
        ("PSUBSCRIBE", &["*"][..]),
    ] {
        let mut words = vec![cmd];
        words.extend_from_slice(names);
        bad.send(&words);
        assert_eq!(
            show(&[bad.frame()]),
            show(std::slice::from_ref(&refusal)),
            "{words:?}"
        );
        // Nothing was subscribed, even what the server took of it (chan:b), before the
        // client sends anything else: not in subscribed mode, nothing more arrives.
        p.send(&["PUBLISH", "chan:b", "not for bad"]);
        p.frame();
        assert!(bad.drain(Duration::from_millis(100)).is_empty());
        bad.send(&["GET", "x"]);
        assert_eq!(bad.frame(), b"$-1\r\n", "{words:?}");
        assert!(bad.drain(Duration::from_millis(100)).is_empty());
    }
    // The literal pattern the user has is allowed, and counts from 1.
    bad.send(&["PSUBSCRIBE", "chan:*"]);
    assert_eq!(
        bad.frame(),
        b"*3\r\n$10\r\npsubscribe\r\n$6\r\nchan:*\r\n:1\r\n"
    );
    // (The worker's one subscriber connection holds the channel and the pattern: 2.)
    // Over three pool timeouts, the first subscriber hears every message.
    for i in 0..12 {
        p.send(&["PUBLISH", "chan:a", &i.to_string()]);
        assert_eq!(p.frame(), b":2\r\n");
        assert_eq!(keep.frame(), message("message", "chan:a", &i.to_string()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !env.proxy_log().contains("subscriber connection lost"),
        "{}",
        env.proxy_log()
    );
    // A new subscriber connection subscribes only what the server took.
    env.redis[0].cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    testkit::wait_until(Duration::from_secs(5), "resubscribed", || {
        env.proxy_log().contains("pub/sub: resubscribed")
    });
    p.send(&["PUBLISH", "chan:a", "after"]);
    assert_eq!(p.frame(), b":2\r\n");
    assert_eq!(keep.frame(), message("message", "chan:a", "after"));
    // The servers' user loses `chan:a` and the pattern (Redis closes the subscriber
    // connection): the clients holding them are closed, as Redis closes its own
    // subscribers then; a client of an allowed channel keeps hearing it.
    let mut stays = Raw::connect(&env.addr());
    login(&mut stays);
    stays.send(&["SUBSCRIBE", "chan:b"]);
    assert_eq!(
        stays.frame(),
        b"*3\r\n$9\r\nsubscribe\r\n$6\r\nchan:b\r\n:1\r\n"
    );
    env.redis[0].cmd(&["ACL", "SETUSER", "app", "resetchannels", "&chan:b"]);
    assert!(keep.closed(Duration::from_secs(10)), "chan:a's subscriber");
    assert!(bad.closed(Duration::from_secs(10)), "chan:*'s subscriber");
    p.send(&["PUBLISH", "chan:b", "still"]);
    assert_eq!(p.frame(), b":1\r\n");
    assert_eq!(stays.frame(), message("message", "chan:b", "still"));
}

/// The numbers of the messages `frames` carry (`<n>` bodies), and every frame that is not
/// such a message (an error, an unsubscribe, a reply the test did not ask for).
fn numbered(frames: &[Vec<u8>], resp3: bool) -> (Vec<u64>, Vec<String>) {
    let (mut nums, mut other) = (Vec::new(), Vec::new());
    for f in frames {
        let head = if resp3 { ">3\r\n" } else { "*3\r\n" };
        let text = String::from_utf8_lossy(f).into_owned();
        let n = text
            .strip_prefix(head)
            .and_then(|t| t.strip_prefix("$7\r\nmessage\r\n$4\r\nnews\r\n$"))
            .and_then(|t| t.split("\r\n").nth(1))
            .and_then(|b| b.parse().ok());
        match n {
            Some(n) => nums.push(n),
            None => other.push(text),
        }
    }
    (nums, other)
}

/// `RAMPART SWITCHOVER` while clients are subscribed and a client publishes through rampart
/// every millisecond: every subscriber (RESP2, and RESP3 sending ordinary commands between
/// the pushes) gets every message exactly once, in order, and never a frame it did not ask
/// for; every PUBLISH counts as many workers as before the switchover (the held ones reach
/// the new primary after each worker's subscriber connection subscribed there).
#[test]
fn a_switchover_while_subscribed_never_loses_repeats_or_reorders_a_message() {
    let s = ha::SentinelSetup::start("  failover_hold: 10s\n");
    let addr = s.proxy.addr();
    let mut sub2 = Raw::connect(&addr);
    sub2.send(&["SUBSCRIBE", "news"]);
    sub2.frame();
    let mut sub3 = Raw::connect(&addr);
    sub3.send(&["HELLO", "3"]);
    sub3.frame();
    sub3.send(&["SUBSCRIBE", "news"]);
    sub3.frame();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        let addr = addr.clone();
        move || {
            let mut c = Raw::connect(&addr);
            let mut replies = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send(&["PUBLISH", "news", &i.to_string()]);
                replies.push(c.frame());
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (i, replies)
        }
    });
    // The RESP3 subscriber asks something between the pushes all along.
    let asker = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        move || {
            let mut frames = Vec::new();
            let mut asked = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sub3.send(&["ECHO", "between"]);
                asked += 1;
                frames.extend(sub3.drain(Duration::from_millis(20)));
            }
            frames.extend(sub3.drain(Duration::from_millis(500)));
            (asked, frames)
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut admin = testkit::Client::connect(&addr);
    admin.set_read_timeout(Some(Duration::from_secs(25)));
    let t0 = Instant::now();
    let reply = admin.cmd(&["RAMPART", "SWITCHOVER", ha::MASTER]);
    assert!(
        matches!(&reply, testkit::Reply::Simple(m) if m.contains("switched to")),
        "{reply:?}\n{}",
        s.proxy.log()
    );
    let (_, port) = s.wait_switch(t0, Duration::from_secs(10));
    // Heard again on the new primary, published through rampart.
    let new = format!("127.0.0.1:{port}");
    testkit::wait_until(
        Duration::from_secs(10),
        "resubscribed on the new primary",
        || {
            let mut c = testkit::Client::connect(&new);
            c.cmd(&["PUBSUB", "NUMSUB", "news"])
                .as_array()
                .is_some_and(|a| a.get(1).and_then(testkit::Reply::as_int) >= Some(1))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (published, replies) = publisher.join().unwrap();
    let (asked, frames3) = asker.join().unwrap();
    let frames2 = sub2.drain(Duration::from_millis(500));
    let errors: Vec<String> = replies
        .iter()
        .filter(|r| r.first() != Some(&b':'))
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert!(errors.is_empty(), "PUBLISH failed: {errors:?}");
    // Before the switchover each worker holding a subscriber counted once.
    let full = replies[0].clone();
    for (name, frames, resp3) in [("RESP2", &frames2, false), ("RESP3", &frames3, true)] {
        let (nums, mut other) = numbered(frames, resp3);
        if resp3 {
            let echoes = other.iter().filter(|t| *t == "$7\r\nbetween\r\n").count();
            assert_eq!(echoes, asked, "{name}: ECHO replies");
            other.retain(|t| t != "$7\r\nbetween\r\n");
        }
        assert!(other.is_empty(), "{name}: unexpected frames {other:?}");
        assert!(
            nums.windows(2).all(|w| w[0] < w[1]),
            "{name}: a message repeated or out of order: {nums:?}"
        );
        assert_eq!(
            nums.last(),
            Some(&(published - 1)),
            "{name}: the last message"
        );
        // The PUBLISHes held by the switchover went to the new primary only once every
        // worker's subscriber connection had subscribed there: none was lost, and each was
        // counted by as many workers as before.
        let lost: Vec<(u64, &[u8])> = (0..published)
            .filter(|n| !nums.contains(n))
            .map(|n| (n, &replies[n as usize][..]))
            .collect();
        assert!(
            lost.is_empty(),
            "{name}: lost messages: {lost:?} of {published}"
        );
        println!("{name}: {} of {published} messages heard", nums.len());
    }
    let short: Vec<(usize, &Vec<u8>)> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| **r != full)
        .collect();
    assert!(
        short.is_empty(),
        "PUBLISH counted fewer subscribers than {:?}: {short:?}",
        String::from_utf8_lossy(&full)
    );
}

/// A server busy with a script answers `BUSY` to a subscription: the client that asked gets
/// that error, as from Redis directly, and holds nothing of its command. A subscription
/// the server refused only for now (a reload opened a new subscriber connection during the
/// script) stays with the client that holds it and is asked again: once the script is
/// killed, that client hears its channel.
#[test]
fn a_busy_server_refuses_a_subscription_for_now_and_its_holder_keeps_it() {
    let env = Setup::new(1)
        .workers(1)
        .redis_args(&["--busy-reply-threshold", "100"])
        .env("RAMPART_LOG", "info")
        .start();
    let mut keep = Raw::connect(&env.addr());
    keep.send(&["SUBSCRIBE", "news"]);
    keep.frame();
    let backend = env.redis[0].addr();
    let script = std::thread::spawn({
        let a = backend.clone();
        move || {
            let mut c = testkit::Client::connect(&a);
            c.set_read_timeout(Some(Duration::from_secs(60)));
            c.cmd(&["EVAL", "while true do end", "0"])
        }
    });
    testkit::wait_until(Duration::from_secs(5), "the server busy", || {
        let r = testkit::Client::connect(&backend).cmd(&["PING"]);
        matches!(r, testkit::Reply::Error(e) if e.starts_with("BUSY"))
    });
    let mut asker = Raw::connect(&env.addr());
    asker.send(&["SUBSCRIBE", "other"]);
    let r = String::from_utf8(asker.frame()).unwrap();
    assert!(r.starts_with("-BUSY"), "{r}");
    // A reload that changes how server connections are opened replaces the subscriber
    // connection while the script runs: its SUBSCRIBE is refused with BUSY.
    let path = env.proxy.dir().join("x.yml");
    let yaml = env
        .yaml
        .replace("  servers:", "  server_connections: 2\n  servers:");
    std::fs::write(&path, yaml).unwrap();
    testkit::send_signal(env.proxy.pid(), "HUP");
    testkit::wait_until(Duration::from_secs(10), "the refusal", || {
        env.proxy_log()
            .contains("pub/sub: server refused news: BUSY")
    });
    assert!(
        !keep.closed(Duration::from_millis(500)),
        "the holder was closed"
    );
    assert_eq!(
        testkit::Client::connect(&backend).cmd(&["SCRIPT", "KILL"]),
        testkit::Reply::ok()
    );
    script.join().unwrap();
    let mut p = env.client();
    testkit::wait_until(Duration::from_secs(5), "news subscribed again", || {
        p.cmd(&["PUBLISH", "news", "back"]).as_int() == Some(1)
    });
    assert_eq!(keep.frame(), message("message", "news", "back"));
    // The refused channel is asked of the server anew by the next client that wants it
    // (while the client refused, idle since, holds nothing of it).
    let mut later = Raw::connect(&env.addr());
    later.send(&["SUBSCRIBE", "other"]);
    later.frame();
    assert_eq!(p.cmd(&["PUBLISH", "other", "m"]).as_int(), Some(1));
    assert_eq!(later.frame(), message("message", "other", "m"));
    // Not in subscribed mode: PING answers as to any client, and nothing came to it.
    asker.send(&["PING"]);
    assert_eq!(asker.frame(), b"+PONG\r\n");
}

/// `distribution: random` places each key on any server, so a channel has no shard of its
/// own: it is subscribed on every shard, and each PUBLISH (sent to any one) is heard once.
#[test]
fn with_random_distribution_every_message_is_heard_once() {
    let redis: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let port = testkit::free_port();
    let yaml = Setup::new(3)
        .yaml(port, &redis)
        .replace("distribution: ketama", "distribution: random");
    let _proxy = common::start_rampart(&yaml, port, 1);
    let addr = format!("127.0.0.1:{port}");
    let mut sub = Raw::connect(&addr);
    sub.send(&["SUBSCRIBE", "news"]);
    sub.frame();
    sub.send(&["SSUBSCRIBE", "shard-news"]);
    sub.frame();
    let mut p = Raw::connect(&addr);
    for i in 0..30 {
        let body = i.to_string();
        p.send(&["PUBLISH", "news", &body]);
        assert_eq!(p.frame(), b":1\r\n", "PUBLISH {i}");
        assert_eq!(sub.frame(), message("message", "news", &body));
        p.send(&["SPUBLISH", "shard-news", &body]);
        assert_eq!(p.frame(), b":1\r\n", "SPUBLISH {i}");
        assert_eq!(sub.frame(), message("smessage", "shard-news", &body));
    }
    assert!(sub.drain(Duration::from_millis(200)).is_empty());
    p.send(&["PUBSUB", "NUMSUB", "news"]);
    assert_eq!(p.frame(), b"*2\r\n$4\r\nnews\r\n:1\r\n");
}

/// With `auto_eject_hosts`, an ejected server's keys, and so its channels, live on another
/// server until it is put back: a subscription follows the ring both ways. A client
/// subscribed before the ejection hears what is published during it, and one that
/// subscribed during it hears what is published once the server is back.
#[test]
fn subscriptions_follow_the_ring_when_a_server_is_ejected_and_put_back() {
    let env = Setup::new(2)
        .workers(1)
        .option("timeout", 300)
        .option("auto_eject_hosts", "true")
        .option("server_failure_limit", 1)
        .option("server_retry_timeout", 2000)
        .start();
    let ch = env.key_per_shard("ch")[0].clone();
    env.redis[0].cmd(&["SET", &ch, "on shard 0"]);
    let mut before = Raw::connect(&env.addr());
    before.send(&["SUBSCRIBE", &ch]);
    before.frame();
    let mut c = env.client();
    // Frozen: the request times out and the server is ejected.
    env.redis[0].stop();
    assert!(matches!(c.cmd(&["GET", &ch]), testkit::Reply::Error(_)));
    assert_eq!(c.cmd(&["GET", &ch]), testkit::Reply::nil(), "not ejected");
    let mut during = Raw::connect(&env.addr());
    during.send(&["SUBSCRIBE", &ch]);
    during.frame();
    // Published on the other server now: the client subscribed before hears it.
    testkit::wait_until(Duration::from_secs(5), "heard during the ejection", || {
        c.cmd(&["PUBLISH", &ch, "during"]).as_int() == Some(1)
    });
    assert_eq!(during.frame(), message("message", &ch, "during"));
    assert_eq!(before.frame(), message("message", &ch, "during"));
    before.drain(Duration::from_millis(100));
    during.drain(Duration::from_millis(100));
    // Put back after server_retry_timeout: the channel is published there again.
    env.redis[0].cont();
    testkit::wait_until(Duration::from_secs(10), "the server put back", || {
        c.cmd(&["GET", &ch]) == testkit::Reply::bulk("on shard 0")
    });
    testkit::wait_until(Duration::from_secs(5), "heard after the return", || {
        c.cmd(&["PUBLISH", &ch, "back"]).as_int() == Some(1)
    });
    assert_eq!(during.frame(), message("message", &ch, "back"));
    assert_eq!(before.frame(), message("message", &ch, "back"));
}

/// A client that publishes `PUBLISH news <i>` through `addr` every millisecond, `i` counting
/// from 0, until its flag is set; the thread returns every reply, in order.
fn publish_every_ms(
    addr: &str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Vec<Vec<u8>>>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        let addr = addr.to_string();
        move || {
            let mut c = Raw::connect(&addr);
            let mut replies = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send(&["PUBLISH", "news", &i.to_string()]);
                replies.push(c.frame());
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            replies
        }
    });
    (stop, publisher)
}

/// Stop [`publish_every_ms`]'s client, read what `sub` (subscribed to `news`) heard, and
/// check that every PUBLISH answered was answered 1 and heard (one that failed is allowed),
/// and that more than 100 in a row were answered 1 at the end. `log`: what to show on failure.
fn check_every_answered_publish_was_heard(
    (stop, publisher): (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<Vec<Vec<u8>>>,
    ),
    sub: &mut Raw,
    log: impl Fn() -> String,
) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replies = publisher.join().unwrap();
    let (nums, other) = numbered(&sub.drain(Duration::from_millis(500)), false);
    assert!(other.is_empty(), "unexpected frames {other:?}");
    let unheard: Vec<(usize, String)> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| r.first() == Some(&b':'))
        .filter(|(i, r)| r.as_slice() != b":1\r\n" || !nums.contains(&(*i as u64)))
        .map(|(i, r)| (i, String::from_utf8_lossy(r).into_owned()))
        .collect();
    assert!(
        unheard.is_empty(),
        "PUBLISH answered but not heard: {:?} of {}\n{}",
        &unheard[..unheard.len().min(10)],
        replies.len(),
        log()
    );
    let after = replies
        .iter()
        .rev()
        .take_while(|r| r.as_slice() == b":1\r\n")
        .count();
    assert!(after > 100, "too few publishes after the failover: {after}");
    println!(
        "{} publishes, {} heard, {} failed",
        replies.len(),
        nums.len(),
        replies.iter().filter(|r| r.first() == Some(&b'-')).count()
    );
}

/// `FAILOVER` on the primary of a `primary:`/`replicas:` pool (rampart's health checks see
/// the roles swap) while a client publishes through rampart every millisecond: no PUBLISH is
/// answered without the subscriber hearing it (one may fail: the old primary pauses writes
/// while it hands over, past the pool timeout on a loaded machine). Writes wait in the
/// failover hold until the subscriber connection has subscribed on the new primary, and the
/// connection on the old one first reads what that node still delivered.
#[test]
fn a_replica_set_failover_while_publishing_never_answers_a_publish_nobody_heard() {
    let (primary, replicas) = ha::replica_set(1);
    replicas[0].wait_replication_up(Duration::from_secs(10));
    let body = ha::short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        &format!("{}  failover_hold: 5s\n", ha::FAST_CHECKS),
    );
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(5),
    );
    let addr = proxy.addr();
    let mut sub = Raw::connect(&addr);
    sub.send(&["SUBSCRIBE", "news"]);
    sub.frame();
    let publisher = publish_every_ms(&addr);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        primary.cmd(&["FAILOVER"]),
        testkit::Reply::ok(),
        "FAILOVER on the primary"
    );
    let new = replicas[0].addr();
    testkit::poll_until(Duration::from_secs(10), || {
        proxy
            .node(&new)
            .filter(|n| n.role == "primary" && n.routable())
    })
    .unwrap_or_else(|| panic!("the proxy never applied the new primary\n{}", proxy.log()));
    std::thread::sleep(Duration::from_millis(500));
    check_every_answered_publish_was_heard(publisher, &mut sub, || {
        proxy.log_lines(&["primary", "subscri"]).join("\n")
    });
}

/// The primary killed (Sentinel fails over) while a client publishes through rampart every
/// millisecond: a PUBLISH either fails (its primary was dead and the failover not yet known)
/// or is heard by the subscriber. None is answered 0: the writes held by the failover reach
/// the new primary once the subscriber connection subscribed there.
#[test]
fn a_sentinel_failover_while_publishing_never_answers_a_publish_nobody_heard() {
    let mut s = ha::SentinelSetup::start("  failover_hold: 10s\n");
    let addr = s.proxy.addr();
    let mut sub = Raw::connect(&addr);
    sub.send(&["SUBSCRIBE", "news"]);
    sub.frame();
    let publisher = publish_every_ms(&addr);
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    s.primary.kill9();
    let (_, port) = s.wait_switch(killed, Duration::from_secs(30));
    let new = format!("127.0.0.1:{port}");
    testkit::poll_until(Duration::from_secs(10), || {
        s.proxy
            .node(&new)
            .filter(|n| n.role == "primary" && n.routable())
    })
    .unwrap_or_else(|| panic!("the proxy never applied the new primary\n{}", s.proxy.log()));
    std::thread::sleep(Duration::from_millis(500));
    check_every_answered_publish_was_heard(publisher, &mut sub, || s.proxy.log());
}
