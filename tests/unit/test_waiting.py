"""The tests' own wait: it ends when the condition holds and fails the test when it never did."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.waiting import run_state, wait_until


def test_the_wait_ends_as_soon_as_the_condition_holds() -> None:
    asked: list[int] = []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) == 3

    wait_until(third_time, 600, "the third ask", interval=0)
    assert len(asked) == 3


def test_a_condition_that_never_held_fails_the_test_naming_it() -> None:
    asked: list[int] = []

    def never() -> bool:
        asked.append(1)
        return False

    with pytest.raises(AssertionError, match=r"^a container to appear did not happen within 0 s:\nthe log$"):
        wait_until(never, 0, "a container to appear", interval=0, detail=lambda: "the log")
    assert asked == [1]  # asked once even with no time left


def test_the_state_of_a_run_says_how_it_ended_and_stops_one_still_going() -> None:
    ended = subprocess.Popen([sys.executable, "-c", "import sys; print('said this'); sys.exit(3)"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ended.wait(60)
    assert run_state(ended) == "the run had exited 3:\nsaid this\n"
    going = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run_state(going).startswith("the run was still going (killed now)")
    assert going.returncode == -signal.SIGKILL
