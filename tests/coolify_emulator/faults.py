"""Programmable faults and the request log.

A :class:`Fault` matches requests by method and path regex and changes how the
emulator answers them: an HTTP error, a hang, a dropped connection, a malformed
body or extra latency. With ``after=True`` the request is processed first (the
side effect happens) and only the response is lost or replaced.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("hang", "drop", "reset", "malformed", "latency", "429")

_UNSET: Any = object()


@dataclass
class Fault:
    """One injected fault. ``times=None`` means unlimited; ``hits`` counts applications."""

    fault: str
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    retry_after: int = 1
    seconds: float | None = None
    after: bool = False
    status: int | None = None
    body: bytes | None = None
    hits: int = 0
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULT_KINDS and not (self.fault.isdigit() and len(self.fault) == 3):
            raise ValueError(f"unknown fault kind {self.fault!r}; use one of {FAULT_KINDS} or an HTTP status")
        self._regex = re.compile(self.path) if self.path else None

    def matches(self, method: str, path: str, full_path: str) -> bool:
        """Method equal (case-insensitive) and regex found in the /api/v1-relative or full path."""
        if self.method and self.method.upper() != method.upper():
            return False
        if self._regex is not None and not (self._regex.search(path) or self._regex.search(full_path)):
            return False
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class FaultRegistry:
    """Thread-safe list of active faults; the first matching one wins (latency stacks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def take(self, method: str, path: str, full_path: str) -> tuple[float, Fault | None]:
        """Consume matching faults: total latency seconds and the first non-latency fault."""
        latency = 0.0
        chosen: Fault | None = None
        with self._lock:
            for fault in list(self._faults):
                if fault.exhausted or not fault.matches(method, path, full_path):
                    continue
                if fault.fault == "latency":
                    fault.hits += 1
                    latency += fault.seconds or 0.0
                elif chosen is None:
                    fault.hits += 1
                    chosen = fault
            self._faults = [f for f in self._faults if not f.exhausted]
        return latency, chosen

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


@dataclass(frozen=True)
class RequestRecord:
    """One request the API server saw. Unpacks as ``(method, path, query, status)``.

    ``path`` is relative to ``/api/v1`` (``/services``) for API routes, else the full path.
    ``status`` is None when no response was sent (drop/hang). ``fault`` names the injected
    fault, ``body`` is the parsed JSON body (or None), ``answer`` the parsed JSON of a response
    with a status of 400 or more (what Coolify said when it refused). The token is never recorded.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    fault: str | None = None
    body: Any = None
    full_path: str = ""
    at: float = field(default_factory=time.time)
    answer: Any = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.method, self.path, self.query, self.status))


def max_in_window(times: list[float], window: float) -> int:
    """The most of `times` (seconds: e.g. request arrivals) in any half-open interval of `window` seconds."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class RequestLog(list):  # type: ignore[type-arg]
    """A list of :class:`RequestRecord` with thread-safe append and a ``count`` helper."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.append(rec)

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def matching(self, method: str | None = None, path: str | None = None, status: int | None | Any = _UNSET,
                 fault: str | None | Any = _UNSET) -> list[RequestRecord]:
        """Records filtered by method, path (regex that must match the whole relative or full
        path, so ``"/services"`` matches only the list/create route), status and fault."""
        with self._lock:
            items = list(self)
        out: list[RequestRecord] = []
        for rec in items:
            if method and rec.method.upper() != method.upper():
                continue
            if path is not None and not (re.fullmatch(path, rec.path) or re.fullmatch(path, rec.full_path)):
                continue
            if status is not _UNSET and rec.status != status:
                continue
            if fault is not _UNSET and rec.fault != fault:
                continue
            out.append(rec)
        return out

    def count(self, method: str | None = None, path: str | None = None, status: int | None | Any = _UNSET,
              fault: str | None | Any = _UNSET) -> int:
        """How many requests match (see :meth:`matching`)."""
        return len(self.matching(method=method, path=path, status=status, fault=fault))
