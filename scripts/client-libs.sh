#!/usr/bin/env bash
# Installs the client libraries that tests/clients.rs drives, pinned, into
# target/client-libs (py/ for PYTHONPATH, node/node_modules for NODE_PATH). Does nothing when
# these versions are there already. Needs python3 with pip, and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY_REDIS=8.1.0   # redis-py: RESP3 by default
NODE_REDIS=5.12.1
IOREDIS=5.11.1

dir=target/client-libs
stamp="$dir/installed-py$PY_REDIS-node$NODE_REDIS-io$IOREDIS"
[[ -e $stamp ]] && exit 0
rm -rf "$dir"
mkdir -p "$dir"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
  --target "$dir/py" "redis==$PY_REDIS"
npm install --silent --no-audit --no-fund --no-save --prefix "$dir/node" \
  "redis@$NODE_REDIS" "ioredis@$IOREDIS"
touch "$stamp"
