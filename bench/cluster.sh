#!/usr/bin/env bash
# Redis Cluster column: rampart's cluster pool in front of a three-primary Redis Cluster
# against redis-benchmark --cluster talking to the cluster directly, in one run.
# QUICK=1 for a short check. See bench/README.md ("Redis Cluster").
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
OUT=${OUT:-$BENCH_DIR/out}
if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1}; REQUESTS=${REQUESTS:-20000}
else
  ROUNDS=${ROUNDS:-3}; REQUESTS=${REQUESTS:-100000}
fi
CLIENTS=${CLIENTS:-50}
WORKERS=${WORKERS:-1}
RAMPART_BIN=${RAMPART_BIN:-$REPO/target/release/rampart}

for tool in redis-server redis-cli redis-benchmark python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
log() { printf '[bench-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  log "building rampart (release)"
  (cd "$REPO" && cargo build --release -p rampart)
fi
[[ -x $RAMPART_BIN ]] || { echo "bench: $RAMPART_BIN missing" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rampart-bench-cluster.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

wait_port() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "bench: $name exited:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: $name did not open port $port" >&2; exit 1
}

# Three nodes (and their bus ports), rampart and its stats port.
read -r P1 P2 P3 B1 B2 B3 P_RP P_RP_STATS < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
NODES=("$P1" "$P2" "$P3")
BUS=("$B1" "$B2" "$B3")
for i in 0 1 2; do
  mkdir -p "$WORK/n$i"
  start_bg "node$i" redis-server --port "${NODES[$i]}" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$WORK/n$i" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-port "${BUS[$i]}"
  wait_port "${NODES[$i]}" "$LAST_PID" "node$i"
done
redis-cli --cluster create "127.0.0.1:$P1" "127.0.0.1:$P2" "127.0.0.1:$P3" \
  --cluster-replicas 0 --cluster-yes >"$WORK/create.log" 2>&1
for ((i = 0; i < 200; i++)); do
  ok=0
  for p in "${NODES[@]}"; do
    redis-cli -p "$p" CLUSTER INFO | grep -q 'cluster_state:ok' && ok=$((ok + 1))
  done
  [[ $ok == 3 ]] && break
  sleep 0.1
done
[[ $ok == 3 ]] || { echo "bench: the cluster did not come up" >&2; exit 1; }

cat >"$WORK/rampart.yml" <<YML
bench_cluster:
  listen: 127.0.0.1:$P_RP
  cluster: [127.0.0.1:$P1, 127.0.0.1:$P2]
  timeout: 1000
  server_connections: 1
  preconnect: true
YML
start_bg rampart "$RAMPART_BIN" -c "$WORK/rampart.yml" -s "$P_RP_STATS" -a 127.0.0.1 --workers "$WORKERS"
PID_RP=$LAST_PID
wait_port "$P_RP" "$PID_RP" rampart
for ((i = 0; i < 100; i++)); do
  redis-cli -p "$P_RP" SET bench:ready 1 | grep -q OK && break
  sleep 0.1
done

# Ten keys over ten slots (for rampart's MGET) and ten in one slot (the most a direct
# cluster client can ask one node for in one MGET).
SPREAD=(); TAGGED=()
for i in 0 1 2 3 4 5 6 7 8 9; do SPREAD+=("bench:k$i"); TAGGED+=("{bench}:k$i"); done
for k in "${SPREAD[@]}" "${TAGGED[@]}"; do redis-cli -p "$P_RP" SET "$k" "value-of-$k" >/dev/null; done
OWNER=""
for p in "${NODES[@]}"; do
  [[ $(redis-cli -p "$p" GET "${TAGGED[0]}") == "value-of-${TAGGED[0]}" ]] && OWNER=$p
done
[[ -n $OWNER ]] || { echo "bench: no node owns ${TAGGED[0]}" >&2; exit 1; }

mkdir -p "$OUT"
RESULTS="$OUT/cluster.csv"
echo "round,case,target,requests,rps,p99_ms" >"$RESULTS"
CASES=(
  "SET P1|$REQUESTS|-t set -P 1 -r 100000"
  "GET P1|$REQUESTS|-t get -P 1 -r 100000"
  "SET P16|$((REQUESTS * 10))|-t set -P 16 -r 100000"
  "GET P16|$((REQUESTS * 10))|-t get -P 16 -r 100000"
)

run_one() {  # round name target requests args...
  local round=$1 name=$2 target=$3 n=$4; shift 4
  local out row
  if [[ $target == direct ]]; then
    out=$(redis-benchmark --cluster -h 127.0.0.1 -p "$P1" -c "$CLIENTS" -n "$n" --csv "$@" 2>/dev/null)
  elif [[ $target == owner ]]; then
    out=$(redis-benchmark -h 127.0.0.1 -p "$OWNER" -c "$CLIENTS" -n "$n" --csv "$@" 2>/dev/null)
  else
    out=$(redis-benchmark -h 127.0.0.1 -p "$P_RP" -c "$CLIENTS" -n "$n" --csv "$@" 2>/dev/null)
  fi
  row=$(printf '%s\n' "$out" | grep '^"' | grep -v '^"test"' | tail -n 1 | tr -d '"' || true)
  [[ -n $row ]] || { log "WARNING: no result for $name on $target"; return 0; }
  awk -F, -v r="$round" -v c="$name" -v t="$target" -v n="$n" \
    'BEGIN { OFS = "," } { print r, c, t, n, $2, $7 }' <<<"$row" >>"$RESULTS"
  log "round $round  $name  $target: $(cut -d, -f2 <<<"$row") rps, p99 $(cut -d, -f7 <<<"$row") ms"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for spec in "${CASES[@]}"; do
    IFS='|' read -r name n args <<<"$spec"
    for t in direct rampart; do
      # shellcheck disable=SC2086 # $args is a word list
      run_one "$round" "$name" "$t" "$n" $args
    done
  done
  # redis-benchmark --cluster runs no custom command: the direct MGET goes to the slot's owner.
  run_one "$round" "MGET10 P16" owner $((REQUESTS * 5)) -P 16 mget "${TAGGED[@]}"
  run_one "$round" "MGET10 P16" rampart $((REQUESTS * 5)) -P 16 mget "${SPREAD[@]}"
done

python3 - "$RESULTS" <<'PY' | tee "$OUT/cluster.md"
import csv, sys, statistics
rows = list(csv.DictReader(open(sys.argv[1])))
cases = []
for r in rows:
    if r["case"] not in cases:
        cases.append(r["case"])
def med(case, target, field):
    if target == "direct":
        v = [float(r[field]) for r in rows if r["case"] == case and r["target"] in ("direct", "owner")]
    else:
        v = [float(r[field]) for r in rows if r["case"] == case and r["target"] == target]
    return statistics.median(v) if v else float("nan")
print("| case | direct rps | rampart rps | ratio | direct p99 ms | rampart p99 ms |")
print("|---|---|---|---|---|---|")
for c in cases:
    d, p = med(c, "direct", "rps"), med(c, "rampart", "rps")
    print(f"| {c} | {d:,.0f} | {p:,.0f} | {p / d:.2f} | {med(c, 'direct', 'p99_ms'):.3f} | {med(c, 'rampart', 'p99_ms'):.3f} |")
print()
print("direct: redis-benchmark --cluster; MGET10 direct: ten keys of one slot asked of its node")
print("(redis-benchmark --cluster runs no custom command); rampart: ten keys of ten slots, split.")
PY
log "results: $OUT/cluster.md (raw: cluster.csv)"
