# shellcheck shell=bash
# Shared bash for scripts/quickstart.sh and scripts/failover-demo.sh: a temp dir, free loopback
# ports, redis-server / redis-sentinel / rampart processes started in the background, and a
# cleanup that stops every one of them by PID. Source it from a script that runs with
# `set -euo pipefail`; nothing here runs on its own.
#
#   TOPO_NAME=quickstart          # prefix for messages and the temp dir name
#   source "$ROOT/scripts/lib-topology.sh"
#   topo_init                     # temp dir in $WORK, EXIT/INT/TERM/HUP traps
#   topo_build                    # rampart binary in $BIN (RAMPART_BIN or cargo build --release)
#   topo_plain_shards 3           # SHARD_PORTS=(...)
#   topo_ha_shards 2              # PRIMARY_PORTS, REPLICA_PORTS, PRIMARY_PIDS, REPLICA_PIDS
#   topo_sentinels 3 2            # SENTINEL_PORTS (3 sentinels monitoring shard1..shard2)
#
# Everything stays on 127.0.0.1 and inside $WORK.

TOPO_NAME=${TOPO_NAME:-topology}

say() { printf '%s: %s\n' "$TOPO_NAME" "$*" >&2; }
die() {
  say "$*"
  exit 1
}

# --- cleanup: every process started here, by PID ---------------------------------------------
PIDS=()
WORK=
# Set to 1 to keep $WORK (logs, configs) after exit.
KEEP_WORK=${KEEP_WORK:-0}

# True when PID is one of this shell's background jobs that is still running. Only those are
# signalled: a PID that already exited (say, a primary killed on purpose) may have been reused
# by an unrelated process.
running_job() { [[ " $(jobs -pr | tr '\n' ' ') " == *" $1 "* ]]; }

# Stops every process in PIDS (newest first, so rampart goes before its backends and sentinels
# before the servers they watch), then checks that none is left and removes $WORK.
# shellcheck disable=SC2317  # run by the EXIT trap
topo_cleanup() {
  local pid i j n left=()
  trap - EXIT INT TERM HUP
  n=${#PIDS[@]}
  for ((i = n - 1; i >= 0; i--)); do
    if running_job "${PIDS[i]}"; then kill -TERM "${PIDS[i]}" 2>/dev/null || true; fi
  done
  for ((i = n - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    for ((j = 0; j < 50; j++)); do
      running_job "$pid" || break
      sleep 0.1
    done
    if running_job "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    if running_job "$pid"; then left+=("$pid"); fi
  done
  local dir="removed ${WORK:-nothing}"
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP_WORK == 1 ]]; then dir="kept $WORK"; else rm -rf "$WORK"; fi
  fi
  if ((${#left[@]})); then
    say "stopped $n process(es), but these are still running: ${left[*]}; $dir"
  else
    say "stopped $n process(es), none left running; $dir"
  fi
}

# Creates $WORK and installs the traps. A signal exits with 128+signal, which runs the cleanup.
topo_init() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/rampart-$TOPO_NAME.XXXXXX")
  trap topo_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
}

# --- ports -----------------------------------------------------------------------------------
# True when something accepts TCP connections on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

TAKEN=" "
# A random port from which to look for free ones: 12000-21999, so that a Redis Cluster node's
# bus port (its port + 10000) stays below Linux's default range for outgoing connections
# (32768 and up), which could take either at any moment.
random_base() { echo $((12000 + RANDOM % 10000)); }
# Prints a port that nothing listens on (nor on the port 10000 above it, a cluster node's bus
# port), trying $1 first, then ports upward from a random base.
pick_port() {
  local p=$1 tries
  for ((tries = 0; tries < 200; tries++)); do
    if [[ $TAKEN != *" $p "* ]] && ! in_use "$p" && ! in_use $((p + 10000)); then
      echo "$p"
      return 0
    fi
    if ((tries == 0)); then p=$(random_base); else p=$((p + 1)); fi
  done
  die "no free loopback port found"
}

# Waits until 127.0.0.1:PORT accepts while PID lives; $3 names the process for messages.
wait_port() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || die "$name exited before accepting on port $port"
    in_use "$port" && return 0
    sleep 0.1
  done
  die "$name did not accept on port $port within 10 s"
}

# --- processes ---------------------------------------------------------------------------------
# start_on_free_port NAME READY LAUNCHER [ARGS...]
# Runs `LAUNCHER PORT LOG ARGS...` in the background on a free port (the launcher must `exec`
# the server, so that $! is the server's PID) and waits until LOG contains READY, which the
# server writes only once it listens. Retries on another port if the port was taken meanwhile.
# Sets STARTED_PORT and STARTED_PID.
start_on_free_port() {
  local name=$1 ready=$2 launcher=$3 attempt port log pid i started=0
  shift 3
  log=$WORK/$name.log
  for attempt in 1 2 3 4 5; do
    port=$(pick_port "$(random_base)")
    TAKEN+="$port "
    rm -f "$log"
    "$launcher" "$port" "$log" "$@" &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      if grep -q "$ready" "$log" 2>/dev/null; then
        started=1
        break
      fi
      sleep 0.1
    done
    [[ $started == 1 ]] && break
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    say "$name could not start on port $port (attempt $attempt):" \
      "$(grep -m1 -iE 'error|could not|failed' "$log" 2>/dev/null | cut -d' ' -f5- || true)"
  done
  [[ $started == 1 ]] || die "$name did not start"
  STARTED_PORT=$port
  STARTED_PID=$pid
}

# launch_redis PORT LOG [redis-server options...]
# shellcheck disable=SC2317  # called through start_on_free_port
launch_redis() {
  local port=$1 log=$2
  shift 2
  exec redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$WORK" --logfile "$log" "$@"
}

# launch_cluster_node PORT LOG [redis-server options...]
# A redis-server with cluster support, its nodes file in $WORK, and a 2 s node timeout so a
# killed primary is replaced by its replica within a few seconds.
# shellcheck disable=SC2317  # called through start_on_free_port
launch_cluster_node() {
  local port=$1 log=$2
  shift 2
  launch_redis "$port" "$log" --cluster-enabled yes --cluster-config-file "$WORK/nodes-$port.conf" \
    --cluster-node-timeout 2000 "$@"
}

# launch_sentinel PORT LOG MASTERS...   (MASTERS: name=port, all on 127.0.0.1)
# Writes $WORK/sentinel-PORT.conf (Sentinel rewrites its own file, so each gets one).
# shellcheck disable=SC2317  # called through start_on_free_port
launch_sentinel() {
  local port=$1 log=$2 conf=$WORK/sentinel-$1.conf m name mport
  shift 2
  {
    echo "port $port"
    echo "bind 127.0.0.1"
    echo "daemonize no"
    echo "dir $WORK"
    echo "logfile $log"
    for m in "$@"; do
      name=${m%%=*}
      mport=${m#*=}
      echo "sentinel monitor $name 127.0.0.1 $mport 2"
      echo "sentinel down-after-milliseconds $name 1000"
      echo "sentinel failover-timeout $name 5000"
      echo "sentinel parallel-syncs $name 1"
    done
  } >"$conf"
  exec redis-sentinel "$conf"
}

# --- build -------------------------------------------------------------------------------------
# Sets BIN: $RAMPART_BIN, or a release build of this checkout.
topo_build() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [[ -n ${RAMPART_BIN:-} ]]; then
    BIN=$RAMPART_BIN
  else
    say "building rampart (release; the first build takes a few minutes)"
    (cd "$root" && cargo build --release -p rampart)
    BIN=${CARGO_TARGET_DIR:-$root/target}/release/rampart
  fi
  [[ -x $BIN ]] || die "no rampart binary at $BIN"
}

# Checks for the programs a topology needs; $@ adds more (python3, redis-sentinel, ...).
topo_require() {
  local missing=0 prog
  for prog in redis-server redis-cli "$@"; do
    if ! command -v "$prog" >/dev/null; then
      say "$prog not found. Install Redis: 'sudo apt-get install redis-server redis-sentinel'"
      say "  (Debian/Ubuntu), 'sudo dnf install redis' (Fedora) or 'brew install redis' (macOS)."
      [[ $prog == python3 ]] && say "  (python3: 'sudo apt-get install python3')"
      missing=1
    fi
  done
  if [[ -z ${RAMPART_BIN:-} ]] && ! command -v cargo >/dev/null; then
    say "cargo not found. Install the Rust toolchain with rustup (https://rustup.rs): rampart"
    say "  needs Rust 1.85 or later, newer than the cargo package of Debian 12 (Rust 1.65)."
    missing=1
  fi
  [[ $missing == 0 ]] || exit 1
}

# --- topologies --------------------------------------------------------------------------------
# N plain redis-servers: SHARD_PORTS, SHARD_PIDS.
topo_plain_shards() {
  local n
  SHARD_PORTS=()
  SHARD_PIDS=()
  for ((n = 1; n <= $1; n++)); do
    start_on_free_port "shard-$n" "Ready to accept connections" launch_redis
    SHARD_PORTS+=("$STARTED_PORT")
    SHARD_PIDS+=("$STARTED_PID")
    say "shard-$n: redis-server pid $STARTED_PID on 127.0.0.1:$STARTED_PORT"
  done
}

# redis-cli against 127.0.0.1:PORT with a 2 s bound (a stuck server must not hang a script).
rcli() {
  local port=$1
  shift
  timeout 2 redis-cli -h 127.0.0.1 -p "$port" "$@"
}

# N shards named shard1..shardN, each a primary and one replica (--replicaof), waiting until
# every replica's link is up. Sets PRIMARY_PORTS, PRIMARY_PIDS, REPLICA_PORTS, REPLICA_PIDS.
topo_ha_shards() {
  local n i
  PRIMARY_PORTS=()
  PRIMARY_PIDS=()
  REPLICA_PORTS=()
  REPLICA_PIDS=()
  for ((n = 1; n <= $1; n++)); do
    start_on_free_port "shard$n-primary" "Ready to accept connections" launch_redis
    PRIMARY_PORTS+=("$STARTED_PORT")
    PRIMARY_PIDS+=("$STARTED_PID")
    start_on_free_port "shard$n-replica" "Ready to accept connections" launch_redis \
      --replicaof 127.0.0.1 "$STARTED_PORT"
    REPLICA_PORTS+=("$STARTED_PORT")
    REPLICA_PIDS+=("$STARTED_PID")
  done
  for ((n = 0; n < $1; n++)); do
    for ((i = 0; i < 100; i++)); do
      rcli "${REPLICA_PORTS[n]}" info replication 2>/dev/null |
        grep -q '^master_link_status:up' && break
      sleep 0.1
    done
    ((i < 100)) || die "shard$((n + 1)): replica did not connect to its primary within 10 s"
    say "shard$((n + 1)): primary pid ${PRIMARY_PIDS[n]} on 127.0.0.1:${PRIMARY_PORTS[n]}," \
      "replica pid ${REPLICA_PIDS[n]} on 127.0.0.1:${REPLICA_PORTS[n]}"
  done
}

# topo_cluster PRIMARIES REPLICAS [redis-server options...]
# A Redis Cluster of PRIMARIES primaries with REPLICAS replicas each, made by
# `redis-cli --cluster create`, waiting until every node reports cluster_state:ok and every
# replica's link to its primary is up. Sets CLUSTER_PORTS and CLUSTER_PIDS (creation order)
# and CLUSTER_ROLES (master or slave, as each node's ROLE says).
topo_cluster() {
  local primaries=$1 replicas=$2 n i total addrs=() ok port
  shift 2
  total=$((primaries * (1 + replicas)))
  CLUSTER_PORTS=()
  CLUSTER_PIDS=()
  CLUSTER_ROLES=()
  for ((n = 1; n <= total; n++)); do
    start_on_free_port "cluster-node-$n" "Ready to accept connections" launch_cluster_node "$@"
    CLUSTER_PORTS+=("$STARTED_PORT")
    CLUSTER_PIDS+=("$STARTED_PID")
    addrs+=("127.0.0.1:$STARTED_PORT")
  done
  timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" \
    --cluster-yes >"$WORK/cluster-create.log" 2>&1 ||
    die "redis-cli --cluster create failed: $(tail -n 5 "$WORK/cluster-create.log")"
  for ((i = 0; i < 300; i++)); do
    ok=1
    for port in "${CLUSTER_PORTS[@]}"; do
      rcli "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
      if rcli "$port" role 2>/dev/null | head -n 1 | grep -qx slave; then
        rcli "$port" info replication 2>/dev/null | grep -q '^master_link_status:up' || ok=0
      fi
      [[ $ok == 1 ]] || break
    done
    [[ $ok == 1 ]] && break
    sleep 0.1
  done
  [[ $ok == 1 ]] || die "the cluster did not settle (cluster_state:ok, replicas linked) within 30 s"
  for port in "${CLUSTER_PORTS[@]}"; do
    CLUSTER_ROLES+=("$(rcli "$port" role 2>/dev/null | head -n 1)")
  done
}

# COUNT sentinels monitoring shard1..shardN (from topo_ha_shards) with quorum 2, waiting until
# each one knows the other sentinels and the replica of every master and can authorize a
# failover (SENTINEL CKQUORUM). Sets SENTINEL_PORTS and SENTINEL_PIDS.
topo_sentinels() {
  local count=$1 shards=$2 n i s masters=() ok
  for ((n = 1; n <= shards; n++)); do masters+=("shard$n=${PRIMARY_PORTS[n - 1]}"); done
  SENTINEL_PORTS=()
  SENTINEL_PIDS=()
  for ((s = 1; s <= count; s++)); do
    start_on_free_port "sentinel-$s" "Sentinel ID is" launch_sentinel "${masters[@]}"
    SENTINEL_PORTS+=("$STARTED_PORT")
    SENTINEL_PIDS+=("$STARTED_PID")
    say "sentinel-$s: pid $STARTED_PID on 127.0.0.1:$STARTED_PORT"
  done
  say "waiting for the sentinels to find each other and the replicas"
  for ((i = 0; i < 300; i++)); do
    ok=1
    for s in "${SENTINEL_PORTS[@]}"; do
      for ((n = 1; n <= shards; n++)); do
        rcli "$s" sentinel ckquorum "shard$n" 2>/dev/null | grep -q "^OK $count usable" || ok=0
        rcli "$s" sentinel master "shard$n" 2>/dev/null |
          grep -A1 -x 'num-slaves' | tail -1 | grep -qx '[1-9]' || ok=0
        [[ $ok == 1 ]] || break 2
      done
    done
    [[ $ok == 1 ]] && break
    sleep 0.1
  done
  [[ $ok == 1 ]] || die "the sentinels did not agree on the topology within 30 s"
}

# --- rampart -------------------------------------------------------------------------------------
# Prints CONF after replacing, in TEMPLATE, the pool port 22121 by $PORT and each 127.0.0.1:FROM
# by 127.0.0.1:TO for every FROM=TO argument.
topo_render() {
  local template=$1 pair sedargs=(-e "s/127\.0\.0\.1:22121\$/127.0.0.1:$PORT/")
  shift
  for pair in "$@"; do
    sedargs+=(-e "s/127\.0\.0\.1:${pair%%=*}\\b/127.0.0.1:${pair#*=}/")
  done
  sed "${sedargs[@]}" "$template"
}

# Picks PORT and STATS_PORT (trying $RAMPART_PORT / $RAMPART_STATS_PORT, default 22121/22222).
topo_rampart_ports() {
  local want_port=${RAMPART_PORT:-22121} want_stats=${RAMPART_STATS_PORT:-22222}
  PORT=$(pick_port "$want_port")
  TAKEN+="$PORT "
  STATS_PORT=$(pick_port "$want_stats")
  TAKEN+="$STATS_PORT "
  [[ $PORT == "$want_port" ]] || say "port $want_port is taken; the pool listens on $PORT"
  [[ $STATS_PORT == "$want_stats" ]] || say "port $want_stats is taken; stats on $STATS_PORT"
}

# Checks CONF with `rampart -t`, printing rampart's reason when it is refused.
topo_check_conf() {
  "$BIN" -t -c "$1" 2>/dev/null || {
    "$BIN" -t -c "$1" || true
    die "generated config $1 is invalid"
  }
}

# Waits until rampart on $PORT reports COUNT nodes up in `INFO pools` (health checks passed).
topo_wait_nodes_up() {
  local count=$1 pid=$2 i up=0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || die "rampart exited"
    up=$(rcli "$PORT" info pools 2>/dev/null | grep -c ',up=1,' || true)
    ((up >= count)) && return 0
    sleep 0.1
  done
  die "rampart reports $up of $count nodes up after 10 s"
}
