#!/usr/bin/env bash
# Quickstart: build rampart, start three throwaway redis-server shards on loopback, and run
# rampart in the foreground in front of them with examples/quickstart.yml.
#
#   scripts/quickstart.sh            # then, in another terminal: redis-cli -p 22121
#
# Ctrl-C (or SIGTERM, or any failure) stops everything this script started, by PID, and
# removes its temp dir. Nothing is written outside that dir (and cargo's target dir).
#
# Environment:
#   RAMPART_BIN         use this rampart binary instead of building one
#   RAMPART_PORT        pool port to try first (default 22121; a free one if taken)
#   RAMPART_STATS_PORT  stats port to try first (default 22222; a free one if taken)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE=$ROOT/examples/quickstart.yml
WANT_PORT=${RAMPART_PORT:-22121}
WANT_STATS=${RAMPART_STATS_PORT:-22222}

say() { printf 'quickstart: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- what this needs ----------------------------------------------------------------------
missing=0
if ! command -v redis-server >/dev/null; then
  say "redis-server not found. Install it: 'sudo apt-get install redis-server' (Debian/Ubuntu),"
  say "  'sudo dnf install redis' (Fedora) or 'brew install redis' (macOS)."
  missing=1
fi
if [[ -z ${RAMPART_BIN:-} ]] && ! command -v cargo >/dev/null; then
  say "cargo not found. Install the Rust toolchain with rustup (https://rustup.rs),"
  say "  or 'sudo apt-get install cargo' on Debian/Ubuntu."
  missing=1
fi
[[ $missing == 0 ]] || exit 1
[[ -f $TEMPLATE ]] || die "template $TEMPLATE is missing"

# --- cleanup: every process started here, by PID ------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rampart-quickstart.XXXXXX")
PIDS=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local pid i
  trap - EXIT INT TERM HUP
  # rampart first, so that it drains while its backends are still up.
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  say "stopped (${#PIDS[@]} process(es)), removed $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- ports ----------------------------------------------------------------------------------
# True when something accepts TCP connections on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

TAKEN=" "
# Prints a port that nothing listens on, trying $1 first, then ports upward from a random base.
pick_port() {
  local p=$1 tries
  for ((tries = 0; tries < 200; tries++)); do
    if [[ $TAKEN != *" $p "* ]] && ! in_use "$p"; then
      echo "$p"
      return 0
    fi
    if ((tries == 0)); then p=$((20000 + RANDOM % 30000)); else p=$((p + 1)); fi
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

# --- build ------------------------------------------------------------------------------------
if [[ -n ${RAMPART_BIN:-} ]]; then
  BIN=$RAMPART_BIN
else
  say "building rampart (release; the first build takes a few minutes)"
  (cd "$ROOT" && cargo build --release -p rampart)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/rampart
fi
[[ -x $BIN ]] || die "no rampart binary at $BIN"

# --- three redis-server shards ---------------------------------------------------------------
SHARD_PORTS=()
for n in 1 2 3; do
  started=0
  for attempt in 1 2 3 4 5; do
    port=$(pick_port $((20000 + RANDOM % 30000)))
    TAKEN+="$port "
    log=$WORK/shard-$n.log
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize no --dir "$WORK" --logfile "$log" &
    pid=$!
    PIDS+=("$pid")
    # Ready only when *this* process says so (another one may have taken the port).
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      grep -q "Ready to accept connections" "$log" 2>/dev/null && { started=1; break; }
      sleep 0.1
    done
    [[ $started == 1 ]] && break
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    say "shard $n could not start on port $port (attempt $attempt); log:"
    cat "$log" >&2 2>/dev/null || true
  done
  [[ $started == 1 ]] || die "redis-server shard $n did not start"
  SHARD_PORTS+=("$port")
  say "shard-$n: redis-server pid $pid on 127.0.0.1:$port"
done

# --- config -----------------------------------------------------------------------------------
PORT=$(pick_port "$WANT_PORT")
TAKEN+="$PORT "
STATS_PORT=$(pick_port "$WANT_STATS")
[[ $PORT == "$WANT_PORT" ]] || say "port $WANT_PORT is taken; the pool listens on $PORT"
[[ $STATS_PORT == "$WANT_STATS" ]] || say "port $WANT_STATS is taken; stats on $STATS_PORT"
CONF=$WORK/quickstart.yml
sed -e "s/127\.0\.0\.1:22121\$/127.0.0.1:$PORT/" \
  -e "s/127\.0\.0\.1:7001:/127.0.0.1:${SHARD_PORTS[0]}:/" \
  -e "s/127\.0\.0\.1:7002:/127.0.0.1:${SHARD_PORTS[1]}:/" \
  -e "s/127\.0\.0\.1:7003:/127.0.0.1:${SHARD_PORTS[2]}:/" \
  "$TEMPLATE" >"$CONF"
"$BIN" -t -c "$CONF" 2>/dev/null || { "$BIN" -t -c "$CONF" || true; die "generated config is invalid"; }

# --- rampart in the foreground -----------------------------------------------------------------
# Started as a job and waited for, so that a signal to this script runs its trap at once.
"$BIN" -c "$CONF" -s "$STATS_PORT" -a 127.0.0.1 &
RAMPART_PID=$!
# rampart is stopped first on cleanup.
PIDS=("$RAMPART_PID" "${PIDS[@]}")
wait_port "$PORT" "$RAMPART_PID" rampart

cat >&2 <<EOF

  rampart (pid $RAMPART_PID) is serving pool 'demo' on 127.0.0.1:$PORT over 3 shards:
    127.0.0.1:${SHARD_PORTS[0]} shard-1   127.0.0.1:${SHARD_PORTS[1]} shard-2   127.0.0.1:${SHARD_PORTS[2]} shard-3
  config: $CONF

  connect:      redis-cli -p $PORT
                redis-cli -p $PORT set '{user:1}:name' ada    # keys with the same {tag} share a shard
  stats (JSON): python3 -c 'import socket; print(socket.create_connection(("127.0.0.1", $STATS_PORT)).makefile().read())'
                or, in bash:  cat </dev/tcp/127.0.0.1/$STATS_PORT
  stop:         Ctrl-C (stops rampart and the three redis-servers)

EOF

set +e
wait "$RAMPART_PID"
status=$?
set -e
say "rampart exited with status $status"
exit "$status"
