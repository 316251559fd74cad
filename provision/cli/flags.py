"""The tasks' flags: ProvisionTask (short flags chosen once in SHORT_FLAGS, list flags that need a value), the
help texts several tasks share, and the parsing of flag values that exits 2 naming the flag."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

#: The short flags, chosen once: a letter means the same flag in every task that has it, and none of them is
#: -h (help), -V (version) or -l (list). Every other flag is long only.
SHORT_FLAGS = {"env": "e", "project": "p", "json": "j", "quiet": "q", "yes": "y", "all": "a"}
RESERVED_SHORT_FLAGS = frozenset("hVl")

if TYPE_CHECKING:
    from ..infra.clock import Clock

#: the clock of the task running now: invoke's config `provision.clock` (a test's), else None (the real one)
TASK_CLOCK: ContextVar[Clock | None] = ContextVar("provision_task_clock", default=None)


class ProvisionTask(Task[Any]):
    """A task whose short flags are SHORT_FLAGS' (never generated), and whose list flags (--set) refuse to be
    given without a value, as every other flag that takes one does."""

    def __init__(self, body: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(body, **{**kwargs, "auto_shortflags": False})

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name.rstrip("_"))
        if short is not None:
            opts["names"] = [*opts["names"], short]
        return opts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The task's body, with the clock its context's config names (`provision.clock`) for every Workspace."""
        context = args[0] if args else None
        settings = context.config.get("provision") if isinstance(context, Context) else None
        token = TASK_CLOCK.set(settings.get("clock") if settings is not None else None)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            TASK_CLOCK.reset(token)

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        kept = dict(self.help)  # invoke pops the help it uses: keep it for the next parser (completion, tests)
        try:
            arguments = super().get_arguments(ignore_unknown_help=ignore_unknown_help)
        finally:
            self.help = kept
        for argument in arguments:
            if argument.kind is list:
                argument.raw_value = None  # the parser's "needed value and was not given one" then applies
        return arguments


def task(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], ProvisionTask]:
    """invoke's @task making a ProvisionTask."""
    made: Callable[[Callable[..., Any]], ProvisionTask] = invoke_task(*args, klass=ProvisionTask, **kwargs)
    return made


ENV_HELP = "Environment: reads envs/<env>.yml (required)"
PROJECT_HELP = "Project name (lowercase letters, digits, hyphens)"
LOCK_HELP = "Seconds to wait for another run on the same project (default 600)"
SET_HELP = "Override a key of the env file for this run, e.g. --set images.api=registry/api:1.4.2 (repeatable)"
HOOKS_HELP = "Do not run the executables in hooks/"
QUIET_HELP = "Print errors only (and the JSON of --json): no banner, progress, table or message"
NO_COLOR_HELP = "Plain progress lines, no colour or live display (as when NO_COLOR is set)"
WIDE_HELP = "Every column, nothing cut (default: fit the terminal, COLUMNS, else 80 columns)"
ALL_HELP = "Every project of the env that has a stack (running or stopped)"
PARALLEL_HELP = "With --all: how many projects at once (default 4)"
KEEP_GOING_HELP = "With --all: go on after a project failed (default: start no further project)"


def require_project(project: str | None) -> str:
    """`--project` must be given; its value is validated by the library (an empty one is refused there)."""
    if project is None:
        raise Exit("error: --project is required, e.g. --project=shop", code=2)
    return project


def number(flag: str, value: object, *, minimum: float = 0, maximum: float = float("inf"),
           integer: bool = True) -> float:
    """A numeric flag's value, or exit 2 naming the flag (never a ValueError traceback)."""
    text = str(value).strip()
    try:
        found = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise Exit(f"error: --{flag} {text!r}: use {kind}, e.g. --{flag}={int(minimum) + 1}", code=2) from None
    if not minimum <= found <= maximum or found in (float("inf"), float("-inf")):
        bound = f"between {minimum:g} and {maximum:g}" if maximum != float("inf") else f"at least {minimum:g}"
        raise Exit(f"error: --{flag} {text!r}: must be {bound}", code=2)
    return found


def overrides(pairs: list[str] | None) -> dict[str, str]:
    """--set's key=value pairs, or exit 2 naming the pair that is not one."""
    found = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Exit(f"error: --set {pair!r}: use key=value, e.g. --set images.api=registry/api:1.4.2", code=2)
        found[key.strip()] = value
    return found


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_since(value: str) -> datetime:
    """--since: a duration back from now (30s, 10m, 2h, 1d, 1h30m) or an ISO 8601 time (UTC when it names no
    zone); exit 2 naming the value otherwise."""
    text = value.strip()
    found = _DURATION.fullmatch(text)
    if text and found:
        days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
        return datetime.now(UTC) - timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise Exit(f"error: --since {value!r}: use a duration (30s, 10m, 2h, 1d, 1h30m) or a time like "
                   f"2026-11-30T14:00:00Z", code=2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
