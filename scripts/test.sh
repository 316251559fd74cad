#!/usr/bin/env bash
# Run the whole test suite: unit, integration (real Docker Engine), Coolify emulator, plus type and lint checks.
# Extra arguments go to pytest, e.g. scripts/test.sh -k lifecycle, or scripts/test.sh -m unit (the in-process
# tier). Tests run on PROVISION_TEST_WORKERS xdist workers (default 6; idle workers steal queued tests): most of
# a test's time is waiting on containers and the emulator. mypy runs beside them.
source "$(dirname "$0")/bootstrap.sh"
.venv/bin/ruff check provision tasks.py tests bench
mypy_log=$(mktemp)
.venv/bin/mypy >"$mypy_log" 2>&1 &
mypy_pid=$!
status=0
.venv/bin/pytest -n "${PROVISION_TEST_WORKERS:-6}" --dist worksteal "$@" || status=$?
if ! wait "$mypy_pid"; then
  cat "$mypy_log" >&2
  status=1
fi
rm -f "$mypy_log"
exit "$status"
