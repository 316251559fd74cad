"""The command line: Invoke tasks that parse arguments, call the `provision` library and print.

One collection serves both `provision <task>` (the console script and `python -m provision`) and
`invoke <task>` in a checkout whose tasks.py imports it. Data goes to stdout, progress and banners to
stderr. Every failure exits with its documented code and the library's message, never a traceback.
The library is imported inside each task so listing the tasks stays fast.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from provision import hints

if TYPE_CHECKING:
    from provision.clock import Clock
    from provision.model import ControlVerb
    from provision.report import Reporter
    from provision.results import ProjectResult, RunSummary
    from provision.service import Provisioner
    from provision.workspace import Workspace

ROOT_VARIABLE = "PROVISION_ROOT"

#: the clock of the task running now: invoke's config `provision.clock` (a test's), else None (the real one)
_CLOCK: ContextVar[Clock | None] = ContextVar("provision_clock", default=None)

#: The short flags, chosen once: a letter means the same flag in every task that has it, and none of them is
#: -h (help), -V (version) or -l (list). Every other flag is long only.
SHORT_FLAGS = {"env": "e", "project": "p", "json": "j", "quiet": "q", "yes": "y", "all": "a"}
RESERVED_SHORT_FLAGS = frozenset("hVl")


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
        token = _CLOCK.set(settings.get("clock") if settings is not None else None)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _CLOCK.reset(token)

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


def _workspace(*, for_init: bool = False) -> Workspace:
    """The Workspace at `_root`, on the running task's clock."""
    from provision.workspace import Workspace

    return Workspace(_root(for_init=for_init), clock=_CLOCK.get())


def _root(*, for_init: bool = False) -> Path:
    """The project directory: --root (PROVISION_ROOT), else the nearest directory from here upward that has
    envs/, as git finds .git; `init` falls back to the current directory."""
    explicit = os.environ.get(ROOT_VARIABLE)
    if explicit:
        root = Path(explicit).resolve()
        if not for_init and not (root / "envs").is_dir():
            raise Exit(f"error: --root {root} ({ROOT_VARIABLE}) has no envs/ directory: `cd {shlex.quote(str(root))} && "
                       f"{hints.command('init')[1:]} makes it a provision project", code=2)
        return root
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "envs").is_dir():
            return candidate
    if for_init:
        return here
    raise Exit(f"error: no envs/ directory in {here} or above it: run {hints.command('init')} to make this directory "
               f"a provision project, or name the project directory ({ROOT_VARIABLE}=PATH)", code=2)


ENV_HELP = "Environment: reads envs/<env>.yml (required)"
PROJECT_HELP = "Project name (lowercase letters, digits, hyphens)"
LOCK_HELP = "Seconds to wait for another run on the same project (default 600)"
SET_HELP = "Override a key of the env file for this run, e.g. --set images.api=registry/api:1.4.2 (repeatable)"
HOOKS_HELP = "Do not run the executables in hooks/"
QUIET_HELP = "Print errors only (and the JSON of --json): no banner, progress, table or message"
NO_COLOR_HELP = "Plain progress lines, no colour or live display (as when NO_COLOR is set)"
WIDE_HELP = "Every column, nothing cut (default: fit the terminal, COLUMNS, else 80 columns)"


class _HeldBanners:
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
def _session(*, live: bool = True, failure_code: int | None = None, quiet: bool = False, color: bool = True,
             read_only: bool = False, hold_banners: bool = True) -> Iterator[Reporter]:
    """A progress reporter on stderr; library errors and interrupts become a non-zero exit, and so does
    anything unexpected (a bug): `error: unexpected ... (incident ID)`, never a traceback. The exit code is
    the error's (ProvisionError.exit_code), or `failure_code` for every error (plan --detailed-exitcode: 1).

    The live display (colour, spinners, a hidden cursor) only for a changing command on a terminal without
    --no-color or NO_COLOR; plain lines otherwise; nothing but errors with --quiet; read-only commands
    print no banner, and no banner comes before a usage error (`hold_banners`: False for `serve`, whose banner
    says where it listens)."""
    from provision import incidents, interrupts
    from provision.errors import ProvisionError
    from provision.report import NullReporter, StreamReporter, for_stream

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
            held = _HeldBanners(active) if hold_banners else None
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
        from provision.state import default_state_dir

        raise Exit(f"error: {incidents.record(exc, default_state_dir(_root(for_init=True)) / 'incidents')}",
                   code=1) from None


def _require_env(env: str | None) -> str:
    if env:
        return env
    from provision.config import available_envs

    raise Exit(f"error: --env is required, e.g. --env=dev (envs here: {', '.join(available_envs(_root())) or 'none'})", code=2)


def _require_project(project: str | None) -> str:
    """`--project` must be given; its value is validated by the library (an empty one is refused there)."""
    if project is None:
        raise Exit("error: --project is required, e.g. --project=shop", code=2)
    return project


def _number(flag: str, value: object, *, minimum: float = 0, maximum: float = float("inf"),
            integer: bool = True) -> float:
    """A numeric flag's value, or exit 2 naming the flag (never a ValueError traceback)."""
    text = str(value).strip()
    try:
        number = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise Exit(f"error: --{flag} {text!r}: use {kind}, e.g. --{flag}={int(minimum) + 1}", code=2) from None
    if not minimum <= number <= maximum or number in (float("inf"), float("-inf")):
        bound = f"between {minimum:g} and {maximum:g}" if maximum != float("inf") else f"at least {minimum:g}"
        raise Exit(f"error: --{flag} {text!r}: must be {bound}", code=2)
    return number


def _overrides(pairs: list[str] | None) -> dict[str, str]:
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Exit(f"error: --set {pair!r}: use key=value, e.g. --set images.api=registry/api:1.4.2", code=2)
        overrides[key.strip()] = value
    return overrides


def _provisioner(env: str | None, reporter: Reporter, *, lock_timeout: float | str | None = None,
                 sets: list[str] | None = None, skip_hooks: bool = False, offline: bool = False) -> Provisioner:

    options: dict[str, Any] = {"overrides": _overrides(sets), "skip_hooks": skip_hooks, "reporter": reporter,
                               "offline": offline}
    if lock_timeout is not None:
        options["lock_timeout"] = _number("lock-timeout", lock_timeout, integer=False)
    return _workspace().provisioner(_require_env(env), **options)


def _exit_if_failed(summary: RunSummary) -> None:
    """Exit naming each project that failed (those skipped after it are in the summary): with the failures'
    exit code when they share one (4 for a lock held past --lock-timeout, as for a single project), else 1."""
    if not summary.ok:
        failed = [r for r in summary.results if r.error and r.status != "skipped"]
        codes = {r.error_code or 1 for r in failed}
        raise Exit("\n".join(f"error: {r.project}: {r.error}" for r in failed), code=codes.pop() if len(codes) == 1 else 1)


def _print(text: str) -> None:
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


@task(
    iterable=["set_"],
    help={
        "env": ENV_HELP,
        "project": "Only this project; default: every project declared in the env",
        "create": "Also create --project when the env file does not declare it (a typo guard)",
        "json": "Print the result as one JSON object on stdout",
        "show_secrets": "Show db_url passwords instead of ***",
        "keep_going": "With several projects: continue after a failure (default: start no new ones)",
        "parallel": "How many projects to provision at once (default 4)",
        "set": SET_HELP,
        "skip_hooks": HOOKS_HELP,
        "prune": "Also destroy (keeping data) projects deployed in the env but no longer declared; needs --yes",
        "yes": "Confirm --prune",
        "lock_timeout": LOCK_HELP,
        "quiet": QUIET_HELP,
        "no_color": NO_COLOR_HELP,
    },
)
def provision(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
              show_secrets: bool = False, keep_going: bool = False, parallel: str = "4", set_: list[str] | None = None,
              skip_hooks: bool = False, prune: bool = False, yes: bool = False, lock_timeout: str | None = None,
              create: bool = False, quiet: bool = False, no_color: bool = False) -> None:
    """Create or update projects' stacks and wait until they answer; summary on stderr, JSON with --json."""
    from provision import output

    workers = int(_number("parallel", parallel, minimum=1))
    with _session(quiet=quiet, color=not no_color) as reporter:
        provisioner = _provisioner(env, reporter, lock_timeout=lock_timeout, sets=set_, skip_hooks=skip_hooks)
        projects = [project] if project is not None else [p.name for p in provisioner.config.projects]
        if not projects and not prune:
            raise Exit(f"error: {provisioner.config.relpath} declares no projects: pass --project=NAME", code=2)
        summary = provisioner.provision_many(projects, keep_going=keep_going, parallel=workers, create=create)
        if prune:
            summary = summary.extended(provisioner.prune(yes=yes))
    if not quiet:
        sys.stderr.write(output.table(summary.results, ("project", "action", "status", "duration_s", "api_url"),
                                      width=output.terminal_width(), shrink=("project", "status")) + "\n")
    if json:
        _print(output.summary_json(summary, show_secrets=show_secrets))
    _exit_if_failed(summary)


@task(iterable=["set_"], help={"env": ENV_HELP, "project": "Only this project", "json": "Print JSON on stdout",
                               "detailed_exitcode": "Exit 0 when nothing would change, 2 when changes are pending, 1 on error",
                               "set": SET_HELP,
                               "offline": "Ask no server (a Coolify env needs no credentials): validate, render and "
                                          "compare with what this machine last applied",
                               "wide": WIDE_HELP})
def plan(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
         detailed_exitcode: bool = False, set_: list[str] | None = None, offline: bool = False,
         wide: bool = False) -> None:
    """Show what provision would do per project (create, update with a diff, no-op, drift, orphan); changes nothing."""
    from provision import output

    with _session(failure_code=1 if detailed_exitcode else None, read_only=True) as reporter:
        provisioner = _provisioner(env, reporter, sets=set_, offline=offline)
        items = provisioner.plan_offline(project) if offline else provisioner.plan(project)
    if json:
        _print(output.to_json({"env": _require_env(env), "changes": any(i.changes for i in items),
                               "projects": [i.to_dict() for i in items]}))
    else:
        _print(output.plan_text(items, wide=wide))
    if detailed_exitcode and any(i.changes for i in items):
        raise Exit(code=2)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP,
            "format": "env or json: for scripts, with the real password (default: env, masked on a terminal)",
            "show_secrets": "On a terminal without --format: print the real db_url password instead of ***"})
def outputs(c: Context, env: str | None = None, project: str | None = None, format: str | None = None,
            show_secrets: bool = False) -> None:
    """Print a project's API_URL and DB_URL (dotenv lines or JSON). With --format, or when stdout is not a
    terminal, the values are the real ones, password included: that is what scripts read them for."""
    from provision import output

    project = _require_project(project)
    formatters: dict[str, Callable[..., str]] = {"env": output.outputs_env, "json": output.outputs_json}
    if format is not None and format not in formatters:
        raise Exit(f"error: --format must be env or json, not {format!r}", code=2)
    with _session(read_only=True) as reporter:
        result = _provisioner(env, reporter).outputs(project)
    for_machines = format is not None or not sys.stdout.isatty()
    _print(formatters[format or "env"](result, show_secrets=show_secrets or for_machines))


@task(help={"env": ENV_HELP, "project": "Only this project", "json": "Print JSON on stdout",
            "show_secrets": "Show db_url passwords instead of ***",
            "watch": "Refresh every N seconds (default 2) until Ctrl-C; with --json, one JSON line per refresh",
            "wide": WIDE_HELP + "; adds db_url"},
      optional=["watch"])
def status(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
           show_secrets: bool = False, watch: str | bool | None = None, wide: bool = False) -> None:
    """Show each project's state, its services' health, what it costs (memory, CPU, uptime) and its URLs."""
    from provision import interrupts

    every = None if watch in (None, False) else (
        2.0 if watch is True else _number("watch", str(watch), minimum=0.5, maximum=3600, integer=False))
    with _session(read_only=True) as reporter:
        provisioner = _provisioner(env, reporter)
        try:
            while True:
                _print(_status_text(provisioner.status(project), json=json, show_secrets=show_secrets, every=every,
                                    wide=wide))
                if every is None:
                    return
                interrupts.sleep(every)
        except (KeyboardInterrupt, interrupts.Interrupted):
            if every is None:
                raise
            # a watch ends with Ctrl-C: that is no failure


def _status_text(summary: RunSummary, *, json: bool, show_secrets: bool, every: float | None,
                 wide: bool = False) -> str:
    from provision import output

    if json:
        if every is None:
            return output.summary_json(summary, show_secrets=show_secrets)
        return output.to_json_line(summary.to_dict(show_secrets=show_secrets))
    table = output.status_table(summary.results, show_secrets=show_secrets, wide=wide)
    if every is None:
        return table
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""  # a live view, like top
    return f"{clear}{datetime.now().strftime('%H:%M:%S')}  env {summary.env}  (every {every:g} s, Ctrl-C to stop)\n{table}\n"


ALL_HELP = "Every project of the env that has a stack (running or stopped)"
PARALLEL_HELP = "With --all: how many projects at once (default 4)"
KEEP_GOING_HELP = "With --all: go on after a project failed (default: start no further project)"


def _fleet(env: str | None, project: str | None, all_: bool, parallel: str, keep_going: bool, json: bool,
           quiet: bool, no_color: bool, lock_timeout: str | None, action: str,
           operation: Callable[[Provisioner, str], ProjectResult], *, skip_hooks: bool = False) -> None:
    """One project, or with --all every deployed project of the env (bounded parallelism, a summary table on
    stderr, exit 1 when any failed)."""
    from provision import output

    if all_ and project is not None:
        raise Exit("error: --all and --project exclude each other: pass one", code=2)
    if not all_:
        project = _require_project(project)
    workers = int(_number("parallel", parallel, minimum=1))
    with _session(quiet=quiet, color=not no_color) as reporter:
        provisioner = _provisioner(env, reporter, lock_timeout=lock_timeout, skip_hooks=skip_hooks)
        if project is not None:
            result = operation(provisioner, project)
            if json or not quiet:
                _print(output.to_json(result.to_dict()) if json else
                       output.table([result], ("project", "status", "changed", "api_url", "db_url")))
            return
        summary = provisioner.run_many(provisioner.deployed(), lambda name: operation(provisioner, name),
                                       action=action, keep_going=keep_going, parallel=workers)
    if not quiet:
        sys.stderr.write(output.table(summary.results, ("project", "action", "status", "changed", "duration_s"),
                                      width=output.terminal_width(), shrink=("project", "status")) + "\n")
    if json:
        _print(output.summary_json(summary))
    _exit_if_failed(summary)


def _control(env: str | None, project: str | None, verb: ControlVerb, lock_timeout: str | None, json: bool,
             quiet: bool, no_color: bool, all_: bool, parallel: str, keep_going: bool) -> None:
    _fleet(env, project, all_, parallel, keep_going, json, quiet, no_color, lock_timeout, verb,
           lambda provisioner, name: provisioner.control(name, verb))


_CONTROL_HELP = {"env": ENV_HELP, "project": PROJECT_HELP, "lock_timeout": LOCK_HELP, "json": "Print JSON",
                 "quiet": QUIET_HELP, "no_color": NO_COLOR_HELP, "all": ALL_HELP, "parallel": PARALLEL_HELP,
                 "keep_going": KEEP_GOING_HELP}


@task(help=_CONTROL_HELP)
def stop(c: Context, env: str | None = None, project: str | None = None, lock_timeout: str | None = None,
         json: bool = False, quiet: bool = False, no_color: bool = False, all: bool = False, parallel: str = "4",
         keep_going: bool = False) -> None:
    """Stop a project's containers (or every project's, --all); data and configuration are kept."""
    _control(env, project, "stop", lock_timeout, json, quiet, no_color, all, parallel, keep_going)


@task(help=_CONTROL_HELP)
def start(c: Context, env: str | None = None, project: str | None = None, lock_timeout: str | None = None,
          json: bool = False, quiet: bool = False, no_color: bool = False, all: bool = False, parallel: str = "4",
          keep_going: bool = False) -> None:
    """Start a stopped project (or every project, --all) and wait until it answers."""
    _control(env, project, "start", lock_timeout, json, quiet, no_color, all, parallel, keep_going)


@task(help=_CONTROL_HELP)
def restart(c: Context, env: str | None = None, project: str | None = None, lock_timeout: str | None = None,
            json: bool = False, quiet: bool = False, no_color: bool = False, all: bool = False, parallel: str = "4",
            keep_going: bool = False) -> None:
    """Restart a project's containers (or every project's, --all) and wait until it answers."""
    _control(env, project, "restart", lock_timeout, json, quiet, no_color, all, parallel, keep_going)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "service": "Only this service (db or api)",
            "tail": "Lines per service (default 100)", "follow": "Keep printing new lines until Ctrl-C",
            "since": "Only lines written since then: 30s, 10m, 2h, 1d, 1h30m, or a time like 2026-11-30T14:00:00Z"},
      aliases=["log"])
def logs(c: Context, env: str | None = None, project: str | None = None, service: str | None = None,
         tail: str = "100", follow: bool = False, since: str | None = None) -> None:
    """Print the last lines of a project's container logs (secrets redacted); --follow keeps printing."""
    project = _require_project(project)
    lines = int(_number("tail", tail, minimum=1))
    moment = _since(since) if since is not None else None
    with _session(read_only=True) as reporter:
        chunks = _provisioner(env, reporter).logs(project, service=service, tail=lines, since=moment, follow=follow)
        try:
            for chunk in chunks:
                sys.stdout.write(chunk if follow else chunk.rstrip("\n") + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            if not follow:
                raise  # following ends with Ctrl-C: that is no failure


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _since(value: str) -> datetime:
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


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "command": "Run this SQL and exit (psql --command)",
            "via": "host: this machine's psql; container: psql in the db container; auto (default): host when it can"})
def psql(c: Context, env: str | None = None, project: str | None = None, command: str | None = None,
         via: str = "auto") -> None:
    """Open psql on a project's database (the password goes in psql's environment, never on a command line);
    exits 1 when psql fails."""
    from provision import shell

    project = _require_project(project)
    with _session(read_only=True) as reporter:
        interactive = command is None and sys.stdin.isatty() and sys.stdout.isatty()
        psql_command = _provisioner(env, reporter).psql(project, sql=command, via=via, tty=interactive)
        if interactive:
            sys.stderr.write(f"provision: {psql_command.via} on {project!r} (\\q quits)\n")
        code = shell.run(psql_command)
    if code != 0:
        raise Exit(f"error: psql exited {code}", code=1)


# --- data: backup, restore, clone, upgrade-db, rotate ---------------------------------------------------
def _data_result(result: ProjectResult, json: bool, line: str, *, show_secrets: bool = False,
                 quiet: bool = False) -> None:
    """The result as JSON (--json, even with --quiet), else `line` (not with --quiet: errors only)."""
    from provision import output

    if json:
        _print(output.to_json(result.to_dict(show_secrets=show_secrets)))
    elif not quiet:
        _print(line)


@task(help={"env": ENV_HELP, "project": "The project (or --all)", "all": "Every declared project",
            "out": "Write the dump here instead of the state directory's backups/<env>/<project>/",
            "keep": "After a successful backup, delete all but the newest N of the project's backups",
            "json": "Print JSON", "parallel": "With --all: how many at once (default 2)",
            "keep_going": "With --all: go on after a failure", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def backup(c: Context, env: str | None = None, project: str | None = None, all: bool = False,
           out: str | None = None, keep: str | None = None, json: bool = False, parallel: str = "2",
           keep_going: bool = False, lock_timeout: str | None = None, quiet: bool = False) -> None:
    """pg_dump (custom format) of a project's database, 0600 in a 0700 directory, with a manifest (version,
    image, size, sha256, row counts); prints the dump's path."""
    from provision import output

    if all == (project is not None):
        raise Exit("error: pass --project=NAME or --all", code=2)
    if all and out is not None:
        raise Exit("error: --out names one file: it does not go with --all", code=2)
    kept = int(_number("keep", keep, minimum=1)) if keep is not None else None
    workers = int(_number("parallel", parallel, minimum=1))
    with _session(quiet=quiet) as reporter:
        provisioner = _provisioner(env, reporter, lock_timeout=lock_timeout)
        if project is not None:
            result = provisioner.data.backup(project, out=Path(out) if out else None, keep=kept)
            _data_result(result, json, str(result.details["path"]), quiet=quiet)
            return
        names = [p.name for p in provisioner.config.projects]
        summary = provisioner.run_many(names, lambda name: provisioner.data.backup(name, keep=kept), action="backup",
                                       keep_going=keep_going, parallel=workers)
    if json:
        _print(output.summary_json(summary))
    elif not quiet:
        _print("\n".join(str(r.details.get("path", "")) for r in summary.results if r.error is None))
    _exit_if_failed(summary)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "json": "Print JSON", "wide": WIDE_HELP})
def backups(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
            wide: bool = False) -> None:
    """List a project's backups, newest first: time, PostgreSQL major, size, tables, path."""
    from provision import output

    project = _require_project(project)
    with _session(read_only=True) as reporter:
        found = _provisioner(env, reporter, offline=True).data.listing(project)
    if json:
        _print(output.to_json({"project": project, "env": env, "backups": [b.to_dict() for b in found]}))
        return
    _print(output.backups_table(found, wide=wide) if found else f"no backups of {project!r} yet")


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "from": "A dump's path, or latest (the newest backup)",
            "yes": "Confirm: the database is replaced (a safety backup is taken first)", "json": "Print JSON",
            "force": "Restore a dump without a manifest, or one of another project or env (a dump is code: "
                     "restore only dumps you trust)",
            "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def restore(c: Context, env: str | None = None, project: str | None = None, from_: str | None = None,
            yes: bool = False, json: bool = False, force: bool = False, lock_timeout: str | None = None,
            quiet: bool = False) -> None:
    """Restore a backup into a project: safety backup, pg_restore --clean --if-exists in one transaction, API
    schema reload, row counts checked against the manifest."""
    project = _require_project(project)
    if not from_:
        raise Exit("error: --from is required: a dump's path, or --from=latest", code=2)
    with _session(quiet=quiet) as reporter:
        result = _provisioner(env, reporter, lock_timeout=lock_timeout).data.restore(project, from_, yes=yes,
                                                                                    force=force)
    _data_result(result, json, f"restored {result.details['restored_from']}", quiet=quiet)


@task(iterable=["set_"], help={"env": ENV_HELP, "project": "The project to copy", "to": "The new project's name",
                               "to_env": "The env of the copy (default: the same)", "json": "Print JSON",
                               "set": "Override a key of the copy's env file, e.g. --set images.db=postgres:17",
                               "show_secrets": "Show the copy's db_url password", "lock_timeout": LOCK_HELP,
                               "quiet": QUIET_HELP})
def clone(c: Context, env: str | None = None, project: str | None = None, to: str | None = None,
          to_env: str | None = None, json: bool = False, set_: list[str] | None = None, show_secrets: bool = False,
          lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Copy a project into a new one (a preview environment): provision --to and restore a fresh backup of
    --project into it. The source is only read."""

    project = _require_project(project)
    if not to:
        raise Exit("error: --to is required: the new project's name, e.g. --to=shop-pr-42", code=2)
    options: dict[str, Any] = {}
    if lock_timeout is not None:
        options["lock_timeout"] = _number("lock-timeout", lock_timeout, integer=False)
    with _session(quiet=quiet) as reporter:
        result = _workspace().clone(_require_env(env), project, to=to, to_env=to_env,
                                          overrides=_overrides(set_), reporter=reporter, **options)
    db_url = result.db_url.reveal() if result.db_url and show_secrets else (result.db_url.masked if result.db_url else "")
    _data_result(result, json, f"API_URL={result.api_url}\nDB_URL={db_url}", show_secrets=show_secrets, quiet=quiet)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "yes": "Confirm (the project is stopped while it moves)",
            "finalize": "Delete the old data an upgrade kept", "rollback": "Return to the old data and image",
            "backup": "With --rollback: first back up what was written since the upgrade (default)",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def upgrade_db(c: Context, env: str | None = None, project: str | None = None, yes: bool = False,
               finalize: bool = False, rollback: bool = False, backup: bool = True, json: bool = False,
               lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Move a project's data to the PostgreSQL major of the env's db image: backup, new data directory,
    restore, row counts checked; the old data is kept until --finalize (--rollback returns to it)."""
    project = _require_project(project)
    if finalize and rollback:
        raise Exit("error: --finalize and --rollback exclude each other", code=2)
    with _session(quiet=quiet) as reporter:
        data = _provisioner(env, reporter, lock_timeout=lock_timeout).data
        if finalize:
            result = data.finalize(project, yes=yes)
        elif rollback:
            result = data.rollback(project, yes=yes, backup=backup)
        else:
            result = data.upgrade(project, yes=yes)
    _data_result(result, json, "\n".join(result.messages), quiet=quiet)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "secret": "db_password or jwt_secret", "yes": "Confirm",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def rotate(c: Context, env: str | None = None, project: str | None = None, secret: str | None = None,
           yes: bool = False, json: bool = False, lock_timeout: str | None = None, quiet: bool = False) -> None:
    """Replace a project's db_password (inside the running database, checked; the old one is put back on any
    failure) or jwt_secret (tokens signed with the old one stop working)."""
    project = _require_project(project)
    if not secret:
        raise Exit("error: --secret is required: db_password or jwt_secret", code=2)
    with _session(quiet=quiet) as reporter:
        result = _provisioner(env, reporter, lock_timeout=lock_timeout).data.rotate(project, secret, yes=yes)
    _data_result(result, json, "\n".join(result.messages), quiet=quiet)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "to_server": "A server of coolify.servers to move to",
            "yes": "Confirm (the project is stopped while its data is copied)",
            "finalize": "Delete, with its data, the old stack a move left stopped on the old server",
            "json": "Print JSON", "lock_timeout": LOCK_HELP, "quiet": QUIET_HELP})
def move(c: Context, env: str | None = None, project: str | None = None, to_server: str | None = None,
         yes: bool = False, finalize: bool = False, json: bool = False, lock_timeout: str | None = None,
         quiet: bool = False) -> None:
    """Move a project with its data to another Coolify server (coolify.servers): backup, set the old stack
    aside, create on the new server, restore, row counts checked; the old stack stays until --finalize."""
    project = _require_project(project)
    if finalize == bool(to_server):
        raise Exit("error: give --to-server=NAME to move, or --finalize to delete what a move left behind", code=2)
    with _session(quiet=quiet) as reporter:
        data = _provisioner(env, reporter, lock_timeout=lock_timeout).data
        result = data.move_finalize(project, yes=yes) if finalize else data.move(project, str(to_server), yes=yes)
    _data_result(result, json, "\n".join(result.messages), quiet=quiet)


@task(iterable=["set_"], help={"env": ENV_HELP, "project": PROJECT_HELP, "set": SET_HELP,
                               "show_secrets": "Interpolate the project's secrets instead of showing ${VAR} references"})
def render(c: Context, env: str | None = None, project: str | None = None, show_secrets: bool = False,
           set_: list[str] | None = None) -> None:
    """Print the compose file provision would apply; changes nothing and contacts no server (a Coolify env
    needs no credentials for it)."""
    project = _require_project(project)
    with _session(read_only=True) as reporter:
        from provision.render import reveal_secrets

        stack, prepared = _provisioner(env, reporter, sets=set_, offline=True).render(project)
        text = reveal_secrets(stack.text, prepared.secrets) if show_secrets else stack.text
    _print(text)


@task(name="list", help={"env": "Only this env (default: every env in envs/)", "json": "Print JSON",
                         "show_secrets": "Show db_url passwords instead of ***", "wide": WIDE_HELP + "; adds db_url"})
def list_(c: Context, env: str | None = None, json: bool = False, show_secrets: bool = False,
          wide: bool = False) -> None:
    """List projects: declared, provisioned or deployed, with status and URLs."""
    from provision import output

    with _session(read_only=True) as reporter:
        results = _workspace().list_projects(env, reporter=reporter)
    if json:
        _print(output.to_json({"projects": [r.to_dict(show_secrets=show_secrets) for r in results]}))
    else:
        _print(output.list_table(results, show_secrets=show_secrets, wide=wide))


@task(help={"env": ENV_HELP, "project": PROJECT_HELP,
            "delete_data": "Also delete the database volume (needs --yes); a pg_dump is written first",
            "yes": "Confirm --delete-data", "backup": "With --delete-data: write a pg_dump first (default)",
            "skip_hooks": HOOKS_HELP, "lock_timeout": LOCK_HELP, "json": "Print JSON", "quiet": QUIET_HELP,
            "no_color": NO_COLOR_HELP, "all": ALL_HELP + " (needs --yes; data is kept)", "parallel": PARALLEL_HELP,
            "keep_going": KEEP_GOING_HELP})
def destroy(c: Context, env: str | None = None, project: str | None = None, delete_data: bool = False,
            yes: bool = False, backup: bool = True, skip_hooks: bool = False, lock_timeout: str | None = None,
            json: bool = False, quiet: bool = False, no_color: bool = False, all: bool = False, parallel: str = "4",
            keep_going: bool = False) -> None:
    """Remove a project's containers and network (or every project's, --all --yes); its data volume is kept
    unless --delete-data --yes (one project at a time)."""
    from provision import output

    if all:
        if delete_data:
            raise Exit("error: --delete-data deletes one project's data at a time: it does not go with --all", code=2)
        if not yes:
            raise Exit("error: destroy --all removes the stack of every project in the env (their data is kept): "
                       "add --yes to confirm", code=2)
        _fleet(env, project, True, parallel, keep_going, json, quiet, no_color, lock_timeout, "destroy",
               lambda provisioner, name: provisioner.destroy(name), skip_hooks=skip_hooks)
        return
    project = _require_project(project)
    with _session(quiet=quiet, color=not no_color) as reporter:
        provisioner = _provisioner(env, reporter, lock_timeout=lock_timeout, skip_hooks=skip_hooks)
        result = provisioner.destroy(project, delete_data=delete_data, yes=yes, backup=backup)
    if json:
        _print(output.to_json(result.to_dict()))
    elif not quiet:
        _print(output.table([result], ("project", "status", "changed")))


@task(help={"env": "The env file to create when missing (default dev)",
            "backend": "Its backend: local (default) or coolify"})
def init(c: Context, env: str = "dev", backend: str = "local") -> None:
    """Make this directory a provision project, or complete it: an env file, an owner id in every env file,
    .gitignore entries, example hooks. Never overwrites a file; run twice, the second run changes nothing."""

    with _session(live=False):
        result = _workspace(for_init=True).init(env, backend=backend)
    for action in result.actions:
        _print(action)
    if not result.changed:
        _print("nothing to do: this is a provision project already")


@task(help={"env": ENV_HELP, "json": "Print JSON"})
def lock(c: Context, env: str | None = None, json: bool = False) -> None:
    """Show who holds the env's project locks on the backend (Coolify: every runner's changing runs)."""
    from provision import output

    with _session(read_only=True) as reporter:
        held = _provisioner(env, reporter).locks()
    if json:
        _print(output.to_json({"locks": [info.to_dict() for info in held]}))
    else:
        _print(output.locks_table(held))


@task(help={"env": ENV_HELP, "json": "Print the checks as JSON on stdout"})
def doctor(c: Context, env: str | None = None, json: bool = False) -> None:
    """Check an env's backend before a first run; exit 0 only when every check passes. Coolify: the API and its
    version, the token's abilities, the servers, and that Coolify accepts what provision sends (a throwaway
    project, lock, service and task, removed again). Local: the Docker Engine and Compose v2. Writes no state."""
    from provision import output

    with _session(read_only=True) as reporter:
        report = _provisioner(env, reporter).doctor()
    _print(output.to_json(report.to_dict()) if json else report.text())
    if not report.ok:
        raise Exit(code=1)


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "yes": "Confirm: break the lock even if its holder runs"})
def unlock(c: Context, env: str | None = None, project: str | None = None, yes: bool = False) -> None:
    """Break a project's stale lock on the backend (its holder died); needs --yes."""
    project = _require_project(project)
    with _session() as reporter:
        broken = _provisioner(env, reporter).unlock(project, yes=yes)
    _print(f"broke the lock of {project}" if broken else f"{project} holds no lock")


@task(help={"env": ENV_HELP, "project": PROJECT_HELP, "yes": "Confirm the take-over", "lock_timeout": LOCK_HELP,
            "json": "Print JSON"})
def adopt(c: Context, env: str | None = None, project: str | None = None, yes: bool = False,
          lock_timeout: str | None = None, json: bool = False) -> None:
    """Take over a same-named stack (Coolify service, local compose project) that carries no or another owner id;
    needs --yes."""
    from provision import output

    project = _require_project(project)
    with _session() as reporter:
        result = _provisioner(env, reporter, lock_timeout=lock_timeout).adopt(project, yes=yes)
    if json:
        _print(output.to_json(result.to_dict()))
    else:
        _print(output.table([result], ("project", "status", "changed")))


@task(help={"env": ENV_HELP, "project": "Only this project", "json": "Print JSON lines",
            "limit": "Last N records (default 50)", "wide": WIDE_HELP + "; adds host, config hash, detail"})
def history(c: Context, env: str | None = None, project: str | None = None, json: bool = False,
            limit: str = "50", wide: bool = False) -> None:
    """Show who changed what and when: every state-changing operation, from the state directory."""
    import json as json_module

    from provision import output

    count = int(_number("limit", limit, minimum=1))
    with _session(read_only=True):
        records = _workspace().history(_require_env(env), project)[-count:]
    if json:
        _print("\n".join(json_module.dumps(r, sort_keys=True) for r in records) or "")
    else:
        _print(output.history_table(records, wide=wide))


@task(help={"env": ENV_HELP, "host": "Address to listen on (default 127.0.0.1)", "port": "Port (default 8000)",
            "no_auth": "Run without PROVISION_API_TOKEN; allowed only on a loopback address",
            "workers": "How many creates run at once in the background (default 16)"})
def serve(c: Context, env: str | None = None, host: str = "127.0.0.1", port: str = "8000",
          no_auth: bool = False, workers: str = "16") -> None:
    """Run the HTTP API (POST /v1/projects, ...) over this env's backend; OpenAPI at /openapi.json, docs at /docs."""
    try:
        from provision.server import serve as run_server
    except ImportError as exc:
        if exc.name not in ("fastapi", "uvicorn", "starlette", "pydantic_core"):
            raise
        raise Exit(f"error: the HTTP server needs FastAPI and uvicorn ({exc.name} is not installed): "
                   f"pip install 'provision[server]'", code=2) from None

    listen_port = int(_number("port", port, minimum=1, maximum=65535))
    background = int(_number("workers", workers, minimum=1, maximum=256))
    with _session(live=False, hold_banners=False) as reporter:
        workspace = _workspace()
        token = workspace.api_token(_require_env(env))
        provisioner = _provisioner(env, reporter)
        run_server(provisioner, host=host, port=listen_port, token=token, no_auth=no_auth, workers=background)


namespace = Collection.from_module(sys.modules[__name__])
