#!/usr/bin/env python3
"""Idle-connection memory check for one benchmark target.

Opens N client connections to 127.0.0.1:PORT, sends one PING on each and reads the
reply, then compares the RSS of process PID before and after (all connections still
open). Prints one CSV row: label,conns,rss_before_kb,rss_after_kb,bytes_per_conn.
Standard library only.
"""
import argparse
import socket
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def read_reply_line(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("closed before replying to PING")
        data += chunk
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--label", default="target")
    args = ap.parse_args()

    time.sleep(0.5)
    before = rss_kb(args.pid)
    socks = []
    failed = 0
    for _ in range(args.conns):
        s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        socks.append(s)
        try:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            read_reply_line(s)
        except OSError:
            failed += 1
    # Let the target finish whatever it does per connection before measuring.
    time.sleep(1.0)
    after = rss_kb(args.pid)
    for s in socks:
        s.close()
    if failed:
        print(f"idle.py: {failed} of {args.conns} PINGs to {args.label} failed", file=sys.stderr)
    per_conn = (after - before) * 1024 / args.conns
    print(f"{args.label},{args.conns},{before},{after},{per_conn:.0f}")


if __name__ == "__main__":
    main()
