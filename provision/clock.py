"""Time as a run reads and waits it out: the real clock by default; a test hands `Workspace` another (e.g. one
that runs faster) and the service and backend built there read and wait through it."""

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
