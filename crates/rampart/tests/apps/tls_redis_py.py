# redis-py over a TLS listener as a proxy user, with its defaults otherwise, once per protocol
# given (2, 3): plain commands, a pipeline, MULTI/EXEC, a blocking pop woken by another client,
# SUBSCRIBE and a message, and NOPERM raised as redis-py's own NoPermissionError, after which
# the connection still serves. Keys and channels are under "app:". Prints "ok" last.
# Usage: tls_redis_py.py PORT CA USER PASSWORD PROTOCOLS [CERT KEY]
# With CERT and KEY (mTLS, the certificate names the user) no AUTH is sent: USER is only
# checked against ACL WHOAMI.
import sys, threading, time
import redis

port, ca, user, password, protos = sys.argv[1:6]
cert_key = sys.argv[6:8]


def connect(proto):
    if cert_key:
        return redis.Redis(host="127.0.0.1", port=int(port), ssl=True, ssl_ca_certs=ca,
                           ssl_certfile=cert_key[0], ssl_keyfile=cert_key[1],
                           protocol=proto)
    url = "rediss://%s:%s@127.0.0.1:%s/0?protocol=%d" % (user, password, port, proto)
    return redis.from_url(url, ssl_ca_certs=ca)


for proto in [int(p) for p in protos.split(",")]:
    tag = "RESP%d" % proto
    r = connect(proto)
    assert r.acl_whoami() in (user, user.encode()), (tag, r.acl_whoami())
    r.delete("app:s", "app:n", "app:h", "app:q")
    assert r.set("app:s", "v") is True
    assert r.get("app:s") == b"v"
    assert r.incr("app:n") == 1
    r.hset("app:h", mapping={"a": "1", "b": "2"})
    assert r.hgetall("app:h") == {b"a": b"1", b"b": b"2"}, tag
    p = r.pipeline(transaction=False)
    for i in range(50):
        p.set("app:p%d" % i, i)
    p.mget(["app:p%d" % i for i in range(50)])
    res = p.execute()
    assert res[:50] == [True] * 50 and res[50] == [b"%d" % i for i in range(50)], (tag, res[-1])
    t = r.pipeline(transaction=True)
    t.incr("app:n").incr("app:n").get("app:n")
    assert t.execute() == [2, 3, b"3"], tag

    other = connect(proto)
    # A client that wrote nothing reads from a replica where the pool has one: the value
    # arrives there within moments.
    until = time.monotonic() + 5
    while other.get("app:s") != b"v":
        assert time.monotonic() < until, (tag, "a fresh client never read app:s")
        time.sleep(0.01)
    pusher = threading.Timer(0.3, lambda: other.lpush("app:q", "job"))
    pusher.start()
    t0 = time.monotonic()
    assert r.blpop(["app:q"], timeout=10) in ((b"app:q", b"job"), [b"app:q", b"job"]), tag
    assert time.monotonic() - t0 < 5, tag
    pusher.join()

    ps = connect(proto).pubsub()
    ps.subscribe("app:chan")
    m = ps.get_message(timeout=5)
    assert m and m["type"] == "subscribe", (tag, m)
    assert other.publish("app:chan", "hello") == 1, tag
    m = ps.get_message(timeout=5)
    assert m and m["type"] == "message" and m["data"] == b"hello", (tag, m)
    ps.close()

    for bad in (lambda: r.get("other:key"), lambda: r.flushall()):
        try:
            bad()
            raise AssertionError("%s: no NOPERM" % tag)
        except redis.exceptions.NoPermissionError as e:
            assert "no permissions" in str(e), (tag, e)
    t = r.pipeline(transaction=True)
    t.set("app:s", "changed").get("other:key")
    try:
        t.execute()
        raise AssertionError("%s: a transaction with a refused key ran" % tag)
    except (redis.exceptions.ExecAbortError, redis.exceptions.NoPermissionError):
        pass  # redis-py raises the refused command's error once EXEC is aborted
    assert r.get("app:s") == b"v", tag
    assert r.ping() is True, tag
    r.close(); other.close()
    print(tag, "passed")
print("ok")
