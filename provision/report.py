"""Progress reporting on stderr (stdout carries only data)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Reporter(Protocol):
    def banner(self, text: str) -> None:
        """A one-off line such as `[Provisioning] Using Local Docker provider`."""
        ...

    def step(self, project: str, text: str) -> None:
        """Progress of one project: a phase change or a note."""
        ...

    def warn(self, text: str) -> None: ...


class StreamReporter:
    """Plain lines on a stream (stderr by default); timestamped when the stream is not a terminal."""

    def __init__(self, stream: TextIO | None = None, *, timestamps: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.timestamps = (not _isatty(self.stream)) if timestamps is None else timestamps
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        prefix = time.strftime("%H:%M:%S ", time.localtime()) if self.timestamps else ""
        with self._lock:
            self.stream.write(prefix + line + "\n")
            self.stream.flush()

    def banner(self, text: str) -> None:
        self._write(text)

    def step(self, project: str, text: str) -> None:
        self._write(f"[{project}] {text}")

    def warn(self, text: str) -> None:
        self._write(f"warning: {text}")


class NullReporter:
    def banner(self, text: str) -> None:
        pass

    def step(self, project: str, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
