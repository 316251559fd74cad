"""Time as a run reads and waits it out (`Clock`: the real one by default; a test hands `Workspace` another, e.g.
one that runs faster, and the service and backend built there read and wait through it), and the one timestamp
format of records, history, lock notes and file names: UTC, to the second."""

from __future__ import annotations

import time
from typing import Protocol

from . import interrupts


class Clock(Protocol):
    """Monotonic and wall seconds, and a sleep."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock; its sleep ends early with Interrupted when the run is interrupted."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        interrupts.sleep(seconds)


SYSTEM = SystemClock()


def utc_now(epoch: float | None = None) -> str:
    """The one timestamp format of records, history and lock notes: UTC, ISO 8601, seconds (of `epoch`,
    default now)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def utc_stamp() -> str:
    """The same instant for file names (no ':'): 20261130T101500Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
