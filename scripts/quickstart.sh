#!/usr/bin/env bash
# Quickstart: build rampart, start throwaway Redis processes on loopback, and run rampart in the
# foreground in front of them.
#
#   scripts/quickstart.sh         # 3 plain redis-server shards, examples/quickstart.yml
#   scripts/quickstart.sh --ha    # 2 shards of primary + replica, 3 Sentinels,
#                                 # examples/quickstart-ha.yml (Sentinel pool, failover hold)
#   scripts/quickstart.sh --cluster   # a Redis Cluster of 3 primaries + 3 replicas,
#                                     # examples/quickstart-cluster.yml (cluster pool)
#
# Then, in another terminal: redis-cli -p 22121, and in a browser the stats page,
# http://127.0.0.1:22223/ (the ports and URLs are printed at start).
#
# Ctrl-C (or SIGTERM, or any failure) stops everything this script started, by PID, and
# removes its temp dir. Nothing is written outside that dir (and cargo's target dir).
#
# Environment:
#   RAMPART_BIN         use this rampart binary instead of building one
#   RAMPART_PORT        pool port to try first (default 22121; a free one if taken)
#   RAMPART_STATS_PORT  stats port to try first (default 22222; a free one if taken)
#   RAMPART_ADMIN_PORT  admin HTTP port (stats page, /metrics) to try first (default 22223;
#                       a free one if taken)
#   KEEP_WORK=1         keep the temp dir (configs, logs) after exit
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOPO_NAME=quickstart
# shellcheck source=lib-topology.sh
source "$ROOT/scripts/lib-topology.sh"

HA=0
CLUSTER=0
case ${1:-} in
  "") ;;
  --ha) HA=1 ;;
  --cluster) CLUSTER=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (use --ha, --cluster, or nothing)" ;;
esac

if [[ $HA == 1 ]]; then
  TEMPLATE=$ROOT/examples/quickstart-ha.yml
  topo_require redis-sentinel
elif [[ $CLUSTER == 1 ]]; then
  TEMPLATE=$ROOT/examples/quickstart-cluster.yml
  topo_require
else
  TEMPLATE=$ROOT/examples/quickstart.yml
  topo_require
fi
[[ -f $TEMPLATE ]] || die "template $TEMPLATE is missing"

topo_init
topo_build

# --- Redis -----------------------------------------------------------------------------------
if [[ $HA == 1 ]]; then
  topo_ha_shards 2
  topo_sentinels 3 2
  NODES=4
elif [[ $CLUSTER == 1 ]]; then
  say "creating a Redis Cluster of 3 primaries and 3 replicas"
  topo_cluster 3 1
  NODES=6
else
  topo_plain_shards 3
  NODES=3
fi

# --- config -----------------------------------------------------------------------------------
topo_rampart_ports
WANT_ADMIN=${RAMPART_ADMIN_PORT:-22223}
ADMIN_PORT=$(pick_port "$WANT_ADMIN")
TAKEN+="$ADMIN_PORT "
[[ $ADMIN_PORT == "$WANT_ADMIN" ]] || say "port $WANT_ADMIN is taken; the admin interface is on $ADMIN_PORT"
ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
CONF=$WORK/$(basename "$TEMPLATE")
if [[ $HA == 1 ]]; then
  topo_render "$TEMPLATE" "26379=${SENTINEL_PORTS[0]}" "26380=${SENTINEL_PORTS[1]}" \
    "26381=${SENTINEL_PORTS[2]}" >"$CONF"
elif [[ $CLUSTER == 1 ]]; then
  topo_render "$TEMPLATE" "7001=${CLUSTER_PORTS[0]}" "7002=${CLUSTER_PORTS[1]}" \
    "7003=${CLUSTER_PORTS[2]}" >"$CONF"
else
  topo_render "$TEMPLATE" "7001=${SHARD_PORTS[0]}" "7002=${SHARD_PORTS[1]}" \
    "7003=${SHARD_PORTS[2]}" >"$CONF"
fi
topo_check_conf "$CONF"

# --- rampart in the foreground -----------------------------------------------------------------
# Started as a job and waited for, so that a signal to this script runs its trap at once.
"$BIN" -c "$CONF" -s "$STATS_PORT" -a 127.0.0.1 --admin "127.0.0.1:$ADMIN_PORT" &
RAMPART_PID=$!
# Newest first on cleanup: rampart stops before its backends.
PIDS+=("$RAMPART_PID")
wait_port "$PORT" "$RAMPART_PID" rampart
wait_port "$ADMIN_PORT" "$RAMPART_PID" "rampart's admin interface"
topo_wait_nodes_up "$NODES" "$RAMPART_PID"

if [[ $HA == 1 ]]; then
  cat >&2 <<EOF

  rampart (pid $RAMPART_PID) is serving pool 'demo' on 127.0.0.1:$PORT over 2 Sentinel-managed shards:
    shard1  primary 127.0.0.1:${PRIMARY_PORTS[0]} (pid ${PRIMARY_PIDS[0]})  replica 127.0.0.1:${REPLICA_PORTS[0]} (pid ${REPLICA_PIDS[0]})
    shard2  primary 127.0.0.1:${PRIMARY_PORTS[1]} (pid ${PRIMARY_PIDS[1]})  replica 127.0.0.1:${REPLICA_PORTS[1]} (pid ${REPLICA_PIDS[1]})
    sentinels 127.0.0.1:${SENTINEL_PORTS[0]} 127.0.0.1:${SENTINEL_PORTS[1]} 127.0.0.1:${SENTINEL_PORTS[2]} (quorum 2, down after 1 s)
  config: $CONF

  stats page:   $ADMIN_URL/    # charts, nodes, events, commands; live
  metrics:      $ADMIN_URL/metrics    # Prometheus text
  connect:      redis-cli -p $PORT
                redis-cli -p $PORT set '{user:1}:name' ada    # keys with the same {tag} share a shard
  watch:        watch -n 0.5 redis-cli -p $PORT info pools    # roles, health, lag of every node
                redis-cli -p ${SENTINEL_PORTS[0]} sentinel get-master-addr-by-name shard1
  try failover: kill -9 ${PRIMARY_PIDS[0]}    # shard1's primary; writes wait (failover_hold 10s)
                                   # until Sentinel promotes its replica, then go on
  stats (JSON): cat </dev/tcp/127.0.0.1/$STATS_PORT
  stop:         Ctrl-C (stops rampart, the sentinels and the redis-servers)

EOF
elif [[ $CLUSTER == 1 ]]; then
  NODE_LINES=""
  PRIMARY_PID=""
  # The commands below that talk to a node use another primary than the one to kill, so they
  # still work after the failover has been tried.
  SEED_PORT=""
  for ((n = 0; n < ${#CLUSTER_PORTS[@]}; n++)); do
    role=${CLUSTER_ROLES[n]/slave/replica}
    role=${role/master/primary}
    NODE_LINES+="    127.0.0.1:${CLUSTER_PORTS[n]}  ${role}  (pid ${CLUSTER_PIDS[n]})"$'\n'
    if [[ $role == primary ]]; then
      if [[ -z $PRIMARY_PID ]]; then PRIMARY_PID=${CLUSTER_PIDS[n]}; else SEED_PORT=${CLUSTER_PORTS[n]}; fi
    fi
  done
  cat >&2 <<EOF

  rampart (pid $RAMPART_PID) is serving pool 'demo' on 127.0.0.1:$PORT over a Redis Cluster:
${NODE_LINES}  config: $CONF

  stats page:   $ADMIN_URL/    # charts, nodes, events, commands; live
  metrics:      $ADMIN_URL/metrics    # Prometheus text
  connect:      redis-cli -p $PORT    # one endpoint: no MOVED or ASK, no -c needed
                redis-cli -p $PORT mset a 1 b 2 c 3    # keys in three slots, split and merged
  watch:        watch -n 0.5 redis-cli -p $PORT info pools    # roles and health of every node
                redis-cli -p $SEED_PORT cluster nodes
  try failover: kill -9 $PRIMARY_PID    # a primary; writes for its slots wait (failover_hold 10s)
                                # until the cluster promotes its replica (node timeout 2 s)
  try reshard:  redis-cli --cluster reshard 127.0.0.1:$SEED_PORT --cluster-from all \\
                  --cluster-to \$(redis-cli -p $SEED_PORT cluster myid) --cluster-slots 1000 --cluster-yes
                # moves 1,000 slots while clients run; they see no MOVED and no error
  stop:         Ctrl-C (stops rampart and the six redis-servers)

EOF
else
  cat >&2 <<EOF

  rampart (pid $RAMPART_PID) is serving pool 'demo' on 127.0.0.1:$PORT over 3 shards:
    127.0.0.1:${SHARD_PORTS[0]} shard-1   127.0.0.1:${SHARD_PORTS[1]} shard-2   127.0.0.1:${SHARD_PORTS[2]} shard-3
  config: $CONF

  stats page:   $ADMIN_URL/    # charts, nodes, events, commands; live
  metrics:      $ADMIN_URL/metrics    # Prometheus text
  connect:      redis-cli -p $PORT
                redis-cli -p $PORT set '{user:1}:name' ada    # keys with the same {tag} share a shard
  watch:        redis-cli -p $PORT info pools
  stats (JSON): python3 -c 'import socket; print(socket.create_connection(("127.0.0.1", $STATS_PORT)).makefile().read())'
                or, in bash:  cat </dev/tcp/127.0.0.1/$STATS_PORT
  stop:         Ctrl-C (stops rampart and the three redis-servers)

EOF
fi

set +e
wait "$RAMPART_PID"
status=$?
set -e
say "rampart exited with status $status"
exit "$status"
