"""`python -m invoke TASK ...` run inside the test process: the same Program over the sandbox's tasks.py, with
the run's environment, working directory, argv, stdin and output swapped in and the process's state put back
afterwards, so that a run sees what a fresh subprocess would and leaves nothing behind for the next."""

from __future__ import annotations

import gc
import io
import os
import signal
import sys
import traceback
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import invoke
from invoke.config import Config
from invoke.program import Program

from provision.backends.coolify import client as coolify_client
from provision.infra import hints, interrupts

from .timing import Clock

# what a fresh process has and a run may change: signal dispositions, the hints' program, the interrupt flag,
# the per-process request budgets of the Coolify client
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Outcome:
    """A finished in-process run: its exit code and what it wrote."""

    returncode: int
    stdout: str
    stderr: str


def invoke_argv(*args: str) -> list[str]:
    """The interpreter's argv of `python -m invoke ARGS` (what `sys.orig_argv` says in that process)."""
    return [sys.executable, "-m", "invoke", *args]


def _program(clock: Clock | None) -> Program:
    """A fresh `invoke.main.program` (Program keeps per-run state), with `clock` in its config as
    `provision.clock` (provision.cli.session hands it to the Workspace) when given."""
    extra: dict[str, Any] = {"provision": {"clock": clock}} if clock is not None else {}

    class RunConfig(Config):  # type: ignore[misc]
        @staticmethod
        def global_defaults() -> dict[str, Any]:
            defaults: dict[str, Any] = Config.global_defaults()
            defaults.update(extra)
            return defaults

    return Program(name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=invoke.__version__,
                   config_class=RunConfig)


@contextmanager
def _process(cwd: Path, environ: Mapping[str, str], orig_argv: list[str]) -> Iterator[None]:
    """The process as the run's subprocess would start: its environment, cwd, argv and an empty stdin; all put
    back (and the module-level state a run changes reset) on the way out."""
    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_path = list(sys.path)
    saved_argv, saved_orig_argv = sys.argv, sys.orig_argv
    saved_stdin = sys.stdin
    saved_tasks = sys.modules.get("tasks")
    saved_program = hints.program()
    saved_signals = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    sys.argv = [invoke.__file__.replace("__init__.py", "__main__.py"), *orig_argv[3:]]
    sys.orig_argv = orig_argv
    sys.stdin = io.StringIO("")
    hints.use_program(hints.DEFAULT_PROGRAM)
    _reset_process_state()
    try:
        yield
    finally:
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        _reset_process_state()
        hints.use_program(saved_program)
        if saved_tasks is None:
            sys.modules.pop("tasks", None)
        else:
            sys.modules["tasks"] = saved_tasks
        sys.stdin = saved_stdin
        sys.argv, sys.orig_argv = saved_argv, saved_orig_argv
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)


def _reset_process_state() -> None:
    """What a fresh process starts without: an interrupt already seen, request budgets already spent, urllib's
    opener (it keeps the proxies of the environment it was first built in)."""
    interrupts.CANCELLED.clear()
    urllib.request.install_opener(None)
    hints.use_http(False)
    coolify_client.forget_budgets()  # the client keeps one budget per process and Coolify: a run is a process


def run(args: Sequence[str], *, cwd: Path, environ: Mapping[str, str], clock: Clock | None = None) -> Outcome:
    """`python -m invoke ARGS` from `cwd` with exactly `environ`: exit code, stdout and stderr as that
    subprocess would give them (an uncaught exception: its traceback on stderr and exit 1)."""
    out, err = io.StringIO(), io.StringIO()
    code: int
    with _process(cwd, environ, invoke_argv(*args)), redirect_stdout(out), redirect_stderr(err), \
            warnings.catch_warnings():
        # a socket the run leaves open a subprocess closes silently at exit; here it is collected after the run
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            _program(clock).run(list(sys.argv))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: B036 - what the interpreter does with an exception nothing caught
            traceback.print_exc()
            code = 1
        gc.collect()
    return Outcome(code, out.getvalue(), err.getvalue())
