//! How the proxy routes commands, checked against real redis-servers: forwarding, ordered
//! pipelines, multi-key splitting, hash tags, fan-out merges, admin commands and client limits.
//!
//! Where Redis has an answer of its own, the expected value is what a standalone
//! redis-server replies to the same commands.

mod common;

use std::collections::{HashMap, HashSet};

use common::{
    assert_err_contains, assert_pings, cmd, raw_exchange, reference, same_as_redis, Setup,
};
use testkit::{Client, Reply};

#[test]
fn single_key_commands_and_a_long_pipeline_keep_request_order() {
    let env = Setup::new(3).start();
    let r = reference();
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["GET", "nope"]),
            cmd(&["SET", "s", "hello"]),
            cmd(&["GET", "s"]),
            cmd(&["APPEND", "s", " world"]),
            cmd(&["STRLEN", "s"]),
            cmd(&["INCR", "n"]),
            cmd(&["INCRBY", "n", "41"]),
            cmd(&["INCR", "s"]),
            cmd(&["EXPIRE", "n", "100"]),
            cmd(&["PERSIST", "n"]),
            cmd(&["TTL", "n"]),
            cmd(&["HSET", "h", "f1", "a", "f2", "b"]),
            cmd(&["HGETALL", "h"]),
            cmd(&["RPUSH", "l", "x", "y", "z"]),
            cmd(&["LRANGE", "l", "0", "-1"]),
            cmd(&["ZADD", "z", "1", "a", "2", "b"]),
            cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
            cmd(&["TYPE", "h"]),
            cmd(&["LPUSH", "s", "wrongtype"]),
        ],
    );
    // ~2400 mixed commands in one write; every reply must match its own request.
    let mut cmds = Vec::new();
    let mut want = Vec::new();
    let mut counters: HashMap<usize, i64> = HashMap::new();
    for i in 0..667 {
        let (k, v, c) = (format!("k_{i}"), format!("v_{i}"), format!("c_{}", i % 37));
        cmds.push(cmd(&["SET", &k, &v]));
        want.push(Reply::ok());
        cmds.push(cmd(&["GET", &k]));
        want.push(Reply::bulk(&v));
        cmds.push(cmd(&["INCR", &c]));
        let n = counters.entry(i % 37).or_default();
        *n += 1;
        want.push(Reply::Int(*n));
        if i % 3 == 0 {
            // Split requests (their parts answer from several shards) keep their place too.
            let half = format!("k_{}", i / 2);
            cmds.push(cmd(&["MGET", &k, "nokey", &half]));
            let items = vec![
                Reply::bulk(&v),
                Reply::nil(),
                Reply::bulk(format!("v_{}", i / 2)),
            ];
            want.push(Reply::Array(Some(items)));
            cmds.push(cmd(&["EXISTS", &k, &half, "nokey", &k]));
            want.push(Reply::Int(3));
        }
    }
    let got = p.pipeline(&cmds);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "reply {i} to {:?}", cmds[i]);
    }
    // The keys really are spread over the shards.
    let sizes = env.on_each_backend(&["DBSIZE"]);
    for (i, n) in sizes.iter().enumerate() {
        assert!(n.as_int().unwrap_or(0) > 20, "backend {i}: {sizes:?}");
    }
    assert_pings(&mut p);
}

#[test]
fn edge_cases_answer_like_redis() {
    let env = Setup::new(3).start();
    let r = reference();
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    let big = "b".repeat(1 << 20);
    let many: Vec<String> = (0..300).map(|i| format!("many{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in many.iter().step_by(2) {
        mset.extend([k.clone(), format!("val-{k}")]);
    }
    let mut mget = vec!["MGET".to_string()];
    mget.extend(many.iter().cloned());
    let mut del = vec!["DEL".to_string()];
    del.extend(many.iter().rev().cloned());
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["SET", "", "empty key"]),
            cmd(&["GET", ""]),
            cmd(&["SET", "bin", "a\r\nb\0c$3\r\n"]),
            cmd(&["GET", "bin"]),
            cmd(&["SET", "big", &big]),
            cmd(&["GET", "big"]),
            cmd(&["GeT", "bin"]),
            cmd(&["OBJECT", "ENCODING", "big"]),
            cmd(&["MSET", "a", "1", "b"]),
            cmd(&["EXISTS"]),
            cmd(&["CONFIG", "GET"]),
            cmd(&["EVAL", "return 7", "0"]),
            cmd(&["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]),
            cmd(&["COMMAND", "GETKEYS", "PING"]),
            cmd(&[
                "COMMAND",
                "GETKEYSANDFLAGS",
                "LMOVE",
                "a",
                "b",
                "LEFT",
                "RIGHT",
            ]),
            cmd(&["COMMAND", "GETKEYSANDFLAGS", "SORT", "a", "STORE", "b"]),
            cmd(&[
                "COMMAND",
                "GETKEYSANDFLAGS",
                "EVAL",
                "s",
                "2",
                "a",
                "b",
                "x",
            ]),
            cmd(&["COMMAND", "GETKEYSANDFLAGS", "SPUBLISH", "ch", "m"]),
            cmd(&["COMMAND", "GETKEYSANDFLAGS", "NOSUCH", "k"]),
            cmd(&["COMMAND", "LIST", "FILTERBY", "ACLCAT"]),
            cmd(&["COMMAND", "LIST", "FILTERBY", "NOSUCH", "x"]),
            cmd(&["COMMAND", "LIST", "FILTERBY", "MODULE", "x"]),
            cmd(&["foo", &"x".repeat(200), "more"]),
            cmd(&["foo", "a\r\nb"]),
            mset,
            mget,
            del,
        ],
    );
    // COMMAND LIST's filters give Redis' names (its order is its hash table's).
    for filter in [
        &["ACLCAT", "hyperloglog"][..],
        &["aclcat", "Stream"],
        &["ACLCAT", "nosuch"],
        &["PATTERN", "XA*"],
        &["PATTERN", "acl|*"],
    ] {
        let mut call = vec!["COMMAND", "LIST", "FILTERBY"];
        call.extend_from_slice(filter);
        let names = |c: &mut Client| match c.cmd(&call) {
            Reply::Array(Some(items)) => {
                let mut v: Vec<Reply> = items;
                v.sort_by_key(|r| format!("{r:?}"));
                v
            }
            other => panic!("{call:?}: {other:?}"),
        };
        assert_eq!(names(&mut p), names(&mut d), "{call:?}");
    }
    // What Redis answers here and rampart does not: PING, QUIT and the rest go unanswered
    // after QUIT; empty and null multibulks are skipped; quotes group inline words.
    let script = b"*0\r\n*-1\r\nSET \"sp ace\" 'x y'\r\nGET \"sp ace\"\r\nQUIT\r\nPING\r\n";
    let want = b"+OK\r\n$3\r\nx y\r\n+OK\r\n";
    assert_eq!(raw_exchange(&r.addr(), script), want, "redis-server");
    assert_eq!(raw_exchange(&env.addr(), script), want, "rampart");
}

#[test]
fn each_client_reads_its_own_writes_over_several_server_connections() {
    let env = Setup::new(3)
        .option("server_connections", 4)
        .workers(2)
        .start();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let addr = env.addr();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                for round in 0..3 {
                    let mut cmds = Vec::new();
                    for i in 0..300 {
                        let key = format!("ryw:{t}:{}", i % 5);
                        let val = format!("{round}:{i}");
                        cmds.push(cmd(&["SET", &key, &val]));
                        cmds.push(cmd(&["GET", &key]));
                    }
                    let replies = c.pipeline(&cmds);
                    for (i, pair) in replies.chunks(2).enumerate() {
                        assert_eq!(pair[0], Reply::ok(), "client {t} SET {i}");
                        let val = format!("{round}:{i}");
                        assert_eq!(pair[1], Reply::bulk(&val), "client {t} GET {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        if let Err(e) = t.join() {
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn multi_key_commands_split_over_shards_and_count_like_redis() {
    let env = Setup::new(3).start();
    let r = reference();
    let ks = env.key_per_shard("mk");
    let (a, b, c) = (ks[0].as_str(), ks[1].as_str(), ks[2].as_str());
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    let replies = same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["SET", a, "va"]),
            cmd(&["SET", c, "vc"]),
            cmd(&["MGET", a, b, c, a, "missing"]),
            cmd(&["MGET", a, a, b]),
            cmd(&["MGET", b]),
            cmd(&["MSET", a, "1", b, "2", c, "3", "other", "4"]),
            cmd(&["MGET", c, b, a, "other"]),
        ],
    );
    assert_eq!(
        replies[2],
        Reply::Array(Some(vec![
            Reply::bulk("va"),
            Reply::nil(),
            Reply::bulk("vc"),
            Reply::bulk("va"),
            Reply::nil(),
        ]))
    );
    // MSET put each key on the backend that owns it.
    for (i, (k, v)) in [(a, "1"), (b, "2"), (c, "3")].into_iter().enumerate() {
        assert_eq!(env.backend(i).cmd(&["GET", k]), Reply::bulk(v), "{k}");
    }
    // Counting commands with duplicates and missing keys, as one redis-server counts them.
    same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["EXISTS", a, a, b, "missing", c]),
            cmd(&["TOUCH", a, b, b, "missing"]),
            cmd(&["DEL", a, a, "missing"]),
            cmd(&["EXISTS", a, b, c, "other"]),
            cmd(&["UNLINK", b, c, b, c, "nope"]),
            cmd(&["EXISTS", a, b, c]),
            cmd(&["DEL", "other", "other"]),
            cmd(&["MSET", a, "x", a, "y", b, "z"]),
            cmd(&["MGET", a, b]),
            cmd(&["DEL", a, b, c, a, b, c]),
        ],
    );
    assert_eq!(env.total_keys(), 0);
    assert_pings(&mut p);
}

#[test]
fn hash_tags_keep_multi_key_commands_on_one_shard() {
    let env = Setup::new(3).hash_tag().start();
    let r = reference();
    let (mut p, mut d) = (env.client(), Client::connect(&r.addr()));
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[2])";
    let replies = same_as_redis(
        &mut p,
        &mut d,
        &[
            cmd(&["SADD", "{t}a", "1", "2", "3"]),
            cmd(&["SADD", "{t}b", "2", "3", "4"]),
            cmd(&["SINTERSTORE", "{t}c", "{t}a", "{t}b"]),
            cmd(&["SMEMBERS", "{t}c"]),
            cmd(&["RENAME", "{t}a", "{t}renamed"]),
            cmd(&["RPUSH", "{t}l", "x", "y"]),
            cmd(&["LMOVE", "{t}l", "{t}m", "LEFT", "RIGHT"]),
            cmd(&["SET", "{t}k2", "before"]),
            cmd(&["EVAL", script, "2", "{t}k1", "{t}k2", "v"]),
            cmd(&["GET", "{t}k1"]),
            cmd(&["PFADD", "{t}h1", "a", "b"]),
            cmd(&["PFADD", "{t}h2", "b", "c"]),
            cmd(&["PFMERGE", "{t}h3", "{t}h1", "{t}h2"]),
            cmd(&["PFCOUNT", "{t}h3"]),
        ],
    );
    assert!(replies.iter().all(|r| !r.is_error()), "{replies:?}");
    assert_eq!(replies[13], Reply::Int(3));
    let home = env.shard_holding("{t}c");
    for k in ["{t}b", "{t}renamed", "{t}m", "{t}k1", "{t}h3"] {
        assert_eq!(env.shard_holding(k), home, "{k}");
    }

    // Untagged keys on two shards: refused with advice, and the connection lives on.
    let ks = env.key_per_shard("x");
    let (a, b) = (ks[0].as_str(), ks[1].as_str());
    assert_eq!(p.cmd(&["SET", a, "1"]), Reply::ok());
    for c in [
        cmd(&["RENAME", a, b]),
        cmd(&["SINTERSTORE", a, a, b]),
        cmd(&["EVAL", "return 1", "2", a, b]),
        cmd(&["LMOVE", a, b, "LEFT", "LEFT"]),
    ] {
        assert_err_contains(&p.cmd(&c), &["different shards", "hash tag"]);
        assert_pings(&mut p);
    }
    assert_eq!(p.cmd(&["GET", a]), Reply::bulk("1"), "refused RENAME ran");
}

#[test]
fn keyless_commands_merge_every_shard() {
    let env = Setup::new(3).start();
    let mut p = env.client();
    assert_eq!(p.cmd(&["RANDOMKEY"]), Reply::nil(), "empty pool");
    assert_eq!(p.cmd(&["DBSIZE"]), Reply::Int(0));
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let sets: Vec<_> = keys.iter().map(|k| cmd(&["SET", k, k])).collect();
    assert!(p.pipeline(&sets).iter().all(|r| *r == Reply::ok()));

    assert_eq!(p.cmd(&["DBSIZE"]), Reply::Int(300));
    assert_eq!(env.total_keys(), 300);
    let all: HashSet<String> = keys.iter().cloned().collect();
    let listed = p.cmd(&["KEYS", "*"]);
    let listed: Vec<String> = listed
        .as_array()
        .unwrap_or_else(|| panic!("KEYS: {listed:?}"))
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    assert_eq!(listed.len(), 300);
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), all);

    // One SCAN cursor walks every shard; each key comes back exactly once.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut cursor = "0".to_string();
    for step in 0.. {
        assert!(step < 1000, "SCAN does not end");
        let r = p.cmd(&["SCAN", &cursor, "COUNT", "10"]);
        let [next, batch] = r.as_array().unwrap_or_else(|| panic!("SCAN: {r:?}")) else {
            panic!("SCAN: {r:?}");
        };
        for k in batch.as_array().unwrap_or_else(|| panic!("SCAN: {r:?}")) {
            *seen
                .entry(k.as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        cursor = next
            .as_str()
            .unwrap_or_else(|| panic!("SCAN: {r:?}"))
            .to_string();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), all);
    assert!(seen.values().all(|&n| n == 1), "keys seen twice");

    for _ in 0..10 {
        let k = p.cmd(&["RANDOMKEY"]);
        assert!(all.contains(k.as_str().unwrap_or("?")), "RANDOMKEY: {k:?}");
    }

    // A script loaded through the proxy runs on every shard.
    let r = reference();
    let body = "return redis.call('GET', KEYS[1])";
    let sha = p.cmd(&["SCRIPT", "LOAD", body]);
    assert_eq!(sha, r.cmd(&["SCRIPT", "LOAD", body]));
    let sha = sha
        .as_str()
        .unwrap_or_else(|| panic!("SCRIPT LOAD: {sha:?}"));
    for k in env.key_per_shard("ev") {
        assert_eq!(p.cmd(&["SET", &k, "got"]), Reply::ok());
        assert_eq!(p.cmd(&["EVALSHA", sha, "1", &k]), Reply::bulk("got"), "{k}");
    }
    // SCAN with MATCH still walks every shard; KEYS filters on every shard.
    let mut matched = HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        let r = p.cmd(&["SCAN", &cursor, "MATCH", "key:1?", "COUNT", "50"]);
        let items = r.as_array().unwrap_or_else(|| panic!("SCAN: {r:?}"));
        for k in items[1].as_array().unwrap_or_default() {
            matched.insert(k.as_str().unwrap_or("?").to_string());
        }
        cursor = items[0].as_str().unwrap_or("0").to_string();
        if cursor == "0" {
            break;
        }
    }
    let want: HashSet<String> = (10..20).map(|i| format!("key:{i}")).collect();
    assert_eq!(matched, want);
    let listed = p.cmd(&["KEYS", "key:1?"]);
    assert_eq!(
        listed.as_array().map(<[Reply]>::len),
        Some(10),
        "{listed:?}"
    );
    assert_eq!(p.cmd(&["SCAN", "abc"]), r.cmd(&["SCAN", "abc"]));

    let missing = "0123456789012345678901234567890123456789";
    assert_eq!(
        p.cmd(&["SCRIPT", "EXISTS", sha, missing, sha]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(0), Reply::Int(1)]))
    );
}

#[test]
fn admin_commands_need_admin_broadcast() {
    let env = Setup::new(2).start();
    let mut p = env.client();
    assert_eq!(p.cmd(&["SET", "k", "v"]), Reply::ok());
    for c in [
        cmd(&["FLUSHALL"]),
        cmd(&["FLUSHDB"]),
        cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
    ] {
        assert_err_contains(&p.cmd(&c), &["changes every shard", "admin_broadcast"]);
    }
    // CONFIG GET is refused too, and the error does not say it changes anything.
    assert_err_contains(
        &p.cmd(&["CONFIG", "GET", "maxmemory"]),
        &["'config|get' reads every shard", "admin_broadcast"],
    );
    assert_eq!(
        p.cmd(&["GET", "k"]),
        Reply::bulk("v"),
        "refused FLUSHALL ran"
    );
    assert_eq!(
        env.on_each_backend(&["CONFIG", "GET", "maxmemory-policy"])[0],
        Reply::bulks(["maxmemory-policy", "noeviction"])
    );

    let env = Setup::new(3).option("admin_broadcast", "true").start();
    let mut p = env.client();
    let sets: Vec<_> = (0..50)
        .map(|i| cmd(&["SET", &format!("f{i}"), "v"]))
        .collect();
    p.pipeline(&sets);
    assert_eq!(env.total_keys(), 50);
    assert_eq!(p.cmd(&["FLUSHALL"]), Reply::ok());
    assert_eq!(env.total_keys(), 0);
    p.pipeline(&sets);
    assert_eq!(p.cmd(&["FLUSHDB"]), Reply::ok());
    assert_eq!(env.total_keys(), 0);
    let set = cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    assert_eq!(p.cmd(&set), Reply::ok());
    let get = ["CONFIG", "GET", "maxmemory-policy"];
    let answer = p.cmd(&get);
    assert_eq!(answer, Reply::bulks(["maxmemory-policy", "allkeys-lru"]));
    for (i, r) in env.on_each_backend(&get).into_iter().enumerate() {
        assert_eq!(r, answer, "backend {i}");
    }
}

#[test]
fn long_pipelines_survive_small_inflight_and_output_limits() {
    let env = Setup::new(3)
        .option("max_inflight_per_client", 8)
        .option("client_output_soft", 4096)
        .start();
    let mut p = env.client();
    let value = "v".repeat(1000);
    let keys: Vec<String> = (0..20).map(|i| format!("lim{i}")).collect();
    for k in &keys {
        assert_eq!(p.cmd(&["SET", k, &value]), Reply::ok());
    }
    let mut cmds = Vec::new();
    for i in 0..3000 {
        let k = &keys[i % keys.len()];
        cmds.push(match i % 4 {
            0 => cmd(&["MGET", k, "none", &keys[(i + 7) % keys.len()]]),
            1 => cmd(&["STRLEN", k]),
            2 => cmd(&["ECHO", &i.to_string()]),
            _ => cmd(&["GET", k]),
        });
    }
    let replies = p.pipeline(&cmds);
    for (i, r) in replies.iter().enumerate() {
        let want = match i % 4 {
            0 => Reply::Array(Some(vec![
                Reply::bulk(&value),
                Reply::nil(),
                Reply::bulk(&value),
            ])),
            1 => Reply::Int(1000),
            2 => Reply::bulk(i.to_string()),
            _ => Reply::bulk(&value),
        };
        assert_eq!(*r, want, "reply {i}");
    }
}

/// The RESP encoding of one command.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[test]
fn a_deeply_nested_reply_reaches_its_client_and_no_other_request_fails() {
    // One worker, one shard: both clients share one backend connection.
    let env = Setup::new(1).workers(1).start();
    let addr = env.addr();
    let mut a = env.client();
    let chunk = encode(&["INCR", "n"]).repeat(1000);
    a.send_raw(&chunk).expect("send INCRs");
    // While the other client's INCRs stream, a Lua table 7,000 levels deep comes back as
    // one reply.
    let eval = std::thread::spawn(move || {
        let script = "local t={} local c=t for i=1,7000 do c[1]={} c=c[1] end return t";
        let mut request = encode(&["EVAL", script, "0"]);
        request.extend_from_slice(&encode(&["QUIT"]));
        raw_exchange(&addr, &request)
    });
    for _ in 1..20 {
        a.send_raw(&chunk).expect("send INCRs");
    }
    let got = eval.join().expect("EVAL thread");
    let replies: Vec<Reply> = (0..20_000)
        .map(|_| a.read_reply().expect("INCR reply"))
        .collect();
    let counter = a.cmd(&["GET", "n"]);
    let failed = replies
        .iter()
        .filter(|r| matches!(r, Reply::Error(_)))
        .count();
    let mut expected = b"*1\r\n".repeat(7000);
    expected.extend_from_slice(b"*0\r\n+OK\r\n");
    assert!(
        got == expected,
        "the nested reply did not arrive whole ({failed} INCRs of the other client failed, \
         counter {counter:?}): {:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    let want: Vec<Reply> = (1..=20_000).map(Reply::Int).collect();
    assert!(replies == want, "{failed} INCRs failed");
    assert_eq!(counter, Reply::Bulk(Some(b"20000".to_vec())));
}
