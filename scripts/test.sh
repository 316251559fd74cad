#!/usr/bin/env bash
# Run the whole test suite: unit, integration (real Docker Engine), Coolify emulator, plus type and lint checks.
# Extra arguments go to pytest, e.g. scripts/test.sh -k lifecycle
source "$(dirname "$0")/bootstrap.sh"
.venv/bin/mypy
.venv/bin/ruff check provision tasks.py tests bench
exec .venv/bin/pytest "$@"
