//! What a Redis-speaking server answers, checked through rampart against a real redis-server:
//! blocking calls, AUTH before and after, SELECT, INFO fields, SLOWLOG entries, the RAMPART
//! command, and the limits Redis puts on clients that have not authenticated.

mod common;

use common::{assert_pings, cmd, raw_exchange, reference, require_pass, same_as_redis, Setup};
use testkit::{Client, Reply};

/// Every spelling of a blocking call answers as Redis does (on a dedicated server
/// connection), a BLOCK hidden behind a group named like a keyword included; WAIT is refused
/// in its own words and the connection keeps serving.
#[test]
fn blocking_calls_answer_as_redis_does() {
    let env = Setup::new(1).start();
    let direct = reference();
    let mut p = env.client();
    let mut d = Client::connect(&direct.addr());
    let calls = [
        cmd(&["RPUSH", "l", "x", "y"]),
        cmd(&["BLPOP", "l", "0"]),
        cmd(&["brpoplpush", "l", "b", "0"]),
        cmd(&["BZPOPMIN", "z", "0.01"]),
        cmd(&["BLMPOP", "0.01", "1", "l", "LEFT"]),
        cmd(&["BLMOVE", "b", "l", "LEFT", "RIGHT", "0.01"]),
        cmd(&["XGROUP", "CREATE", "s", "streams", "$", "MKSTREAM"]),
        cmd(&["XADD", "s", "1-1", "f", "v"]),
        cmd(&["XREAD", "BLOCK", "10", "STREAMS", "s", "$"]),
        cmd(&["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "0"]),
        // A group named like a keyword does not hide the BLOCK option behind it.
        cmd(&[
            "xreadgroup",
            "group",
            "streams",
            "c",
            "block",
            "0",
            "streams",
            "s",
            ">",
        ]),
        cmd(&[
            "XREADGROUP",
            "GROUP",
            "streams",
            "c",
            "COUNT",
            "1",
            "NOACK",
            "BLOCK",
            "10",
            "STREAMS",
            "s",
            ">",
        ]),
        // A consumer named "block" is a name, not the option.
        cmd(&[
            "XREADGROUP",
            "GROUP",
            "streams",
            "block",
            "STREAMS",
            "s",
            ">",
        ]),
        cmd(&["BLPOP", "l", "-1"]),
        cmd(&["BLPOP", "l", "nope"]),
        // Key counts are read by rampart; its complaints are Redis' own, per command family.
        cmd(&["ZINTERCARD", "0", "z"]),
        cmd(&["ZINTERCARD", "-1", "z"]),
        cmd(&["ZINTERCARD", "5", "z"]),
        cmd(&["ZUNION", "0", "z"]),
        cmd(&["ZMPOP", "0", "z", "MIN"]),
        cmd(&["SINTERCARD", "0", "s"]),
        cmd(&["SINTERCARD", "5", "s"]),
    ];
    same_as_redis(&mut p, &mut d, &calls);
    // WAIT with no replica and a zero count answers at once, as Redis.
    same_as_redis(
        &mut p,
        &mut d,
        &[cmd(&["WAIT", "0", "0"]), cmd(&["WAIT", "0", "10"])],
    );
    assert_pings(&mut p);
}

/// AUTH on a pool without a password answers as a password-less Redis 7 does: the default
/// user takes any password, other users do not exist; the same through HELLO.
#[test]
fn auth_without_a_password_answers_like_redis() {
    let env = Setup::new(2).start();
    let r = reference();
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["AUTH", "x"]),
            cmd(&["AUTH", "default", "anything"]),
            cmd(&["AUTH", "someuser", "x"]),
            cmd(&["AUTH", "a", "b", "c"]),
            cmd(&["HELLO", "2", "AUTH", "someuser", "x"]),
            cmd(&["PING"]),
        ],
    );
    assert_eq!(
        p.cmd(&["AUTH", "default", "anything"]),
        Reply::ok(),
        "the default user has no password"
    );
    let hello = p.cmd(&["HELLO", "2", "AUTH", "default", "whatever"]);
    assert!(hello.as_array().is_some(), "{hello:?}");
    // With a password: only the default user, with that password.
    let locked = Setup::new(1).password("pw").start();
    let rl = reference();
    require_pass(&rl, "pw");
    same_as_redis(
        &mut locked.client(),
        &mut Client::connect(&rl.addr()),
        &[
            cmd(&["AUTH", "someuser", "pw"]),
            cmd(&["AUTH", "default", "nope"]),
            cmd(&["AUTH", "default", "pw"]),
            cmd(&["PING"]),
        ],
    );
}

/// With `redis_db: 3`, clients see that database as 0, as documented: SELECT 0 works and any
/// other database is refused with an error that says why.
#[test]
fn select_zero_is_the_pools_database() {
    let env = Setup::new(1).option("redis_db", 3).start();
    let mut p = env.client();
    assert_eq!(p.cmd(&["SELECT", "0"]), Reply::ok());
    assert_eq!(p.cmd(&["SET", "k", "v"]), Reply::ok());
    match p.cmd(&["SELECT", "3"]) {
        Reply::Error(e) => assert!(e.contains("database 0"), "{e}"),
        other => panic!("SELECT 3: {other:?}"),
    }
    let mut b = env.backend(0);
    assert_eq!(b.cmd(&["SELECT", "3"]), Reply::ok());
    assert_eq!(b.cmd(&["GET", "k"]), Reply::bulk("v"));
}

/// Before AUTH a client gets what an unauthenticated client of Redis gets: NOAUTH for every
/// command but AUTH, HELLO, QUIT and RESET (SLOWLOG and RAMPART included), and a protocol
/// error and a closed connection for a request of more than 10 arguments or an argument over
/// 16 KiB. After AUTH the same requests are served.
#[test]
fn unauthenticated_clients_get_what_redis_gives_them() {
    let env = Setup::new(2).password("pw").start();
    let r = reference();
    require_pass(&r, "pw");
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["SLOWLOG", "GET"]),
            cmd(&["SLOWLOG", "LEN"]),
            cmd(&["CLIENT", "SETNAME", "x"]),
            cmd(&["COMMAND", "COUNT"]),
            cmd(&["INFO"]),
            cmd(&["RESET"]),
            cmd(&["nosuchcommand"]),
        ],
    );
    assert_eq!(
        p.cmd(&["RAMPART", "HELP"]),
        Reply::Error("NOAUTH Authentication required.".into())
    );
    // Only the header of the long argument: the refusal comes before its bytes.
    let big_bulk = "*2\r\n$3\r\nGET\r\n$16385\r\n".to_string();
    let edge_bulk = format!(
        "*2\r\n$3\r\nGET\r\n$16384\r\n{}\r\nQUIT\r\n",
        "a".repeat(16384)
    );
    let many = format!("*11\r\n{}", "$1\r\na\r\n".repeat(11));
    for raw in [big_bulk.as_bytes(), many.as_bytes(), edge_bulk.as_bytes()] {
        let want = raw_exchange(&r.addr(), raw);
        let got = raw_exchange(&env.addr(), raw);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "rampart vs redis-server"
        );
    }
    // After AUTH the limits are gone.
    let mut c = env.client();
    c.send_raw(b"AUTH pw\r\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.read_reply().ok(), Some(Reply::ok()));
    let mset: Vec<String> = std::iter::once("MSET".to_string())
        .chain((0..12).map(|i| format!("k{i}")))
        .collect();
    assert_eq!(c.cmd(&mset), Reply::ok());
    let big = "v".repeat(20_000);
    assert_eq!(c.cmd(&["SET", "big", &big]), Reply::ok());
    assert_pings(&mut c);
}

/// With `admin_broadcast: true`, CONFIG SET of a parameter rampart depends on is refused by
/// name and reaches no server (nothing half-applied when it comes with others); the rest
/// still goes to every server.
#[test]
fn config_set_keeps_away_from_what_rampart_depends_on() {
    let env = Setup::new(2).option("admin_broadcast", "true").start();
    let mut p = env.client();
    for (c, name) in [
        (vec!["CONFIG", "SET", "requirepass", "x"], "requirepass"),
        (vec!["config", "set", "MasterAuth", "x"], "MasterAuth"),
        (
            vec![
                "CONFIG",
                "SET",
                "maxmemory-policy",
                "allkeys-lru",
                "tls-port",
                "0",
            ],
            "tls-port",
        ),
        (
            vec!["CONFIG", "SET", "replica-read-only", "no"],
            "replica-read-only",
        ),
    ] {
        match p.cmd(&c) {
            Reply::Error(e) => assert!(e.contains(&format!("'{name}'")), "{c:?}: {e}"),
            other => panic!("{c:?}: {other:?}"),
        }
    }
    for i in 0..env.redis.len() {
        let mut b = env.backend(i);
        let got = b.cmd(&["CONFIG", "GET", "requirepass"]);
        assert_eq!(
            got,
            Reply::Array(Some(vec![Reply::bulk("requirepass"), Reply::bulk("")]))
        );
        let policy = b.cmd(&["CONFIG", "GET", "maxmemory-policy"]);
        assert_eq!(
            policy.as_array().and_then(|a| a.get(1).cloned()),
            Some(Reply::bulk("noeviction")),
            "half applied on backend {i}"
        );
    }
    assert_pings(&mut p);
    assert_eq!(
        p.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        Reply::ok()
    );
    for i in 0..env.redis.len() {
        let policy = env.backend(i).cmd(&["CONFIG", "GET", "maxmemory-policy"]);
        assert_eq!(
            policy.as_array().and_then(|a| a.get(1).cloned()),
            Some(Reply::bulk("allkeys-lru"))
        );
    }
}

/// twemproxy's default hash, `fnv1a_64`, as nutcracker computes it: 32-bit arithmetic with
/// the 64-bit constants cut to their low half, key bytes read as signed chars.
fn fnv1a_64(key: &[u8]) -> u32 {
    let mut h: u32 = 0x8422_2325;
    for &b in key {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(0x0000_01b3);
    }
    h
}

/// The field/value pairs of a RAMPART KEYSHARD reply.
fn keyshard(c: &mut Client, key: &str) -> Vec<(String, Reply)> {
    let r = c.cmd(&["RAMPART", "KEYSHARD", key]);
    let items = r
        .as_array()
        .unwrap_or_else(|| panic!("KEYSHARD {key}: {r:?}"));
    items
        .chunks(2)
        .map(|p| match p {
            [Reply::Bulk(Some(f)), v] => (String::from_utf8_lossy(f).into_owned(), v.clone()),
            other => panic!("KEYSHARD {key}: {other:?}"),
        })
        .collect()
}

/// RAMPART KEYSHARD names the shard that really holds the key (the server the key lands on
/// when written), the ring hash of the key (its hash tag part), and the node for writes and
/// reads; RAMPART HELP lists every subcommand, and each one listed is known.
#[test]
fn keyshard_says_where_a_key_lives() {
    let env = Setup::new(3).hash_tag().start();
    let mut p = env.client();
    for key in ["user:1", "user:2", "{tag}a", "naïve", "k9", "x{y}z"] {
        assert_eq!(p.cmd(&["SET", key, "v"]), Reply::ok());
        let i = env.shard_holding(key);
        let addr = env.redis[i].addr();
        let hashed = match (key.find('{'), key.find('}')) {
            (Some(a), Some(b)) if b > a + 1 => &key[a + 1..b],
            _ => key,
        };
        let node = Reply::bulk(format!("{addr} primary"));
        assert_eq!(
            keyshard(&mut p, key),
            vec![
                ("shard".to_string(), Reply::bulk(format!("shard{i}"))),
                (
                    "hash".to_string(),
                    Reply::Int(i64::from(fnv1a_64(hashed.as_bytes())))
                ),
                ("write".to_string(), node.clone()),
                ("read".to_string(), node),
            ],
            "{key}"
        );
        assert_eq!(p.cmd(&["DEL", key]), Reply::Int(1));
    }
    let help = p.cmd(&["RAMPART", "HELP"]);
    let lines: Vec<String> = help
        .as_array()
        .unwrap_or_else(|| panic!("{help:?}"))
        .iter()
        .map(|l| match l {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    for sub in ["KEYSHARD", "SWITCHOVER", "HELP"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("RAMPART {sub}"))),
            "{sub} missing from {lines:?}"
        );
    }
    for l in &lines {
        let sub = l.split_whitespace().nth(1).unwrap_or_default();
        match p.cmd(&["RAMPART", sub, "x", "y", "z", "w"]) {
            Reply::Error(e) => assert!(e.contains("wrong number of arguments"), "{sub}: {e}"),
            other => panic!("{sub}: {other:?}"),
        }
    }
    assert_eq!(
        p.cmd(&["RAMPART", "NOPE"]),
        Reply::Error("ERR unknown subcommand 'NOPE'. Try RAMPART HELP.".into())
    );
}

/// In a replicated pool, KEYSHARD shows the primary for writes and the replica a read goes to.
#[test]
fn keyshard_shows_the_read_node_of_a_replicated_shard() {
    let primary = testkit::RedisServer::start();
    let replica = testkit::RedisServer::start_replica_of(&primary);
    let port = testkit::free_port();
    let yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  read_policy: prefer-replica\n  health_check:\n    interval: 100ms\n    rise: 1\n  primary: {}\n  replicas:\n    - {}\n",
        primary.addr(),
        replica.addr()
    );
    let _proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("x.yml", &yaml)
        .args(["-c", "{dir}/x.yml", "--no-stats", "--no-admin"])
        .wait_port(port)
        .start();
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    let want_read = Reply::bulk(format!("{} replica", replica.addr()));
    let mut last = Vec::new();
    let ok = testkit::poll_until(std::time::Duration::from_secs(10), || {
        last = keyshard(&mut c, "somekey");
        (last.get(3).map(|f| &f.1) == Some(&want_read)).then_some(())
    });
    assert!(ok.is_some(), "read never went to the replica: {last:?}");
    assert_eq!(last[0], ("shard".to_string(), Reply::bulk("alpha")));
    assert_eq!(
        last[2],
        (
            "write".to_string(),
            Reply::bulk(format!("{} primary", primary.addr()))
        )
    );
}

/// A runaway script has a way out through rampart: SCRIPT KILL reaches the node running it on
/// a connection of its own (the shared one is blocked by the script), the killer gets OK, the
/// script's client gets Redis' error, and the pool serves again. With nothing running, SCRIPT
/// KILL and FUNCTION KILL answer as Redis does.
#[test]
fn script_kill_stops_a_runaway_script() {
    let env = Setup::new(2)
        .password("pw")
        .redis_args(&["--busy-reply-threshold", "100"])
        .start();
    let r = reference();
    let login = |c: &mut Client| assert_eq!(c.cmd(&["AUTH", "pw"]), Reply::ok());
    let mut killer = env.client();
    login(&mut killer);
    let mut direct = Client::connect(&r.addr());
    same_as_redis(
        &mut killer,
        &mut direct,
        &[cmd(&["SCRIPT", "KILL"]), cmd(&["FUNCTION", "KILL"])],
    );
    let mut runner = env.client();
    login(&mut runner);
    runner
        .send_raw(b"*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let killed = testkit::poll_until(std::time::Duration::from_secs(10), || {
        match killer.cmd(&["SCRIPT", "KILL"]) {
            Reply::Simple(s) if s == "OK" => Some(()),
            Reply::Error(e) if e.starts_with("NOTBUSY") => None,
            other => panic!("SCRIPT KILL: {other:?}"),
        }
    });
    assert!(killed.is_some(), "SCRIPT KILL never found the script");
    runner.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    match runner.read_reply() {
        Ok(Reply::Error(e)) => assert!(e.contains("Script killed by user"), "{e}"),
        other => panic!("the script's client got {other:?}"),
    }
    assert_eq!(runner.cmd(&["SET", "after", "1"]), Reply::ok());
    let mut other = env.client();
    login(&mut other);
    for i in 0..20 {
        let k = format!("k{i}");
        assert_eq!(other.cmd(&["SET", &k, "v"]), Reply::ok());
        assert_eq!(other.cmd(&["GET", &k]), Reply::bulk("v"));
    }
}

/// INFO parsed the way clients parse it (`key:value` lines, `#` section headers).
fn info(c: &mut Client, section: &str) -> std::collections::HashMap<String, String> {
    let r = c.cmd(&["INFO", section]);
    let Reply::Bulk(Some(text)) = r else {
        panic!("INFO {section}: {r:?}")
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The INFO fields clients and test harnesses read are there, in Redis' format, with real
/// values: the port connected to, this process, its config file, its memory, the primaries,
/// and per-command calls equal to what was sent.
#[test]
fn info_has_the_fields_clients_read() {
    let env = Setup::new(2).start();
    let mut c = env.client();
    let f = info(&mut c, "all");
    let direct = info(&mut Client::connect(&env.redis[0].addr()), "server");
    assert_eq!(f["redis_version"], direct["redis_version"]);
    assert_eq!(f["redis_mode"], "standalone");
    assert_eq!(f["cluster_enabled"], "0");
    assert_eq!(f["role"], "master");
    assert_eq!(f["tcp_port"], env.port.to_string());
    assert_eq!(f["process_id"], env.proxy.pid().to_string());
    assert_eq!(f["run_id"].len(), 40);
    assert!(f["config_file"].ends_with("x.yml"), "{}", f["config_file"]);
    assert!(
        std::path::Path::new(&f["executable"]).exists(),
        "{}",
        f["executable"]
    );
    let rss: u64 = f["used_memory_rss"].parse().unwrap_or(0);
    assert!(rss > 1024 * 1024, "used_memory_rss {rss}");
    assert!(
        f["used_memory_human"].ends_with('M'),
        "{}",
        f["used_memory_human"]
    );
    assert_eq!(f["maxmemory"], "0");
    for (i, r) in env.redis.iter().enumerate() {
        assert_eq!(
            f[&format!("primary_{}_shard{i}", common::POOL)],
            format!("addr={},writable=1", r.addr())
        );
    }
    // commandstats counts what was sent, in Redis' cmdstat_<name>:calls=...,usec=... form.
    for i in 0..7 {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    for i in 0..5 {
        assert_eq!(c.cmd(&["GET", &format!("k{i}")]), Reply::bulk("v"));
    }
    // Two INCRs of a value that is not a number: both fail on the server.
    for _ in 0..2 {
        assert!(matches!(c.cmd(&["INCR", "k0"]), Reply::Error(_)));
    }
    let stats = info(&mut c, "commandstats");
    let incr = &stats["cmdstat_incr"];
    assert!(
        incr.starts_with("calls=2,") && incr.ends_with(",failed_calls=2"),
        "failed calls are counted as Redis does: {incr}"
    );
    for (name, calls) in [("set", 7), ("get", 5)] {
        let line = &stats[&format!("cmdstat_{name}")];
        let fields: std::collections::HashMap<&str, &str> = line
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        assert_eq!(fields["calls"], calls.to_string(), "{line}");
        assert_eq!(fields["failed_calls"], "0", "{line}");
        let usec: f64 = fields["usec"].parse().unwrap_or(-1.0);
        let per: f64 = fields["usec_per_call"].parse().unwrap_or(-1.0);
        assert!(
            usec >= 0.0 && (per - usec / calls as f64).abs() < 0.01,
            "{line}"
        );
    }
    assert!(
        !info(&mut c, "").contains_key("cmdstat_get"),
        "commandstats is not a default section"
    );
}

/// SLOWLOG entries have Redis' shape: the same arguments as Redis keeps for the same request
/// (32 at most, the last saying how many more; each cut at 128 bytes with how many more), the
/// client's address and name; then rampart's node.
#[test]
fn slowlog_entries_are_shaped_as_redis_writes_them() {
    let redis = testkit::RedisServer::start();
    let port = testkit::free_port();
    let yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}:1 only\n",
        redis.addr()
    );
    let _proxy = testkit::Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("x.yml", &yaml)
        .args([
            "-c",
            "{dir}/x.yml",
            "--no-stats",
            "--no-admin",
            "--slowlog-slower-than",
            "0",
        ])
        .wait_port(port)
        .start();
    let reference = reference();
    let mut d = Client::connect(&reference.addr());
    assert_eq!(
        d.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        Reply::ok()
    );
    let mut p = Client::connect(&format!("127.0.0.1:{port}"));
    let long = "v".repeat(300);
    let mut many: Vec<String> = vec!["rpush".into(), "list".into(), long.clone()];
    many.extend((0..40).map(|i| format!("e{i}")));
    let few = vec!["SET".to_string(), "k".to_string(), long];
    for c in [&mut p, &mut d] {
        assert_eq!(c.cmd(&["CLIENT", "SETNAME", "slowpoke"]), Reply::ok());
        assert_eq!(c.cmd(&["SLOWLOG", "RESET"]), Reply::ok());
        assert!(c.cmd(&many).as_int().is_some());
        assert_eq!(c.cmd(&few), Reply::ok());
    }
    let entries = |c: &mut Client| -> Vec<Vec<Reply>> {
        let r = c.cmd(&["SLOWLOG", "GET", "-1"]);
        r.as_array()
            .unwrap_or_else(|| panic!("{r:?}"))
            .iter()
            .map(|e| e.as_array().unwrap_or_else(|| panic!("{e:?}")).to_vec())
            .filter(|e| {
                e[3].as_array().is_some_and(|a| {
                    a[0] != Reply::bulk("SLOWLOG") && a[0] != Reply::bulk("CLIENT")
                })
            })
            .collect()
    };
    let (ours, theirs) = (entries(&mut p), entries(&mut d));
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o[3], t[3], "the arguments as Redis keeps them");
        assert_eq!(o[5], Reply::bulk("slowpoke"));
        assert_eq!(o[5], t[5]);
        let Reply::Bulk(Some(addr)) = &o[4] else {
            panic!("client address: {:?}", o[4])
        };
        let addr = String::from_utf8_lossy(addr);
        assert!(
            addr.strip_prefix("127.0.0.1:")
                .is_some_and(|port| port.parse::<u16>().is_ok()),
            "{addr}"
        );
        assert_eq!(o.len(), 7);
        assert_eq!(o[6], Reply::bulk("only"), "the node that served it");
        assert_eq!(t.len(), 6);
    }
    let args = ours[1][3]
        .as_array()
        .map(<[Reply]>::to_vec)
        .unwrap_or_default();
    assert_eq!(args.len(), 32);
    assert_eq!(args[31], Reply::bulk("... (12 more arguments)"));
}
