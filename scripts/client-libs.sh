#!/usr/bin/env bash
# Installs the client libraries that tests/clients.rs drives, and RQ (with its dependencies)
# for tests/apps.rs, pinned, into target/client-libs (py/ for PYTHONPATH, node/node_modules for NODE_PATH). Does nothing when
# these versions are there already. Needs python3 with pip, and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY_REDIS=8.1.0   # redis-py: RESP3 by default
NODE_REDIS=5.12.1
IOREDIS=5.11.1
# RQ and every package it pulls in, pinned, so the worker is the same on every machine.
RQ=(rq==2.12.0 click==8.5.1 croniter==7.0.0 python-dateutil==4.0.0 tzdata==2026.6)

dir=target/client-libs
stamp="$dir/installed-py$PY_REDIS-node$NODE_REDIS-io$IOREDIS-${RQ[0]}"
[[ -e $stamp ]] && exit 0
rm -rf "$dir"
mkdir -p "$dir"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
  --target "$dir/py" "redis==$PY_REDIS" "${RQ[@]}"
npm install --silent --no-audit --no-fund --no-save --prefix "$dir/node" \
  "redis@$NODE_REDIS" "ioredis@$IOREDIS"
touch "$stamp"
