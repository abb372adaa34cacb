//! Real client libraries, with their defaults, through rampart: redis-py 8 (RESP3 unless told
//! otherwise), redis-rs (RESP3), node-redis 5 (RESP2 and RESP3) and ioredis. Each connects
//! (its own start-up sequence, against a pool with a password), writes, reads typed replies
//! and pipelines; redis-py's PubSub object listens in a thread. The libraries come from `scripts/client-libs.sh` (pinned versions, run by
//! .ci/run); a test that cannot install them fails.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::Setup;

const PASSWORD: &str = "s3cret";

const REDIS_PY: &str = r#"
import sys, redis
port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, password=sys.argv[2], client_name="app")
assert r.ping() is True
conn = r.connection_pool.get_connection()
assert conn.protocol == 3, conn.protocol
assert conn.handshake_metadata[b"proto"] == 3, conn.handshake_metadata
r.connection_pool.release(conn)
assert r.client_getname() == "app"
assert r.set("py:k", "v") is True
assert r.get("py:k") == b"v"
assert r.get("py:missing") is None
r.hset("py:h", mapping={"a": "1", "b": "2"})
assert r.hgetall("py:h") == {b"a": b"1", b"b": b"2"}
r.sadd("py:s", "x", "y")
assert r.smembers("py:s") == {b"x", b"y"}
r.zadd("py:z", {"m": 1.5})
assert r.zscore("py:z", "m") == 1.5
assert r.incrbyfloat("py:f", 2.5) == 2.5
assert r.mget(["py:k", "py:missing", "py:h2"]) == [b"v", None, None]
assert r.exists("py:k", "py:h", "py:nothing") == 2
info = r.info()
assert info["redis_version"] and "connected_clients" in info, info
assert r.info("keyspace")["db0"]["keys"] >= 5
assert r.dbsize() >= 5
p = r.pipeline(transaction=False)
p.set("py:p", 1).incr("py:p").get("py:p").hgetall("py:h")
assert p.execute() == [True, 2, b"2", {b"a": b"1", b"b": b"2"}]
print("ok")
"#;

/// redis-py 8 with its defaults (RESP3, HELLO 3 AUTH, CLIENT SETNAME, CLIENT SETINFO).
#[test]
fn redis_py_defaults() {
    let dir = common::client_libs();
    let env = Setup::new(2).password(PASSWORD).start();
    let port = env
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", dir.join("py"))
        .args(["-c", REDIS_PY, &port, PASSWORD]);
    common::run_script("redis-py", cmd);
}

const REDIS_PY_PUBSUB: &str = r#"
import sys, threading, time, redis
port, password, n = int(sys.argv[1]), sys.argv[2], 200
for proto in (3, 2):
    kw = {} if proto == 3 else {"protocol": 2}  # redis-py 8 speaks RESP3 unless told
    sub = redis.Redis(host="127.0.0.1", port=port, password=password, **kw)
    pub = redis.Redis(host="127.0.0.1", port=port, password=password, **kw)
    p = sub.pubsub()
    p.subscribe("py:news")
    p.psubscribe("py:n*")
    ready, got = threading.Event(), []
    def listen():
        confirmed, until = 0, time.monotonic() + 30
        while len(got) < 2 * n and time.monotonic() < until:
            m = p.get_message(timeout=1.0)
            if m is None:
                continue
            if m["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
                if confirmed == 2:
                    ready.set()
            else:
                got.append((m["type"], m["pattern"], m["channel"], m["data"]))
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10), "proto %d: no subscribe confirmations" % proto
    for i in range(n):
        assert pub.publish("py:news", "m%d" % i) >= 1
    t.join(35)
    want = []
    for i in range(n):
        want.append(("message", None, b"py:news", b"m%d" % i))
        want.append(("pmessage", b"py:n*", b"py:news", b"m%d" % i))
    mine = [g for g in got if g[0] == "message"]
    assert mine == want[0::2], "proto %d: %d messages, first wrong %r" % (proto, len(mine), [x for x in zip(mine, want[0::2]) if x[0] != x[1]][:1])
    assert sorted(got) == sorted(want), "proto %d: %d of %d" % (proto, len(got), len(want))
    # run_in_thread with a handler, as applications write it.
    heard = []
    h = sub.pubsub()
    h.subscribe(**{"py:alerts": lambda m: heard.append(m["data"])})
    worker = h.run_in_thread(sleep_time=0.05, daemon=True)
    until = time.monotonic() + 10
    while pub.pubsub_numsub("py:alerts")[0][1] < 1 and time.monotonic() < until:
        time.sleep(0.01)
    for i in range(50):
        pub.publish("py:alerts", "a%d" % i)
    until = time.monotonic() + 10
    while len(heard) < 50 and time.monotonic() < until:
        time.sleep(0.01)
    worker.stop()
    worker.join(5)
    assert heard == [b"a%d" % i for i in range(50)], "proto %d: %r" % (proto, heard[:5])
    p.close(); h.close()
print("ok")
"#;

/// redis-py's PubSub object with its defaults, through rampart in RESP3 (redis-py 8's
/// default) and RESP2: a listening thread (`get_message` loop) receives every message another
/// client publishes, in order, on a channel and a pattern; `run_in_thread` with a handler too.
#[test]
fn redis_py_pubsub_in_a_thread() {
    let dir = common::client_libs();
    let env = Setup::new(2).password(PASSWORD).start();
    let port = env
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", dir.join("py"))
        .args(["-c", REDIS_PY_PUBSUB, &port, PASSWORD]);
    common::run_script("redis-py pubsub", cmd);
}

const NODE_REDIS: &str = r#"
const { createClient } = require("redis");
const assert = require("assert");
(async () => {
  const port = process.env.RAMPART_PORT, password = process.env.RAMPART_PASSWORD;
  for (const RESP of [2, 3]) {
    const c = createClient({ url: `redis://default:${password}@127.0.0.1:${port}`, RESP, name: "app" });
    c.on("error", (e) => { console.error(e); process.exit(1); });
    await c.connect();
    assert.strictEqual(await c.ping(), "PONG");
    assert.strictEqual(await c.set(`n${RESP}:k`, "v"), "OK");
    assert.strictEqual(await c.get(`n${RESP}:k`), "v");
    assert.strictEqual(await c.get("n:missing"), null);
    await c.hSet(`n${RESP}:h`, { a: "1", b: "2" });
    const h = await c.hGetAll(`n${RESP}:h`);
    assert.deepStrictEqual({ ...h }, { a: "1", b: "2" });
    await c.zAdd(`n${RESP}:z`, { score: 1.5, value: "m" });
    assert.strictEqual(await c.zScore(`n${RESP}:z`, "m"), 1.5);
    assert.deepStrictEqual(await c.mGet([`n${RESP}:k`, "n:missing"]), ["v", null]);
    assert.strictEqual(await c.clientGetName(), "app");
    const [a, b] = await Promise.all([c.incr(`n${RESP}:i`), c.incr(`n${RESP}:i`)]);
    assert.deepStrictEqual([a, b], [1, 2]);
    assert.ok((await c.info("server")).includes("redis_version:"));
    await c.close();
  }
  console.log("ok");
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// node-redis 5, RESP2 (its default) and RESP3.
#[test]
fn node_redis() {
    let dir = common::client_libs();
    let env = Setup::new(2).password(PASSWORD).start();
    let port = env
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", dir.join("node/node_modules"))
        .env("RAMPART_PORT", &port)
        .env("RAMPART_PASSWORD", PASSWORD)
        .args(["-e", NODE_REDIS]);
    common::run_script("node-redis", cmd);
}

const IOREDIS: &str = r#"
const Redis = require("ioredis");
const assert = require("assert");
(async () => {
  const port = process.env.RAMPART_PORT, password = process.env.RAMPART_PASSWORD;
  const r = new Redis({ host: "127.0.0.1", port: Number(port), password, connectionName: "app", maxRetriesPerRequest: 1 });
  assert.strictEqual(await r.ping(), "PONG");
  assert.strictEqual(await r.set("io:k", "v"), "OK");
  assert.strictEqual(await r.get("io:k"), "v");
  await r.hset("io:h", { a: "1", b: "2" });
  assert.deepStrictEqual(await r.hgetall("io:h"), { a: "1", b: "2" });
  assert.strictEqual(await r.client("GETNAME"), "app");
  assert.deepStrictEqual(await r.mget("io:k", "io:missing"), ["v", null]);
  const res = await r.pipeline().set("io:p", "1").incr("io:p").get("io:p").exec();
  assert.deepStrictEqual(res, [[null, "OK"], [null, 2], [null, "2"]]);
  await r.quit();
  console.log("ok");
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// ioredis with its defaults (its ready check sends INFO; CLIENT SETNAME for the name).
#[test]
fn ioredis_defaults() {
    let dir = common::client_libs();
    let env = Setup::new(2).password(PASSWORD).start();
    let port = env
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", dir.join("node/node_modules"))
        .env("RAMPART_PORT", &port)
        .env("RAMPART_PASSWORD", PASSWORD)
        .args(["-e", IOREDIS]);
    common::run_script("ioredis", cmd);
}

/// redis-rs over RESP3 (`?protocol=resp3`: HELLO 3 AUTH at connect): typed replies are
/// RESP3 values (a map for HGETALL, a double for ZSCORE), and plain Rust types read them too.
#[test]
fn redis_rs_resp3() {
    use redis::{Commands, Value};
    let env = Setup::new(2).password(PASSWORD).start();
    let url = format!("redis://:{PASSWORD}@{}/?protocol=resp3", env.addr());
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{e}"));
    let mut c = client
        .get_connection()
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let _: () = c.set("rs:k", "v").unwrap_or_else(|e| panic!("{e}"));
    let v: String = c.get("rs:k").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v, "v");
    let _: () = c
        .hset_multiple("rs:h", &[("a", "1"), ("b", "2")])
        .unwrap_or_else(|e| panic!("{e}"));
    let raw: Value = redis::cmd("HGETALL")
        .arg("rs:h")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(raw, Value::Map(ref m) if m.len() == 2), "{raw:?}");
    let h: HashMap<String, String> = c.hgetall("rs:h").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.get("a").map(String::as_str), Some("1"));
    let _: () = c.zadd("rs:z", "m", 1.5).unwrap_or_else(|e| panic!("{e}"));
    let score: Value = redis::cmd("ZSCORE")
        .arg("rs:z")
        .arg("m")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(score, Value::Double(1.5));
    let missing: Value = c.get("rs:missing").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing, Value::Nil);
    let got: Vec<Option<String>> = c
        .mget(&["rs:k", "rs:missing"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, vec![Some("v".to_string()), None]);
    let (a, b): (i64, i64) = redis::pipe()
        .incr("rs:i", 1)
        .incr("rs:i", 1)
        .query(&mut c)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((a, b), (1, 2));
}
