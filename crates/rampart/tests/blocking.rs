//! Blocking commands through rampart: each runs on a dedicated server connection to its
//! shard's primary, never stalls other clients, is not cut short by the pool timeout, is
//! bounded by `max_dedicated_connections`, and a client that leaves while blocked swallows
//! nothing.

mod common;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

use std::time::{Duration, Instant};

use common::{assert_err_contains, Setup};
use testkit::{wait_until, Client, Reply};

/// `blocked_clients` of a backend's `INFO clients`.
fn blocked_on(env: &common::Env, i: usize) -> i64 {
    let info = env.redis[i].info("clients");
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn wait_blocked(env: &common::Env, i: usize, n: i64) {
    wait_until(
        Duration::from_secs(10),
        "clients blocked on the server",
        || blocked_on(env, i) == n,
    );
}

#[test]
fn blpop_waits_for_a_push_from_another_client() {
    let env = Setup::new(1).start();
    let mut a = env.client();
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_blocked(&env, 0, 1);
    let mut b = env.client();
    assert_eq!(b.cmd(&["RPUSH", "q", "job"]), Reply::Int(1));
    assert_eq!(a.read_reply().unwrap(), Reply::bulks(["q", "job"]));
    // The same session goes on as usual.
    assert_eq!(a.cmd(&["SET", "k", "v"]), Reply::ok());
}

#[test]
fn every_blocking_command_works_as_on_redis() {
    let env = Setup::new(1).start();
    let mut c = env.client();
    c.cmd(&["RPUSH", "l", "a", "b"]);
    c.cmd(&["ZADD", "z", "1", "m1", "2", "m2"]);
    c.cmd(&["XADD", "s", "1-1", "f", "v"]);
    assert_eq!(c.cmd(&["BRPOP", "l", "1"]), Reply::bulks(["l", "b"]));
    assert_eq!(c.cmd(&["BRPOPLPUSH", "l", "l2", "1"]), Reply::bulk("a"));
    assert_eq!(
        c.cmd(&["BLMOVE", "l2", "l", "LEFT", "RIGHT", "1"]),
        Reply::bulk("a")
    );
    let r = c.cmd(&["BLMPOP", "1", "1", "l", "LEFT"]);
    assert_eq!(
        r,
        Reply::Array(Some(vec![Reply::bulk("l"), Reply::bulks(["a"])]))
    );
    assert_eq!(
        c.cmd(&["BZPOPMIN", "z", "1"]),
        Reply::bulks(["z", "m1", "1"])
    );
    assert_eq!(
        c.cmd(&["BZPOPMAX", "z", "1"]),
        Reply::bulks(["z", "m2", "2"])
    );
    assert_eq!(
        c.cmd(&["BZMPOP", "0.1", "1", "z", "MIN"]),
        Reply::Array(None)
    );
    let r = c.cmd(&["XREAD", "BLOCK", "100", "STREAMS", "s", "0"]);
    assert!(r.as_array().is_some_and(|a| a.len() == 1), "{r:?}");
    assert_eq!(c.cmd(&["XGROUP", "CREATE", "s", "g", "0"]), Reply::ok());
    let r = c.cmd(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "100",
        "STREAMS",
        "s",
        ">",
    ]);
    assert!(r.as_array().is_some_and(|a| a.len() == 1), "{r:?}");
    assert_eq!(
        c.cmd(&["XREAD", "BLOCK", "50", "STREAMS", "s", "$"]),
        Reply::Array(None)
    );
    // Redis' own error for a bad timeout.
    assert_err_contains(&c.cmd(&["BLPOP", "l", "-1"]), &["timeout is negative"]);
}

#[test]
fn the_pool_timeout_does_not_cut_a_block_short() {
    // Sidekiq's fetch: BRPOP over several queues with 2 s; RQ's: BLPOP.
    let env = Setup::new(1).option("timeout", 300).start();
    let mut c = env.client();
    let t = Instant::now();
    assert_eq!(
        c.cmd(&["BRPOP", "queue:critical", "queue:default", "2"]),
        Reply::Array(None)
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    let t = Instant::now();
    assert_eq!(
        c.cmd(&["BLPOP", "rq:queue:default", "1"]),
        Reply::Array(None)
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    // A timeout of 0 blocks past the pool timeout until data arrives.
    c.send_raw(&testkit::encode_command(&[
        "BLPOP",
        "rq:queue:default",
        "0",
    ]))
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        env.client().cmd(&["LPUSH", "rq:queue:default", "j"]),
        Reply::Int(1)
    );
    assert_eq!(
        c.read_reply().unwrap(),
        Reply::bulks(["rq:queue:default", "j"])
    );
}

#[test]
fn a_client_that_leaves_while_blocked_swallows_nothing() {
    let env = Setup::new(1).start();
    let mut a = env.client();
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_blocked(&env, 0, 1);
    drop(a);
    // Its dedicated connection is closed: the server has no blocked client left.
    wait_blocked(&env, 0, 0);
    let mut b = env.client();
    assert_eq!(b.cmd(&["RPUSH", "q", "x"]), Reply::Int(1));
    assert_eq!(b.cmd(&["LLEN", "q"]), Reply::Int(1));
}

/// A client that closes its side of the connection (shuts down writing) while blocked is
/// gone, as Redis frees it: the replies before the blocking command reach it, the command
/// itself gets no reply (no error a job-queue client would report while closing its worker),
/// and the commands it sent after it never run. Compared with redis-server byte for byte.
#[test]
fn a_client_that_closes_its_side_while_blocked_gets_no_reply_and_runs_nothing_more() {
    let env = Setup::new(1).start();
    let direct = common::reference();
    for (name, addr, server) in [
        ("redis-server", direct.addr(), direct.addr()),
        ("rampart", env.addr(), env.redis[0].addr()),
    ] {
        for blocking in [
            "BLPOP q 0",
            "BZPOPMIN z 0",
            "XREAD BLOCK 0 STREAMS s $",
            "WAIT 5 0",
        ] {
            let mut c = Client::connect(&addr);
            c.set_read_timeout(Some(Duration::from_secs(5)));
            c.send_raw(format!("PING\r\n{blocking}\r\nSET after 1\r\n").as_bytes())
                .expect("send");
            assert_eq!(c.read_reply().expect("PONG"), Reply::simple("PONG"));
            std::thread::sleep(Duration::from_millis(200));
            c.shutdown_write().expect("shutdown");
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut c.stream(), &mut rest)
                .unwrap_or_else(|e| panic!("{name} {blocking}: not closed: {e}"));
            assert_eq!(
                String::from_utf8_lossy(&rest),
                "",
                "{name} {blocking}: bytes after PONG"
            );
            let mut s = Client::connect(&server);
            assert_eq!(
                s.cmd(&["EXISTS", "after"]),
                Reply::Int(0),
                "{name} {blocking}: a command after the blocking one ran"
            );
        }
    }
}

#[test]
fn blocked_clients_do_not_stall_the_others() {
    let env = Setup::new(2).start();
    let blocked: Vec<Client> = (0..200)
        .map(|i| {
            let mut c = env.client();
            c.send_raw(&testkit::encode_command(&[
                "BLPOP",
                &format!("wait{i}"),
                "0",
            ]))
            .unwrap();
            c
        })
        .collect();
    wait_until(Duration::from_secs(20), "200 clients blocked", || {
        blocked_on(&env, 0) + blocked_on(&env, 1) == 200
    });
    let mut c = env.client();
    let mut worst = Duration::ZERO;
    for i in 0..500 {
        let key = format!("k{i}");
        let t = Instant::now();
        assert_eq!(c.cmd(&["SET", &key, "v"]), Reply::ok());
        assert_eq!(c.cmd(&["GET", &key]), Reply::bulk("v"));
        worst = worst.max(t.elapsed());
    }
    println!("200 clients blocked: slowest of 500 SET+GET round trips {worst:?}");
    // Far below the 1 s pool timeout the shared connection would hit if it were blocked.
    assert!(
        worst < Duration::from_millis(200),
        "slowest SET+GET took {worst:?}"
    );
    drop(blocked);
    wait_until(Duration::from_secs(10), "blocked clients gone", || {
        blocked_on(&env, 0) + blocked_on(&env, 1) == 0
    });
}

#[test]
fn dedicated_connections_are_bounded_per_pool_and_worker() {
    let env = Setup::new(1)
        .workers(1)
        .option("max_dedicated_connections", 2)
        .start();
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = env.client();
        c.send_raw(&testkit::encode_command(&["BLPOP", &format!("b{i}"), "0"]))
            .unwrap();
        held.push(c);
    }
    wait_blocked(&env, 0, 2);
    let mut third = env.client();
    assert_err_contains(
        &third.cmd(&["BLPOP", "b3", "0"]),
        &[
            "max_dedicated_connections (2)",
            "raise max_dedicated_connections",
        ],
    );
    // Other clients, and this one, are untouched.
    assert_eq!(third.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(env.client().cmd(&["GET", "k"]), Reply::bulk("v"));
    // A connection freed by a complete reply serves the next one.
    assert_eq!(third.cmd(&["RPUSH", "b0", "x"]), Reply::Int(1));
    assert_eq!(held[0].read_reply().unwrap(), Reply::bulks(["b0", "x"]));
    assert_eq!(third.cmd(&["BLPOP", "b0", "0.1"]), Reply::Array(None));
}

#[test]
fn multi_key_forms_need_one_shard() {
    let env = Setup::new(2).hash_tag().start();
    let keys = env.key_per_shard("q");
    let mut c = env.client();
    assert_err_contains(
        &c.cmd(&["BLPOP", &keys[0], &keys[1], "1"]),
        &["different shards", "hash tag"],
    );
    assert_eq!(c.cmd(&["BLPOP", "{q}a", "{q}b", "0.1"]), Reply::Array(None));
}

#[test]
fn a_pipeline_runs_in_order_around_a_blocking_command() {
    let env = Setup::new(1).start();
    let mut c = env.client();
    // The push before BLPOP is seen by it; the GET after it waits for it, as on Redis.
    let r = c.pipeline(&[
        vec!["RPUSH", "p", "a"],
        vec!["BLPOP", "p", "0"],
        vec!["SET", "after", "1"],
        vec!["BLPOP", "p", "0.2"],
        vec!["GET", "after"],
    ]);
    assert_eq!(
        r,
        vec![
            Reply::Int(1),
            Reply::bulks(["p", "a"]),
            Reply::ok(),
            Reply::Array(None),
            Reply::bulk("1"),
        ]
    );
}

/// A client blocked on a server that dies is closed, as that server's own clients are (and
/// a TCP proxy's): client libraries reconnect and block again on a closed connection, where
/// an error reply ends an RQ, Celery or ioredis worker loop. The replies before the blocking
/// command still arrive.
#[test]
fn a_blocked_command_whose_node_dies_closes_its_client_as_the_server_would() {
    let mut env = Setup::new(1).start();
    let mut a = env.client();
    a.send_raw(&testkit::encode_command(&["SET", "before", "1"]))
        .unwrap();
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_blocked(&env, 0, 1);
    env.redis[0].kill9();
    a.set_read_timeout(Some(Duration::from_secs(5)));
    assert_eq!(a.read_reply().unwrap(), Reply::ok(), "the reply before it");
    a.assert_closed(Duration::from_secs(10));
    env.redis[0].restart();
    // A new connection blocks on the server again (until it is back, each is closed).
    wait_until(Duration::from_secs(10), "server back", || {
        env.client().try_cmd(&["BLPOP", "q", "0.1"]).ok() == Some(Reply::Array(None))
    });
}

/// A blocking command sent while its server is down closes its client too, every time, as
/// a TCP proxy in front of a dead server does: an RQ or Celery worker that reconnects keeps
/// reconnecting until the server is back (an error reply ended it), then blocks again.
#[test]
fn a_blocking_command_to_a_server_that_is_down_closes_its_client() {
    let mut env = Setup::new(1).start();
    env.redis[0].kill9();
    for _ in 0..3 {
        let mut c = env.client();
        c.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
            .unwrap();
        c.assert_closed(Duration::from_secs(10));
    }
    env.redis[0].restart();
    wait_until(Duration::from_secs(10), "server back", || {
        env.client().try_cmd(&["BLPOP", "q", "0.1"]).ok() == Some(Reply::Array(None))
    });
}

/// A planned switchover (`RAMPART SWITCHOVER`) of a replica set whose servers need a password
/// closes the client blocked on the old primary, as for a node that went away, where Redis
/// itself answers `UNBLOCKED ... instance state changed` (which ends RQ, ioredis and redis-py
/// XREAD loops); the client's next BLPOP blocks on the new primary and gets the push.
/// `CLIENT UNBLOCK ... ERROR`'s own `UNBLOCKED` still reaches its client (tested above).
#[test]
fn a_planned_switchover_closes_the_client_blocked_on_the_old_primary() {
    const PW: &str = "blocking-pw";
    let (primary, replicas, proxy) = protected_replica_set(PW);
    let addr = proxy.addr();
    let authed = || {
        let mut c = Client::connect(&addr);
        assert_eq!(c.cmd(&["AUTH", PW]), Reply::ok());
        c
    };
    let blocked_on = |s: &testkit::RedisServer| {
        let mut d = Client::connect(&s.addr());
        assert_eq!(d.cmd(&["AUTH", PW]), Reply::ok());
        matches!(d.cmd(&["INFO", "clients"]), Reply::Bulk(Some(b)) if String::from_utf8_lossy(&b).contains("blocked_clients:1"))
    };
    // Both nodes in rotation (a switchover needs a healthy replica).
    wait_until(Duration::from_secs(15), "the replica in rotation", || {
        let mut c = authed();
        matches!(c.cmd(&["INFO", "pools"]), Reply::Bulk(Some(b))
            if String::from_utf8_lossy(&b).lines().filter(|l| l.contains("up=1")).count() >= 2)
    });
    let mut a = authed();
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "BLPOP blocked on the primary",
        || blocked_on(&primary),
    );
    let mut admin = authed();
    admin.set_read_timeout(Some(Duration::from_secs(30)));
    let r = admin.cmd(&["RAMPART", "SWITCHOVER", ha::POOL]);
    assert!(
        matches!(&r, Reply::Simple(m) if m.contains("switched to")),
        "{r:?}\nlog:\n{}",
        proxy.log()
    );
    // Closed, not UNBLOCKED.
    a.assert_closed(Duration::from_secs(10));
    let mut b = authed();
    b.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "BLPOP blocked on the new primary",
        || blocked_on(&replicas[0]),
    );
    assert_eq!(authed().cmd(&["RPUSH", "q", "x"]), Reply::Int(1));
    b.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(
        b.read_reply().expect("the BLPOP's reply"),
        Reply::Array(Some(vec![Reply::bulk("q"), Reply::bulk("x")]))
    );
    assert!(
        proxy
            .log()
            .contains("stopped being a primary while the command waited"),
        "the close is logged:\n{}",
        proxy.log()
    );
}

/// A Sentinel failover ends a blocked command once, never by a silent resend: its client is
/// closed, whether the connection was switched away from first or Redis' own `UNBLOCKED`
/// came first (the old primary turning replica unblocks it); the next blocks on the new
/// primary.
#[test]
fn a_failover_ends_blocked_commands_once_and_the_next_goes_to_the_new_primary() {
    let s = ha::SentinelSetup::start("");
    let mut a = Client::connect(&s.proxy.addr());
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "BLPOP blocked on the primary",
        || s.primary.info("clients").contains("blocked_clients:1"),
    );
    let since = Instant::now();
    let mut sentinel = Client::connect(&s.sentinels[0].addr());
    assert_eq!(
        sentinel.cmd(&["SENTINEL", "FAILOVER", ha::MASTER]),
        Reply::ok()
    );
    let (_, port) = s.wait_switch(since, Duration::from_secs(20));
    // A closed connection: no error reply, never a silent resend to the new primary.
    a.assert_closed(Duration::from_secs(20));
    a = Client::connect(&s.proxy.addr());
    let new = format!("127.0.0.1:{port}");
    wait_until(
        Duration::from_secs(10),
        "rampart routes to the new primary",
        || {
            s.proxy
                .node(&new)
                .is_some_and(|n| n.role == "primary" && n.routable())
        },
    );
    let mut b = Client::connect(&s.proxy.addr());
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "BLPOP blocked on the new primary",
        || {
            s.node_on(port)
                .info("clients")
                .contains("blocked_clients:1")
        },
    );
    assert_eq!(b.cmd(&["RPUSH", "q", "after"]), Reply::Int(1));
    assert_eq!(a.read_reply().unwrap(), Reply::bulks(["q", "after"]));
}

/// While a Sentinel failover holds a shard's writes, a blocking command or a WATCH that
/// arrives waits for the new primary, as a held write does, instead of failing with "no
/// primary available": a client looping `BLPOP q 0.05` and `WATCH k` / `UNWATCH` through the
/// whole failover of a live primary sees no error.
#[test]
fn blocking_commands_and_watch_wait_through_a_failover() {
    let s = ha::SentinelSetup::start("  failover_hold: 10s\n");
    let mut c = Client::connect(&s.proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(20)));
    assert_eq!(c.cmd(&["BLPOP", "q", "0.05"]), Reply::Array(None));
    let since = Instant::now();
    let mut sentinel = Client::connect(&s.sentinels[0].addr());
    assert_eq!(
        sentinel.cmd(&["SENTINEL", "FAILOVER", ha::MASTER]),
        Reply::ok()
    );
    let mut errors = Vec::new();
    let mut rounds = 0;
    let mut switched: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    while since.elapsed() < Duration::from_secs(30)
        && switched.is_none_or(|t| t.elapsed() < Duration::from_secs(1))
    {
        for cmd in [&["BLPOP", "q", "0.05"][..], &["WATCH", "k"], &["UNWATCH"]] {
            let t = Instant::now();
            let r = c.cmd(cmd);
            longest = longest.max(t.elapsed());
            if r.is_error() {
                errors.push(format!("{cmd:?} at {:?}: {r:?}", since.elapsed()));
            }
        }
        rounds += 1;
        if switched.is_none()
            && s.sentinels[0]
                .master_addr(ha::MASTER)
                .is_some_and(|(_, p)| p != s.primary.port())
        {
            switched = Some(Instant::now());
        }
    }
    println!(
        "{rounds} rounds through the failover, switched after {:?}, longest reply {longest:?}",
        switched.map(|t| t - since)
    );
    assert!(switched.is_some(), "Sentinel did not fail over within 30 s");
    assert!(
        errors.is_empty(),
        "{} errors during the failover: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // The last ones ran on the new primary.
    let (_, port) = s.wait_switch(since, Duration::from_secs(5));
    assert!(ha::calls(&s.node_on(port).addr(), "blpop") > 0);
}

/// WAIT counts the replicas that have every write the client made before it, as on Redis,
/// although those writes went over shared connections: with the replica frozen (SIGSTOP), a
/// write then `WAIT 1 300` answers 0 after 300 ms (a new connection's own WAIT on the primary
/// answers 1 there: it has written nothing); thawed, WAIT answers 1. A pool of two servers
/// without replicas answers 0, the smallest count over its shards. Pipelined after a write,
/// WAIT still covers it.
#[test]
fn wait_counts_replicas_that_have_the_clients_writes() {
    let (primary, replicas) = ha::replica_set(1);
    let body = ha::short_form(&primary.addr(), &[replicas[0].addr()], ha::FAST_CHECKS);
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(10),
    );
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["WAIT", "1", "2000"]), Reply::Int(1));

    replicas[0].stop();
    let replies = c.pipeline(&[&["SET", "k", "2"][..], &["WAIT", "1", "300"]]);
    let t = Instant::now();
    let frozen = c.cmd(&["WAIT", "1", "300"]);
    let took = t.elapsed();
    let mut direct = Client::connect(&primary.addr());
    let direct_wait = direct.cmd(&["WAIT", "1", "300"]);
    replicas[0].cont();
    assert_eq!(replies, vec![Reply::ok(), Reply::Int(0)]);
    assert_eq!(frozen, Reply::Int(0), "WAIT with the replica frozen");
    assert!(
        took >= Duration::from_millis(290),
        "WAIT answered after {took:?}"
    );
    assert_eq!(
        direct_wait,
        Reply::Int(1),
        "a connection that wrote nothing counts the frozen replica (Redis' own rule)"
    );
    assert_eq!(
        c.cmd(&["WAIT", "1", "5000"]),
        Reply::Int(1),
        "after SIGCONT"
    );
    // Errors are Redis' own.
    assert_err_contains(&c.cmd(&["WAIT", "1", "-1"]), &["timeout is negative"]);
    assert_err_contains(&c.cmd(&["WAIT", "x", "0"]), &["not an integer"]);

    // Two shards without replicas: 0, at once for a zero count.
    let env = Setup::new(2).start();
    let mut s = env.client();
    assert_eq!(s.cmd(&["SET", "a", "1"]), Reply::ok());
    assert_eq!(s.cmd(&["WAIT", "0", "0"]), Reply::Int(0));
    assert_eq!(s.cmd(&["WAIT", "1", "100"]), Reply::Int(0));
}

/// `connected_clients` of backend `i` (the asking connection included).
fn connected(env: &common::Env, i: usize) -> i64 {
    let info = env.redis[i].info("clients");
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn a_connection_is_reused_after_a_complete_reply_and_a_dead_one_is_replaced() {
    let env = Setup::new(1).workers(1).start();
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["BLPOP", "q", "0.01"]), Reply::Array(None));
    let before = connected(&env, 0);
    for _ in 0..5 {
        assert_eq!(c.cmd(&["BLPOP", "q", "0.01"]), Reply::Array(None));
    }
    assert_eq!(
        connected(&env, 0),
        before,
        "one idle connection serves them all"
    );
    // The server closes every connection: the idle one is not reused, a new one serves.
    let mut direct = env.backend(0);
    assert!(matches!(
        direct.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]),
        Reply::Int(n) if n >= 2
    ));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.cmd(&["BLPOP", "q", "0.01"]), Reply::Array(None));
    assert_eq!(c.cmd(&["RPUSH", "q", "a"]), Reply::Int(1));
    assert_eq!(c.cmd(&["BLPOP", "q", "0"]), Reply::bulks(["q", "a"]));
}

#[test]
fn a_frozen_server_closes_a_blocked_client_after_its_timeout_plus_the_pool_timeout() {
    let env = Setup::new(1).workers(1).option("timeout", 300).start();
    let mut c = env.client();
    // Blocked past the pool timeout on a live server: not cut short, nil after 0.5 s.
    let t = Instant::now();
    assert_eq!(c.cmd(&["BLPOP", "q", "0.5"]), Reply::Array(None));
    assert!(
        t.elapsed() >= Duration::from_millis(480),
        "{:?}",
        t.elapsed()
    );
    // Blocked in the server, which then freezes: the client is closed (as a proxy's client
    // is when its server times out) after the block timeout plus the pool timeout, not
    // before.
    let t = Instant::now();
    c.send_raw(&testkit::encode_command(&["BLPOP", "q", "0.5"]))
        .unwrap();
    wait_blocked(&env, 0, 1);
    env.redis[0].stop();
    c.assert_closed(Duration::from_secs(10));
    let took = t.elapsed();
    env.redis[0].cont();
    assert!(took >= Duration::from_millis(780), "closed after {took:?}");
    let mut c = env.client();
    // A pop that finds the server frozen fails after the pool timeout, like any request on
    // the shared connection; it may have run, so its client is closed, and the next
    // connection pops as before.
    env.redis[0].stop();
    let t = Instant::now();
    c.send_raw(&testkit::encode_command(&["BLPOP", "q", "5"]))
        .unwrap();
    c.assert_closed(Duration::from_secs(10));
    let took = t.elapsed();
    env.redis[0].cont();
    assert!(took >= Duration::from_millis(280), "closed after {took:?}");
    assert_eq!(
        env.client().cmd(&["BLPOP", "q", "0.01"]),
        Reply::Array(None)
    );
}

#[test]
fn a_pop_that_finds_data_takes_no_connection_of_its_own() {
    let env = Setup::new(1).workers(1).start();
    let mut c = env.client();
    // The shared connection is open (PING is answered by rampart itself).
    assert_eq!(c.cmd(&["SET", "x", "1"]), Reply::ok());
    let before = connected(&env, 0);
    for i in 0..50 {
        let v = i.to_string();
        assert_eq!(c.cmd(&["RPUSH", "q", &v]), Reply::Int(1));
        assert_eq!(c.cmd(&["BLPOP", "q", "0"]), Reply::bulks(["q", &v]));
        assert_eq!(c.cmd(&["RPUSH", "q", &v]), Reply::Int(1));
        assert_eq!(c.cmd(&["BRPOPLPUSH", "q", "r", "0"]), Reply::bulk(&v));
    }
    // Every pop found data: the server saw no new connection and no blocking command.
    assert_eq!(connected(&env, 0), before);
    let stats = env.redis[0].info("commandstats");
    assert!(stats.contains("cmdstat_lmpop:calls=50,"), "{stats}");
    assert!(!stats.contains("cmdstat_blpop"), "{stats}");
    // An empty list: the blocking command itself runs, on a connection of its own.
    assert_eq!(c.cmd(&["BLPOP", "empty", "0.05"]), Reply::Array(None));
    assert_eq!(connected(&env, 0), before + 1);
    assert!(env.redis[0]
        .info("commandstats")
        .contains("cmdstat_blpop:calls=1,"));
}

#[test]
fn client_unblock_ends_a_blocked_command_as_redis_does() {
    let env = Setup::new(2).start();
    let mut a = env.client();
    let mut b = env.client();
    let Reply::Int(id) = a.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is an integer")
    };
    let id = id.to_string();
    // Not blocked, unknown, or a bad reason.
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id]), Reply::Int(0));
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", "999999"]), Reply::Int(0));
    assert_err_contains(
        &b.cmd(&["CLIENT", "UNBLOCK", &id, "LATER"]),
        &["reason should be TIMEOUT or ERROR"],
    );
    // TIMEOUT (the default): the blocked command answers as if its timeout passed.
    let shard = (0..2).find(|&i| {
        a.cmd(&["RPUSH", "q", "x"]);
        let on = env.redis[i].cmd(&["LLEN", "q"]) == Reply::Int(1);
        a.cmd(&["DEL", "q"]);
        on
    });
    let shard = shard.expect("q lives on one of the shards");
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_blocked(&env, shard, 1);
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id]), Reply::Int(1));
    assert_eq!(a.read_reply().unwrap(), Reply::Array(None));
    // ERROR: the blocked command gets Redis' UNBLOCKED error.
    a.send_raw(&testkit::encode_command(&[
        "XREAD", "BLOCK", "0", "STREAMS", "q", "$",
    ]))
    .unwrap();
    wait_blocked(&env, shard, 1);
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id, "error"]), Reply::Int(1));
    assert_err_contains(
        &a.read_reply().unwrap(),
        &["UNBLOCKED client unblocked via CLIENT UNBLOCK"],
    );
    // Nothing pushed afterwards is lost, and the session goes on.
    assert_eq!(b.cmd(&["RPUSH", "q", "kept"]), Reply::Int(1));
    assert_eq!(a.cmd(&["LLEN", "q"]), Reply::Int(1));
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id]), Reply::Int(0));
}

/// CLIENT UNBLOCK when every dedicated connection of the worker is in use (here by the
/// blocked clients themselves): the CLIENT UNBLOCK sent to the server needs a connection too,
/// and must not be refused for want of one (Redis unblocks whatever its clients hold).
#[test]
fn client_unblock_works_when_every_dedicated_connection_is_in_use() {
    let env = Setup::new(1)
        .workers(1)
        .option("max_dedicated_connections", 2)
        .start();
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = env.client();
        let Reply::Int(id) = c.cmd(&["CLIENT", "ID"]) else {
            panic!("CLIENT ID is an integer")
        };
        c.send_raw(&testkit::encode_command(&["BLPOP", &format!("u{i}"), "0"]))
            .unwrap();
        held.push((c, id.to_string()));
    }
    wait_blocked(&env, 0, 2);
    let mut op = env.client();
    let (first, id) = &mut held[0];
    assert_eq!(op.cmd(&["CLIENT", "UNBLOCK", id]), Reply::Int(1));
    assert_eq!(first.read_reply().unwrap(), Reply::Array(None));
    let (second, id) = &mut held[1];
    // The first one's connection is free again; the second is unblocked with ERROR.
    assert_eq!(op.cmd(&["CLIENT", "UNBLOCK", id, "ERROR"]), Reply::Int(1));
    assert_err_contains(
        &second.read_reply().unwrap(),
        &["UNBLOCKED client unblocked via CLIENT UNBLOCK"],
    );
    wait_blocked(&env, 0, 0);
    // Nothing is left over the bound: two clients block again, a third is refused.
    for (c, _) in &mut held {
        c.send_raw(&testkit::encode_command(&["BLPOP", "again", "0"]))
            .unwrap();
    }
    wait_blocked(&env, 0, 2);
    assert_err_contains(
        &op.cmd(&["BLPOP", "third", "0"]),
        &["max_dedicated_connections (2)"],
    );
}

/// CLIENT UNBLOCK of a blocking command still waiting for its connection, because the
/// shard's writes are held (its primary says it is a replica of a node outside the shard, so
/// rampart waits `failover_hold` for a primary): the wait ends at once with Redis' reply
/// for an unblocked command (TIMEOUT's null, WAIT's count, ERROR's `UNBLOCKED` error), and
/// the command is never sent.
#[test]
fn client_unblock_ends_a_blocking_command_waiting_for_its_primary() {
    let (primary, replicas) = ha::replica_set(1);
    let elsewhere = testkit::RedisServer::start();
    let body = ha::short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        &format!("  failover_hold: 20s\n{}", ha::FAST_CHECKS),
    );
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(10),
    );
    let (host, port) = elsewhere
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    assert_eq!(primary.cmd(&["REPLICAOF", &host, &port]), Reply::ok());
    wait_until(
        Duration::from_secs(10),
        "the primary seen as a replica",
        || {
            proxy
                .node(&primary.addr())
                .is_some_and(|n| n.seen_role == "replica")
        },
    );
    let mut a = Client::connect(&proxy.addr());
    a.set_read_timeout(Some(Duration::from_secs(30)));
    let mut op = Client::connect(&proxy.addr());
    let Reply::Int(id) = a.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is an integer")
    };
    let id = id.to_string();
    let waiting = |op: &mut Client| match op.cmd(&["CLIENT", "LIST", "ID", &id]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).contains(" flags=b "),
        _ => false,
    };
    for (cmd, reason) in [
        (vec!["BLPOP", "q", "0"], "TIMEOUT"),
        (vec!["XREAD", "BLOCK", "0", "STREAMS", "s", "$"], "ERROR"),
        (vec!["WAIT", "1", "0"], "TIMEOUT"),
    ] {
        let t = Instant::now();
        a.send_raw(&testkit::encode_command(&cmd)).unwrap();
        wait_until(Duration::from_secs(10), "the client blocked", || {
            waiting(&mut op)
        });
        assert_eq!(
            op.cmd(&["CLIENT", "UNBLOCK", &id, reason]),
            Reply::Int(1),
            "{cmd:?}"
        );
        let reply = a.read_reply().unwrap();
        if cmd[0] == "WAIT" {
            // No replica was asked: none is known to have the writes.
            assert_eq!(reply, Reply::Int(0));
        } else if reason == "TIMEOUT" {
            assert_eq!(reply, Reply::Array(None));
        } else {
            assert_err_contains(&reply, &["UNBLOCKED client unblocked via CLIENT UNBLOCK"]);
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{cmd:?} took {:?}",
            t.elapsed()
        );
    }
    // Nothing was sent, and the session goes on.
    assert_eq!(primary.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    assert_eq!(ha::calls(&primary.addr(), "blpop"), 0);
    assert_eq!(ha::calls(&primary.addr(), "xread"), 0);
    assert_eq!(ha::calls(&primary.addr(), "wait"), 0);
    assert_eq!(op.cmd(&["CLIENT", "UNBLOCK", &id]), Reply::Int(0));
    wait_until(Duration::from_secs(10), "a write through rampart", || {
        a.cmd(&["SET", "k", "v"]) == Reply::ok()
    });
}

/// CLIENT UNBLOCK through a backend user that may not run it (`-@dangerous`, a common way to
/// restrict the user rampart logs in as) or may not run CLIENT ID (so the blocked command's
/// connection has no id): an error saying why, not a bare 0 while the client stays blocked.
#[test]
fn client_unblock_says_why_when_the_backend_user_cannot_unblock() {
    for (rules, words) in [
        ("-@dangerous", "refused CLIENT UNBLOCK: NOPERM"),
        ("-client|id", "without an id"),
    ] {
        let env = Setup::new(1)
            .redis_args(&["--user", "rampart", "on", ">pw", "~*", "&*", "+@all", rules])
            .option("redis_username", "rampart")
            .option("redis_auth", "pw")
            .option("timeout", 500)
            .start();
        let mut a = env.client();
        assert_eq!(a.cmd(&["AUTH", "pw"]), Reply::ok());
        let Reply::Int(id) = a.cmd(&["CLIENT", "ID"]) else {
            panic!("CLIENT ID is an integer")
        };
        a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
            .unwrap();
        wait_blocked(&env, 0, 1);
        let mut op = env.client();
        assert_eq!(op.cmd(&["AUTH", "pw"]), Reply::ok());
        assert_err_contains(&op.cmd(&["CLIENT", "UNBLOCK", &id.to_string()]), &[words]);
        // The client is still blocked, and a push still reaches it.
        assert_eq!(op.cmd(&["RPUSH", "q", "x"]), Reply::Int(1));
        assert_eq!(a.read_reply().unwrap(), Reply::bulks(["q", "x"]), "{rules}");
    }
}

/// A twemproxy pool with `auto_eject_hosts`: a client blocked on a server that gets ejected
/// (its keys now live on another server, where a push goes) is closed at once, as for a
/// node switched away from; it does not wait for ever on a server that no longer owns its
/// key, and its next connection pops from the server that does.
#[test]
fn a_blocked_command_on_an_ejected_server_closes_its_client() {
    let env = Setup::new(2)
        .option("auto_eject_hosts", true)
        .option("server_failure_limit", 1)
        .option("server_retry_timeout", 60000)
        .option("timeout", 300)
        .start();
    let keys = env.key_per_shard("ej");
    let mut a = env.client();
    a.set_read_timeout(Some(Duration::from_secs(10)));
    a.send_raw(&testkit::encode_command(&["BLPOP", &keys[0], "0"]))
        .unwrap();
    wait_blocked(&env, 0, 1);
    env.redis[0].stop();
    // A request that times out ejects the server; the key moves to the other one.
    let mut b = env.client();
    assert_err_contains(&b.cmd(&["GET", &keys[0]]), &["timed out"]);
    assert_eq!(b.cmd(&["RPUSH", &keys[0], "x"]), Reply::Int(1));
    assert_eq!(env.redis[1].cmd(&["LLEN", &keys[0]]), Reply::Int(1));
    a.assert_closed(Duration::from_secs(10));
    env.redis[0].cont();
    // The next connection pops from the server that owns the key now.
    let mut a = env.client();
    assert_eq!(a.cmd(&["LPOP", &keys[0]]), Reply::bulk("x"));
}

/// A block timeout too large for a deadline (`BLPOP q 1e300`, `1e19` seconds) is answered as
/// Redis answers it; it used to overflow the deadline's arithmetic, panic the session and
/// close the client's connection.
#[test]
fn block_timeouts_too_large_for_a_deadline_answer_as_redis_does() {
    let env = Setup::new(1).start();
    let redis = common::reference();
    let mut c = env.client();
    let mut r = Client::connect(&redis.addr());
    for cmd in [
        &["BLPOP", "q", "1e300"][..],
        &["BLPOP", "q", "1e19"],
        &["BZPOPMIN", "z", "1e300"],
        &["BLMOVE", "q", "d", "LEFT", "LEFT", "1e300"],
        &["WAIT", "0", "18446744073709551615"],
    ] {
        assert_eq!(c.cmd(cmd), r.cmd(cmd), "{cmd:?}");
    }
    assert_eq!(c.cmd(&["PING"]), Reply::simple("PONG"));
}

/// A primary and a replica that require `pw`, and a pool over them with `redis_auth: pw`
/// and fast health checks.
fn protected_replica_set(
    pw: &str,
) -> (testkit::RedisServer, Vec<testkit::RedisServer>, ha::HaProxy) {
    let (primary, replicas) = ha::replica_set(1);
    ha::protect(&primary, &replicas, pw);
    let body = ha::short_form(
        &primary.addr(),
        &[replicas[0].addr()],
        &format!("  redis_auth: {pw}\n{}", ha::FAST_CHECKS),
    );
    let proxy = ha::HaProxy::start(&body);
    (primary, replicas, proxy)
}

/// CLIENT UNBLOCK on a replica set whose servers require a password: the dedicated
/// connection (AUTH, then CLIENT ID) and the one that sends CLIENT UNBLOCK both authenticate.
#[test]
fn client_unblock_on_a_password_protected_replica_set() {
    const PW: &str = "unblock-pw";
    let (primary, _replicas, proxy) = protected_replica_set(PW);
    wait_until(Duration::from_secs(10), "a write through rampart", || {
        let mut c = Client::connect(&proxy.addr());
        c.cmd(&["AUTH", PW]);
        c.cmd(&["SET", "up", "1"]) == Reply::ok()
    });
    let blocked_on_primary = || {
        let mut d = Client::connect(&primary.addr());
        d.cmd(&["AUTH", PW]);
        let info = d.cmd(&["INFO", "clients"]);
        info.as_str()
            .and_then(|i| i.lines().find_map(|l| l.strip_prefix("blocked_clients:")))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let mut a = Client::connect(&proxy.addr());
    let mut b = Client::connect(&proxy.addr());
    assert_eq!(a.cmd(&["AUTH", PW]), Reply::ok());
    assert_eq!(b.cmd(&["AUTH", PW]), Reply::ok());
    let Reply::Int(id) = a.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is an integer")
    };
    a.send_raw(&testkit::encode_command(&["BLPOP", "q", "0"]))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "BLPOP blocked on the primary",
        || blocked_on_primary() == 1,
    );
    assert_eq!(
        b.cmd(&["CLIENT", "UNBLOCK", &id.to_string()]),
        Reply::Int(1)
    );
    assert_eq!(a.read_reply().unwrap(), Reply::Array(None));
    assert_eq!(blocked_on_primary(), 0);
    // The session goes on, and a pop with data answers at once.
    assert_eq!(b.cmd(&["RPUSH", "q", "x"]), Reply::Int(1));
    assert_eq!(a.cmd(&["BLPOP", "q", "0"]), Reply::bulks(["q", "x"]));
}
