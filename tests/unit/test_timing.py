"""The tests' scaled clock: waits shrink by its factor, readings advance by it, ordering is the real one."""

from __future__ import annotations

import time

import pytest

from tests.timing import SYSTEM, ScaledClock


def test_a_scaled_sleep_takes_a_factor_less_real_time_and_reads_as_the_full_span() -> None:
    clock = ScaledClock(20)
    real, seen = time.monotonic(), clock.monotonic()
    clock.sleep(2.0)
    assert time.monotonic() - real < 1.0
    assert clock.monotonic() - seen >= 2.0
    assert clock.real(2.0) == pytest.approx(0.1)


def test_wall_and_monotonic_readings_start_at_the_real_ones_and_move_together() -> None:
    clock = ScaledClock(10)
    assert abs(clock.time() - time.time()) < 1.0
    first_wall, first_mono = clock.time(), clock.monotonic()
    clock.sleep(1.0)
    assert clock.time() - first_wall == pytest.approx(clock.monotonic() - first_mono, abs=0.05)


def test_the_system_clock_is_the_real_one() -> None:
    assert SYSTEM.real(3.0) == 3.0 and abs(SYSTEM.time() - time.time()) < 1.0
    with pytest.raises(ValueError):
        ScaledClock(0)
