#!/usr/bin/env bash
# Installs the client libraries that tests/clients.rs drives, and RQ, Celery and BullMQ (with
# their dependencies) for tests/apps.rs, pinned, into target/client-libs (py/ for PYTHONPATH, node/node_modules for NODE_PATH). Does nothing when
# these versions are there already. Needs python3 with pip, and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY_REDIS=8.1.0   # redis-py: RESP3 by default
NODE_REDIS=5.12.1
IOREDIS=5.11.1
# BullMQ (its own dependencies pinned exactly by its package; ioredis is the one above).
BULLMQ=6.7.0
# RQ and every package it pulls in, pinned, so the worker is the same on every machine
# (python-dateutil at the version Celery pins, which RQ accepts too).
RQ=(rq==2.12.0 click==8.5.1 croniter==7.0.0 python-dateutil==2.9.0.post0 six==1.17.0 tzdata==2026.6)
# Celery with its Redis transport (kombu[redis]) and every package they pull in, pinned.
CELERY=(celery==5.7.0 kombu==5.7.0 billiard==4.3.2 vine==5.1.0 amqp==5.4.2 packaging==26.3
  click-didyoumean==0.3.1 click-repl==0.4.1 click-plugins==1.1.1.2 prompt_toolkit==3.0.53
  wcwidth==0.9.4 typing_extensions==4.16.0 tzlocal==5.4.5)

dir=target/client-libs
stamp="$dir/installed-py$PY_REDIS-node$NODE_REDIS-io$IOREDIS-bullmq$BULLMQ-${RQ[0]}-${CELERY[0]}"
[[ -e $stamp ]] && exit 0
rm -rf "$dir"
mkdir -p "$dir"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
  --no-deps --target "$dir/py" "redis==$PY_REDIS" "${RQ[@]}" "${CELERY[@]}"
npm install --silent --no-audit --no-fund --no-save --prefix "$dir/node" \
  "redis@$NODE_REDIS" "ioredis@$IOREDIS" "bullmq@$BULLMQ"
touch "$stamp"
