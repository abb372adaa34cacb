#!/usr/bin/env python3
"""Turns bench/run.sh's raw CSV files into a Markdown report (medians and ratios).

Reads DIR/results.csv, DIR/rss.csv and DIR/idle.csv; prints Markdown to stdout.
Standard library only.
"""
import argparse
import csv
import datetime
import os
import statistics

TARGETS = ["direct", "direct-tls", "twemproxy", "haproxy", "rampart", "rampart-acl", "rampart-rs",
           "rampart-acks", "rampart-tls", "rampart-tls2", "stunnel-twemproxy",
           "cluster-direct", "rampart-cluster"]
RATIOS = [("rampart", "twemproxy"), ("rampart", "direct"),
          ("twemproxy", "direct"), ("haproxy", "direct"),
          ("rampart-rs", "haproxy"), ("rampart-rs", "direct"),
          ("rampart-acks", "rampart-rs"), ("rampart-acl", "rampart"),
          ("direct-tls", "direct"), ("rampart-tls", "rampart"), ("rampart-tls2", "rampart"),
          ("stunnel-twemproxy", "twemproxy"), ("rampart-tls", "stunnel-twemproxy"),
          ("rampart-cluster", "cluster-direct")]
METRICS = [("rps", "rps"), ("p99_ms", "p99 ms"), ("cpu_us_per_req", "CPU µs/req")]
# The load generator's own user+system time per request (redis-benchmark, roundtrips, fanout):
# on a machine whose cores it shares, what the client spends (TLS, cluster redirections) is
# throughput the target cannot have.
CLIENT_CPU = "client_cpu_us_per_req"


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fmt(value, digits=2):
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def medians(rows):
    """(case, target) -> {metric: median}, keeping the order cases first appear in."""
    groups = {}
    for row in rows:
        key = (row["case"], row["target"])
        groups.setdefault(key, []).append(row)
    out = {}
    for key, group in groups.items():
        out[key] = {m: statistics.median(float(r[m]) for r in group) for m, _ in METRICS}
        client = [float(r[CLIENT_CPU]) for r in group if r.get(CLIENT_CPU)]
        out[key][CLIENT_CPU] = statistics.median(client) if client else None
    return out


def ratio(med, case, a, b, metric):
    x, y = med.get((case, a)), med.get((case, b))
    if x is None or y is None or y[metric] == 0:
        return None
    return x[metric] / y[metric]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--rounds", default="?")
    ap.add_argument("--requests", default="?")
    ap.add_argument("--clients", default="?")
    ap.add_argument("--workers", default="?")
    ap.add_argument("--pinned", default="",
                    help="LOAD:PROXY CPU lists when the run was pinned (BENCH_PIN)")
    ap.add_argument("--proxy-cpu", default="",
                    help="the CPU limit of every proxy, in CPUs (BENCH_PROXY_CPU)")
    args = ap.parse_args()

    rows = read_csv(os.path.join(args.dir, "results.csv"))
    med = medians(rows)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    targets = [t for t in TARGETS if any(k[1] == t for k in med)]

    print("# rampart benchmark")
    print()
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}; {args.rounds} rounds (medians shown), "
          f"base {args.requests} requests, {args.clients} clients, "
          f"{args.workers} worker thread(s) for rampart and HAProxy. "
          "CPU is the target process's own user+system time per request "
          "(for `direct`, the redis-server itself). Compare ratios, not absolute numbers.")
    if args.pinned:
        load, _, proxy = args.pinned.partition(":")
        print()
        print(f"Pinned: Redis servers and the load generator on CPUs {load}, every proxy on "
              f"CPUs {proxy} (BENCH_PIN={args.pinned}).")
    if args.proxy_cpu:
        print()
        print(f"Proxy-bound: every proxy limited to {args.proxy_cpu} CPU (BENCH_PROXY_CPU); "
              "compare proxies with each other, not with `direct`.")
    print()
    print("## Medians")
    print()
    print("| case | " + " | ".join(f"{t} rps | {t} p99 ms | {t} CPU µs/req" for t in targets) + " |")
    print("|---" * (1 + 3 * len(targets)) + "|")
    for case in cases:
        cells = []
        for t in targets:
            m = med.get((case, t))
            cells += [fmt(m and m["rps"]), fmt(m and m["p99_ms"], 3), fmt(m and m["cpu_us_per_req"])]
        print(f"| {case} | " + " | ".join(cells) + " |")
    print()
    ratios = [(a, b) for a, b in RATIOS if a in targets and b in targets]
    notes = {"rps": "above 1 = more requests per second",
             "p99_ms": "below 1 = lower tail latency",
             "cpu_us_per_req": "below 1 = less CPU per request"}
    for metric, title in METRICS:
        if not ratios:
            break
        print(f"## Ratio of {title} ({notes[metric]})")
        print()
        print("| case | " + " | ".join(f"{a}/{b}" for a, b in ratios) + " |")
        print("|---" * (1 + len(ratios)) + "|")
        for case in cases:
            vals = [fmt(ratio(med, case, a, b, metric)) for a, b in ratios]
            print(f"| {case} | " + " | ".join(vals) + " |")
        print()

    print("## Client CPU µs/req (the load generator's own user+system time per request)")
    print()
    print("| case | " + " | ".join(targets) + " |")
    print("|---" * (1 + len(targets)) + "|")
    for case in cases:
        vals = [fmt((med.get((case, t)) or {}).get(CLIENT_CPU)) for t in targets]
        print(f"| {case} | " + " | ".join(vals) + " |")
    print()

    rss = {}
    for row in read_csv(os.path.join(args.dir, "rss.csv")):
        rss[(row["target"], row["phase"])] = int(row["rss_kb"])
    idle = {row["target"]: row for row in read_csv(os.path.join(args.dir, "idle.csv"))}
    print("## Memory (RSS, KiB)")
    print()
    print("| target | at start | before runs | end of load | 5 s after load | idle bytes/conn |")
    print("|---|---|---|---|---|---|")
    for t in targets:
        cells = [str(rss.get((t, p), "n/a")) for p in ("start", "before_runs", "end", "after_5s")]
        per_conn = idle.get(t, {}).get("bytes_per_conn", "n/a")
        print(f"| {t} | " + " | ".join(cells) + f" | {per_conn} |")
    print()
    print("`idle bytes/conn` = (RSS with N idle connections that each sent one PING - RSS before) / N.")


if __name__ == "__main__":
    main()
