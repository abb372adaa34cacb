#!/usr/bin/env bash
# Side-by-side benchmark: direct redis, twemproxy (nutcracker), HAProxy (TCP) and rampart,
# plus TLS: rampart with TLS on the client side and on both sides, and stunnel in front of
# twemproxy.
# See bench/README.md for what is measured and how to read the results.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
OUT=${OUT:-$BENCH_DIR/out}
if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1}; REQUESTS=${REQUESTS:-40000}
else
  ROUNDS=${ROUNDS:-3}; REQUESTS=${REQUESTS:-100000}
fi
CLIENTS=${CLIENTS:-50}
# One worker: on a 2-core machine the load generator and the Redis servers need the other core
# (two workers measured lower here: more cross-core wake-ups, less batching). Set WORKERS=N on
# bigger machines; HAProxy gets as many threads.
WORKERS=${WORKERS:-1}
IDLE_CONNS=${IDLE_CONNS:-1000}
# BENCH_CASES / BENCH_TARGETS: extended regular expressions; only the cases and targets whose
# names match run (default: all). Every target is still started and idle-checked. For a closer
# look at a few rows, e.g. BENCH_CASES='MULTI|BLPOP' BENCH_TARGETS='^(direct|rampart)$' ROUNDS=7.
CASE_FILTER=${BENCH_CASES:-}
TARGET_FILTER=${BENCH_TARGETS:-}
wanted() { [[ -z $CASE_FILTER || $1 =~ $CASE_FILTER ]] && [[ -z $TARGET_FILTER || $2 =~ $TARGET_FILTER ]]; }
HASH=${HASH:-fnv1a_64}
SKIP_RAMPART=${BENCH_SKIP_RAMPART:-0}
RAMPART_BIN=${RAMPART_BIN:-$REPO/target/release/rampart}
# nutcracker and haproxy live in sbin on Debian.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

for tool in redis-server redis-cli redis-benchmark nutcracker haproxy python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done
# The TLS targets need openssl (certificates) and stunnel (the anchor); without them they
# are left out with a warning, or on purpose with BENCH_SKIP_TLS=1.
SKIP_TLS=${BENCH_SKIP_TLS:-0}
STUNNEL=$(command -v stunnel4 || command -v stunnel || true)
if [[ $SKIP_TLS != 1 ]] && ! command -v openssl >/dev/null; then
  echo "bench: openssl not found: TLS targets skipped" >&2; SKIP_TLS=1
fi
# The Redis Cluster targets (three cluster nodes), left out with BENCH_SKIP_CLUSTER=1.
SKIP_CLUSTER=${BENCH_SKIP_CLUSTER:-0}
# 1000 idle connections per target need file descriptors in the proxies and in python.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ $SKIP_RAMPART != 1 ]]; then
  if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building rampart and the round-trip client (release)"
    (cd "$REPO" && cargo build --release -p rampart && cargo build --release -p testkit --bin roundtrips --bin fanout)
  fi
  [[ -x $RAMPART_BIN ]] || { echo "bench: $RAMPART_BIN missing after build" >&2; exit 1; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rampart-bench.XXXXXX")
PIDS=() CGROUPS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for cg in ${CGROUPS[@]+"${CGROUPS[@]}"}; do rmdir "$cg" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a background process, logging to $WORK/NAME.log; sets LAST_PID.
start_bg() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# Waits until 127.0.0.1:PORT accepts, failing if PID dies first.
wait_port() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "bench: $name exited:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: $name did not open port $port" >&2; exit 1
}

# N distinct free loopback ports (bound together, then released: a small race remains).
read -r P_S1 P_S2 P_DIRECT P_NC P_NC_STATS P_RP P_RP_STATS P_HA P_R1 P_R2 P_RS P_RS_STATS P_RA P_RA_STATS \
  P_T1 P_T2 P_RT P_RT_STATS P_RT_PLAIN P_RB P_RB_STATS P_RB_PLAIN P_ST P_AC P_AC_STATS \
  P_C1 P_C2 P_C3 P_CB1 P_CB2 P_CB3 P_RC P_RC_STATS P_DT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(34)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

redis_args=(--bind 127.0.0.1 --save "" --appendonly no --daemonize no --dir "$WORK")
start_bg shard1 redis-server --port "$P_S1" "${redis_args[@]}"; PID_S1=$LAST_PID
start_bg shard2 redis-server --port "$P_S2" "${redis_args[@]}"; PID_S2=$LAST_PID
start_bg direct redis-server --port "$P_DIRECT" "${redis_args[@]}"; PID_DIRECT=$LAST_PID
wait_port "$P_S1" "$PID_S1" shard1; wait_port "$P_S2" "$PID_S2" shard2
wait_port "$P_DIRECT" "$PID_DIRECT" direct
# A replica set for rampart's replicated pool: a primary and one replica of it.
start_bg rs-primary redis-server --port "$P_R1" "${redis_args[@]}"; PID_R1=$LAST_PID
start_bg rs-replica redis-server --port "$P_R2" --replicaof 127.0.0.1 "$P_R1" "${redis_args[@]}"; PID_R2=$LAST_PID
wait_port "$P_R1" "$PID_R1" rs-primary; wait_port "$P_R2" "$PID_R2" rs-replica

# One pool over both shards; twemproxy and rampart read the same file but for the port.
pool_yml() {
  cat <<YML
bench:
  listen: 127.0.0.1:$1
  hash: $HASH
  hash_tag: "{}"
  distribution: ketama
  redis: true
  timeout: 1000
  auto_eject_hosts: false
  server_connections: 1
  preconnect: true
  servers:
   - 127.0.0.1:$P_S1:1 shard1
   - 127.0.0.1:$P_S2:1 shard2
YML
}
pool_yml "$P_NC" >"$WORK/twemproxy.yml"
pool_yml "$P_RP" >"$WORK/rampart.yml"
# The same pool with a user at the proxy whose rules are checked on every command: a key
# pattern that misses first (cache:*) then the benchmark's own keys, and the categories the
# cases use.
pool_yml "$P_AC" >"$WORK/rampart-acl.yml"
cat >>"$WORK/rampart-acl.yml" <<YML
  users:
    - name: default
      nopass: true
      rules: on +@read +@write +@connection +@transaction +@blocking +@pubsub ~cache:* ~key:* ~bench:* ~rt:* &*
YML
# rampart's replicated pool: HAProxy's job (writes to the primary, reads to the replica).
cat >"$WORK/rampart-rs.yml" <<YML
bench_rs:
  listen: 127.0.0.1:$P_RS
  timeout: 1000
  server_connections: 1
  preconnect: true
  primary: 127.0.0.1:$P_R1
  replicas: [127.0.0.1:$P_R2]
  read_policy: prefer-replica
YML
# The same pool with every write acknowledged by the replica (WAIT 1 after each batch).
sed -e "s/^bench_rs:/bench_acks:/" -e "s/:$P_RS\$/:$P_RA/" "$WORK/rampart-rs.yml" >"$WORK/rampart-acks.yml"
printf '  min_replica_acks: 1\n' >>"$WORK/rampart-acks.yml"

start_bg twemproxy nutcracker -c "$WORK/twemproxy.yml" -s "$P_NC_STATS" -a 127.0.0.1 -p "$WORK/twemproxy.pid"
PID_NC=$LAST_PID
wait_port "$P_NC" "$PID_NC" twemproxy

cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 3000
  nbthread $WORKERS
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
frontend redis_in
  bind 127.0.0.1:$P_HA
  default_backend redis_direct
backend redis_direct
  server direct 127.0.0.1:$P_DIRECT
CFG
start_bg haproxy haproxy -db -f "$WORK/haproxy.cfg"; PID_HA=$LAST_PID
wait_port "$P_HA" "$PID_HA" haproxy

TARGETS=(direct twemproxy haproxy)
declare -A PORT=([direct]=$P_DIRECT [twemproxy]=$P_NC [haproxy]=$P_HA)
declare -A PID=([direct]=$PID_DIRECT [twemproxy]=$PID_NC [haproxy]=$PID_HA)
if [[ $SKIP_RAMPART != 1 ]]; then
  # shellcheck disable=SC2086 # RAMPART_EXTRA_ARGS is a word list
  start_bg rampart "$RAMPART_BIN" -c "$WORK/rampart.yml" -s "$P_RP_STATS" -a 127.0.0.1 --workers "$WORKERS" ${RAMPART_EXTRA_ARGS:-}
  PID[rampart]=$LAST_PID; PORT[rampart]=$P_RP
  wait_port "$P_RP" "${PID[rampart]}" rampart
  TARGETS+=(rampart)
  # shellcheck disable=SC2086 # RAMPART_EXTRA_ARGS is a word list
  start_bg rampart-acl "$RAMPART_BIN" -c "$WORK/rampart-acl.yml" -s "$P_AC_STATS" -a 127.0.0.1 --workers "$WORKERS" ${RAMPART_EXTRA_ARGS:-}
  PID[rampart-acl]=$LAST_PID; PORT[rampart-acl]=$P_AC
  wait_port "$P_AC" "${PID[rampart-acl]}" rampart-acl
  TARGETS+=(rampart-acl)
  # shellcheck disable=SC2086 # RAMPART_EXTRA_ARGS is a word list
  start_bg rampart-rs "$RAMPART_BIN" -c "$WORK/rampart-rs.yml" -s "$P_RS_STATS" -a 127.0.0.1 --workers "$WORKERS" ${RAMPART_EXTRA_ARGS:-}
  PID[rampart-rs]=$LAST_PID; PORT[rampart-rs]=$P_RS
  wait_port "$P_RS" "${PID[rampart-rs]}" rampart-rs
  # Nodes start down and must pass their health checks: wait until the replica serves reads.
  for ((i = 0; i < 100; i++)); do
    [[ $(redis-cli -p "$P_R2" INFO replication | tr -d '\r' | grep -c '^master_link_status:up') == 1 ]] &&
      redis-cli -p "$P_RS" SET bench:ready 1 | grep -q OK && break
    sleep 0.1
  done
  TARGETS+=(rampart-rs)
  # shellcheck disable=SC2086 # RAMPART_EXTRA_ARGS is a word list
  start_bg rampart-acks "$RAMPART_BIN" -c "$WORK/rampart-acks.yml" -s "$P_RA_STATS" -a 127.0.0.1 --workers "$WORKERS" ${RAMPART_EXTRA_ARGS:-}
  PID[rampart-acks]=$LAST_PID; PORT[rampart-acks]=$P_RA
  wait_port "$P_RA" "${PID[rampart-acks]}" rampart-acks
  for ((i = 0; i < 100; i++)); do
    redis-cli -p "$P_RA" SET bench:ready 1 | grep -q OK && break
    sleep 0.1
  done
  TARGETS+=(rampart-acks)
fi
# TLS (bench/README.md, TLS): a CA and one certificate for 127.0.0.1 shared by every TLS
# listener; two TLS-only shards for TLS on both sides; stunnel in front of twemproxy.
TLS_TARGETS=()
if [[ $SKIP_TLS != 1 ]]; then
  tls_cert() {  # name: WORK/name.pem and WORK/name.key, signed by WORK/ca.pem
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
      -keyout "$WORK/$1.key" -out "$WORK/$1.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$WORK/$1.ext"
    openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
      -days 7 -extfile "$WORK/$1.ext" -out "$WORK/$1.pem" 2>/dev/null
  }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
  tls_cert server
  tls_args=(--tls-cert-file "$WORK/server.pem" --tls-key-file "$WORK/server.key"
    --tls-ca-cert-file "$WORK/ca.pem" --tls-auth-clients no)
  start_bg tls-shard1 redis-server --port 0 --tls-port "$P_T1" "${tls_args[@]}" "${redis_args[@]}"; PID_T1=$LAST_PID
  start_bg tls-shard2 redis-server --port 0 --tls-port "$P_T2" "${tls_args[@]}" "${redis_args[@]}"; PID_T2=$LAST_PID
  wait_port "$P_T1" "$PID_T1" tls-shard1; wait_port "$P_T2" "$PID_T2" tls-shard2
  # direct-tls: one more TLS-only redis-server, the TLS anchor without any proxy: what the same
  # load generator loses to TLS against Redis' own TLS port (compare it with direct).
  start_bg direct-tls redis-server --port 0 --tls-port "$P_DT" "${tls_args[@]}" "${redis_args[@]}"
  PID_DT=$LAST_PID; PID[direct-tls]=$PID_DT; PORT[direct-tls]=$P_DT
  wait_port "$P_DT" "$PID_DT" direct-tls
  TLS_TARGETS+=(direct-tls)
  tls_block="  tls_listen: 127.0.0.1:%s
  tls:
    cert: $WORK/server.pem
    key: $WORK/server.key
"
  # rampart-tls: the plaintext pool plus a TLS listener (its own plaintext port is unused).
  { pool_yml "$P_RT_PLAIN" | sed '/^  servers:/,$d'; printf "$tls_block" "$P_RT"
    printf '  servers:\n   - 127.0.0.1:%s:1 shard1\n   - 127.0.0.1:%s:1 shard2\n' "$P_S1" "$P_S2"; } >"$WORK/rampart-tls.yml"
  # rampart-tls2: TLS to the clients and to two TLS-only shards (same shard names: same placement).
  { pool_yml "$P_RB_PLAIN" | sed '/^  servers:/,$d'; printf "$tls_block" "$P_RB"
    printf '  backend_tls:\n    ca: %s\n' "$WORK/ca.pem"
    printf '  servers:\n   - 127.0.0.1:%s:1 shard1\n   - 127.0.0.1:%s:1 shard2\n' "$P_T1" "$P_T2"; } >"$WORK/rampart-tls2.yml"
  if [[ -n $STUNNEL ]]; then
    cat >"$WORK/stunnel.conf" <<CONF
foreground = yes
pid =
[twemproxy]
accept = 127.0.0.1:$P_ST
connect = 127.0.0.1:$P_NC
cert = $WORK/server.pem
key = $WORK/server.key
CONF
    start_bg stunnel-twemproxy "$STUNNEL" "$WORK/stunnel.conf"; PID[stunnel-twemproxy]=$LAST_PID
    PORT[stunnel-twemproxy]=$P_ST
    wait_port "$P_ST" "${PID[stunnel-twemproxy]}" stunnel-twemproxy
    TLS_TARGETS+=(stunnel-twemproxy)
  else
    log "WARNING: stunnel not found (Debian: stunnel4): the stunnel-twemproxy anchor is skipped"
  fi
  if [[ $SKIP_RAMPART != 1 ]]; then
    for t in rampart-tls rampart-tls2; do
      p=$P_RT; ps=$P_RT_STATS; [[ $t == rampart-tls2 ]] && { p=$P_RB; ps=$P_RB_STATS; }
      # shellcheck disable=SC2086 # RAMPART_EXTRA_ARGS is a word list
      start_bg "$t" "$RAMPART_BIN" -c "$WORK/$t.yml" -s "$ps" -a 127.0.0.1 --workers "$WORKERS" ${RAMPART_EXTRA_ARGS:-}
      PID[$t]=$LAST_PID; PORT[$t]=$p
      wait_port "$p" "${PID[$t]}" "$t"
      TLS_TARGETS+=("$t")
    done
  fi
fi
# Redis Cluster (bench/README.md, Redis Cluster): three primaries, no replicas; cluster-direct
# is redis-benchmark --cluster on them, rampart-cluster a cluster pool in front of them.
CLUSTER_TARGETS=()
if [[ $SKIP_CLUSTER != 1 ]]; then
  CNODES=("$P_C1" "$P_C2" "$P_C3"); CBUS=("$P_CB1" "$P_CB2" "$P_CB3"); CPIDS=()
  for i in 0 1 2; do
    mkdir -p "$WORK/cluster$i"
    start_bg "cluster$i" redis-server --port "${CNODES[$i]}" --bind 127.0.0.1 --save "" \
      --appendonly no --daemonize no --dir "$WORK/cluster$i" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-port "${CBUS[$i]}"
    CPIDS+=("$LAST_PID")
    wait_port "${CNODES[$i]}" "$LAST_PID" "cluster$i"
  done
  redis-cli --cluster create "127.0.0.1:$P_C1" "127.0.0.1:$P_C2" "127.0.0.1:$P_C3" \
    --cluster-replicas 0 --cluster-yes >"$WORK/cluster-create.log" 2>&1
  for ((i = 0; i < 200; i++)); do
    ok=0
    for p in "${CNODES[@]}"; do
      redis-cli -p "$p" CLUSTER INFO | grep -q 'cluster_state:ok' && ok=$((ok + 1))
    done
    [[ $ok == 3 ]] && break
    sleep 0.1
  done
  [[ $ok == 3 ]] || { echo "bench: the cluster did not come up" >&2; exit 1; }
  PID[cluster-direct]="${CPIDS[*]}"; PORT[cluster-direct]=$P_C1
  CLUSTER_TARGETS+=(cluster-direct)
  if [[ $SKIP_RAMPART != 1 ]]; then
    cat >"$WORK/rampart-cluster.yml" <<YML
bench_cluster:
  listen: 127.0.0.1:$P_RC
  cluster: [127.0.0.1:$P_C1, 127.0.0.1:$P_C2]
  timeout: 1000
  server_connections: 1
  preconnect: true
YML
    # shellcheck disable=SC2086 # RAMPART_EXTRA_ARGS is a word list
    start_bg rampart-cluster "$RAMPART_BIN" -c "$WORK/rampart-cluster.yml" -s "$P_RC_STATS" -a 127.0.0.1 --workers "$WORKERS" ${RAMPART_EXTRA_ARGS:-}
    PID[rampart-cluster]=$LAST_PID; PORT[rampart-cluster]=$P_RC
    wait_port "$P_RC" "${PID[rampart-cluster]}" rampart-cluster
    for ((i = 0; i < 100; i++)); do
      redis-cli -p "$P_RC" SET bench:ready 1 | grep -q OK && break
      sleep 0.1
    done
    CLUSTER_TARGETS+=(rampart-cluster)
  fi
fi
log "ports: shards $P_S1 $P_S2, direct $P_DIRECT, twemproxy $P_NC, haproxy $P_HA, rampart $P_RP, replica set $P_R1 $P_R2, rampart-rs $P_RS, rampart-acks $P_RA, rampart-acl $P_AC${TLS_TARGETS[*]:+, TLS shards $P_T1 $P_T2, rampart-tls $P_RT, rampart-tls2 $P_RB, stunnel $P_ST}"

# MGET keys: ten names, five on each shard, loaded through twemproxy (so they sit where
# ketama puts them) and into the direct server.
read -r -a MGET_KEYS < <(python3 "$BENCH_DIR/keys.py" --via "$P_NC" --shard1 "$P_S1" --count 10)
[[ ${#MGET_KEYS[@]} == 10 ]] || { echo "bench: could not choose MGET keys" >&2; exit 1; }
for key in "${MGET_KEYS[@]}"; do
  redis-cli -p "$P_DIRECT" SET "$key" "value-of-$key" >/dev/null
done
on_shard1=$(redis-cli -p "$P_S1" EXISTS "${MGET_KEYS[@]}")
log "MGET keys: $on_shard1 of ${#MGET_KEYS[@]} on shard1 (${MGET_KEYS[*]})"
if [[ $SKIP_RAMPART != 1 ]]; then
  for key in "${MGET_KEYS[@]}"; do
    redis-cli -p "$P_RS" SET "$key" "value-of-$key" >/dev/null
  done
  redis-cli -p "$P_R1" WAIT 1 1000 >/dev/null
  if [[ " ${CLUSTER_TARGETS[*]} " == *" rampart-cluster "* ]]; then
    for key in "${MGET_KEYS[@]}"; do
      redis-cli -p "$P_RC" SET "$key" "value-of-$key" >/dev/null
    done
    slots=$(for key in "${MGET_KEYS[@]}"; do redis-cli -p "$P_C1" CLUSTER KEYSLOT "$key"; done | sort -u | wc -l)
    log "MGET keys: in $slots slots of the cluster"
  fi
  nils=$(redis-cli -p "$P_RP" MGET "${MGET_KEYS[@]}" | grep -c '^$' || true)
  [[ $nils == 0 ]] || log "WARNING: rampart returned $nils empty MGET values (placement differs from twemproxy?)"
fi

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) and RSS of a target: the sum over its processes (the cluster's
# three nodes for cluster-direct).
cpu_ticks() {
  local p t=0
  for p in $1; do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done
  echo "$t"
}
# User+system ticks of this shell's waited-for children: the load generator's own CPU.
client_ticks() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
rss_kb() {
  local p t=0
  for p in $1; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); done
  echo "$t"
}

# BENCH_PIN=LOAD:PROXY (e.g. 0:1; bench/README.md, "The proxy on cores of its own"): the
# Redis servers and the load generator run on the CPUs LOAD, every proxy (twemproxy, HAProxy,
# stunnel, rampart) on the CPUs PROXY, as taskset lists them. Off by default: everything
# shares every core.
LOAD=()
if [[ -n ${BENCH_PIN:-} ]]; then
  command -v taskset >/dev/null || { echo "bench: BENCH_PIN needs taskset (util-linux)" >&2; exit 1; }
  PIN_LOAD=${BENCH_PIN%%:*} PIN_PROXY=${BENCH_PIN#*:}
  [[ $BENCH_PIN == *:* && -n $PIN_LOAD && -n $PIN_PROXY ]] ||
    { echo "bench: BENCH_PIN=$BENCH_PIN: expected LOAD:PROXY CPU lists, e.g. 0:1" >&2; exit 1; }
  LOAD=(taskset -c "$PIN_LOAD")
  servers=("$PID_S1" "$PID_S2" "$PID_DIRECT" "$PID_R1" "$PID_R2" ${PID_T1:-} ${PID_T2:-} ${PID_DT:-} ${CPIDS[@]+"${CPIDS[@]}"})
  for pid in "${servers[@]}"; do taskset -a -p -c "$PIN_LOAD" "$pid" >/dev/null; done
  for t in "${!PID[@]}"; do
    [[ $t == direct || $t == direct-tls || $t == cluster-direct ]] && continue
    taskset -a -p -c "$PIN_PROXY" "${PID[$t]}" >/dev/null
  done
  log "pinned: Redis servers and the load generator on CPUs $PIN_LOAD, the proxies on CPUs $PIN_PROXY"
fi

# BENCH_PROXY_CPU=F (e.g. 0.4; bench/README.md, "The proxy as the bottleneck"): every proxy
# runs in a CPU cgroup of its own, limited to F of one CPU (a 10 ms period), so the proxy, not
# the load generator, sets the pace: rps ratios between proxy targets then compare their own
# cost per request (TLS, users), whatever the load generator spends. Needs a writable cgroup
# filesystem (v2 cpu.max or v1 cpu.cfs_quota_us); the direct targets are left alone.
if [[ -n ${BENCH_PROXY_CPU:-} ]]; then
  quota=$(python3 -c "import sys; f = float(sys.argv[1]); assert 0 < f <= 64; print(round(f * 10000))" \
    "$BENCH_PROXY_CPU" 2>/dev/null) ||
    { echo "bench: BENCH_PROXY_CPU=$BENCH_PROXY_CPU: expected a fraction of one CPU, e.g. 0.4" >&2; exit 1; }
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    CG_ROOT=/sys/fs/cgroup
    echo +cpu >"$CG_ROOT/cgroup.subtree_control" 2>/dev/null || true
  else
    CG_ROOT=/sys/fs/cgroup/cpu
  fi
  for t in "${!PID[@]}"; do
    [[ $t == direct || $t == direct-tls || $t == cluster-direct ]] && continue
    cg=$CG_ROOT/rampart-bench-$$-$t
    mkdir "$cg" 2>/dev/null || { echo "bench: BENCH_PROXY_CPU: cannot create $cg (root and a writable cgroup filesystem needed)" >&2; exit 1; }
    CGROUPS+=("$cg")
    if [[ -f $cg/cpu.max ]]; then echo "$quota 10000" >"$cg/cpu.max"
    else echo 10000 >"$cg/cpu.cfs_period_us"; echo "$quota" >"$cg/cpu.cfs_quota_us"; fi
    # cgroup.procs moves every thread of the process.
    echo "${PID[$t]}" >"$cg/cgroup.procs"
  done
  log "proxies limited to $BENCH_PROXY_CPU CPU each (cgroups under $CG_ROOT)"
fi

mkdir -p "$OUT"
RESULTS=$OUT/results.csv RSS=$OUT/rss.csv IDLE=$OUT/idle.csv
echo "round,case,target,requests,rps,p99_ms,cpu_us_per_req,client_cpu_us_per_req" >"$RESULTS"
echo "target,phase,rss_kb" >"$RSS"
echo "target,conns,rss_before_kb,rss_after_kb,bytes_per_conn" >"$IDLE"

record_rss() {
  local t
  for t in "${TARGETS[@]}" "${TLS_TARGETS[@]}" "${CLUSTER_TARGETS[@]}"; do echo "$t,$1,$(rss_kb "${PID[$t]}")" >>"$RSS"; done
}

record_rss start
for t in "${TARGETS[@]}"; do
  log "idle check: $IDLE_CONNS connections to $t"
  python3 "$BENCH_DIR/idle.py" --port "${PORT[$t]}" --pid "${PID[$t]}" --conns "$IDLE_CONNS" --label "$t" >>"$IDLE"
done
record_rss before_runs

# case name | request count | redis-benchmark arguments
CASES=(
  "SET P1|$REQUESTS|-t set -P 1 -r 100000"
  "GET P1|$REQUESTS|-t get -P 1 -r 100000"
  "SET P16|$((REQUESTS * 10))|-t set -P 16 -r 100000"
  "GET P16|$((REQUESTS * 10))|-t get -P 16 -r 100000"
  "SET 16KiB P1|$((REQUESTS / 5))|-t set -P 1 -d 16384 -r 1000"
  "GET 16KiB P1|$((REQUESTS / 5))|-t get -P 1 -d 16384 -r 1000"
  "MGET10 P16|$((REQUESTS * 5))|-P 16 mget ${MGET_KEYS[*]}"
)

# The cases the TLS targets run, against the same cases of the plaintext targets.
TLS_CASES=("SET P1" "GET P1" "SET P16" "GET P16")
is_tls() { [[ " ${TLS_TARGETS[*]} " == *" $1 "* ]]; }
# The Redis Cluster targets run the TLS cases, and rampart-cluster the MGET too (its ten keys
# lie in ten slots; redis-benchmark --cluster sends no custom command, so no direct MGET).
is_cluster() { [[ " ${CLUSTER_TARGETS[*]} " == *" $1 "* ]]; }
CLUSTER_CASES=("${TLS_CASES[@]}")
runs_case() {  # target case: whether the target runs the redis-benchmark case
  if is_tls "$1"; then [[ " ${TLS_CASES[*]} " == *" $2 "* ]]
  elif [[ $1 == rampart-cluster ]]; then [[ " ${CLUSTER_CASES[*]} MGET10 P16 " == *" $2 "* ]]
  elif is_cluster "$1"; then [[ " ${CLUSTER_CASES[*]} " == *" $2 "* ]]
  else true
  fi
}

run_one() {  # round name target requests args...
  local round=$1 name=$2 target=$3 n=$4; shift 4
  local pid=${PID[$target]} before after cbefore cafter out row tls=()
  is_tls "$target" && tls=(--tls --cacert "$WORK/ca.pem")
  [[ $target == cluster-direct ]] && tls=(--cluster)
  before=$(cpu_ticks "$pid") cbefore=$(client_ticks)
  out=$(${LOAD[@]+"${LOAD[@]}"} redis-benchmark -h 127.0.0.1 -p "${PORT[$target]}" "${tls[@]}" -c "$CLIENTS" -n "$n" --csv "$@" 2>/dev/null)
  after=$(cpu_ticks "$pid") cafter=$(client_ticks)
  row=$(printf '%s\n' "$out" | grep '^"' | grep -v '^"test"' | tail -n 1 | tr -d '"')
  [[ -n $row ]] || { log "WARNING: no result for $name on $target"; return 0; }
  awk -F, -v r="$round" -v c="$name" -v t="$target" -v n="$n" -v d=$((after - before)) -v hz="$CLK_TCK" \
    -v cd=$((cafter - cbefore)) \
    'BEGIN { OFS = "," } { print r, c, t, n, $2, $7, d * 1e6 / hz / n, cd * 1e6 / hz / n }' <<<"$row" >>"$RESULTS"
  log "round $round  $name  $target: $(cut -d, -f2 <<<"$row") rps, p99 $(cut -d, -f7 <<<"$row") ms"
}

# Session cases (bench/README.md): the round-trip client, on the targets that serve them
# (twemproxy refuses MULTI and blocking commands).
ROUNDTRIPS=${ROUNDTRIPS_BIN:-$REPO/target/release/roundtrips}
SESSION_CASES=(
  "MULTI/INCR/EXEC P1|$((REQUESTS / 2))|multi"
  "RPUSH+BLPOP P1|$((REQUESTS / 4))|blpop"
)
[[ -x $ROUNDTRIPS ]] || { log "WARNING: $ROUNDTRIPS missing: session cases skipped"; SESSION_CASES=(); }

run_rt() {  # round name target requests case
  local round=$1 name=$2 target=$3 n=$4 case=$5
  local pid=${PID[$target]} before after cbefore cafter row
  before=$(cpu_ticks "$pid") cbefore=$(client_ticks)
  row=$(${LOAD[@]+"${LOAD[@]}"} "$ROUNDTRIPS" "${PORT[$target]}" "$case" "$CLIENTS" "$n") || { log "WARNING: $name failed on $target"; return 0; }
  after=$(cpu_ticks "$pid") cafter=$(client_ticks)
  awk -F, -v r="$round" -v c="$name" -v t="$target" -v n="$n" -v d=$((after - before)) -v hz="$CLK_TCK" \
    -v cd=$((cafter - cbefore)) \
    'BEGIN { OFS = "," } { print r, c, t, n, $1, $2, d * 1e6 / hz / n, cd * 1e6 / hz / n }' <<<"$row" >>"$RESULTS"
  log "round $round  $name  $target: $(cut -d, -f1 <<<"$row") rps, p99 $(cut -d, -f2 <<<"$row") ms"
}

# Pub/Sub fan-out (bench/README.md): one publisher, SUBSCRIBERS subscribers on one channel, on
# the targets that serve Pub/Sub (twemproxy refuses it); a row counts deliveries.
FANOUT=${FANOUT_BIN:-$REPO/target/release/fanout}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
PUBSUB_CASES=("PUBSUB 1x$SUBSCRIBERS|$((REQUESTS / 20))")
[[ -x $FANOUT ]] || { log "WARNING: $FANOUT missing: Pub/Sub case skipped"; PUBSUB_CASES=(); }

run_fanout() {  # round name target messages
  local round=$1 name=$2 target=$3 m=$4
  local pid=${PID[$target]} n=$(($4 * SUBSCRIBERS)) before after cbefore cafter row
  before=$(cpu_ticks "$pid") cbefore=$(client_ticks)
  row=$(${LOAD[@]+"${LOAD[@]}"} "$FANOUT" "${PORT[$target]}" "$SUBSCRIBERS" "$m") || { log "WARNING: $name failed on $target"; return 0; }
  after=$(cpu_ticks "$pid") cafter=$(client_ticks)
  awk -F, -v r="$round" -v c="$name" -v t="$target" -v n="$n" -v d=$((after - before)) -v hz="$CLK_TCK" \
    -v cd=$((cafter - cbefore)) \
    'BEGIN { OFS = "," } { print r, c, t, n, $1, $2, d * 1e6 / hz / n, cd * 1e6 / hz / n }' <<<"$row" >>"$RESULTS"
  log "round $round  $name  $target: $(cut -d, -f1 <<<"$row") deliveries/s, p99 $(cut -d, -f2 <<<"$row") ms"
}

log "benchmark: $ROUNDS rounds, base $REQUESTS requests, $CLIENTS clients, targets: ${TARGETS[*]}"
for ((round = 1; round <= ROUNDS; round++)); do
  # Each round starts with a different target, so no target always runs first or last.
  ALL=("${TARGETS[@]}" "${TLS_TARGETS[@]}" "${CLUSTER_TARGETS[@]}")
  ORDER=("${ALL[@]:$(( (round - 1) % ${#ALL[@]} ))}" "${ALL[@]:0:$(( (round - 1) % ${#ALL[@]} ))}")
  for spec in "${CASES[@]}"; do
    IFS='|' read -r name n args <<<"$spec"
    for t in "${ORDER[@]}"; do
      runs_case "$t" "$name" && wanted "$name" "$t" || continue
      # $args is split into words on purpose.
      # shellcheck disable=SC2086
      run_one "$round" "$name" "$t" "$n" $args
    done
  done
  for spec in "${SESSION_CASES[@]}"; do
    IFS='|' read -r name n case <<<"$spec"
    for t in "${ORDER[@]}"; do
      wanted "$name" "$t" || continue
      [[ $t == twemproxy ]] || is_tls "$t" || is_cluster "$t" || run_rt "$round" "$name" "$t" "$n" "$case"
    done
  done
  for spec in "${PUBSUB_CASES[@]}"; do
    IFS='|' read -r name m <<<"$spec"
    for t in "${ORDER[@]}"; do
      wanted "$name" "$t" || continue
      [[ $t == twemproxy ]] || is_tls "$t" || is_cluster "$t" || run_fanout "$round" "$name" "$t" "$m"
    done
  done
done

record_rss end
log "waiting 5 s for memory to settle"
sleep 5
record_rss after_5s

python3 "$BENCH_DIR/report.py" --dir "$OUT" --rounds "$ROUNDS" --requests "$REQUESTS" \
  --clients "$CLIENTS" --workers "$WORKERS" --pinned "${BENCH_PIN:-}" --proxy-cpu "${BENCH_PROXY_CPU:-}" | tee "$OUT/results.md"
log "results: $OUT/results.md (raw: results.csv, rss.csv, idle.csv)"
