"""What every part of the Coolify backend shares: the client, the env, time (a clock and a sleep, injected), and the
lookups that hold for one run (`Lookups`: they expire, so that a long-lived backend, `provision serve`'s, sees a
server added or a Coolify upgraded since)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

from ...core.config import EnvConfig
from ...core.errors import NotSupported
from ...infra import interrupts
from ...infra.probes import Probe, WaitOutcome, wait_for
from .client import CoolifyClient

# project shared variables (the run lock: routes/api.php:99-102) and POST .../scheduled-tasks/{task}/execute
# (:421) first appear in v4.3.0 (routes/api.php at tags v4.2.0 and v4.3.0)
MIN_COOLIFY_VERSION = (4, 3, 0)
# seconds a lookup (GET /servers, GET /version, the chosen server, which listed server holds a service) is reused:
# about one run's length, so one run asks once and a process that lives longer asks again
LOOKUP_TTL = 120.0

T = TypeVar("T")


class Lookups:
    """Answers that stay true for about one run: each is loaded at most once per `ttl` seconds of `clock`.
    Loads run under one re-entrant lock (a load may use another lookup), so threads never load one twice."""

    def __init__(self, clock: Callable[[], float], ttl: float = LOOKUP_TTL) -> None:
        self.clock, self.ttl = clock, ttl
        self._lock = threading.RLock()
        self._kept: dict[str, tuple[float, object]] = {}

    def get(self, key: str, load: Callable[[], T]) -> T:
        """The value under `key`, loaded again when missing or older than `ttl`."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and self.clock() - kept[0] < self.ttl:
                return cast(T, kept[1])
            value = load()
            self._kept[key] = (self.clock(), value)
            return value

    def peek(self, key: str) -> object | None:
        """The value kept under `key` (expired or not), or None: for reports of what a lookup found."""
        with self._lock:
            kept = self._kept.get(key)
            return kept[1] if kept is not None else None


@dataclass(frozen=True)
class Context:
    """One env's Coolify as every part of the backend sees it."""

    client: CoolifyClient
    config: EnvConfig
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = interrupts.sleep
    lock_project_name: str = ""
    lookups: Lookups = field(default_factory=lambda: Lookups(time.monotonic))
    wall: Callable[[], float] = time.time  # epoch seconds: lock expiries written to and read from the server

    @property
    def owner(self) -> str:
        return self.config.owner or ""

    @property
    def base_url(self) -> str:
        return str(self.client.http.base_url)

    def wait_for(self, probes: Mapping[str, Probe], *, timeout: float, interval: float = 0.25,
                 max_interval: float = 2.0, pace: float | None = None) -> WaitOutcome:
        """probes.wait_for on this context's clock and sleep."""
        return wait_for(probes, timeout=timeout, interval=interval, max_interval=max_interval, pace=pace,
                        clock=self.clock, sleep=self.sleep)

    def version(self) -> str:
        """GET /version's answer (routes/api.php:66, api.ability:read; the bare version as text), once per lookup."""
        return self.lookups.get("version", lambda: str(self.client.request("GET", "/version", text=True) or "")
                                .strip())

    def known_version(self) -> str | None:
        """The version a `check_version` read, or None when none did."""
        found = self.lookups.peek("version")
        return found if isinstance(found, str) else None

    def check_version(self) -> None:
        """Refuse a Coolify older than MIN_COOLIFY_VERSION with one line naming both versions. Asked before a
        change (`lock`) or task, not by a no-op run. A version that does not parse is let through (a format to
        come)."""
        found = self.version()
        wanted = ".".join(map(str, MIN_COOLIFY_VERSION))
        parsed = parse_version(found)
        if parsed is not None and parsed < MIN_COOLIFY_VERSION:
            raise NotSupported(
                f"Coolify at {self.base_url.rstrip('/')} is version {found.split()[0]}; provision needs {wanted} or "
                f"newer (project shared variables and running a scheduled task on demand): upgrade Coolify")


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`4.3.11` (also `v4.3.11`, `4.0.0-beta.420.7`, `4.3`) as (4, 3, 11); None when it does not read as one."""
    found = re.match(r"""["']?v?(\d+)\.(\d+)(?:\.(\d+))?""", text.strip())
    return (int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)) if found else None
