"""How the local backend waits for a stack: its own probes, each also watching the containers so that one that
crashed ends the wait at once. The clock and the sleep are injected (tests wait in no time)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ...core.errors import ContainerCrashed, HealthTimeout
from ...infra import interrupts
from ...infra.probes import Probe, wait_for
from .compose import ContainerState

# a container in one of these states during a wait has stopped at least once: the wait ends at once
CRASHED_STATES = ("exited", "dead", "restarting")
CRASH_POLL = 0.5  # seconds between two looks at the containers' states during a wait


class Crashed(Exception):
    """Raised by a probe inside a wait when a container crashed; caught where the wait is awaited."""

    def __init__(self, services: tuple[str, ...], what: str) -> None:
        super().__init__(what)
        self.services = services
        self.what = what


def raise_crashed(containers: Sequence[ContainerState], services: tuple[str, ...]) -> None:
    """`Crashed` when a container of `services` exited, is dead or restarts."""
    crashed = [c for c in containers if c.service in services and c.state in CRASHED_STATES]
    if crashed:
        raise Crashed(tuple(sorted({c.service for c in crashed})), "; ".join(
            f"{c.service} {c.state}" + (f" (exit code {c.exit_code})" if c.exit_code else "") for c in crashed))


@dataclass(frozen=True)
class Waiter:
    """Waits on one project (`where`: "shop (dev)"): `poll` lists its service containers (often, so cheaply),
    `failed` makes the HealthTimeout for a message and the failing services (their states and log tail)."""

    where: str
    poll: Callable[[], list[ContainerState]]
    failed: Callable[[str, tuple[str, ...]], HealthTimeout]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = interrupts.sleep

    def watched(self, services: tuple[str, ...], probes: Mapping[str, Probe]) -> dict[str, Probe]:
        """`probes`, each first looking (every CRASH_POLL s at most, shared) whether a container of `services`
        exited or restarts: then `Crashed` ends the wait at once, whatever the timeout. The first look comes
        CRASH_POLL s in, so probes that pass at once (a no-op) cost no container listing."""
        last = [self.clock()]
        looking = threading.Lock()  # probes may run at once (wait_for's `together`): one of them looks

        def watch() -> None:
            now = self.clock()
            with looking:
                if now - last[0] < CRASH_POLL:
                    return
                last[0] = now
            raise_crashed(self.poll(), services)

        def guarded(probe: Probe) -> Probe:
            def check() -> str | None:
                watch()
                return probe()
            return check

        return {name: guarded(probe) for name, probe in probes.items()}

    def crash(self, crash: Crashed) -> ContainerCrashed:
        """The error for a container that crashed during a wait: its state and log tail."""
        found = self.failed(f"{self.where}: {crash.what} while the stack was awaited (it crashed: the wait ended "
                            f"at once, see the log tail)", crash.services)
        return ContainerCrashed(found.message, logs=found.logs)

    def db_accepts(self, ping: Probe, *, timeout: float) -> None:
        """Poll `ping` (every 50-250 ms) until the db accepts connections; HealthTimeout after `timeout` s."""
        try:
            outcome = wait_for(self.watched(("db",), {"db": ping}), timeout=timeout, interval=0.05,
                               max_interval=0.25, clock=self.clock, sleep=self.sleep)
        except Crashed as crash:
            raise self.crash(crash) from None
        if not outcome.ok:
            raise self.failed(f"{self.where}: the db does not accept connections after {outcome.elapsed:.0f} s: "
                              f"{outcome.failures['db']}", ("db",))

    def containers_ready(self, services: tuple[str, ...], *, timeout: float) -> None:
        """Poll until the containers of `services` run and none is judged unhealthy; one that exited or
        restarts ends the wait at once (ContainerCrashed)."""
        try:
            outcome = wait_for({"containers": self._ready(services)}, timeout=timeout, interval=0.1,
                               max_interval=0.5, clock=self.clock, sleep=self.sleep)
        except Crashed as crash:
            raise self.crash(crash) from None
        if not outcome.ok:
            raise self.failed(f"{self.where}: containers not running after {timeout:.0f} s: "
                              f"{outcome.failures['containers']}", ())

    def _ready(self, services: tuple[str, ...]) -> Probe:
        expected = set(services)

        def check() -> str | None:
            polled = self.poll()
            raise_crashed(polled, services)
            containers = {c.service: c for c in polled}
            problems = [f"{name}: missing" for name in sorted(expected - set(containers))]
            problems += [
                f"{c.service}: {c.state}" + (f" ({c.health})" if c.health else "")
                for c in containers.values() if c.service in expected and not c.ready
            ]
            return "; ".join(problems) or None

        return check

    def answering(self, services: tuple[str, ...], probes: Mapping[str, Probe], *, timeout: float) -> None:
        """Run `probes` (what the stack serves) until all pass, watching the containers of `services`."""
        try:
            outcome = wait_for(self.watched(services, probes), timeout=timeout, clock=self.clock, sleep=self.sleep,
                               together=True)
        except Crashed as crash:
            raise self.crash(crash) from None
        if not outcome.ok:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(outcome.failures.items()))
            raise self.failed(f"{self.where} is not answering after {outcome.elapsed:.0f} s: {reasons}",
                              tuple(sorted(outcome.failures)))
