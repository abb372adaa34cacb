//! MULTI / EXEC / DISCARD through rampart: Redis' replies, a transaction on one shard runs
//! whole or not at all, nothing reaches a server before EXEC, and other clients on the same
//! backend connection never see a transaction half done.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_err_contains, assert_pings, cmd, reference, same_as_redis, Setup};
use testkit::{Client, Reply};

/// `INFO commandstats` of a server lists `name` (it ran at least once).
fn ran(server: &testkit::RedisServer, name: &str) -> bool {
    match server.cmd(&["INFO", "commandstats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).contains(&format!("cmdstat_{name}:")),
        other => panic!("INFO commandstats: {other:?}"),
    }
}

#[test]
fn replies_match_redis() {
    let env = Setup::new(3).start();
    let direct = reference();
    let mut p = env.client();
    let mut d = Client::connect(&direct.addr());
    let script = [
        cmd(&["EXEC"]),
        cmd(&["DISCARD"]),
        cmd(&["UNWATCH"]),
        cmd(&["SET", "k", "5"]),
        // Refused while queueing: nothing runs.
        cmd(&["MULTI"]),
        cmd(&["MULTI"]),
        cmd(&["WATCH", "k"]),
        cmd(&["INCR", "k"]),
        cmd(&["NOSUCHCMD", "x"]),
        cmd(&["GET"]),
        cmd(&["EXEC"]),
        cmd(&["GET", "k"]),
        // A runtime error stays inside the EXEC array; the rest runs.
        cmd(&["MULTI"]),
        cmd(&["SET", "k", "a"]),
        cmd(&["INCR", "k"]),
        cmd(&["APPEND", "k", "b"]),
        cmd(&["PING"]),
        cmd(&["ECHO", "e"]),
        cmd(&["UNWATCH"]),
        cmd(&["EXEC"]),
        cmd(&["GET", "k"]),
        // EXEC refused for its arity ends the transaction at once.
        cmd(&["MULTI"]),
        cmd(&["INCR", "n"]),
        cmd(&["EXEC", "x"]),
        cmd(&["EXEC"]),
        cmd(&["GET", "n"]),
        // A command Redis refuses inside MULTI; DISCARD with a wrong arity marks it too.
        cmd(&["MULTI"]),
        cmd(&["SAVE"]),
        cmd(&["DISCARD", "x"]),
        cmd(&["EXEC"]),
        // Empty, discarded, and blocking commands that do not block inside a transaction.
        cmd(&["MULTI"]),
        cmd(&["EXEC"]),
        cmd(&["MULTI"]),
        cmd(&["SET", "k", "gone"]),
        cmd(&["DISCARD"]),
        cmd(&["GET", "k"]),
        cmd(&["MULTI"]),
        cmd(&["BLPOP", "nolist", "0"]),
        cmd(&["EXEC"]),
        cmd(&["MULTI", "x"]),
        cmd(&["PING"]),
    ];
    let got = same_as_redis(&mut p, &mut d, &script);
    assert_eq!(
        got[10],
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(
        got[11],
        Reply::bulk("5"),
        "a transaction that was refused changed data"
    );
}

#[test]
fn refused_command_leaves_data_unchanged() {
    let env = Setup::new(2).start();
    let direct = reference();
    for addr in [env.addr(), direct.addr()] {
        let mut c = Client::connect(&addr);
        assert_eq!(c.cmd(&["SET", "k", "10"]), Reply::ok());
        let replies = c.pipeline(&[
            cmd(&["MULTI"]),
            cmd(&["INCR", "k"]),
            cmd(&["NOSUCHCMD"]),
            cmd(&["EXEC"]),
            cmd(&["GET", "k"]),
        ]);
        assert_eq!(replies[1], Reply::simple("QUEUED"), "{addr}");
        assert_err_contains(&replies[2], &["unknown command 'NOSUCHCMD'"]);
        assert_err_contains(&replies[3], &["EXECABORT"]);
        assert_eq!(replies[4], Reply::bulk("10"), "{addr}: INCR ran");
    }
    // A command rampart refuses (it would run on every shard) aborts the same way.
    let mut c = env.client();
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["INCR", "k"]),
        cmd(&["DBSIZE"]),
        cmd(&["EXEC"]),
        cmd(&["GET", "k"]),
    ]);
    assert_err_contains(&replies[2], &["rampart", "dbsize", "transaction"]);
    assert_err_contains(&replies[3], &["EXECABORT"]);
    assert_eq!(replies[4], Reply::bulk("10"));
}

#[test]
fn time_joins_a_transaction() {
    let env = Setup::new(2).start();
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", "t", "1"]), Reply::ok());
    // TIME runs in the transaction, answered by its server inside the EXEC array, as
    // Redis does (its seconds are a number near this machine's clock).
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["INCR", "t"]),
        cmd(&["TIME"]),
        cmd(&["EXEC"]),
    ]);
    assert_eq!(replies[2], Reply::simple("QUEUED"));
    let Reply::Array(Some(items)) = &replies[3] else {
        panic!("EXEC: {:?}", replies[3]);
    };
    assert_eq!(items[0], Reply::Int(2));
    let Reply::Array(Some(time)) = &items[1] else {
        panic!("TIME in EXEC: {:?}", items[1]);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secs: u64 = match &time[0] {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).parse().unwrap(),
        other => panic!("TIME seconds: {other:?}"),
    };
    assert!(secs.abs_diff(now) < 60, "TIME said {secs}, the clock {now}");
}

/// Replies of `cmds`, sent in one write after `HELLO proto` and ended by QUIT, as the bytes
/// the server sent (the HELLO and QUIT replies left out).
fn raw_replies(addr: &str, proto: &str, cmds: &[&[&str]]) -> Vec<Vec<u8>> {
    let mut out = bytes::BytesMut::new();
    let hello: &[&str] = &["HELLO", proto];
    let quit: &[&str] = &["QUIT"];
    for args in std::iter::once(hello)
        .chain(cmds.iter().copied())
        .chain([quit])
    {
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        resp::encode::command(&mut out, &argv);
    }
    let got = common::raw_exchange(addr, &out);
    let mut replies = Vec::new();
    let mut at = 0;
    while at < got.len() {
        let n = resp::reply::reply_len(&got[at..])
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a cut reply: {:?}", String::from_utf8_lossy(&got)));
        replies.push(got[at..at + n].to_vec());
        at += n;
    }
    assert_eq!(
        replies.len(),
        cmds.len() + 2,
        "{addr}: one reply per command"
    );
    replies[1..=cmds.len()].to_vec()
}

/// CLIENT and COMMAND inside MULTI are queued and answered in EXEC's array at their places,
/// in RESP2 and RESP3, the same bytes as redis-server gives: answers of commands that fail
/// when run are errors inside the array, and a command refused while queueing discards the
/// transaction.
#[test]
fn client_and_command_join_a_transaction_as_in_redis() {
    let env = Setup::new(2).start();
    let direct = reference();
    let cmds: &[&[&str]] = &[
        &["SET", "k", "v"],
        &["MULTI"],
        &["SET", "k", "w"],
        &["CLIENT", "SETNAME", "app1"],
        &["CLIENT", "GETNAME"],
        &["GET", "k"],
        &["COMMAND", "INFO", "get"],
        &["COMMAND", "GETKEYS", "SET", "a", "b"],
        &["EXEC"],
        &["CLIENT", "GETNAME"],
        // Failing when run: errors in the array, the rest runs.
        &["MULTI"],
        &["CLIENT", "SETNAME", "a b"],
        &["INCR", "k"],
        &["CLIENT", "GETNAME"],
        &["EXEC"],
        // Only commands rampart answers.
        &["MULTI"],
        &["CLIENT", "GETNAME"],
        &["COMMAND", "INFO", "set"],
        &["EXEC"],
        // Refused while queueing: nothing runs.
        &["MULTI"],
        &["CLIENT", "SETNAME", "app2"],
        &["COMMAND", "NOSUCH"],
        &["SET", "k", "x"],
        &["EXEC"],
        &["CLIENT", "GETNAME"],
        &["GET", "k"],
    ];
    for proto in ["2", "3"] {
        let got = raw_replies(&env.addr(), proto, cmds);
        let want = raw_replies(&direct.addr(), proto, cmds);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                String::from_utf8_lossy(g),
                String::from_utf8_lossy(w),
                "RESP{proto} {:?}: proxy vs redis-server",
                cmds[i]
            );
        }
        assert!(got[8].starts_with(b"*6\r\n+OK\r\n+OK\r\n$4\r\napp1\r\n$1\r\nw\r\n"));
    }
}

/// INFO, CLIENT ID and COMMAND COUNT inside MULTI are rampart's own answers (the same as
/// outside a transaction), at their places among the server's; a watched key changed: EXEC
/// answers nil whole, as Redis does, in RESP2 and RESP3.
#[test]
fn info_and_client_id_join_a_transaction_and_a_watch_abort_stays_nil() {
    let env = Setup::new(2).start();
    let mut c = env.client();
    let id = c.cmd(&["CLIENT", "ID"]);
    let count = c.cmd(&["COMMAND", "COUNT"]);
    assert!(matches!(id, Reply::Int(_)), "{id:?}");
    assert_eq!(c.cmd(&["SET", "t", "1"]), Reply::ok());
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["CLIENT", "ID"]),
        cmd(&["INCR", "t"]),
        cmd(&["INFO", "server"]),
        cmd(&["COMMAND", "COUNT"]),
        cmd(&["INFO", "keyspace"]),
        cmd(&["EXEC"]),
    ]);
    for r in &replies[1..6] {
        assert_eq!(r, &Reply::simple("QUEUED"));
    }
    let Reply::Array(Some(items)) = &replies[6] else {
        panic!("EXEC: {:?}", replies[6]);
    };
    assert_eq!(items.len(), 5, "{items:?}");
    assert_eq!(items[0], id);
    assert_eq!(items[1], Reply::Int(2));
    let text = |r: &Reply| match r {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("INFO in EXEC: {other:?}"),
    };
    assert!(
        text(&items[2]).starts_with("# Server\r\n"),
        "{:?}",
        items[2]
    );
    assert!(
        text(&items[2]).contains("rampart_version:"),
        "{:?}",
        items[2]
    );
    assert_eq!(items[3], count);
    // The keyspace section, summed over the shards as outside a transaction.
    assert!(text(&items[4]).contains("db0:keys=1,"), "{:?}", items[4]);
    // CLIENT SETNAME would name the client at EXEC even when a watched key changed: refused
    // in a watched transaction, which then runs nothing.
    let replies = c.pipeline(&[
        cmd(&["WATCH", "t"]),
        cmd(&["MULTI"]),
        cmd(&["CLIENT", "SETNAME", "n"]),
        cmd(&["INCR", "t"]),
        cmd(&["EXEC"]),
        cmd(&["CLIENT", "GETNAME"]),
    ]);
    assert_err_contains(&replies[2], &["client|setname", "WATCH"]);
    assert_err_contains(&replies[4], &["EXECABORT"]);
    assert_eq!(replies[5], Reply::Bulk(None));
    // A watched key changed: nil, whatever was queued.
    let direct = reference();
    for proto in ["2", "3"] {
        let run = |addr: &str| {
            let mut c = Client::connect(addr);
            let mut other = Client::connect(addr);
            c.cmd(&["HELLO", proto]);
            c.cmd(&["WATCH", "w"]);
            other.cmd(&["SET", "w", "1"]);
            let mut out = c.pipeline(&[
                cmd(&["MULTI"]),
                cmd(&["COMMAND", "COUNT"]),
                cmd(&["CLIENT", "ID"]),
                cmd(&["INCR", "w"]),
                cmd(&["EXEC"]),
            ]);
            out.push(c.cmd(&["GET", "w"]));
            out
        };
        let got = run(&env.addr());
        assert_eq!(got, run(&direct.addr()), "RESP{proto}");
        // RESP3's null `_` reads as a nil bulk here.
        let nil = if proto == "2" {
            Reply::Array(None)
        } else {
            Reply::Bulk(None)
        };
        assert_eq!(got[4], nil, "RESP{proto}");
        assert_eq!(got[5], Reply::bulk("1"), "RESP{proto}: INCR ran");
    }
}

#[test]
fn cross_shard_transaction_is_refused_and_nothing_runs() {
    let env = Setup::new(3).hash_tag().start();
    let keys = env.key_per_shard("x");
    for r in &env.redis {
        assert_eq!(r.cmd(&["CONFIG", "RESETSTAT"]), Reply::ok());
    }
    let mut c = env.client();
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", &keys[0], "1"]),
        cmd(&["SET", &keys[1], "1"]),
        cmd(&["EXEC"]),
    ]);
    assert_eq!(replies[1], Reply::simple("QUEUED"));
    assert_eq!(replies[2], Reply::simple("QUEUED"));
    assert_err_contains(&replies[3], &["EXECABORT", "different shards", "hash tag"]);
    for (i, r) in env.redis.iter().enumerate() {
        assert!(!ran(r, "multi"), "shard {i} got a MULTI");
        assert!(!ran(r, "set"), "shard {i} got a SET");
    }
    assert_eq!(env.total_keys(), 0);
    // With a common hash tag the same transaction runs, on one shard.
    let a = format!("{{{}}}:a", keys[0]);
    let b = format!("{{{}}}:b", keys[0]);
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", &a, "1"]),
        cmd(&["SET", &b, "2"]),
        cmd(&["MGET", &a, &b]),
        cmd(&["EXEC"]),
    ]);
    assert_eq!(
        replies[4],
        Reply::Array(Some(vec![
            Reply::ok(),
            Reply::ok(),
            Reply::bulks(["1", "2"]),
        ]))
    );
    assert_eq!(env.total_keys(), 2);
    let shard = env.shard_holding(&a);
    assert_eq!(shard, env.shard_holding(&b));
    let ran_multi: Vec<bool> = env.redis.iter().map(|r| ran(r, "multi")).collect();
    assert_eq!(ran_multi.iter().filter(|r| **r).count(), 1, "{ran_multi:?}");
}

#[test]
fn nothing_reaches_a_server_before_exec() {
    let env = Setup::new(1).start();
    let mut c = env.client();
    let mut other = env.client();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::simple("QUEUED"));
    assert_eq!(other.cmd(&["GET", "k"]), Reply::nil());
    assert_eq!(c.cmd(&["DISCARD"]), Reply::ok());
    assert_eq!(other.cmd(&["GET", "k"]), Reply::nil());
    assert!(
        !ran(&env.redis[0], "multi"),
        "DISCARD: a MULTI reached the server"
    );
    assert!(
        !ran(&env.redis[0], "set"),
        "DISCARD: a SET reached the server"
    );

    // A client that leaves inside MULTI: its queued commands are dropped with it.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k2", "v"]), Reply::simple("QUEUED"));
    drop(c);
    let mut c = env.client();
    assert_eq!(c.cmd(&["GET", "k2"]), Reply::nil());
    assert!(!ran(&env.redis[0], "multi"), "a MULTI reached the server");
    assert!(!ran(&env.redis[0], "set"), "a SET reached the server");

    // Then EXEC sends it all, in one piece.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k3", "v"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
    assert_eq!(other.cmd(&["GET", "k3"]), Reply::bulk("v"));
}

#[test]
fn transaction_inside_a_pipeline() {
    let env = Setup::new(3).start();
    let direct = reference();
    let script = [
        cmd(&["SET", "{p}a", "1"]),
        cmd(&["GET", "other"]),
        cmd(&["MULTI"]),
        cmd(&["INCR", "{p}a"]),
        cmd(&["GET", "{p}a"]),
        cmd(&["LPUSH", "{p}l", "x", "y"]),
        cmd(&["EXEC"]),
        cmd(&["GET", "{p}a"]),
        cmd(&["MULTI"]),
        cmd(&["INCR", "{p}a"]),
        cmd(&["NOSUCH"]),
        cmd(&["EXEC"]),
        cmd(&["LRANGE", "{p}l", "0", "-1"]),
        cmd(&["PING"]),
    ];
    let got = env.client().pipeline(&script);
    let want = Client::connect(&direct.addr()).pipeline(&script);
    assert_eq!(got, want);
    assert_eq!(
        got[6],
        Reply::Array(Some(vec![Reply::Int(2), Reply::bulk("2"), Reply::Int(2)]))
    );
    // The same as inline commands, in one write.
    let mut c = env.client();
    c.send_raw(b"MULTI\r\nINCR {p}a\r\nGET {p}a\r\nEXEC\r\nPING\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<Reply> = (0..5)
        .map(|_| c.read_reply().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(
        got,
        vec![
            Reply::ok(),
            Reply::simple("QUEUED"),
            Reply::simple("QUEUED"),
            Reply::Array(Some(vec![Reply::Int(3), Reply::bulk("3")])),
            Reply::simple("PONG"),
        ]
    );
}

/// A transaction sent in one write is answered in one write, as Redis answers a whole read
/// at once: rampart's own `+OK` and `+QUEUED` wait for the server's `EXEC` reply instead of
/// going out first (which woke the client twice per transaction). Replies before a blocking
/// command do not wait for it.
#[test]
fn a_transaction_in_one_write_is_answered_in_one_write() {
    use std::io::{Read, Write};
    let env = Setup::new(2).start();
    let run = b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$3\r\n{t}\r\n*1\r\n$4\r\nEXEC\r\n";
    let mut s = std::net::TcpStream::connect(env.addr()).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 1..=20 {
        s.write_all(run).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let want = format!("+OK\r\n+QUEUED\r\n*1\r\n:{i}\r\n");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            want,
            "transaction {i}: the first read holds every reply"
        );
    }
    // PING ahead of a BLPOP that blocks: PONG arrives while BLPOP still waits.
    s.write_all(b"PING\r\nBLPOP {t}:empty 3\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"+PONG\r\n");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "PONG waited for the blocked BLPOP: {:?}",
        t0.elapsed()
    );
    let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"*-1\r\n", "BLPOP times out after 3 s");
}

/// A backend user that may not run MULTI makes the server run the commands one by one:
/// rampart cannot undo that, but the client learns it instead of a bare EXEC error.
#[test]
fn a_server_refusing_multi_is_reported() {
    let env = Setup::new(1).start();
    let acl = env.redis[0].cmd(&["ACL", "SETUSER", "default", "-multi"]);
    assert_eq!(acl, Reply::ok());
    let mut c = env.client();
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "n"]), cmd(&["EXEC"])]);
    assert_eq!(replies[1], Reply::simple("QUEUED"));
    assert_err_contains(&replies[2], &["refused MULTI", "one by one"]);
    assert_eq!(c.cmd(&["GET", "n"]), Reply::bulk("1"));
}

#[test]
fn watch_inside_multi_is_refused_as_in_redis() {
    let env = Setup::new(1).start();
    let mut c = env.client();
    assert_eq!(c.cmd(&["UNWATCH"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["WATCH", "k"]),
        Reply::Error("ERR WATCH inside MULTI is not allowed".into())
    );
    // Not a queueing error in Redis: the transaction still runs.
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(Some(vec![Reply::ok()])));
}

/// The WATCH flows a client runs, each step's reply, through `addr`; `other` is a second
/// client of the same address that changes watched keys behind the first one's back.
fn watch_flows(addr: &str) -> Vec<Reply> {
    let mut c = Client::connect(addr);
    let mut other = Client::connect(addr);
    let mut got = Vec::new();
    let mut step = |c: &mut Client, words: &[&str]| got.push(c.cmd(words));
    step(&mut c, &["SET", "{t}k", "10"]);
    // Another client changes the watched key: EXEC answers nil, INCR does not run.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut other, &["SET", "{t}k", "20"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    step(&mut c, &["GET", "{t}k"]);
    // Nothing changed: the transaction runs.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    // The client's own write of a watched key counts too.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut c, &["SET", "{t}k", "30"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    step(&mut c, &["GET", "{t}k"]);
    // UNWATCH forgets: a later change does not stop the transaction.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut c, &["UNWATCH"]);
    step(&mut other, &["SET", "{t}k", "40"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    // DISCARD forgets too.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["DISCARD"]);
    step(&mut other, &["SET", "{t}k", "50"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    // An empty transaction still answers nil when a watched key changed; several keys and
    // several WATCHes add up.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut other, &["SET", "{t}k", "60"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["EXEC"]);
    step(&mut c, &["WATCH", "{t}k", "{t}m"]);
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut other, &["SET", "{t}m", "x"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    step(&mut c, &["GET", "{t}k"]);
    // EXEC ends the watch: the next transaction runs whatever happens to k.
    step(&mut other, &["SET", "{t}k", "70"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    // RESET forgets the watched keys.
    step(&mut c, &["WATCH", "{t}k"]);
    step(&mut c, &["RESET"]);
    step(&mut other, &["SET", "{t}k", "80"]);
    step(&mut c, &["MULTI"]);
    step(&mut c, &["INCR", "{t}k"]);
    step(&mut c, &["EXEC"]);
    got
}

#[test]
fn watch_matches_redis() {
    let env = Setup::new(3).hash_tag().start();
    let direct = reference();
    let through = watch_flows(&env.addr());
    let expected = watch_flows(&direct.addr());
    assert_eq!(through, expected);
    // What the flows assert, spelled out.
    assert_eq!(
        through[5],
        Reply::Array(None),
        "EXEC after another client's SET"
    );
    assert_eq!(through[6], Reply::bulk("20"), "INCR ran although k changed");
    assert_eq!(through[10], Reply::Array(Some(vec![Reply::Int(21)])));
    assert_eq!(
        through[15],
        Reply::Array(None),
        "EXEC after the client's own SET"
    );
    assert_eq!(through[16], Reply::bulk("30"));
    assert_eq!(through[22], Reply::Array(Some(vec![Reply::Int(41)])));
}

/// WATCH and a watched transaction inside one pipeline, among other commands: replies in
/// order and as Redis gives them, the pipeline's own write before EXEC included.
#[test]
fn watch_inside_a_pipeline_matches_redis() {
    let env = Setup::new(3).hash_tag().start();
    let direct = reference();
    let script = [
        cmd(&["SET", "{p}k", "1"]),
        cmd(&["WATCH", "{p}k", "{p}j"]),
        cmd(&["GET", "{p}k"]),
        cmd(&["MULTI"]),
        cmd(&["INCR", "{p}k"]),
        cmd(&["EXEC"]),
        cmd(&["WATCH", "{p}k"]),
        cmd(&["SET", "{p}j", "x"]),
        cmd(&["MULTI"]),
        cmd(&["INCR", "{p}k"]),
        cmd(&["EXEC"]),
        cmd(&["WATCH", "{p}j"]),
        cmd(&["SET", "{p}j", "y"]),
        cmd(&["MULTI"]),
        cmd(&["INCR", "{p}k"]),
        cmd(&["EXEC"]),
        cmd(&["GET", "{p}k"]),
        cmd(&["PING"]),
    ];
    let through = Client::connect(&env.addr()).pipeline(&script);
    let expected = Client::connect(&direct.addr()).pipeline(&script);
    assert_eq!(through, expected);
    assert_eq!(through[5], Reply::Array(Some(vec![Reply::Int(2)])));
    assert_eq!(through[15], Reply::Array(None), "the pipeline's own write");
}

/// Watched keys must live on one shard: WATCH of keys on two shards is refused (nothing is
/// watched), as is a WATCH or a transaction that leaves the watched shard.
#[test]
fn watch_stays_on_one_shard() {
    let env = Setup::new(3).hash_tag().start();
    let keys = env.key_per_shard("w");
    let mut c = env.client();
    let mut other = env.client();
    assert_err_contains(
        &c.cmd(&["WATCH", &keys[0], &keys[1]]),
        &["different shards", "hash tag"],
    );
    // Nothing was watched: the transaction runs although keys[0] changed.
    assert_eq!(other.cmd(&["SET", &keys[0], "1"]), Reply::ok());
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", &keys[0]]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(2)])));
    // A later WATCH on another shard is refused; the first one holds.
    assert_eq!(c.cmd(&["WATCH", &keys[0]]), Reply::ok());
    assert_err_contains(&c.cmd(&["WATCH", &keys[1]]), &["another shard", "hash tag"]);
    assert_eq!(other.cmd(&["SET", &keys[0], "5"]), Reply::ok());
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", &keys[0]]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(None));
    // A transaction on another shard than the watched keys is refused whole.
    assert_eq!(c.cmd(&["WATCH", &keys[0]]), Reply::ok());
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", &keys[2], "x"]),
        cmd(&["EXEC"]),
    ]);
    assert_err_contains(&replies[2], &["EXECABORT", "different shards", "hash tag"]);
    assert_eq!(c.cmd(&["GET", &keys[2]]), Reply::nil());
    // The refused EXEC ended the watch.
    assert_eq!(other.cmd(&["SET", &keys[0], "9"]), Reply::ok());
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", &keys[0]]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(10)])));
}

/// Clients of a server whose last command was `name`, from its CLIENT LIST.
fn clients_with_cmd(server: &testkit::RedisServer, name: &str) -> usize {
    match server.cmd(&["CLIENT", "LIST"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| l.split(' ').any(|f| f == format!("cmd={name}")))
            .count(),
        other => panic!("CLIENT LIST: {other:?}"),
    }
}

/// The watch lives on a connection of the session's own, which goes when the client goes;
/// UNWATCH gives it back clean and the next WATCH reuses it.
#[test]
fn watch_connection_follows_the_client() {
    let env = Setup::new(1).workers(1).start();
    let server = &env.redis[0];
    let mut c = env.client();
    assert_eq!(c.cmd(&["WATCH", "k"]), Reply::ok());
    assert_eq!(clients_with_cmd(server, "watch"), 1);
    // UNWATCH reaches the server: the connection goes back with nothing watched.
    assert_eq!(c.cmd(&["UNWATCH"]), Reply::ok());
    testkit::wait_until(Duration::from_secs(5), "UNWATCH on the server", || {
        clients_with_cmd(server, "watch") == 0 && clients_with_cmd(server, "unwatch") == 1
    });
    assert_eq!(c.cmd(&["WATCH", "k"]), Reply::ok());
    assert_eq!(clients_with_cmd(server, "unwatch"), 0, "a new connection");
    assert_eq!(clients_with_cmd(server, "watch"), 1);
    drop(c);
    testkit::wait_until(
        Duration::from_secs(5),
        "the watching connection to close",
        || clients_with_cmd(server, "watch") == 0,
    );
    // Nothing was left behind: another client's transaction runs, the data is untouched.
    let mut d = env.client();
    assert_eq!(d.cmd(&["GET", "k"]), Reply::nil());
    let replies = d.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "k"]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(1)])));
}

/// A watch holds one of the pool's max_dedicated_connections; over them WATCH gets an error
/// naming the setting, and others are served again once a watch ends.
#[test]
fn watch_counts_against_max_dedicated_connections() {
    let env = Setup::new(1)
        .workers(1)
        .option("max_dedicated_connections", 1)
        .start();
    let mut a = env.client();
    let mut b = env.client();
    assert_eq!(a.cmd(&["WATCH", "k"]), Reply::ok());
    assert_err_contains(&b.cmd(&["WATCH", "k"]), &["max_dedicated_connections"]);
    // b watches nothing: its transaction runs.
    assert_eq!(a.cmd(&["SET", "k", "1"]), Reply::ok());
    let replies = b.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "k"]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(2)])));
    // a's EXEC ends its watch (k changed: nil) and frees the connection.
    let replies = a.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "k"]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(None));
    assert_eq!(b.cmd(&["WATCH", "k"]), Reply::ok());
}

#[test]
fn oversized_transaction_is_discarded() {
    const LIMIT: usize = 10_000;
    let env = Setup::new(1).start();
    let mut c = env.client();
    let mut script = vec![cmd(&["MULTI"]), cmd(&["SET", "k", "v"])];
    script.extend((0..LIMIT).map(|_| cmd(&["INCR", "n"])));
    script.push(cmd(&["EXEC"]));
    script.push(cmd(&["GET", "k"]));
    let replies = c.pipeline(&script);
    assert!(replies[1..=LIMIT]
        .iter()
        .all(|r| *r == Reply::simple("QUEUED")));
    assert_err_contains(&replies[LIMIT + 1], &["10000 commands", "transaction"]);
    assert_err_contains(&replies[LIMIT + 2], &["EXECABORT", "10000 commands"]);
    assert_eq!(replies[LIMIT + 3], Reply::nil());
    assert!(!ran(&env.redis[0], "multi"));
}

/// One worker, so every client shares the one connection to the shard: a transaction of 100
/// INCRs and other clients' pipelines of reads and INCRs on it interleave, and no read ever
/// sees a transaction half applied.
#[test]
fn transactions_are_atomic_among_other_clients() {
    const ROUNDS: usize = 200;
    const STEP: usize = 100;
    let env = Setup::new(1).workers(1).start();
    let addr = env.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let (addr, stop) = (addr.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let mut c = Client::connect(&addr);
                let counter = format!("c{i}");
                let mut reads = 0usize;
                let mut expect = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let mut script = Vec::new();
                    for _ in 0..8 {
                        script.push(cmd(&["GET", "n"]));
                        script.push(cmd(&["INCR", &counter]));
                    }
                    for pair in c.pipeline(&script).chunks(2) {
                        let n = match &pair[0] {
                            Reply::Bulk(None) => 0,
                            r => r.as_str().and_then(|s| s.parse::<i64>().ok()).unwrap_or(-1),
                        };
                        assert_eq!(n % STEP as i64, 0, "a read saw a partial transaction: {n}");
                        expect += 1;
                        assert_eq!(pair[1], Reply::Int(expect), "INCR pipeline broken");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut c = Client::connect(&addr);
    let mut script = vec![cmd(&["MULTI"])];
    script.extend((0..STEP).map(|_| cmd(&["INCR", "n"])));
    script.push(cmd(&["EXEC"]));
    for round in 0..ROUNDS {
        let replies = c.pipeline(&script);
        let want: Vec<Reply> = (1..=STEP)
            .map(|i| Reply::Int((round * STEP + i) as i64))
            .collect();
        assert_eq!(replies[STEP + 1], Reply::Array(Some(want)), "round {round}");
    }
    stop.store(true, Ordering::Relaxed);
    let reads: usize = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_else(|_| panic!("a reader failed")))
        .sum();
    println!("{ROUNDS} transactions of {STEP} INCRs; {reads} reads in between, none partial");
    assert!(reads > 0);
    assert_eq!(
        c.cmd(&["GET", "n"]),
        Reply::bulk((ROUNDS * STEP).to_string())
    );
}

/// Keeps a start time for the failover test's messages.
fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ha_load.rs"]
mod load;

/// The primary dies (kill -9) while a client runs transactions back to back: the one
/// transaction in flight gets an error (it is never sent again), later ones wait for the
/// new primary, and the data holds whole transactions only.
#[test]
fn primary_killed_during_exec() {
    const STEP: usize = 100;
    let mut s = ha::SentinelSetup::start("  failover_hold: 10s\n");
    let addr = s.proxy.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let writer = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut c = Client::connect(&addr);
            c.set_read_timeout(Some(Duration::from_secs(15)));
            let mut script = vec![cmd(&["MULTI"])];
            script.extend((0..STEP).map(|_| cmd(&["INCR", "{t}n"])));
            script.push(cmd(&["EXEC"]));
            let (mut ok, mut errors) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let replies = c.pipeline(&script);
                match &replies[STEP + 1] {
                    Reply::Array(Some(a)) if a.len() == STEP => ok += 1,
                    other => errors.push((since(t0), format!("{other:?}"))),
                }
            }
            (ok, errors)
        })
    };
    let progressed = |n: usize| {
        testkit::poll_until(Duration::from_secs(10), || {
            let v = Client::connect(&addr).cmd(&["GET", "{t}n"]);
            let v: usize = v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            (v >= n).then_some(v)
        })
    };
    assert!(progressed(20 * STEP).is_some(), "no transactions ran");
    // Another client is inside MULTI across the failover: nothing of it was sent yet, so its
    // EXEC afterwards goes to the new primary.
    let mut open = Client::connect(&addr);
    open.set_read_timeout(Some(Duration::from_secs(15)));
    assert_eq!(open.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(open.cmd(&["INCR", "{t}m"]), Reply::simple("QUEUED"));
    // Frozen first, so that the transaction the writer sends next sits in the server's
    // socket unanswered: the kill then lands while it is in flight.
    s.primary.stop();
    thread::sleep(Duration::from_millis(50));
    let kill_at = since(t0);
    s.primary.kill9();
    let (switch_after, port) = s.wait_switch(Instant::now(), Duration::from_secs(20));
    let before = progressed(0).unwrap_or(0);
    assert!(
        progressed(before + 20 * STEP).is_some(),
        "no transactions after the failover"
    );
    assert_eq!(
        open.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(1)])),
        "a transaction queued across the failover"
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = writer
        .join()
        .unwrap_or_else(|_| panic!("the writer failed"));
    println!(
        "killed at {kill_at:.3}s, new primary :{port} after {switch_after:?}; {ok} transactions, errors: {errors:?}"
    );
    assert_eq!(
        errors.len(),
        1,
        "only the transaction in flight at the kill may fail, and it must: {errors:?}"
    );
    let value = s
        .node_on(port)
        .cmd(&["GET", "{t}n"])
        .as_str()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    println!(
        "value on the new primary: {value} ({} whole transactions)",
        value / STEP
    );
    assert_eq!(
        value % STEP,
        0,
        "a partial transaction on the new primary: {value}"
    );
    assert!(value <= (ok + errors.len()) * STEP);
}

/// A primary demoted behind rampart's back takes `MULTI`, refuses the queued write
/// (`READONLY`) and so the whole transaction (`EXECABORT`): nothing ran, so the transaction
/// waits in the failover hold like a write refused with `READONLY`, and runs once, when the
/// node is a primary again.
#[test]
fn transaction_refused_by_a_demoted_primary_runs_once_later() {
    let (primary, replicas) = ha::replica_set(1);
    let replica = &replicas[0];
    let checks = "  failover_hold: 10s\n  health_check:\n    interval: 2s\n    timeout: 500ms\n    fall: 1\n    rise: 1\n";
    let body = ha::short_form(&primary.addr(), &[replica.addr()], checks);
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(&[primary.addr(), replica.addr()], Duration::from_secs(10));
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(15)));
    assert_eq!(c.cmd(&["SET", "n", "0"]), Reply::ok());
    assert_eq!(replica.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    let port = replica.port().to_string();
    assert_eq!(primary.cmd(&["REPLICAOF", "127.0.0.1", &port]), Reply::ok());
    let restorer = {
        let addr = primary.addr();
        thread::spawn(move || {
            // Wait until the demoted node has refused the transaction (or give up: the
            // health check may have seen the demotion first and held it unsent), then make
            // it a primary again.
            let refused = testkit::poll_until(Duration::from_secs(3), || {
                let mut p = Client::connect(&addr);
                match p.cmd(&["INFO", "commandstats"]) {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
                        .contains("cmdstat_exec:")
                        .then_some(()),
                    _ => None,
                }
            })
            .is_some();
            let mut p = Client::connect(&addr);
            assert_eq!(p.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
            refused
        })
    };
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "n"]), cmd(&["EXEC"])]);
    let refused_first = restorer
        .join()
        .unwrap_or_else(|_| panic!("restoring the primary failed"));
    println!("the demoted node refused the transaction first: {refused_first}");
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(1)])));
    assert_eq!(primary.cmd(&["GET", "n"]), Reply::bulk("1"));
}

/// An EXEC reply far larger than the connection's read buffer streams to its client whole,
/// and the connection goes on serving others.
#[test]
fn large_exec_reply_streams_through() {
    let env = Setup::new(1).start();
    let big = "x".repeat(3 << 20);
    let mut c = env.client();
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "big", &big]),
        cmd(&["GET", "big"]),
        cmd(&["STRLEN", "big"]),
        cmd(&["EXEC"]),
        cmd(&["PING"]),
    ]);
    assert_eq!(
        replies[4],
        Reply::Array(Some(vec![
            Reply::ok(),
            Reply::bulk(&big),
            Reply::Int(big.len() as i64),
        ]))
    );
    assert_eq!(replies[5], Reply::simple("PONG"));
    assert_eq!(
        env.client().cmd(&["STRLEN", "big"]),
        Reply::Int(big.len() as i64)
    );
}

/// The primary holding a watch dies (kill -9): the watch is lost, so EXEC sends nothing and
/// answers nil, as when a watched key changed (a client's retry watches again); the session
/// is usable at once.
#[test]
fn watch_lost_when_the_primary_dies() {
    let (mut primary, replicas) = ha::replica_set(1);
    let body = ha::short_form(&primary.addr(), &[replicas[0].addr()], "");
    let proxy = ha::HaProxy::start(&body);
    proxy.wait_up(
        &[primary.addr(), replicas[0].addr()],
        Duration::from_secs(10),
    );
    let mut c = Client::connect(&proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(10)));
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    // The replica has the write before the kill (replication is asynchronous).
    assert_eq!(c.cmd(&["WAIT", "1", "10000"]), Reply::Int(1));
    assert_eq!(c.cmd(&["WATCH", "k"]), Reply::ok());
    primary.kill9();
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "k"]), cmd(&["EXEC"])]);
    assert_eq!(replies[1], Reply::simple("QUEUED"));
    assert_eq!(
        replies[2],
        Reply::Array(None),
        "EXEC after the watch was lost"
    );
    assert_eq!(replicas[0].cmd(&["GET", "k"]), Reply::bulk("1"));
    assert_pings(&mut c);
}

/// Sentinel switches the primary away while a client watches (the old primary stays up):
/// the watch is lost, EXEC answers nil and nothing reaches either node; a new watch then
/// runs on the new primary.
#[test]
fn watch_lost_across_a_sentinel_switchover() {
    let s = ha::SentinelSetup::start("");
    let mut c = Client::connect(&s.proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(30)));
    assert_eq!(c.cmd(&["SET", "{t}k", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["WATCH", "{t}k"]), Reply::ok());
    assert_eq!(s.primary.cmd(&["CONFIG", "RESETSTAT"]), Reply::ok());
    let mut admin = Client::connect(&s.proxy.addr());
    admin.set_read_timeout(Some(Duration::from_secs(30)));
    let reply = admin.cmd(&["RAMPART", "SWITCHOVER", ha::MASTER]);
    assert!(
        matches!(&reply, Reply::Simple(m) if m.contains("switched to")),
        "{reply:?}"
    );
    let (_, port) = s.wait_switch(Instant::now(), Duration::from_secs(20));
    let new_primary = s.node_on(port);
    assert_eq!(new_primary.cmd(&["CONFIG", "RESETSTAT"]), Reply::ok());
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "{t}k"]), cmd(&["EXEC"])]);
    assert_eq!(
        replies[2],
        Reply::Array(None),
        "EXEC after the watch was lost"
    );
    assert!(
        !ran(&s.primary, "exec"),
        "the old primary got the transaction"
    );
    assert!(
        !ran(new_primary, "exec"),
        "the new primary got the transaction"
    );
    assert_eq!(new_primary.cmd(&["GET", "{t}k"]), Reply::bulk("1"));
    // A new watch lives on the new primary.
    assert_eq!(c.cmd(&["WATCH", "{t}k"]), Reply::ok());
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "{t}k"]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(2)])));
    assert!(ran(new_primary, "watch"));
    assert_eq!(new_primary.cmd(&["GET", "{t}k"]), Reply::bulk("2"));
}

/// redis-py's `transaction(func, *watches)` helper (WATCH, reads, MULTI ... EXEC, retried
/// when a watched key changed) through rampart, in RESP2 and RESP3.
const REDIS_PY_TRANSACTION: &str = r#"
import sys, redis
port = int(sys.argv[1])
for proto in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=port, protocol=proto)
    other = redis.Redis(host="127.0.0.1", port=port, protocol=proto)
    key = f"py{proto}:{{t}}counter"
    r.set(key, 10)
    calls = []
    def bump(pipe):
        value = int(pipe.get(key))
        if not calls:
            # Another client changes the watched key: EXEC answers nil, the helper retries.
            other.set(key, 100)
        calls.append(value)
        pipe.multi()
        pipe.set(key, value + 1)
        pipe.get(key)
    assert r.transaction(bump, key) == [True, b"101"], proto
    assert calls == [10, 100], calls
    assert int(r.get(key)) == 101
    # The value-returning form, and a watch that is never changed.
    assert r.transaction(lambda p: p.multi() or p.incr(key), key, value_from_callable=False) == [102]
print("ok")
"#;

#[test]
fn redis_py_transaction_helper() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/client-libs.sh"))
        .output()
        .unwrap_or_else(|e| panic!("scripts/client-libs.sh: {e}"));
    assert!(out.status.success(), "installing redis-py failed: {out:?}");
    let env = Setup::new(2).hash_tag().start();
    let port = env
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", root.join("target/client-libs/py"))
        .args(["-c", REDIS_PY_TRANSACTION, &port])
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "redis-py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WATCH the server refuses (an ACL denying it to rampart's user) watches nothing: the
/// client gets the server's error, its transaction runs, and the dedicated connection is
/// free again at once.
#[test]
fn watch_refused_by_the_server_holds_nothing() {
    let env = Setup::new(1)
        .workers(1)
        .option("max_dedicated_connections", 1)
        .start();
    let acl = env.redis[0].cmd(&["ACL", "SETUSER", "default", "-watch"]);
    assert_eq!(acl, Reply::ok());
    let mut c = env.client();
    assert_err_contains(&c.cmd(&["WATCH", "k"]), &["NOPERM"]);
    // The one dedicated connection is free: another client's blocking command gets it.
    let mut d = env.client();
    assert_eq!(d.cmd(&["BLPOP", "empty", "0.1"]), Reply::Array(None));
    assert_eq!(d.cmd(&["SET", "k", "1"]), Reply::ok());
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "k"]), cmd(&["EXEC"])]);
    assert_eq!(replies[2], Reply::Array(Some(vec![Reply::Int(2)])));
}

/// In a pool of one shard, commands that run on every shard (DBSIZE, KEYS, and with
/// `admin_broadcast` FLUSHALL and CONFIG SET) are part of a transaction like any other, as on
/// Redis: their replies are in EXEC's array. CONFIG SET of a parameter rampart depends on is
/// refused while queueing (the transaction is then discarded), and a pool of several shards
/// still refuses them.
#[test]
fn every_shard_commands_join_a_transaction_of_a_one_shard_pool() {
    let env = Setup::new(1).option("admin_broadcast", true).start();
    let mut c = env.client();
    assert_eq!(c.cmd(&["SET", "a", "1"]), Reply::ok());
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["DBSIZE"]),
        cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        cmd(&["FLUSHALL"]),
        cmd(&["DBSIZE"]),
        cmd(&["EXEC"]),
    ]);
    assert_eq!(
        replies[5],
        Reply::Array(Some(vec![
            Reply::Int(1),
            Reply::ok(),
            Reply::ok(),
            Reply::Int(0)
        ])),
        "{replies:?}"
    );
    assert_eq!(
        env.redis[0].cmd(&["CONFIG", "GET", "maxmemory-policy"]),
        Reply::bulks(["maxmemory-policy", "allkeys-lru"])
    );
    let replies = c.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "b", "1"]),
        cmd(&["CONFIG", "SET", "requirepass", "x"]),
        cmd(&["EXEC"]),
    ]);
    assert_err_contains(&replies[2], &["requirepass", "refused"]);
    assert_err_contains(&replies[3], &["EXECABORT"]);
    assert_eq!(env.redis[0].cmd(&["EXISTS", "b"]), Reply::Int(0));

    let env = Setup::new(2).option("admin_broadcast", true).start();
    let mut c = env.client();
    let replies = c.pipeline(&[cmd(&["MULTI"]), cmd(&["DBSIZE"]), cmd(&["EXEC"])]);
    assert_err_contains(&replies[1], &["every shard"]);
    assert_err_contains(&replies[2], &["EXECABORT"]);
}

/// A Sentinel failover (kill -9 of the primary) while clients are inside MULTI, WATCHing and
/// blocked, and others loop transactions: no transaction is ever partial (every EXEC that
/// answered an array applied both of its INCRs, and the two counters are equal on the new
/// primary), the watching client's EXEC answers nil and nothing of its transaction runs, the
/// blocked client is closed (as the dead server's clients are), and every client keeps
/// working afterwards.
#[test]
fn a_failover_with_clients_in_multi_watching_and_blocked() {
    let mut s = ha::SentinelSetup::start("  failover_hold: 10s\n");
    let addr = s.proxy.addr();
    let connect = || {
        let mut c = Client::connect(&addr);
        c.set_read_timeout(Some(Duration::from_secs(30)));
        c
    };
    // In MULTI, with commands queued: nothing has reached a server yet.
    let mut in_multi = connect();
    assert_eq!(in_multi.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(in_multi.cmd(&["INCR", "{m}a"]), Reply::simple("QUEUED"));
    assert_eq!(in_multi.cmd(&["INCR", "{m}b"]), Reply::simple("QUEUED"));
    // Watching a key on the primary that is about to die.
    let mut watching = connect();
    assert_eq!(watching.cmd(&["SET", "{w}k", "1"]), Reply::ok());
    assert_eq!(watching.cmd(&["WAIT", "2", "5000"]), Reply::Int(2));
    assert_eq!(watching.cmd(&["WATCH", "{w}k"]), Reply::ok());
    // Blocked on the primary.
    let mut blocked = connect();
    blocked
        .send_raw(&testkit::encode_command(&["BLPOP", "{q}q", "0"]))
        .unwrap();
    testkit::wait_until(Duration::from_secs(10), "BLPOP blocked", || {
        s.primary.info("clients").contains("blocked_clients:1")
    });
    // Two clients loop transactions through the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (stop, addr) = (Arc::clone(&stop), addr.clone());
            thread::spawn(move || {
                let mut c = Client::connect(&addr);
                c.set_read_timeout(Some(Duration::from_secs(30)));
                let (mut ok, mut errors, mut partial) = (0u64, Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let r = c.pipeline(&[
                        cmd(&["MULTI"]),
                        cmd(&["INCR", "{x}a"]),
                        cmd(&["INCR", "{x}b"]),
                        cmd(&["EXEC"]),
                    ]);
                    match &r[3] {
                        Reply::Array(Some(v)) if v.len() == 2 && v[0] == v[1] => ok += 1,
                        Reply::Array(Some(_)) => partial += 1,
                        other => errors.push(format!("{other:?}")),
                    }
                }
                (ok, errors, partial)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    s.primary.kill9();
    let (_, port) = s.wait_switch(killed, Duration::from_secs(30));
    let new_primary = s.node_on(port);

    // The blocked client is closed, as the dead server's own clients are (its BLPOP may
    // have popped an item whose reply was lost); a new connection works.
    blocked.assert_closed(Duration::from_secs(30));
    assert_pings(&mut connect());
    // The watching client: the watch was lost, so EXEC answers nil; nothing ran.
    let r = watching.pipeline(&[cmd(&["MULTI"]), cmd(&["INCR", "{w}k"]), cmd(&["EXEC"])]);
    assert_eq!(r[2], Reply::Array(None), "EXEC after the watch was lost");
    assert_eq!(new_primary.cmd(&["GET", "{w}k"]), Reply::bulk("1"));
    assert_pings(&mut watching);
    // The client in MULTI: its transaction runs whole on the new primary.
    assert_eq!(
        in_multi.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(1)]))
    );
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0, 0);
    for l in loops {
        let (ok, errors, partial) = l.join().unwrap();
        println!(
            "looping client: {ok} transactions, {} errors {:?}, {partial} partial",
            errors.len(),
            &errors[..errors.len().min(3)]
        );
        total = (total.0 + ok, total.1 + errors.len(), total.2 + partial);
    }
    assert_eq!(total.2, 0, "partial transactions");
    assert!(total.0 > 0, "no transaction ran");
    // At most one error per looping client (its transaction in flight at the kill).
    assert!(total.1 <= 2, "{} errors for 2 looping clients", total.1);
    let a = new_primary.cmd(&["GET", "{x}a"]);
    assert_eq!(a, new_primary.cmd(&["GET", "{x}b"]), "the counters differ");
}

/// A Sentinel failover of a live primary (`SENTINEL FAILOVER`) holds the shard's writes
/// from `+try-failover` until the new primary is applied, so the old primary, demoted at the
/// end, acknowledges nothing its successor lacks. EXEC after WATCH runs on a connection of
/// its own and is a write too: clients looping WATCH / LLEN / MULTI / RPUSH / EXEC through the
/// failover find every acknowledged element on the new primary (EXEC waits for the hold,
/// then finds the watch lost when the shard switched, and runs nothing).
#[test]
fn watched_transactions_acknowledged_during_a_sentinel_failover_are_never_lost() {
    let s = ha::SentinelSetup::start("  failover_hold: 10s\n");
    let addr = s.proxy.addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Sixteen clients whose transactions each take 1.5 s from WATCH to EXEC, started
    // 100 ms apart: some EXEC falls at every point of the failover.
    let loops: Vec<_> = (0..16)
        .map(|t| {
            let (stop, addr) = (Arc::clone(&stop), addr.clone());
            thread::sleep(Duration::from_millis(100));
            thread::spawn(move || {
                let key = format!("{{t{t}}}list");
                let mut c = Client::connect(&addr);
                c.set_read_timeout(Some(Duration::from_secs(30)));
                let (mut acked, mut aborted) = (Vec::new(), 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let v = n.to_string();
                    // As an application does: WATCH, read and think a little, then EXEC.
                    if c.cmd(&["WATCH", &key]) != Reply::ok() {
                        continue;
                    }
                    let _ = c.cmd(&["LLEN", &key]);
                    thread::sleep(Duration::from_millis(1500));
                    let r =
                        c.pipeline(&[cmd(&["MULTI"]), cmd(&["RPUSH", &key, &v]), cmd(&["EXEC"])]);
                    match &r[2] {
                        Reply::Array(Some(x)) if x.len() == 1 => acked.push(v),
                        _ => aborted += 1,
                    }
                }
                (key, acked, aborted)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(
        s.sentinels[0].cmd(&["SENTINEL", "FAILOVER", ha::MASTER]),
        Reply::ok()
    );
    let (_, port) = s.wait_switch(started, Duration::from_secs(30));
    let new_primary = s.node_on(port);
    testkit::wait_until(Duration::from_secs(20), "the old primary demoted", || {
        s.primary.role() == "slave"
    });
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let (key, acked, aborted) = l.join().expect("loop");
        println!(
            "{key}: {} transactions acknowledged, {aborted} not",
            acked.len()
        );
        assert!(!acked.is_empty(), "{key}: no transaction ran");
        let kept: std::collections::HashSet<Vec<u8>> =
            match new_primary.cmd(&["LRANGE", &key, "0", "-1"]) {
                Reply::Array(Some(v)) => v
                    .into_iter()
                    .filter_map(|r| r.as_bytes().map(<[u8]>::to_vec))
                    .collect(),
                other => panic!("{key}: {other:?}"),
            };
        let lost: Vec<&String> = acked
            .iter()
            .filter(|v| !kept.contains(v.as_bytes()))
            .collect();
        assert!(
            lost.is_empty(),
            "{key}: {} acknowledged transactions lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
}
