#!/usr/bin/env bash
# Runs units of Redis' own Tcl test suite against a plain redis-server and against rampart (a
# one-server pool in front of another redis-server), both as external servers, and prints
# the [ok] / [err] / [exception] counts of each unit side by side, plus the failed test names
# through rampart that did not fail directly.
#
#   scripts/redis-tcl.sh REDIS_SOURCE_TREE [UNIT ...]
#   TCL_CLUSTER=1 scripts/redis-tcl.sh REDIS_SOURCE_TREE [UNIT ...]
#
# With TCL_CLUSTER=1 rampart's pool is a `cluster:` pool over a Redis Cluster of three
# primaries the script creates (redis-cli --cluster create), and both sides run with the
# suite's --cluster-mode (tests tagged cluster:skip are skipped: their keys are not meant to
# share a slot); the direct side is still one plain redis-server.
#
# REDIS_SOURCE_TREE is a checkout of the Redis version the servers run (its tests/ and
# runtest; e.g. `git archive 7.0.15 tests runtest` of the Redis repository). UNITs default to
# unit/multi unit/type/list unit/type/zset unit/type/stream unit/type/stream-cgroups.
# Needs tclsh, redis-server and target/release/rampart (RAMPART_BIN to override).
# Runs with --singledb (rampart serves one database per pool) and skips tests tagged
# needs:debug, needs:repl, needs:save, needs:config-maxmemory, needs:pfdebug and
# external:skip, which the suite itself skips for external servers it cannot control. Tests in
# SKIP (below) are skipped on both sides: they assume that commands sent on two connections
# reach the server in the order sent, which no proxy can promise (the blocking one travels on
# a connection of its own), and without that they hang the whole unit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOPO_NAME=redis-tcl
# shellcheck source=scripts/lib-topology.sh
source "$ROOT/scripts/lib-topology.sh"
SRC=${1:?usage: scripts/redis-tcl.sh REDIS_SOURCE_TREE [UNIT ...]}
shift
UNITS=("$@")
[[ ${#UNITS[@]} -gt 0 ]] || UNITS=(unit/multi unit/type/list unit/type/zset unit/type/stream unit/type/stream-cgroups)
BIN=${RAMPART_BIN:-$ROOT/target/release/rampart}
[[ -x $BIN ]] || die "$BIN missing: cargo build --release -p rampart"
topo_init

start_redis() {  # port
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    --enable-debug-command yes --logfile "$WORK/redis-$1.log" &
  PIDS+=($!)
}
DIRECT=$(pick_port 7611)
start_redis "$DIRECT"
wait_port "$DIRECT" "${PIDS[-1]}" redis-direct
PROXY=$(pick_port 7613)
if [[ ${TCL_CLUSTER:-0} == 1 ]]; then
  topo_cluster 3 0 --enable-debug-command yes
  SEEDS=()
  for port in "${CLUSTER_PORTS[@]}"; do SEEDS+=("127.0.0.1:$port"); done
  BACKENDS="  cluster: [$(IFS=,; echo "${SEEDS[*]}")]"
  CLUSTER_MODE=(--cluster-mode)
else
  BACKEND=$(pick_port 7612)
  start_redis "$BACKEND"
  wait_port "$BACKEND" "${PIDS[-1]}" redis-backend
  BACKENDS=$(printf '  servers:\n    - 127.0.0.1:%s:1' "$BACKEND")
  CLUSTER_MODE=()
fi
cat >"$WORK/pool.yml" <<YAML
tcl:
  listen: 127.0.0.1:$PROXY
  redis: true
  admin_broadcast: true
  timeout: 30000
$BACKENDS
YAML
STATS=$(pick_port 7614)
"$BIN" -c "$WORK/pool.yml" -a 127.0.0.1 -s "$STATS" -o "$WORK/rampart.log" &
PIDS+=($!)
wait_port "$PROXY" "${PIDS[-1]}" rampart

SKIP=("BRPOPLPUSH with multiple blocked clients")

run_unit() {  # port unit log
  local skip=() t
  for t in "${SKIP[@]}"; do skip+=(--skiptest "$t"); done
  (cd "$SRC" && tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$1" --singledb \
    --single "$2" --tags "-needs:debug -needs:repl -needs:save -needs:config-maxmemory -needs:pfdebug -external:skip" \
    --timeout 600 --durable --ignore-encoding --ignore-digest "${CLUSTER_MODE[@]}" "${skip[@]}") 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$3" || true
}
count() { grep -c "^\[$1\]" "$2" || true; }

printf '| unit | direct ok | direct err | rampart ok | rampart err | rampart exceptions |\n|---|---|---|---|---|---|\n'
for unit in "${UNITS[@]}"; do
  d="$WORK/direct-${unit//\//_}.log" r="$WORK/rampart-${unit//\//_}.log"
  run_unit "$DIRECT" "$unit" "$d"
  run_unit "$PROXY" "$unit" "$r"
  printf '| %s | %s | %s | %s | %s | %s |\n' "$unit" "$(count ok "$d")" "$(count err "$d")" \
    "$(count ok "$r")" "$(count err "$r")" "$(grep -c '\[exception\]' "$r" || true)"
  comm -13 <(grep '^\[err\]' "$d" | sort) <(grep '^\[err\]' "$r" | sort) | sed 's/^/  rampart only: /' >&2
  grep -A3 '\[exception\]' "$r" | sed 's/^/  /' >&2 || true
done
