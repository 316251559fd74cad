"""Progress reporting on stderr (stdout carries only data).

On a terminal a live rich display shows each project's phase and elapsed time; elsewhere
(CI logs, pipes) plain timestamped lines say the same.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any, Protocol, TextIO


class Reporter(Protocol):
    def banner(self, text: str) -> None:
        """A one-off line such as `[Provisioning] Using Local Docker provider`."""
        ...

    def step(self, project: str, text: str) -> None:
        """Progress of one project: a phase change or a note."""
        ...

    def warn(self, text: str) -> None: ...


class StreamReporter:
    """Plain lines on a stream (stderr by default): timestamp, project, elapsed time since its first line."""

    def __init__(self, stream: TextIO | None = None, *, timestamps: bool | None = None, banners: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.timestamps = (not _isatty(self.stream)) if timestamps is None else timestamps
        self.banners = banners  # read-only commands print none
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}

    def _write(self, line: str) -> None:
        prefix = time.strftime("%H:%M:%S ", time.localtime()) if self.timestamps else ""
        with self._lock:
            self.stream.write(prefix + line + "\n")
            self.stream.flush()

    def banner(self, text: str) -> None:
        if self.banners:
            self._write(text)

    def step(self, project: str, text: str) -> None:
        started = self._started.setdefault(project, time.monotonic())
        self._write(f"[{project}] {time.monotonic() - started:5.1f}s {text}")

    def warn(self, text: str) -> None:
        self._write(f"warning: {text}")

    def __enter__(self) -> StreamReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LiveReporter:
    """A rich live display on a terminal: one line per project with a spinner, its phase and elapsed time."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream or sys.stderr)
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[project]}"),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=self.console, transient=False)
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def banner(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def step(self, project: str, text: str) -> None:
        with self._lock:
            if project not in self._tasks:
                self._tasks[project] = self.progress.add_task(text, project=project, total=None)
            else:
                self.progress.update(self._tasks[project], description=text)
            if text.startswith(("created", "updated", "unchanged", "started", "re-applied", "failed", "rolled back",
                                "stopped", "restarted", "already")):
                self.progress.update(self._tasks[project], total=1, completed=1)

    def warn(self, text: str) -> None:
        self.console.print(f"warning: {text}", markup=False, highlight=False)

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()


class NullReporter:
    """Reports nothing (`--quiet`, the library's default)."""

    def banner(self, text: str) -> None:
        pass

    def step(self, project: str, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def __enter__(self) -> NullReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def for_stream(stream: TextIO | None = None) -> StreamReporter | LiveReporter:
    """A live display when `stream` (default stderr) is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    return LiveReporter(stream) if _isatty(stream) else StreamReporter(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
