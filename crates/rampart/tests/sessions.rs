//! One client session through the proxy, checked against a real redis-server: the commands
//! rampart answers itself, errors that keep the connection open, inline and malformed input,
//! oversized bulks, AUTH and database selection.

mod common;

use std::time::Duration;

use common::{
    assert_err_contains, assert_pings, cmd, raw_exchange, reference, same_as_redis, Env, Setup,
};
use testkit::{Client, Reply};

/// A COMMAND entry as text, its subcommands (element 9) sorted: Redis lists them in hash order.
fn sorted_subcommands(entry: Reply) -> String {
    let Reply::Array(Some(mut fields)) = entry else {
        return format!("{entry:?}");
    };
    if let Some(Reply::Array(Some(subs))) = fields.get_mut(9) {
        subs.sort_by_key(|s| format!("{s:?}"));
    }
    format!("{fields:?}")
}

#[test]
fn local_commands_answer_like_redis() {
    let env = Setup::new(3).start();
    let r = reference();
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["PING"]),
            cmd(&["PING", "hello there"]),
            cmd(&["ECHO", "echo\r\nme"]),
            cmd(&["COMMAND", "COUNT"]),
            cmd(&["COMMAND", "INFO", "get"]),
            cmd(&["COMMAND", "INFO", "mset", "nosuchcommand"]),
            cmd(&["COMMAND", "DOCS", "get"]),
            cmd(&["PING", "a", "b"]),
            cmd(&["ECHO"]),
            cmd(&["SELECT", "abc"]),
            cmd(&["SELECT", "0"]),
            cmd(&["CLIENT", "GETNAME"]),
            cmd(&["CLIENT", "SETNAME", "tester"]),
            cmd(&["CLIENT", "GETNAME"]),
            cmd(&["CLIENT", "SETINFO", "lib-name", "testkit"]),
            cmd(&["RESET"]),
            cmd(&["CLIENT", "GETNAME"]),
        ],
    );
    // The whole table, in whatever order each one lists it.
    for c in [cmd(&["COMMAND"]), cmd(&["COMMAND", "LIST"])] {
        let as_set = |r: Reply| {
            let items = r
                .as_array()
                .unwrap_or_else(|| panic!("{c:?}: {r:?}"))
                .to_vec();
            let mut texts: Vec<String> = items.into_iter().map(sorted_subcommands).collect();
            texts.sort();
            texts
        };
        assert_eq!(as_set(p.cmd(&c)), as_set(d.cmd(&c)), "{c:?}");
    }
    assert!(p.cmd(&["CLIENT", "ID"]).as_int().is_some());
    assert!(p.cmd(&["SELECT", "1"]).is_error(), "SELECT of another db");
    for hello in [cmd(&["HELLO"]), cmd(&["HELLO", "2"])] {
        let reply = p.cmd(&hello);
        let items = reply
            .as_array()
            .unwrap_or_else(|| panic!("{hello:?}: {reply:?}"));
        let proto = items.iter().position(|i| i.as_str() == Some("proto"));
        assert_eq!(
            proto.map(|i| &items[i + 1]),
            Some(&Reply::Int(2)),
            "{reply:?}"
        );
    }
    let no4 = p.cmd(&["HELLO", "4"]);
    assert!(
        matches!(&no4, Reply::Error(e) if e.starts_with("NOPROTO")),
        "{no4:?}"
    );
    assert_pings(&mut p);

    // INFO: the proxy's sections and a keyspace summed over the shards.
    let sets: Vec<_> = (0..40)
        .map(|i| cmd(&["SET", &format!("i{i}"), "v"]))
        .collect();
    p.pipeline(&sets);
    let info = p.cmd(&["INFO"]);
    let text = info.as_str().unwrap_or_else(|| panic!("INFO: {info:?}"));
    for section in ["# Server", "# Clients", "# Stats", "# Pools", "# Keyspace"] {
        assert!(text.contains(section), "INFO lacks {section}:\n{text}");
    }
    let db0 = text
        .lines()
        .find_map(|l| l.strip_prefix("db0:keys="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse::<i64>().ok());
    assert_eq!(db0, Some(env.total_keys()), "{text}");
    assert_eq!(db0, Some(40));

    // QUIT: +OK, then the proxy closes the connection.
    p.send_raw(&testkit::encode_command(&["QUIT"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let got = common::read_until_closed(&mut p, Duration::from_secs(5));
    assert_eq!(got, vec![Reply::ok()]);
}

#[test]
fn errors_leave_the_connection_open() {
    let env = Setup::new(2).start();
    let r = reference();
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    let replies = same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["foo", "a", "b"]),
            cmd(&["PING"]),
            cmd(&["get"]),
            cmd(&["SET", "k"]),
            cmd(&["PING"]),
            cmd(&["OBJECT", "nosuchsub", "k"]),
            cmd(&["XINFO", "nosuchsub"]),
            cmd(&["COMMAND", "nosuchsub"]),
            cmd(&["CLIENT", "nosuchsub"]),
            cmd(&["PING"]),
        ],
    );
    assert_eq!(
        replies[0],
        Reply::Error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ".into())
    );
    assert_eq!(
        replies[2],
        Reply::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_err_contains(&p.cmd(&cmd(&["MOVE", "k", "1"])), &["not supported"]);
    assert_pings(&mut p);
}

#[test]
fn inline_commands_work() {
    let env = Setup::new(2).start();
    let mut p = env.client();
    p.send_raw(b"SET a b\r\nGET a\r\nPING\r\n\r\nEXISTS a nope\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            p.read_reply()
                .unwrap_or_else(|e| panic!("after {got:?}: {e}")),
        );
    }
    assert_eq!(
        got,
        vec![
            Reply::ok(),
            Reply::bulk("b"),
            Reply::simple("PONG"),
            Reply::Int(1)
        ]
    );
    assert_eq!(p.cmd(&["GET", "a"]), Reply::bulk("b"));
}

#[test]
fn protocol_errors_close_only_that_connection() {
    let env = Setup::new(2).start();
    let mut bystander = env.client();
    assert_eq!(bystander.cmd(&["SET", "b", "1"]), Reply::ok());
    assert_eq!(
        raw_exchange(&env.addr(), b"*abc\r\n"),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert_eq!(
        raw_exchange(&env.addr(), b"*1\r\n$x\r\n"),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    // Replies to the requests before the bad one still arrive, in order.
    assert_eq!(
        raw_exchange(
            &env.addr(),
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n*-x\r\n"
        ),
        b"+PONG\r\n$1\r\n1\r\n-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert_eq!(bystander.cmd(&["INCR", "b"]), Reply::Int(2));

    // A client that announces a huge bulk and sends a few bytes of it slows nobody down.
    let mut slow = env.client();
    slow.send_raw(b"*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n$536870000\r\nabc")
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds: Vec<_> = (0..500)
        .flat_map(|i| {
            let k = format!("q{i}");
            [cmd(&["SET", &k, &k]), cmd(&["GET", &k])]
        })
        .collect();
    let replies = bystander.pipeline(&cmds);
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair, [Reply::ok(), Reply::bulk(format!("q{i}"))]);
    }
    slow.set_read_timeout(Some(Duration::from_millis(200)));
    let waiting = slow.read_reply();
    assert!(
        matches!(&waiting, Err(e) if testkit::is_timeout(e)),
        "the slow client got {waiting:?}"
    );
}

#[test]
fn bulks_over_max_bulk_len_are_protocol_errors() {
    let env = Setup::new(2).option("max_bulk_len", 1024).start();
    let mut p = env.client();
    let fits = "x".repeat(1024);
    assert_eq!(p.cmd(&["SET", "k", &fits]), Reply::ok());
    assert_eq!(p.cmd(&["GET", "k"]), Reply::bulk(&fits));
    let too_big = testkit::encode_command(&["SET", "k", &"y".repeat(1025)]);
    assert_eq!(
        raw_exchange(&env.addr(), &too_big),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    assert_eq!(p.cmd(&["GET", "k"]), Reply::bulk(&fits), "the big SET ran");
}

#[test]
fn redis_auth_guards_the_pool() {
    let env = Setup::new(2).password("s3cret").start();
    let r = reference();
    common::require_pass(&r, "s3cret");
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["GET", "k"]),
            cmd(&["AUTH", "wrong"]),
            cmd(&["SET", "k", "v"]),
            cmd(&["AUTH", "s3cret"]),
            cmd(&["SET", "k", "v"]),
            cmd(&["GET", "k"]),
        ],
    );
    assert!(matches!(p.cmd(&["DEL", "k"]), Reply::Int(1)));
    // The other ways in: AUTH with a user name, HELLO ... AUTH; both refuse a wrong password.
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["AUTH", "default", "wrong"]),
            cmd(&["AUTH", "default", "s3cret"]),
            cmd(&["SET", "k", "2"]),
        ],
    );
    let mut h = env.client();
    let mut hd = Client::connect(&r.addr());
    let wrong = cmd(&["HELLO", "2", "AUTH", "default", "nope"]);
    assert_eq!(h.cmd(&wrong), hd.cmd(&wrong));
    let hello = h.cmd(&["HELLO", "2", "AUTH", "default", "s3cret"]);
    assert!(hello.as_array().is_some(), "{hello:?}");
    assert_eq!(h.cmd(&["GET", "k"]), Reply::bulk("2"));
    let mut other = env.client();
    assert_err_contains(&other.cmd(&["GET", "k"]), &["NOAUTH"]);
    // RESET ends the authentication, as on Redis.
    same_as_redis(
        &mut h,
        &mut hd,
        &[
            cmd(&["AUTH", "s3cret"]),
            cmd(&["RESET"]),
            cmd(&["GET", "k"]),
        ],
    );
    // A pool without redis_auth answers AUTH the way a password-less Redis does.
    let open = Setup::new(1).start();
    let plain = reference();
    same_as_redis(
        &mut open.client(),
        &mut Client::connect(&plain.addr()),
        &[cmd(&["AUTH", "x"]), cmd(&["PING"])],
    );
}

#[test]
fn redis_db_selects_the_backend_database() {
    let env: Env = Setup::new(2).option("redis_db", 3).start();
    let mut p = env.client();
    assert_eq!(p.cmd(&["SET", "in3", "v"]), Reply::ok());
    assert_eq!(p.cmd(&["SELECT", "0"]), Reply::ok());
    assert!(p.cmd(&["SELECT", "3"]).is_error());
    assert_eq!(env.total_keys(), 0, "the key landed in db 0");
    let in3: Vec<Reply> = (0..env.redis.len())
        .map(|i| {
            let mut b = env.backend(i);
            assert_eq!(b.cmd(&["SELECT", "3"]), Reply::ok());
            b.cmd(&["GET", "in3"])
        })
        .collect();
    assert_eq!(
        in3.iter().filter(|r| **r == Reply::bulk("v")).count(),
        1,
        "{in3:?}"
    );
}

/// `COPY ... DB n` would write into another database of the server than the pool's
/// `redis_db`, which clients cannot reach otherwise (SELECT, MOVE and SWAPDB are refused):
/// it is refused too, inside MULTI as well (EXEC then aborts), and plain COPY works.
#[test]
fn copy_into_another_database_is_refused_like_move() {
    let env = Setup::new(1).option("redis_db", 2).start();
    let mut p = env.client();
    assert_eq!(p.cmd(&["SET", "k", "v"]), Reply::ok());
    for db in ["0", "5", "2"] {
        let r = p.cmd(&["COPY", "k", "copy", "DB", db, "REPLACE"]);
        assert_err_contains(&r, &["not supported", "database"]);
    }
    let r = p.pipeline(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "k2", "v"]),
        cmd(&["COPY", "k", "copy", "db", "3"]),
        cmd(&["EXEC"]),
    ]);
    assert_err_contains(&r[2], &["not supported"]);
    assert_err_contains(&r[3], &["EXECABORT"]);
    assert_eq!(p.cmd(&["COPY", "k", "copy"]), Reply::Int(1));
    assert_eq!(p.cmd(&["GET", "copy"]), Reply::bulk("v"));
    let mut direct = env.backend(0);
    for db in ["0", "3", "5"] {
        assert_eq!(direct.cmd(&["SELECT", db]), Reply::ok());
        assert_eq!(direct.cmd(&["DBSIZE"]), Reply::Int(0), "database {db}");
    }
    assert_eq!(direct.cmd(&["SELECT", "2"]), Reply::ok());
    assert_eq!(
        direct.cmd(&["EXISTS", "k2"]),
        Reply::Int(0),
        "half of the transaction ran"
    );
}
