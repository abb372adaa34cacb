#!/usr/bin/env bash
# Runs the whole test suite (unit, integration and doc tests of every crate) and ends with
# one summary line: "summary: N passed, N failed, N skipped".
#
#   scripts/test.sh                  # cargo test --workspace
#   scripts/test.sh -p rampart       # any other cargo test arguments instead of --workspace
#
# The integration tests start real redis-server, redis-sentinel and nutcracker processes
# (Debian: apt-get install redis-server redis-sentinel redis-tools nutcracker haproxy).
# They wait on real timeouts, so they run more threads than cores: RUST_TEST_THREADS
# (default 4) sets how many tests of one binary run at once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# nutcracker and haproxy live in sbin on Debian.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if (($# == 0)); then
  set -- --workspace
fi

LOG=$(mktemp "${TMPDIR:-/tmp}/rampart-test.XXXXXX")
trap 'rm -f "$LOG"' EXIT

start=$SECONDS
set +e
(cd "$ROOT" && cargo test --no-fail-fast "$@") 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

# One "test result: ok. 12 passed; 0 failed; 3 ignored; ..." line per test binary.
read -r passed failed ignored binaries < <(awk '
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed;?/) p += $i
      if ($(i + 1) ~ /^failed;?/) f += $i
      if ($(i + 1) ~ /^ignored;?/) s += $i
    }
    n++
  }
  END { printf "%d %d %d %d\n", p, f, s, n }' "$LOG")

echo
echo "scripts/test.sh: $binaries test binaries in $((SECONDS - start)) s, RUST_TEST_THREADS=$RUST_TEST_THREADS, exit status $status"
if ((status != 0 && failed == 0)); then
  echo "scripts/test.sh: no test failed, but cargo did (a build error or a crashed test binary)"
fi
echo "summary: $passed passed, $failed failed, $ignored skipped"
exit "$status"
