// BullMQ through rampart: a queue and a worker in one process, both connected to
// 127.0.0.1:PORT. Usage: node bullmq_jobs.js PORT JOBS PREFIX
//
// Adds JOBS jobs (half with addBulk, a MULTI, half one by one), one that fails once and then
// for good (two attempts, a fixed back-off), one delayed, one with a priority and a flow (a
// parent that runs after its child), runs them on a worker with concurrency 5, and checks
// that every job completed exactly once with its result, the failing one failed twice, and
// the queue's own counts agree. Prints one JSON line, then "ok"; exits 1 on any mismatch or
// error event, 2 when a call fails (the message is printed: the caller may expect one).
// With RAMPART_TLS_CA set it connects over TLS, verifying the server against that CA file, and
// with RAMPART_USER and RAMPART_PASSWORD it logs in as that user.
const fs = require("fs");
const { Queue, Worker, FlowProducer } = require("bullmq");

const [port, jobs, prefix] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };
if (process.env.RAMPART_TLS_CA) connection.tls = { ca: fs.readFileSync(process.env.RAMPART_TLS_CA) };
if (process.env.RAMPART_USER) connection.username = process.env.RAMPART_USER;
if (process.env.RAMPART_PASSWORD) connection.password = process.env.RAMPART_PASSWORD;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const queue = new Queue("jobs", { connection, prefix });
  await queue.obliterate({ force: true });
  const flow = new FlowProducer({ connection, prefix });
  const done = new Map();
  const errors = [];
  let failed = 0;
  const worker = new Worker(
    "jobs",
    async (job) => {
      if (job.data.fail) throw new Error("planned failure");
      return job.data.i * 2;
    },
    { connection, prefix, concurrency: 5 }
  );
  worker.on("completed", (job, result) => {
    if (done.has(job.data.i)) errors.push(`job ${job.data.i} completed twice`);
    if (result !== job.data.i * 2) errors.push(`job ${job.data.i} returned ${result}`);
    done.set(job.data.i, result);
  });
  worker.on("failed", () => failed++);
  worker.on("error", (e) => errors.push(e.message));
  const t0 = Date.now();
  const plain = [];
  for (let i = 0; i < jobs; i++) plain.push({ name: "plain", data: { i } });
  await queue.addBulk(plain.slice(0, jobs / 2));
  for (const j of plain.slice(jobs / 2)) await queue.add(j.name, j.data);
  await queue.add("fails", { i: -1, fail: true }, { attempts: 2, backoff: { type: "fixed", delay: 50 } });
  await queue.add("delayed", { i: -2 }, { delay: 300 });
  await queue.add("priority", { i: -3 }, { priority: 5 });
  await flow.add({
    name: "parent", queueName: "jobs", prefix, data: { i: -4 },
    children: [{ name: "child", queueName: "jobs", prefix, data: { i: -5 } }],
  });
  const want = jobs + 4;
  while ((done.size < want || failed < 2) && Date.now() - t0 < 30000) await sleep(20);
  let counts = {};
  for (let k = 0; k < 50; k++) {
    counts = await queue.getJobCounts("completed", "failed", "wait", "delayed", "active");
    if (counts.completed === want && counts.failed === 1) break;
    await sleep(100);
  }
  console.log(JSON.stringify({ completed: done.size, want, failed, counts, ms: Date.now() - t0, errors }));
  await worker.close();
  await flow.close();
  await queue.close();
  const good = done.size === want && failed === 2 && counts.completed === want
    && counts.failed === 1 && counts.wait === 0 && counts.delayed === 0 && errors.length === 0;
  if (!good) process.exit(1);
  console.log("ok");
  process.exit(0);
})().catch((e) => {
  console.log(`call failed: ${e.message}`);
  process.exit(2);
});
