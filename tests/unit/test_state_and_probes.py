from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from provision.core.errors import LockTimeout, StateError
from provision.core.secrets import Secret
from provision.infra.fsutil import atomic_write, read_json
from provision.infra.probes import http_probe, wait_for
from provision.state.records import StateStore


def test_atomic_write_sets_the_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secret.env"
    atomic_write(path, "A=1\n", mode=0o600)
    assert path.read_text() == "A=1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["secret.env"]


def test_corrupt_state_is_reported_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match="state.json: not valid JSON"):
        read_json(path)


def test_secrets_round_trip_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s")
    store.write_secrets("dev", "shop", {"DB_PASSWORD": Secret("abc123")})
    assert store.read_secrets("dev", "shop")["DB_PASSWORD"].reveal() == "abc123"
    assert stat.S_IMODE(store.paths("dev", "shop").secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.paths("dev", "shop").dir.stat().st_mode) == 0o700


def test_lock_timeout_message(tmp_path: Path) -> None:
    import multiprocessing

    store = StateStore(tmp_path / "s")
    ready = multiprocessing.Event()
    release = multiprocessing.Event()

    def hold() -> None:
        with store.lock("dev", "shop", timeout=5):
            ready.set()
            release.wait(10)

    proc = multiprocessing.get_context("fork").Process(target=hold)
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout, match=r"project 'shop' in env 'dev' \(held by .* pid \d+"):
            with store.lock("dev", "shop", timeout=0.2):
                pass
    finally:
        release.set()
        proc.join(10)


def test_wait_for_backs_off_and_reports_the_last_failure() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    outcome = wait_for({"api": lambda: "refused"}, timeout=5, interval=0.5, max_interval=2,
                       clock=lambda: now[0], sleep=sleep)
    assert not outcome.ok and outcome.failures == {"api": "refused"}
    assert sleeps[:3] == [0.5, 0.75, 1.125] and max(sleeps) <= 2


def test_wait_for_with_a_pace_pauses_a_share_of_the_time_waited() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 3))
        now[0] += seconds

    ready_at = 13.0
    outcome = wait_for({"api": lambda: None if now[0] >= ready_at else "starting"}, timeout=60, interval=0.25,
                       max_interval=2.0, pace=0.1, clock=lambda: now[0], sleep=sleep)
    assert outcome.ok
    assert sleeps[:4] == [0.25, 0.25, 0.25, 0.25]  # floor while a tenth of the wait is shorter
    assert max(sleeps) <= 2.0 and outcome.elapsed - ready_at <= 0.1 * ready_at + 0.25  # never far past ready


def test_wait_for_stops_running_probes_that_passed() -> None:
    calls = {"a": 0, "b": 0}

    def a() -> str | None:
        calls["a"] += 1
        return None

    def b() -> str | None:
        calls["b"] += 1
        return None if calls["b"] >= 3 else "not yet"

    assert wait_for({"a": a, "b": b}, timeout=10, interval=0, sleep=lambda s: None).ok
    assert calls == {"a": 1, "b": 3}


def test_http_probe_on_a_closed_port_fails_with_a_reason() -> None:
    reason = http_probe("http://127.0.0.1:9", timeout=1)()
    assert reason is not None and "does not answer" in reason


def test_wait_for_together_runs_a_rounds_probes_at_once_and_raises_as_in_turn() -> None:
    both = threading.Barrier(2, timeout=5)  # each probe passes only while the other runs too

    def meets() -> str | None:
        both.wait()
        return None

    outcome = wait_for({"api": meets, "db": meets}, timeout=10, interval=0, sleep=lambda s: None, together=True)
    assert outcome.ok

    def fails(what: str) -> Callable[[], str | None]:
        def probe() -> str | None:
            raise RuntimeError(what)
        return probe

    with pytest.raises(RuntimeError, match="first"):
        wait_for({"a": fails("first"), "b": fails("second")}, timeout=10, together=True)
