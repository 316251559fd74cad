"""Waiting in tests for something to happen, and failing the test when it never does."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.05,
               detail: Callable[[], str] | None = None) -> None:
    """Returns once `predicate()` is truthy (asked at least once, and once more at the deadline); raises
    AssertionError saying `what` did not happen within `timeout` s otherwise, followed by `detail()` if given.
    A test that must act while something holds (a signal mid-run) so never acts on a condition that never held."""
    deadline = time.monotonic() + timeout
    while True:
        last_chance = time.monotonic() >= deadline
        if predicate():
            return
        if last_chance:
            extra = f":\n{detail()}" if detail is not None else ""
            raise AssertionError(f"{what} did not happen within {timeout:g} s{extra}")
        time.sleep(interval)


def run_state(proc: subprocess.Popen[str]) -> str:
    """For a failure message, once the test is ending: a run still going is killed and said so; one that ended
    gives its exit code and what it printed."""
    if proc.poll() is None:
        proc.kill()
        out, err = proc.communicate()
        return f"the run was still going (killed now); it had printed:\n{out}{err}"
    out, err = proc.communicate()
    return f"the run had exited {proc.returncode}:\n{out}{err}"
