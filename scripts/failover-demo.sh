#!/usr/bin/env bash
# Failover demo: the `scripts/quickstart.sh --ha` topology (2 shards of primary + replica,
# 3 Sentinels, rampart with a Sentinel pool and failover_hold 10s) in the background, a client
# that INCRs a counter on shard1 through rampart every 10 ms for 30 s, and a kill -9 of shard1's
# primary after 5 s. It prints when Sentinel switched the master and when rampart followed, the
# failed writes, the longest write pause, and whether the counter on the new primary equals the
# last acknowledged value.
#
#   scripts/failover-demo.sh
#
# Everything is bounded in time (about 45 s after the build) and every process started here is
# stopped by PID on exit. Exit status 0 means PASS. On FAIL the tail of rampart's log is shown.
#
# Environment: RAMPART_BIN, RAMPART_PORT, RAMPART_STATS_PORT, KEEP_WORK=1 as for quickstart.sh;
#   RAMPART_LOG (default info,rampart::backend=debug) for rampart's log in the temp dir;
#   DEMO_DURATION (default 30) and DEMO_KILL_AFTER (default 5) seconds; DEMO_VERBOSE=1 prints
#   every write instead of every 100th.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOPO_NAME=failover-demo
# shellcheck source=lib-topology.sh
source "$ROOT/scripts/lib-topology.sh"

TEMPLATE=$ROOT/examples/quickstart-ha.yml
DURATION=${DEMO_DURATION:-30}
KILL_AFTER=${DEMO_KILL_AFTER:-5}
[[ $DURATION =~ ^[0-9]+$ && $KILL_AFTER =~ ^[0-9]+$ ]] || die "DEMO_DURATION/DEMO_KILL_AFTER: whole seconds"
((KILL_AFTER < DURATION && DURATION <= 300)) || die "need DEMO_KILL_AFTER < DEMO_DURATION <= 300"
EVERY=100
[[ ${DEMO_VERBOSE:-0} == 1 ]] && EVERY=1

topo_require redis-sentinel python3
[[ -f $TEMPLATE ]] || die "template $TEMPLATE is missing"
topo_init
topo_build

topo_ha_shards 2
topo_sentinels 3 2

topo_rampart_ports
CONF=$WORK/quickstart-ha.yml
topo_render "$TEMPLATE" "26379=${SENTINEL_PORTS[0]}" "26380=${SENTINEL_PORTS[1]}" \
  "26381=${SENTINEL_PORTS[2]}" >"$CONF"
topo_check_conf "$CONF"

LOG=$WORK/rampart.log
# Backend connects and closes are logged at debug level; they show what a failed write met.
export RAMPART_LOG=${RAMPART_LOG:-info,rampart::backend=debug}
"$BIN" -c "$CONF" -s "$STATS_PORT" -a 127.0.0.1 2>"$LOG" &
RAMPART_PID=$!
PIDS+=("$RAMPART_PID")
wait_port "$PORT" "$RAMPART_PID" rampart
topo_wait_nodes_up 4 "$RAMPART_PID"
say "rampart pid $RAMPART_PID on 127.0.0.1:$PORT (log $LOG)"

# Without colour codes, for reading.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }

say "writing for ${DURATION}s; kill -9 of shard1's primary after ${KILL_AFTER}s"
echo
set +e
# The client kills shard1's primary; the group's stderr goes to /dev/null so that bash's
# "Killed" notice for that job does not interleave with the output (the client keeps fd 3).
{
  timeout $((DURATION + 30)) python3 "$ROOT/scripts/failover-client.py" \
    --proxy "$PORT" --pool demo --shard shard1 \
    --primary-port "${PRIMARY_PORTS[0]}" --primary-pid "${PRIMARY_PIDS[0]}" \
    --sentinels "$(
      IFS=,
      echo "${SENTINEL_PORTS[*]}"
    )" \
    --kill-after "$KILL_AFTER" --duration "$DURATION" --every "$EVERY" \
    --log "$WORK/client.log" 2>&3
  status=$?
  jobs >/dev/null
} 3>&2 2>/dev/null
set -e
((status == 124)) && say "the client did not finish within $((DURATION + 30)) s"

echo
echo "Sentinel's view (the failover events in the three sentinel logs):"
for s in 1 2 3; do
  grep -hE '[+](sdown|odown|elected-leader) master shard1|[+](selected-slave|promoted-slave) .*@ shard1|[+]switch-master shard1' \
    "$WORK/sentinel-$s.log" | sed "s/^[0-9]*:X /  sentinel-$s /" || true
done
echo
if ((status == 0)); then
  echo "rampart's view (its log lines about shard1):"
  plain "$LOG" | grep -E 'shard1|hold|switch|READONLY|connect' | grep -v 'node up after' |
    sed 's/^/  /' | tail -20 || true
else
  echo "FAIL. Last 40 lines of rampart's log:"
  plain "$LOG" | tail -40 | sed 's/^/  /'
  echo "rampart INFO pools:"
  rcli "$PORT" info pools 2>&1 | sed 's/^/  /' || true
fi
exit "$status"
