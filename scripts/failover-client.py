#!/usr/bin/env python3
"""Write load and measurements for scripts/failover-demo.sh (python3 standard library only).

One client INCRs a counter through rampart, one request at a time, and logs every reply or
error with a timestamp. After --kill-after seconds it kills the primary of the counter's shard
(SIGKILL, by the PID the demo script started it with). Two pollers meanwhile watch Sentinel's
answer to `SENTINEL GET-MASTER-ADDR-BY-NAME` and rampart's `INFO pools`, to time the switch.
At the end it prints a summary and compares the counter on the new primary with the last
acknowledged value. Exit status: 0 when the counter matches, the switch was seen, and every
failed write is one that rampart had already sent to the dying primary; 1 otherwise.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def stamp():
    t = time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class RespError(Exception):
    """An error reply (-ERR ...) from the server."""


class Conn:
    """A minimal RESP2 client over one TCP connection to 127.0.0.1."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = self.sock.makefile("rb")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.buf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.buf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed by the server")
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line!r}")


def once(port, *args, timeout=2.0):
    c = Conn(port, timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def pick_key(proxy, primary):
    """A key that rampart places on the shard whose primary listens on `primary`."""
    for i in range(1000):
        key = f"{{c{i}}}:counter"
        once(proxy, "DEL", key)
        once(proxy, "SET", key, "0")
        if once(primary, "EXISTS", key) == 1:
            return key
        once(proxy, "DEL", key)
    raise SystemExit("no key of the first 1000 candidates lands on the watched shard")


class Watch:
    """Polls a value every `every` seconds and records when it first differs from the start."""

    def __init__(self, name, fetch, every, stop):
        self.name, self.fetch, self.every, self.stop = name, fetch, every, stop
        self.initial = None
        self.changed_at = None
        self.value = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                v = self.fetch()
            except (OSError, ConnectionError, RespError, ValueError):
                v = None
            if v is not None:
                if self.initial is None:
                    self.initial = v
                elif v != self.initial and self.changed_at is None:
                    self.changed_at, self.value = now(), v
                    print(f"{stamp()} +{now():6.3f}s {self.name}: {self.initial} -> {v}",
                          flush=True)
            self.stop.wait(self.every)


def sentinel_master(sentinels, name):
    for port in sentinels:
        try:
            addr = once(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name, timeout=0.5)
        except (OSError, ConnectionError, RespError):
            continue
        if addr:
            return f"{addr[0]}:{addr[1]}"
    return None


def rampart_primary(proxy, pool, shard):
    info = once(proxy, "INFO", "pools", timeout=0.5)
    prefix = f"node_{pool}_{shard}_"
    for line in info.splitlines():
        if line.startswith(prefix) and ",role=primary," in line:
            fields = dict(f.split("=", 1) for f in line.split(":", 1)[1].split(","))
            if fields.get("up") == "1":
                return fields["addr"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", type=int, required=True)
    ap.add_argument("--pool", default="demo")
    ap.add_argument("--shard", default="shard1")
    ap.add_argument("--primary-port", type=int, required=True)
    ap.add_argument("--primary-pid", type=int, required=True)
    ap.add_argument("--sentinels", required=True, help="comma-separated ports")
    ap.add_argument("--kill-after", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=15.0, help="client socket timeout")
    ap.add_argument("--log", required=True, help="file for every request's line")
    ap.add_argument("--every", type=int, default=100, help="print every Nth reply")
    a = ap.parse_args()
    sentinels = [int(p) for p in a.sentinels.split(",")]

    key = pick_key(a.proxy, a.primary_port)
    print(f"{stamp()} counter key {key!r} is on {a.shard} (primary 127.0.0.1:{a.primary_port})")

    stop = threading.Event()
    sw = Watch("sentinel get-master-addr-by-name", lambda: sentinel_master(sentinels, a.shard),
               0.05, stop)
    rw = Watch("rampart INFO pools primary", lambda: rampart_primary(a.proxy, a.pool, a.shard),
               0.05, stop)
    sw.thread.start()
    rw.thread.start()

    killed = {}

    def killer():
        if not stop.wait(a.kill_after):
            killed["at"] = now()
            os.kill(a.primary_pid, signal.SIGKILL)
            print(f"{stamp()} +{killed['at']:6.3f}s kill -9 {a.primary_pid} "
                  f"({a.shard} primary 127.0.0.1:{a.primary_port})", flush=True)

    threading.Thread(target=killer, daemon=True).start()

    acks = []  # (sent, done, value)
    errors = []  # (sent, done, message)
    conn = None
    end = a.duration
    with open(a.log, "w") as log:
        n = 0
        while now() < end:
            sent = now()
            try:
                if conn is None:
                    conn = Conn(a.proxy, a.timeout)
                value = conn.call("INCR", key)
                done = now()
                acks.append((sent, done, value))
                line = f"{stamp()} +{done:6.3f}s INCR -> {value} ({(done - sent) * 1000:.1f} ms)"
                n += 1
                show = n % a.every == 0 or done - sent > 0.1
            except (OSError, ConnectionError, RespError) as e:
                done = now()
                errors.append((sent, done, str(e)))
                line = f"{stamp()} +{done:6.3f}s INCR -> error after " \
                       f"{(done - sent) * 1000:.1f} ms: {e}"
                show = True
                if not isinstance(e, RespError) and conn is not None:
                    conn.close()
                    conn = None
            log.write(line + "\n")
            if show:
                print(line, flush=True)
            time.sleep(a.interval)
    stop.set()
    if conn is not None:
        conn.close()

    # --- summary -----------------------------------------------------------------------------
    ok = True
    print()
    kill_at = killed.get("at")
    print(f"  writes:  {len(acks)} acknowledged, {len(errors)} failed, in {a.duration:.0f} s")
    if kill_at is None:
        print("  kill:    the primary was not killed (run too short?)")
        ok = False
    else:
        print(f"  kill:    kill -9 of the {a.shard} primary at +{kill_at:.3f}s")
    for name, w in (("sentinel", sw), ("rampart", rw)):
        if w.changed_at is None:
            print(f"  {name}: no switch seen (still {w.initial})")
            ok = False
        else:
            after = f" = kill + {w.changed_at - kill_at:.3f}s" if kill_at is not None else ""
            print(f"  {name + ':':9}primary {w.initial} -> {w.value} at +{w.changed_at:.3f}s{after}")

    # Longest time without an acknowledged write, and the slowest single request.
    gap, gap_from, prev = 0.0, 0.0, None
    for _, done, _ in acks:
        if prev is not None and done - prev > gap:
            gap, gap_from = done - prev, prev
        prev = done
    slow = max(acks, key=lambda r: r[1] - r[0]) if acks else None
    if slow:
        print(f"  pause:   longest time between two acknowledged writes {gap * 1000:.0f} ms "
              f"(+{gap_from:.3f}s .. +{gap_from + gap:.3f}s); slowest INCR "
              f"{(slow[1] - slow[0]) * 1000:.0f} ms (sent at +{slow[0]:.3f}s)")

    # A write that rampart had already sent to the primary when it died may or may not have
    # been applied; rampart must fail it, never retry it (DESIGN rule 7). Such failures show as
    # a broken connection. A write that was never sent (connect refused, node down, no primary)
    # must wait in the failover hold instead while the hold lasts: failing it is a finding.
    ambiguous = ("reset by peer", "closed by server", "broken pipe", "timed out")
    switch_at = rw.changed_at if rw.changed_at is not None else a.duration
    unexpected = 0
    for sent, done, msg in errors:
        in_window = kill_at is not None and kill_at <= done <= switch_at
        if in_window and any(s in msg.lower() for s in ambiguous):
            kind = "expected: it may have reached the dead primary, so it is not retried"
        else:
            kind = "UNEXPECTED: not sent, should have waited in the failover hold"
            unexpected += 1
        print(f"  error:   sent +{sent:.3f}s, failed +{done:.3f}s ({kind}): {msg}")
    if unexpected:
        ok = False

    # Acknowledged values must grow by exactly 1, or by 2 right after an ambiguous failure.
    jumps = []
    for (s0, _, v0), (s1, _, v1) in zip(acks, acks[1:]):
        failed_between = sum(1 for e in errors if s0 < e[0] < s1)
        if not v0 < v1 <= v0 + 1 + failed_between:
            jumps.append((s1, v0, v1))
    for s1, v0, v1 in jumps[:10]:
        print(f"  ORDER:   at +{s1:.3f}s the counter went {v0} -> {v1}")
    if jumps:
        ok = False

    last = acks[-1][2] if acks else None
    new = sentinel_master(sentinels, a.shard)
    try:
        host, port = new.rsplit(":", 1)
        on_primary = int(once(int(port), "GET", key))
        via_proxy = int(once(a.proxy, "GET", key))
    except (AttributeError, OSError, ConnectionError, RespError, ValueError, TypeError) as e:
        print(f"  counter: could not read it back: {e}")
        return 1
    same = on_primary == last
    print(f"  counter: {on_primary} on the new primary {new}, {via_proxy} through rampart, last "
          f"acknowledged {last}: {'equal' if same else 'DIFFERENT'}")
    if not same:
        ok = False
    print(f"  result:  {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
