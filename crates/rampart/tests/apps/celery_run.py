"""Drives the Celery app of celery_app.py through rampart (RAMPART_URL) while a worker runs:
waits for the worker to answer a broadcast ping, sends apps.square(i) for i in 0..N (argv[1]),
checks every result, then asks the worker over broadcast again (`inspect().ping()` and
`control.broadcast("ping", reply=True)`, both Pub/Sub on the Redis transport) and checks it
answers; the worker's own count of apps.square tasks must be N, or argv[2] when given (a
worker that ran tasks before). Prints "ok" when all of it holds."""
import sys
import time

from celery_app import app, square

n = int(sys.argv[1])
expected = int(sys.argv[2]) if len(sys.argv) > 2 else n

# The worker answers a broadcast once it consumes; give it a bounded time to come up.
deadline = time.monotonic() + 60
replies = []
while not replies:
    if time.monotonic() > deadline:
        raise SystemExit("no worker answered control.ping within 60 s")
    replies = app.control.ping(timeout=1.0)
print("ping before:", replies, flush=True)
assert all(list(r.values())[0] == {"ok": "pong"} for r in replies), replies

t0 = time.monotonic()
results = [square.delay(i) for i in range(n)]
wrong = []
for i, res in enumerate(results):
    value = res.get(timeout=60)
    if value != i * i or res.state != "SUCCESS":
        wrong.append((i, res.state, value))
assert not wrong, "%d tasks wrong, first: %r" % (len(wrong), wrong[:3])
print("%d tasks done in %.2f s" % (n, time.monotonic() - t0), flush=True)

pings = app.control.inspect(timeout=2.0).ping()
print("inspect ping:", pings, flush=True)
assert pings and all(v == {"ok": "pong"} for v in pings.values()), pings
answers = app.control.broadcast("ping", reply=True, timeout=2.0)
print("broadcast ping:", answers, flush=True)
assert answers and all(list(a.values())[0] == {"ok": "pong"} for a in answers), answers
stats = app.control.inspect(timeout=2.0).stats()
done = sum(s["total"].get("apps.square", 0) for s in stats.values())
assert done == expected, "the worker counts %d apps.square tasks, not %d" % (done, expected)
print("ok")
