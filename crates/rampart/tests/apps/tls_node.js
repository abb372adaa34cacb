// node-redis (RESP2 and RESP3) and ioredis over a TLS listener as a proxy user, each with its
// own handshake and defaults otherwise: plain commands, a pipeline, MULTI/EXEC, a blocking pop
// woken by another client, SUBSCRIBE and a message, and NOPERM as the library's own error
// (node-redis' ErrorReply, ioredis' ReplyError), after which the connection still serves.
// Keys and channels are under "app:". Prints "ok" last; any failure exits 1.
// Usage: node tls_node.js PORT CA USER PASSWORD
const fs = require("fs");
const assert = require("assert/strict");
const { createClient, ErrorReply } = require("redis");
const IORedis = require("ioredis");

const [port, caFile, user, password] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const url = `rediss://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}`;
const T0 = Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A deadline that does not keep the process alive once `p` has settled.
const within = (ms, p, what) =>
  Promise.race([
    p,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms).unref()),
  ]);

async function refused(p, type, tag) {
  try {
    await within(5000, p, tag);
  } catch (e) {
    assert.ok(e instanceof type, `${tag}: ${e && e.constructor && e.constructor.name}: ${e}`);
    assert.match(e.message, /^NOPERM/, tag);
    return;
  }
  assert.fail(`${tag}: no NOPERM`);
}

async function nodeRedis(RESP) {
  const tag = `node-redis RESP${RESP}`;
  const opts = { url, socket: { tls: true, ca, reconnectStrategy: false }, RESP };
  const c = createClient(opts);
  c.on("error", (e) => { console.log(`${tag}: error event: ${e}`); process.exitCode = 1; });
  await within(5000, c.connect(), `${tag} connect`);
  assert.equal(await c.sendCommand(["ACL", "WHOAMI"]), user, tag);
  await c.del(["app:s", "app:n", "app:q"]);
  assert.equal(await c.set("app:s", "v"), "OK");
  assert.equal(await c.get("app:s"), "v");
  assert.equal(await c.incr("app:n"), 1);
  const p = c.multi();
  for (let i = 0; i < 50; i++) p.set(`app:p${i}`, String(i));
  p.mGet([...Array(50).keys()].map((i) => `app:p${i}`));
  const res = await p.execAsPipeline();
  assert.deepEqual(res[50], [...Array(50).keys()].map(String), tag);
  assert.deepEqual(await c.multi().incr("app:n").incr("app:n").get("app:n").exec(), [2, 3, "3"], tag);

  const other = c.duplicate();
  await other.connect();
  const blocked = c.duplicate();
  await blocked.connect();
  setTimeout(() => other.lPush("app:q", "job"), 300);
  assert.deepEqual(await within(5000, blocked.blPop("app:q", 10), `${tag} BLPOP`), { key: "app:q", element: "job" });

  const sub = c.duplicate();
  await sub.connect();
  const got = new Promise((resolve) => sub.subscribe("app:chan", (m) => resolve(m)));
  await sleep(100);
  assert.equal(await other.publish("app:chan", "hello"), 1, tag);
  assert.equal(await within(5000, got, `${tag} message`), "hello");

  await refused(c.get("other:key"), ErrorReply, `${tag} key`);
  await refused(c.flushAll(), ErrorReply, `${tag} command`);
  assert.equal(await c.ping(), "PONG", tag);
  for (const x of [c, other, blocked, sub]) await x.quit();
  console.log(tag, "passed at", Date.now() - T0, "ms");
}

async function ioredis() {
  const tag = "ioredis";
  const opts = { tls: { ca }, maxRetriesPerRequest: 1, retryStrategy: () => null };
  const c = new IORedis(url, opts);
  c.on("error", (e) => { console.log(`${tag}: error event: ${e}`); process.exitCode = 1; });
  assert.equal(await within(5000, c.call("ACL", "WHOAMI"), tag), user);
  await c.del("app:s", "app:n", "app:q");
  assert.equal(await c.set("app:s", "v"), "OK");
  assert.equal(await c.get("app:s"), "v");
  assert.equal(await c.incr("app:n"), 1);
  const p = c.pipeline();
  for (let i = 0; i < 50; i++) p.set(`app:p${i}`, String(i));
  p.mget([...Array(50).keys()].map((i) => `app:p${i}`));
  const res = await p.exec();
  assert.deepEqual(res[50], [null, [...Array(50).keys()].map(String)], tag);
  assert.deepEqual(await c.multi().incr("app:n").incr("app:n").get("app:n").exec(), [[null, 2], [null, 3], [null, "3"]], tag);

  const other = c.duplicate();
  const blocked = c.duplicate();
  setTimeout(() => other.lpush("app:q", "job"), 300);
  assert.deepEqual(await within(5000, blocked.blpop("app:q", 10), `${tag} BLPOP`), ["app:q", "job"]);

  const sub = c.duplicate();
  const got = new Promise((resolve) => sub.on("message", (_ch, m) => resolve(m)));
  await sub.subscribe("app:chan");
  assert.equal(await other.publish("app:chan", "hello"), 1, tag);
  assert.equal(await within(5000, got, `${tag} message`), "hello");

  await refused(c.get("other:key"), IORedis.ReplyError, `${tag} key`);
  await refused(c.flushall(), IORedis.ReplyError, `${tag} command`);
  assert.equal(await c.ping(), "PONG", tag);
  for (const x of [c, other, blocked, sub]) await x.quit();
  console.log(tag, "passed at", Date.now() - T0, "ms");
}

(async () => {
  await nodeRedis(2);
  await nodeRedis(3);
  await ioredis();
  if (!process.exitCode) console.log("ok");
})().catch((e) => {
  console.log("failed:", e && e.stack ? e.stack : e);
  process.exit(1);
});
