"""Running commands: argv lists, never a shell, with a timeout on every wait; an interrupt (Ctrl-C,
SIGTERM) terminates the child first. `Runner` is the seam tests replace with a fake."""

from __future__ import annotations

import subprocess
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from ..core.errors import BackendUnavailable, CommandFailed
from . import interrupts
from .pgsession import PsqlSession


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs one command; the seam tests replace with a fake."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        stdout: IO[bytes] | None = None,
        stdin: IO[bytes] | None = None,
    ) -> Completed: ...

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
        """The command's output lines as they come (no time limit: the reader decides when to stop)."""
        ...


class SubprocessRunner:
    """Runs commands with subprocess, never through a shell; an interrupt terminates the child first."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        stdout: IO[bytes] | None = None,
        stdin: IO[bytes] | None = None,
    ) -> Completed:
        """Run `argv` to its end (CommandFailed after `timeout` seconds); `stdout`/`stdin`: files to write the
        output to, or to read the input from, instead of capturing it or giving none."""
        interrupts.check()
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                list(argv),
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
            )
        except FileNotFoundError as exc:
            raise BackendUnavailable(_missing(argv[0])) from exc
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if interrupts.CANCELLED.is_set():
                        raise interrupts.Interrupted(f"interrupted while running {argv[0]} {argv[1] if len(argv) > 1 else ''}") from None
                    if time.monotonic() > deadline:
                        _stop(proc)
                        raise CommandFailed(argv, -1, "", hint=f"timed out after {timeout:g} s") from None
        except BaseException:
            _stop(proc)
            raise
        text = out.decode(errors="replace") if isinstance(out, bytes) else ""
        return Completed(tuple(argv), proc.returncode, text, (err or b"").decode(errors="replace"))


    def session(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> PsqlSession:
        """An interactive psql kept open across steps (pgsession.PsqlSession)."""
        interrupts.check()
        return PsqlSession(argv, env)

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
        """stdout and stderr, line by line as they come, until the command exits (CommandFailed when it
        exits non-zero) or the reader stops reading (the command is then terminated)."""
        interrupts.check()
        try:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # noqa: S603
                                    stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None)
        except FileNotFoundError as exc:
            raise BackendUnavailable(_missing(argv[0])) from exc
        last: deque[str] = deque(maxlen=20)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                last.append(line)
                yield line
            proc.wait(timeout=10)
        finally:
            _stop(proc)
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, "".join(last))


def _missing(program: str) -> str:
    hint = "the Docker CLI with the Compose v2 plugin" if program.endswith("docker") else "it (e.g. postgresql-client)"
    return f"{program!r} was not found on PATH: install {hint}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a child (SIGTERM, then SIGKILL after 10 s) and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
