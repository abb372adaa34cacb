#!/usr/bin/env python3
"""Picks MGET keys that span both shards and loads them.

SETs candidate keys `bench:mget:N` through the proxy at --via (so they land where its
hash and distribution put them), asks shard 1 which ones it holds, and prints --count
keys on one line, half from each shard. With twemproxy's fnv1a_64 + ketama, short
similar keys cluster heavily on one shard, so ten consecutive names are not enough.
Standard library only.
"""
import argparse
import socket
import sys


def command(sock, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("connection closed")
        line += chunk
    if line[:1] == b"-":
        raise RuntimeError(line.decode().strip())
    return line.decode().strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--via", type=int, required=True, help="proxy port")
    ap.add_argument("--shard1", type=int, required=True, help="first shard's port")
    ap.add_argument("--count", type=int, default=10)
    args = ap.parse_args()

    via = socket.create_connection(("127.0.0.1", args.via), timeout=5)
    shard1 = socket.create_connection(("127.0.0.1", args.shard1), timeout=5)
    want = args.count // 2
    on1, on2 = [], []
    for i in range(10000):
        key = f"bench:mget:{i}"
        command(via, "SET", key, f"value-{i}")
        if command(shard1, "EXISTS", key) == ":1":
            home, cap = on1, want
        else:
            home, cap = on2, args.count - want
        if len(home) < cap:
            home.append(key)
        if len(on1) >= want and len(on2) >= args.count - want:
            break
    keys = on1[:want] + on2[: args.count - want]
    if len(keys) < args.count:
        keys = (on1 + on2)[: args.count]
        print("keys.py: could not spread MGET keys over both shards", file=sys.stderr)
    print(" ".join(keys))


if __name__ == "__main__":
    main()
