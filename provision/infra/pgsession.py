"""One psql session held open across several steps: what a transaction's exported snapshot (pg_dump
--snapshot) and a non-exclusive backup (pg_backup_start .. pg_backup_stop in the same session) need. The
child is an argv list (`docker exec --interactive <db> psql ...` or this machine's psql); statements go to
its stdin, and each step's output is read up to a marker line, within a timeout."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Protocol, runtime_checkable

from ..core.errors import BackendUnavailable, CommandFailed

_MARK = "__provision_step_done__"


@runtime_checkable
class HoldsSessions(Protocol):
    """A runner that can keep one interactive psql open (the real one; a test's fake may not)."""

    def session(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> PsqlSession: ...


class PsqlSession:
    """A psql child reading statements from its stdin (`-v ON_ERROR_STOP=1`: a failed statement ends it).
    `step` sends SQL and returns its output; leaving the `with` block ends the session (a transaction still
    open is rolled back by the server when the connection closes)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = tuple(argv)
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None)
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"{argv[0]!r} was not found on PATH") from exc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        with stream:
            for raw in stream:
                self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def step(self, sql: str, *, timeout: float) -> str:
        """Run `sql` (one or more statements) in the session; its output lines. CommandFailed quoting psql
        when a statement fails (the session is then over) or after `timeout` seconds."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(f"{sql.rstrip()}\n\\echo {_MARK}\n".encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child is gone: its output says why
        lines: list[str] = []
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise CommandFailed(self.argv, -1, "\n".join(lines[-5:]),
                                    hint=f"no answer from psql within {timeout:g} s") from None
            if line is None:
                code = self._proc.wait(timeout=10)
                raise CommandFailed(self.argv, code, "\n".join(lines[-10:]), hint="the psql session ended")
            if line == _MARK:
                return "\n".join(lines)
            lines.append(line)

    def close(self) -> None:
        """End psql (its connection closes: an open transaction rolls back, a backup in progress is aborted)."""
        assert self._proc.stdin is not None
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(b"\\q\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        self._reader.join(timeout=10)  # it closes psql's output once it has read it all

    def __enter__(self) -> PsqlSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
