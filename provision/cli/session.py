"""What every task shares: the project directory, the session (a reporter on stderr; every failure an exit code
and a message, never a traceback; an unexpected one an incident), the provisioner built from the flags, the
exit of a run over several projects, and stdout that tolerates its reader leaving."""

from __future__ import annotations

import os
import shlex
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from invoke.exceptions import Exit

from ..infra import hints
from .flags import TASK_CLOCK, number, overrides

if TYPE_CHECKING:
    from ..core.results import RunSummary
    from ..infra.report import Reporter
    from ..service import Provisioner
    from ..service.workspace import Workspace

ROOT_VARIABLE = "PROVISION_ROOT"


def root(*, for_init: bool = False) -> Path:
    """The project directory: --root (PROVISION_ROOT), else the nearest directory from here upward that has
    envs/, as git finds .git; `init` falls back to the current directory."""
    explicit = os.environ.get(ROOT_VARIABLE)
    if explicit:
        found = Path(explicit).resolve()
        if not for_init and not (found / "envs").is_dir():
            raise Exit(f"error: --root {found} ({ROOT_VARIABLE}) has no envs/ directory: `cd {shlex.quote(str(found))} && "
                       f"{hints.command('init')[1:]} makes it a provision project", code=2)
        return found
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "envs").is_dir():
            return candidate
    if for_init:
        return here
    raise Exit(f"error: no envs/ directory in {here} or above it: run {hints.command('init')} to make this directory "
               f"a provision project, or name the project directory ({ROOT_VARIABLE}=PATH)", code=2)


class HeldBanners:
    """A reporter whose banners (`[Provisioning] Using ...`) wait for the first progress line, or for the end
    of a command that did not fail with a usage error (exit 2): no banner comes before a usage error."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.pending: list[str] = []
        self.lock = threading.Lock()

    def banner(self, text: str) -> None:
        with self.lock:
            self.pending.append(text)

    def flush(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for text in pending:
            self.inner.banner(text)

    def step(self, project: str, text: str) -> None:
        self.flush()
        self.inner.step(project, text)

    def warn(self, text: str) -> None:
        self.flush()
        self.inner.warn(text)


@contextmanager
def session(*, live: bool = True, failure_code: int | None = None, quiet: bool = False, color: bool = True,
            read_only: bool = False, hold_banners: bool = True) -> Iterator[Reporter]:
    """A progress reporter on stderr; library errors and interrupts become a non-zero exit, and so does
    anything unexpected (a bug): `error: unexpected ... (incident ID)`, never a traceback. The exit code is
    the error's (ProvisionError.exit_code), or `failure_code` for every error (plan --detailed-exitcode: 1).

    The live display (colour, spinners, a hidden cursor) only for a changing command on a terminal without
    --no-color or NO_COLOR; plain lines otherwise; nothing but errors with --quiet; read-only commands
    print no banner, and no banner comes before a usage error (`hold_banners`: False for `serve`, whose banner
    says where it listens)."""
    from ..core.errors import ProvisionError
    from ..infra import incidents, interrupts
    from ..infra.report import NullReporter, StreamReporter, for_stream

    interrupts.install_signal_handlers()
    plain = not live or read_only or not color or bool(os.environ.get("NO_COLOR"))
    reporter: NullReporter | StreamReporter | AbstractContextManager[Reporter]
    if quiet:
        reporter = NullReporter()
    elif plain:
        reporter = StreamReporter(sys.stderr, banners=not read_only)
    else:
        reporter = for_stream(sys.stderr)
    try:
        with reporter as active:
            held = HeldBanners(active) if hold_banners else None
            try:
                yield held or active
            except ProvisionError as exc:
                if held is not None and (failure_code or exc.exit_code) != 2:
                    held.flush()
                raise
            if held is not None:
                held.flush()
    except (KeyboardInterrupt, interrupts.Interrupted):
        raise Exit("interrupted: nothing is left locked; run the same command again to finish", code=130) from None
    except ProvisionError as exc:
        raise Exit(f"error: {exc}", code=failure_code or exc.exit_code) from exc
    except Exit:
        raise
    except BrokenPipeError:
        closed_pipe()
    except Exception as exc:
        from ..state.layout import StateLayout
        from ..state.records import default_state_dir

        raise Exit(f"error: {incidents.record(exc, StateLayout(default_state_dir(root(for_init=True))).incidents)}",
                   code=1) from None


def require_env(env: str | None) -> str:
    """`--env` must be given: exit 2 naming the envs there are otherwise."""
    if env:
        return env
    from ..core.config import available_envs

    raise Exit(f"error: --env is required, e.g. --env=dev (envs here: {', '.join(available_envs(root())) or 'none'})", code=2)


def workspace(*, for_init: bool = False) -> Workspace:
    """The project directory's Workspace, on the running task's clock (the real one unless a test gave one)."""
    from ..service.workspace import Workspace

    clock = TASK_CLOCK.get()
    directory = root(for_init=for_init)
    return Workspace(directory) if clock is None else Workspace(directory, clock=clock)


def provisioner_for(env: str | None, reporter: Reporter, *, lock_timeout: float | str | None = None,
                sets: list[str] | None = None, skip_hooks: bool = False, offline: bool = False) -> Provisioner:
    """The service for `--env` of the project directory, with the run's flags (--set, --lock-timeout, ...)."""
    options: dict[str, Any] = {"overrides": overrides(sets), "skip_hooks": skip_hooks, "reporter": reporter,
                               "offline": offline}
    if lock_timeout is not None:
        options["lock_timeout"] = number("lock-timeout", lock_timeout, integer=False)
    return workspace().provisioner(require_env(env), **options)


def exit_if_failed(summary: RunSummary) -> None:
    """Exit naming each project that failed (those skipped after it are in the summary): with the failures'
    exit code when they share one (4 for a lock held past --lock-timeout, as for a single project), else 1."""
    if not summary.ok:
        failed = [r for r in summary.results if r.error and r.status != "skipped"]
        codes = {r.error_code or 1 for r in failed}
        raise Exit("\n".join(f"error: {r.project}: {r.error}" for r in failed), code=codes.pop() if len(codes) == 1 else 1)


def emit(text: str) -> None:
    """`text` on stdout; when its reader has left (`| head -1`), the command ends quietly with exit 0."""
    try:
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        closed_pipe()


def closed_pipe() -> NoReturn:
    """stdout's reader left: end with exit 0, quietly."""
    silence_stdout()
    raise Exit(code=0)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing complains of the closed pipe at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
