"""Time for the emulator and the code under test: the real clock, or a scaled one that runs `factor` times faster.

A scaled clock keeps real concurrency (the emulator's server and worker threads, the backend's heartbeat and
pollers all run at once) and only shrinks every wait: `sleep(s)` sleeps s/factor real seconds, and `monotonic()`
and `time()` advance `factor` seconds per real second from the moment the clock was made. So what one thread
sees happen before another stays in the same order, and a 1.5 s refresh tick costs 0.15 s at factor 10. A
discrete virtual clock (time moves only when every thread sleeps) would need to know every thread that may still
act, which a heartbeat thread or an HTTP server thread blocked in a socket never says.

What is measured against socket timeouts (an injected latency or hang) stays in real seconds: those race the
client's real read timeout, which no clock scales."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    """What reads or waits out time: monotonic and wall seconds, a sleep, and a virtual span in real seconds."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def real(self, seconds: float) -> float: ...


@dataclass(frozen=True)
class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def real(self, seconds: float) -> float:
        return seconds


SYSTEM = SystemClock()


@dataclass(frozen=True)
class ScaledClock:
    """A clock `factor` times faster than the real one; starts at the real monotonic and wall time."""

    factor: float
    mono_origin: float = field(default_factory=time.monotonic)
    wall_origin: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"factor must be positive, not {self.factor}")

    def monotonic(self) -> float:
        return self.mono_origin + (time.monotonic() - self.mono_origin) * self.factor

    def time(self) -> float:
        return self.wall_origin + (time.monotonic() - self.mono_origin) * self.factor

    def sleep(self, seconds: float) -> None:
        time.sleep(self.real(seconds))

    def real(self, seconds: float) -> float:
        return max(0.0, seconds) / self.factor
