# redis-py with its defaults (RESP3, HELLO 3 AUTH) over a TLS listener as a proxy user, working
# through a switchover: until the file STOP exists (at most 60 s) it writes, reads back and
# counts (INCR app:n, SET/GET app:kI), and a subscriber in a thread hears a message published
# each round on app:chan. Prints "started" after its first round, then one summary line:
# rounds, errors, the last message heard; exits 1 on any error or when no message was heard
# in the last second.
# Usage: tls_switchover.py PORT CA USER PASSWORD STOP
import os, sys, threading, time
import redis

port, ca, user, password, stop = sys.argv[1:6]
url = "rediss://%s:%s@127.0.0.1:%s/0" % (user, password, port)
r = redis.from_url(url, ssl_ca_certs=ca)
sub = redis.from_url(url, ssl_ca_certs=ca).pubsub()
sub.subscribe("app:chan")
heard = {"last": None, "at": 0.0}
def listen():
    while True:
        try:
            m = sub.get_message(timeout=1.0)
        except Exception as e:  # the subscriber's own reconnects are redis-py's business
            print("subscriber:", type(e).__name__, e, flush=True)
            time.sleep(0.1)
            continue
        if m and m["type"] == "message":
            heard["last"], heard["at"] = int(m["data"]), time.monotonic()
threading.Thread(target=listen, daemon=True).start()
r.delete("app:n")
rounds, errors, until = 0, [], time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < until:
    try:
        n = r.incr("app:n")
        assert n == rounds + 1, "INCR gave %d after %d rounds" % (n, rounds)
        r.set("app:k%d" % rounds, rounds)
        assert r.get("app:k%d" % rounds) == b"%d" % rounds
        r.publish("app:chan", rounds)
        rounds += 1
        if rounds == 1:
            print("started", flush=True)
    except Exception as e:
        errors.append("%s: %s" % (type(e).__name__, e))
        if len(errors) > 20:
            break
    time.sleep(0.002)
time.sleep(1)
print("rounds", rounds, "errors", len(errors), errors[:5], "last heard", heard["last"], flush=True)
fresh = heard["last"] is not None and heard["last"] >= rounds - 50
sys.exit(0 if not errors and fresh else 1)
