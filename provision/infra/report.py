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


DONE = ("created", "updated", "unchanged", "started", "re-applied", "stopped", "restarted", "already")
FAILED = ("failed", "rolled back")


class LiveReporter:
    """A rich live display on a terminal: one line per project with a spinner, its phase and elapsed time.
    A finished project's spinner becomes a mark (✓ done, ✗ failed); on exit every line left gets one (✗ when
    the command failed), so no spinner frame stays on screen."""

    def __init__(self, stream: TextIO | None = None, *, force_terminal: bool | None = None) -> None:
        from rich.console import Console
        from rich.progress import Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream or sys.stderr, force_terminal=force_terminal)
        self.progress = Progress(_mark_column(), TextColumn("[bold]{task.fields[project]}"),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=self.console, transient=False)
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def banner(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def step(self, project: str, text: str) -> None:
        with self._lock:
            if project not in self._tasks:
                self._tasks[project] = self.progress.add_task(text, project=project, total=None, mark="")
            else:
                self.progress.update(self._tasks[project], description=text)
            if text.startswith(DONE + FAILED):
                self.progress.update(self._tasks[project], total=1, completed=1,
                                     mark="✗" if text.startswith(FAILED) else "✓")

    def warn(self, text: str) -> None:
        self.console.print(f"warning: {text}", markup=False, highlight=False)

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self._lock:
            for task in self.progress.tasks:
                if not task.finished:
                    self.progress.update(task.id, total=1, completed=1, mark="✓" if exc_type is None else "✗")
        self.progress.stop()  # draws the last frame: marks, no spinner


def _mark_column() -> Any:
    """A spinner while a project works, its mark once it is finished."""
    from rich.progress import ProgressColumn, SpinnerColumn, Task
    from rich.text import Text

    class MarkColumn(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self.spinner = SpinnerColumn()

        def render(self, task: Task) -> Any:
            if task.finished:
                mark = str(task.fields.get("mark") or "✓")
                return Text(mark, style="red" if mark == "✗" else "green")
            return self.spinner.render(task)

    return MarkColumn()


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
