"""The service layer: every operation on projects, the same on every backend, for every entry point.

`tasks.py`, the HTTP API (through `jobs.ProjectRequests`) and the tests call a `Provisioner`; it is the
only writer of project records, secrets files and history. Each changing operation reads (observe),
plans (pure), then applies, under the env+project lock, with the user's hooks around it. `changed` is
true exactly when the backend changed something, and only then is a history line written. A failed
update of a running project is rolled back to what ran before; a failed first create is removed again,
its data volume kept.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime

from . import compose_check, hints, history, interrupts, names, roles
from . import doctor as checkup
from .backends.base import Backend
from .clock import utc_now
from .config import EnvConfig
from .data import DONE, DataLifecycle, upgrade_facts
from .errors import (
    ConfigError,
    ConfirmationRequired,
    HealthTimeout,
    Interrupted,
    MajorUpgradeRequired,
    NotSupported,
    ProjectConflict,
    ProjectNotFound,
    ProvisionError,
    RolledBack,
    ServersFull,
    TemplateError,
    UndeclaredProject,
    with_note,
)
from .hooks import Hooks, hook_variables
from .model import (
    ABSENT,
    NO_ENDPOINTS,
    ControlVerb,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Prepared,
    Target,
    Usage,
)
from .planner import Action, Plan, plan, unified_diff
from .render import (
    DEFAULT_DB_VOLUME,
    RenderedStack,
    build_context,
    deployed_stack_hash,
    parse_compose,
    render_stack,
)
from .report import NullReporter, Reporter
from .results import PlanItem, ProjectResult, RunSummary, ServiceStatus
from .secrets import Secret, generate_missing
from .shell import ShellCommand
from .state import ProjectRecord, StateStore

DEFAULT_LOCK_TIMEOUT = 600.0
_VERB = {Action.CREATE: "created", Action.UPDATE: "updated", Action.DRIFT: "re-applied",
         Action.START: "started", Action.NOOP: "unchanged"}


OFFLINE_NOTE = " (offline: the backend was not asked)"


def _starting(exc: ProvisionError) -> bool:
    """True when `exc` says the db is not up yet (its container starting, PostgreSQL not accepting yet)."""
    text = str(exc)
    if re.search(r'database "[^"]*" does not exist', text):  # initdb has not made POSTGRES_DB yet
        return True
    return any(sign in text for sign in ("has no running db container", "no running db container yet",
                                         "could not connect", "starting up",
                                         "shutting down", "No such container", "is not running",
                                         "did not run the task", "No containers running",
                                         "was replaced while the task",
                                         "accepting connections", roles.WRONG_VOLUME))


def _mib(size: int | None) -> str:
    return f"{(size or 0) / 2**20:.0f} MiB"


def _offline_decision(stack: RenderedStack, record: ProjectRecord | None) -> tuple[str, str]:
    """Outcome and reason of an offline plan: the rendered stack against the record of the last apply. Pure."""
    if record is None or not record.live or record.config_hash is None:
        return "create", f"this machine has no record of it{OFFLINE_NOTE}"
    if record.config_hash == stack.config_hash:
        return "no-op", f"matches what this machine last applied{OFFLINE_NOTE}"
    changed = sorted(s for s, h in stack.service_hashes.items() if record.service_hashes.get(s) != h)
    what = f"service(s) {', '.join(changed)} differ" if changed else "the configuration differs"
    return "update", f"{what} from what this machine last applied{OFFLINE_NOTE}"


@dataclass
class Operation:
    """What one locked operation did, for its history line."""

    action: str
    changed: bool = False
    config_hash: str | None = None
    duration: float = 0.0


class Provisioner:
    """Runs operations for one env on one backend; owns the env's project records."""

    def __init__(
        self,
        config: EnvConfig,
        backend: Backend,
        store: StateStore,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        reporter: Reporter | None = None,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.backend = backend
        self.store = store
        self.lock_timeout = lock_timeout
        self.reporter = reporter or NullReporter()
        self.hooks = hooks or Hooks(config.root / "hooks")
        self.clock = clock
        self.sleep = sleep
        self._image_majors: dict[str, int] = {}  # image -> its PostgreSQL major, asked once per run
        self.data = DataLifecycle(self)  # backup, restore, upgrade-db, rotate

    @property
    def env(self) -> str:
        return self.config.name

    # --- targets and records -------------------------------------------------------------
    def target(self, project: str, *, server: str | None = None) -> Target:
        """The target for `project`; the name is validated (one rule, `config.project`) before anything else.
        `server`: where a new stack goes (placement decided it, or a move)."""
        spec = self.config.project(project)
        return Target(self.config, replace(spec, server=server) if server else spec)

    def record(self, project: str) -> ProjectRecord | None:
        return self.store.read_record(self.env, project)

    def known_target(self, project: str) -> Target:
        """Like `target`, but the project must be declared, recorded in state, or deployed."""
        target = self.target(project)
        if target.spec.declared or self.record(project) is not None:
            return target
        if project in self._observe_env():
            return target
        hint = names.did_you_mean(project, [p.name for p in self.config.projects])
        raise ProjectNotFound(
            f"project {project!r} is not declared in {self.config.relpath} and was never provisioned in env "
            f"{self.env!r}: {hint}check the name, or create it: "
            f"{hints.command('provision', env=self.env, project=project, create=True)}"
        )

    def _handle(self, record: ProjectRecord | None) -> Handle | None:
        return self.backend.load_handle(record.handle) if record is not None and record.handle else None

    def _known(self, observed: Observed, record: ProjectRecord | None) -> Handle | None:
        """The handle to act on: what was just observed, else what the record holds."""
        return observed.handle or self._handle(record)

    def _lock_and_observe(self, held: ExitStack, target: Target, observed: Observed,
                          record: ProjectRecord | None) -> Observed:
        """Take the backend lock every runner sees (released with `held`), then observe again under it."""
        held.enter_context(self.backend.lock(target, self._known(observed, record), timeout=self.lock_timeout))
        return self._observe(target, record)

    def _observe(self, target: Target, record: ProjectRecord | None) -> Observed:
        """What runs, with drift only for a project whose last provision finished (after an interrupted
        one, the difference is an update anyway) or that this machine has no record of."""
        observed = self.backend.observe(target, self._handle(record))
        return self._settle(observed, record)

    @staticmethod
    def _settle(observed: Observed, record: ProjectRecord | None) -> Observed:
        if observed.drift and record is not None and record.status != "provisioned":
            return replace(observed, drift=None)
        return observed

    def _prepare(self, target: Target, observed: Observed, *, create: bool) -> Prepared:
        """Secrets and ports; with `create`, newly generated secrets are saved (0600) before anything is deployed."""
        stored = self.store.read_secrets(target.env, target.project)
        prepared = self.backend.prepare(target, observed, stored, create=create)
        if create and prepared.new_secrets:
            self.store.write_secrets(target.env, target.project, prepared.secrets)
        return prepared

    def _write(self, record: ProjectRecord, previous: ProjectRecord | None) -> ProjectRecord:
        """Write `record` if it says something `previous` did not (timestamps aside); returns what is stored."""
        if previous is not None and record.evolve(updated_at=previous.updated_at) == previous:
            return previous
        record = record.evolve(updated_at=utc_now())
        self.store.write_record(record)
        return record

    def _set_status(self, target: Target, status: str) -> None:
        record = self.record(target.project)
        if record is not None:
            self._write(record.evolve(status=status), record)

    def _applied_record(self, target: Target, stack: RenderedStack, prepared: Prepared, status: str,
                        handle: Handle | None, previous: ProjectRecord | None) -> ProjectRecord:
        now = utc_now()
        base = previous or ProjectRecord(project=target.project, env=target.env, created_at=now)
        return base.evolve(
            backend=self.backend.name, status=status, config_hash=stack.config_hash,
            service_hashes=dict(stack.service_hashes),
            images={"db": target.images.db, "api": target.images.api},
            variables={k: target.spec.variables[k] for k in ("db_user", "db_name")},
            ports={"api": prepared.ports.api, "db": prepared.ports.db} if prepared.ports else base.ports,
            handle=handle.to_dict() if handle is not None else base.handle,
            created_at=base.created_at or now, destroyed_at=None,
        )

    def _render(self, target: Target, prepared: Prepared) -> RenderedStack:
        record = self.record(target.project)
        context = build_context(target.config, target.spec, backend=self.backend.name, ports=prepared.ports,
                                db_volume=(record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME)
        return render_stack(target.config.template_path, context, prepared.secrets)

    def render(self, project: str) -> tuple[RenderedStack, Prepared]:
        """Render without changing anything: existing secrets and ports, or a preview of new ones."""
        target = self.target(project)
        prepared = self._prepare(target, ABSENT, create=False)
        return self._render(target, prepared), prepared

    def doctor(self) -> checkup.Report:
        """`provision doctor`: the backend's checks before a first run (backends' `doctor`), given what provision
        would send for a throwaway project `provision-doctor-<hex>`: its rendered stack and the SQL every change
        of a stack runs (the roles, `_make_roles`, with throwaway passwords). Writes no state and takes no lock:
        the throwaway project is nobody's, and what the backend makes of it, it removes again."""
        target = self.target(checkup.throwaway_name())

        def task_sql() -> tuple[str, str | None]:
            wanted = roles.Roles.of(target.spec.variables)
            return roles.ensure_sql(wanted, str(target.spec.variables["db_name"]), generate_missing({})), wanted.admin

        probe = checkup.DoctorProbe(target, lambda: self.render(target.project)[0], task_sql)
        return checkup.Report(self.env, self.backend.name, tuple(self.backend.doctor(probe)))

    @contextmanager
    def _operation(self, target: Target, action: str, *, shared: bool = False) -> Iterator[Operation]:
        """Hold the lock, time the operation and, when it changed something or failed, write its history line.
        With `shared` (the data verbs), the backend's lock every runner sees is held for the whole operation too
        (Coolify: no deploy from another machine between its steps); the converge inside it re-enters it."""
        started = self.clock()
        op = Operation(action)
        result, detail = "ok", ""
        try:
            with self.store.lock(target.env, target.project, timeout=self.lock_timeout), \
                    self.backend.lock(target, self._handle(self.record(target.project)),
                                      timeout=self.lock_timeout) if shared else nullcontext():
                yield op
        except (Interrupted, KeyboardInterrupt):
            result, op.changed = "interrupted", True
            raise
        except RolledBack as exc:
            result, detail, op.changed = "rolled back", str(exc), True
            raise
        except ProvisionError as exc:
            if exc.exit_code == 2 and not op.changed:  # refused before any change (ConfirmationRequired, ...): no line
                raise
            result, detail, op.changed = "failed", str(exc), True
            raise
        finally:
            op.duration = self.clock() - started
            if op.changed:
                history.record(self.store.root, env=target.env, project=target.project, action=op.action,
                               config_hash=op.config_hash, result=result, duration=op.duration,
                               backend=self.backend.name, detail=detail)

    def _hook(self, name: str, target: Target, action: str, endpoints: Callable[[], Endpoints | None]) -> None:
        """Run hook `name` if the project root has it; `endpoints` is only asked for then."""
        if self.hooks.path(name) is None:
            return
        found = endpoints()
        variables = hook_variables(
            env=target.env, project=target.project, backend=self.backend.name, action=action,
            api_url=found.api_url if found else None,
            db_url=found.db_url.reveal() if found and found.db_url else None,
        )
        self.hooks.run(name, variables, reporter=self.reporter, project=target.project)

    # --- provision -----------------------------------------------------------------------
    def provision(self, project: str, *, create: bool = False, server: str | None = None) -> ProjectResult:
        """Create, update or start `project` until it answers; a no-op when it already matches.

        A project the env file does not declare, and that this state directory never provisioned, is made
        only with `create` (or `allow_undeclared: true` in the env file): a typo never creates a stack.
        Raises ProvisionError: UndeclaredProject (before anything is contacted), HealthTimeout (with a log
        tail) when the stack does not come up, RolledBack when an update failed and the previous version was
        restored. `server`: where a new stack goes, when placement decided it beforehand.
        """
        target = self.target(project, server=server)
        self._check_declared(target, create=create)
        self._preflight(target)
        interrupts.check()
        with self._operation(target, "provision") as op:
            endpoints, decision = self._converge(target, op)
        self.reporter.step(project, f"{_VERB[decision.action]}, running ({op.duration:.1f} s)")
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name, status="running",
            changed=decision.changes, action=decision.action.value, api_url=endpoints.api_url,
            db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope, declared=target.spec.declared,
            duration=op.duration,
        )

    def _converge(self, target: Target, op: Operation, *, major_change: bool = False) -> tuple[Endpoints, Plan]:
        """Under the state-directory lock: read, plan and, for a change, take the backend lock, plan again and
        apply, then record. A change of the db image to another PostgreSQL major is refused (MajorUpgradeRequired)
        unless `major_change` (upgrade-db, which has moved the stack to a new data volume)."""
        project = target.project
        with ExitStack() as held:
            pending = bool(self.store.read_pending(target.env, project))
            if pending:  # finishing or undoing a killed data verb writes (Coolify's copy of a secret, the role):
                # under the lock every runner sees, as the verb itself ran (re-entered when it is this run's)
                held.enter_context(self.backend.lock(target, self._handle(self.record(project)),
                                                     timeout=self.lock_timeout))
            db = self._observe(target, self.record(project)).services.get("db") if pending else None
            if db is not None and db.running:
                self.data.recover(target)  # a killed data verb: finish or undo it before anything else
                pending = False
            record, observed, prepared, stack, decision = self._read_and_plan(target, create=False)
            if not major_change:
                self._check_upgrade(target, record)  # even a no-op: the stack may be between two data volumes
            if decision.changes:
                compose_check.check(stack.text, template=target.config.template_path)  # before anything changes
                if not major_change:
                    self._check_major(target, record, observed)
                # only a change takes the lock every runner sees; then read and plan again under it
                held.enter_context(self.backend.lock(target, self._known(observed, record), timeout=self.lock_timeout))
                record, observed, prepared, stack, decision = self._read_and_plan(target, create=True)
            op.action, op.config_hash, op.changed = decision.action.value, stack.config_hash, decision.changes
            handle = self._known(observed, record)
            self._hook("pre-provision", target, decision.action.value,
                       lambda: self.backend.endpoints(target, handle, prepared) if observed.exists else None)
            if decision.changes:
                if observed.adopting:
                    self.reporter.step(project, f"adopting: {observed.adopting}")
                self.reporter.step(project, f"{decision.action.value}: {decision.reason}")
                record = self._write(self._applied_record(target, stack, prepared, "applying", None, record), record)
                endpoints, handle = self._apply(target, observed, stack, prepared, decision, record)
                record = self.record(project) or record  # _apply recorded the handle and the roles
            else:
                endpoints = self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout,
                                              settled=observed)
            if pending:  # a killed data verb, and the db was not running before: finish or undo it now
                self.data.recover(target)
            record = self._write(self._applied_record(target, stack, prepared, "provisioned", handle, record), record)
            if decision.changes and self.backend.holds_secrets:
                self.store.delete_secrets(target.env, project)  # the backend holds them from now on
            self._hook("post-provision", target, decision.action.value, lambda: endpoints)
        return endpoints, decision

    # --- PostgreSQL majors ---------------------------------------------------------------------
    def majors(self, target: Target, record: ProjectRecord | None, observed: Observed | None = None, *,
               strict: bool = False) -> tuple[int, int] | None:
        """(data directory's major, db image's major) when the env's db image differs from the one last
        applied and the project has data; None when nothing can differ or (unless `strict`: NotSupported) the
        backend cannot tell. `observed`: what runs, when known (no stack and no kept data: no data to ask)."""
        image = target.images.db
        previous = (record.images.get("db") if record is not None else None) or None
        if previous == image or (observed is not None and not observed.exists and observed.kept_data is None):
            return None
        if strict:
            return self._majors(target, previous or image, image)
        try:
            return self._majors(target, previous or image, image)
        except NotSupported:
            return None

    def _majors(self, target: Target, previous: str, image: str) -> tuple[int, int] | None:
        data = self.backend.data_major(target, previous)
        if data is None:
            return None
        if image not in self._image_majors:
            self._image_majors[image] = self.backend.image_major(image)
        return data, self._image_majors[image]

    def _check_upgrade(self, target: Target, record: ProjectRecord | None) -> None:
        """Refuse to apply or serve a project whose upgrade-db (or its rollback) a run left half done: its stack
        may be between its old and its new data volume. The error names the command that finishes or undoes it."""
        unfinished = self.data.unfinished_upgrade(target, record)
        if unfinished is not None:
            raise ProjectConflict(unfinished)

    def _check_major(self, target: Target, record: ProjectRecord | None, observed: Observed) -> None:
        found = self.majors(target, record, observed)
        if found is not None and found[0] != found[1]:
            data, image = found
            back = self._back_to_kept(target, record, image)
            if back is not None:
                raise MajorUpgradeRequired(f"{target.project!r} in env {target.env!r}: its data directory is "
                                           f"PostgreSQL {data} and {target.images.db} is PostgreSQL {image}, which "
                                           f"cannot start on it. Nothing was changed. {back}")
            raise MajorUpgradeRequired(
                f"{target.project!r} in env {target.env!r}: its data directory is PostgreSQL {data} and "
                f"{target.images.db} is PostgreSQL {image}, which cannot start on it. Nothing was changed. "
                f"Run {hints.command('upgrade-db', '--yes', env=target.env, project=target.project)} (dump, new data "
                f"directory, restore, row counts checked; the old data is kept until --finalize)")

    def _back_to_kept(self, target: Target, record: ProjectRecord | None, image_major: int) -> str | None:
        """When the db image is the major an upgrade kept the data of (the env file set back to the old image):
        the sentence proposing `upgrade-db --rollback` (not an upgrade-db, which would be a downgrade); else None."""
        kept = upgrade_facts(record)
        if kept is None or kept.get("state") != DONE or kept.get("major") != image_major:
            return None
        command = hints.command("upgrade-db", "--rollback", "--yes", env=target.env, project=target.project)
        return (f"Its PostgreSQL {image_major} data is the one upgrade-db kept (volume {kept.get('volume')}): run "
                f"{command} to return to it, or set {target.spec.key('images.db')} in "
                f"{self.config.relpath} back to {kept.get('new_image')}")

    def _read_and_plan(self, target: Target, *, create: bool
                       ) -> tuple[ProjectRecord | None, Observed, Prepared, RenderedStack, Plan]:
        """Read (record, observation, secrets and ports: missing ones made only with `create`), render, plan."""
        record = self.record(target.project)
        observed = self._observe(target, record)
        return (record, observed, *self._plan_for(target, observed, create=create))

    def _plan_for(self, target: Target, observed: Observed, *, create: bool
                  ) -> tuple[Prepared, RenderedStack, Plan]:
        """Secrets and ports, the rendered stack, and what it takes to make `observed` match it."""
        prepared = self._prepare(target, observed, create=create)
        stack = self._render(target, prepared)
        return prepared, stack, plan(stack, observed)

    def _apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
               decision: Plan, record: ProjectRecord) -> tuple[Endpoints, Handle]:
        """Apply and wait; on failure roll an update of a running stack back, or remove a failed create."""
        rollback_to = observed.applied_text if decision.action in (Action.UPDATE, Action.DRIFT) and observed.running else None
        roles_sql = roles.ensure_sql(roles.Roles.of(target.spec.variables), str(target.spec.variables["db_name"]),
                                     prepared.secrets, record.db_volume or DEFAULT_DB_VOLUME)
        prepared = replace(prepared, roles_sql=Secret(roles_sql))  # the backend may hand it to the db container
        try:
            handle = self.backend.apply(target, observed, stack, prepared, decision)
            record = self._write(record.evolve(handle=handle.to_dict()), record)
            self._ensure_roles(target, prepared, record, roles_sql, fresh=decision.action is Action.CREATE)
            self.reporter.step(target.project, "waiting until it is healthy and answers")
            return self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout), handle
        except (Interrupted, KeyboardInterrupt):
            self._set_status(target, "interrupted")
            raise
        except ProvisionError as exc:
            if rollback_to is not None:
                raise self._roll_back(target, prepared, rollback_to, exc) from exc
            if decision.action is Action.CREATE:
                self.reporter.step(target.project, "removing the stack that failed to start (data is kept)")
                try:
                    self.backend.destroy(target, self._observe(target, self.record(target.project)),
                                         delete_data=False, prepared=prepared)
                except ProvisionError as cleanup:
                    self._set_status(target, "failed")
                    raise with_note(exc, f"(removing the failed stack failed too: {cleanup})") from exc
                self._set_status(target, "failed")
                raise with_note(exc, "The new stack was removed; its data volume and credentials are kept.") from exc
            self._set_status(target, "failed")
            raise

    def _ensure_roles(self, target: Target, prepared: Prepared, record: ProjectRecord, roles_sql: str, *,
                      fresh: bool) -> None:
        """Make the database's roles (`roles_sql`: roles.ensure_sql for this stack) as the bootstrap superuser
        over the db container's socket, for a new stack (`fresh`) or when what they depend on changed (names,
        passwords, data volume: the record's digest); a stack made before them (its owner was that superuser) is migrated. Waits for a db that is
        still starting, up to health.timeout; any other failure is raised at once."""
        wanted = roles.Roles.of(target.spec.variables)
        dbname = str(target.spec.variables["db_name"])
        digest = roles.digest(wanted, dbname, prepared.secrets, record.db_volume)
        if not fresh and record.roles == digest:
            return
        deadline = self.clock() + self.config.health.timeout
        delay = 0.25
        while True:
            observed = self._observe(target, record)
            db = observed.services.get("db")
            try:
                if db is None or not db.running:  # a look costs less than a task that finds no container
                    raise ProvisionError(f"{target.project!r} has no running db container yet")
                self._make_roles(target, observed, wanted, dbname, prepared, roles_sql,
                                 record.db_volume or DEFAULT_DB_VOLUME)
                break
            except ProvisionError as exc:
                if not _starting(exc) or self.clock() >= deadline:
                    raise with_note(exc, f"The roles of {target.project!r} could not be made (docs/security.md); "
                                         f"nothing was handed out.") from exc
            interrupts.check()
            self.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._write(record.evolve(roles=digest), record)

    def _make_roles(self, target: Target, observed: Observed, wanted: roles.Roles, dbname: str,
                    prepared: Prepared, roles_sql: str, volume: str) -> None:
        """One psql run of `roles_sql` as the admin; where the admin does not exist (a stack made before the
        roles, whose bootstrap superuser is the owner), the migration as the owner instead."""
        try:
            self.backend.run_sql(target, observed, roles_sql, user=wanted.admin, purpose="roles")
            return
        except ProvisionError as exc:
            if f'role "{wanted.admin}" does not exist' not in str(exc):
                raise
        self.reporter.step(target.project, f"moving the owner role {wanted.owner!r} off the superuser "
                                           f"(docs/security.md)")
        try:
            self.backend.run_sql(target, observed, roles.migration_sql(wanted, dbname, prepared.secrets, volume),
                                 user=wanted.owner, purpose="roles-migration")
        except ProvisionError as exc:
            if f'role "{wanted.owner}" does not exist' not in str(exc):
                raise
            raise ProvisionError(f"the database of {target.project!r} has neither the role {wanted.admin!r} nor "
                                 f"db_user {wanted.owner!r} as its superuser: set variables.db_user in "
                                 f"{self.config.relpath} to the name it was made with") from exc

    def _roll_back(self, target: Target, prepared: Prepared, previous: str, failure: ProvisionError) -> ProvisionError:
        """Re-apply the compose text that ran before; returns the error to raise (the failure's log tail kept)."""
        self.reporter.step(target.project, "the new version failed: rolling back to the previous one")
        try:
            stack = RenderedStack(
                project=target.project, env=target.env, compose_project="", text=previous, service_hashes={},
                config_hash=deployed_stack_hash(previous, prepared.secrets), secret_names=(), document={},
            )
            now = self._observe(target, self.record(target.project))  # what the failed update left running
            handle = self.backend.apply(target, now, stack, prepared, Plan(Action.UPDATE, "rollback"))
            self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout)
        except (Interrupted, KeyboardInterrupt):
            raise
        except ProvisionError as exc:
            self._set_status(target, "failed")
            return with_note(failure, f"Rolling back failed too: {exc}")
        record = self.record(target.project)
        if record is not None:
            self._write(record.evolve(status="rolled back", handle=handle.to_dict()), record)
        self.reporter.step(target.project, "rolled back: the previous version is serving again")
        summary = (f"{target.project}: the new version failed and was rolled back; the previous version is "
                   f"serving again (data untouched).")
        if isinstance(failure, HealthTimeout):
            return RolledBack(f"{summary}\n{failure.message}", logs=failure.logs)
        return RolledBack(f"{summary}\n{failure}")

    def _preflight(self, target: Target) -> None:
        """Render the project's stack (a template error surfaces here) and let the backend refuse what it could not
        run (an image it cannot get, a limit over the host), before any state is written or anything created."""
        stack, _ = self.render(target.project)
        if not self.store.paths(target.env, target.project).dir.exists():  # a new project's template that is no
            # valid Compose is refused before its state directory, lock file and history line exist (and before
            # the backend looks for images: what is wrong in the file is said first)
            compose_check.check(stack.text, template=target.config.template_path)
        self.backend.preflight(target, stack)

    def _check_declared(self, target: Target, *, create: bool) -> None:
        if create or target.spec.declared or self.config.allow_undeclared or self.record(target.project) is not None:
            return
        declared = [p.name for p in self.config.projects]
        hint = names.did_you_mean(target.project, declared)
        raise UndeclaredProject(
            f"project {target.project!r} is not declared in {self.config.relpath}: {hint}to create it anyway pass "
            f"--create (or set allow_undeclared: true in {self.config.relpath}); declared: "
            f"{', '.join(declared) or 'none'}"
        )

    def provision_many(self, projects: list[str], *, keep_going: bool = False, parallel: int = 1,
                       create: bool = False) -> RunSummary:
        """Provision several projects, up to `parallel` at a time, results in the given order.

        Fail-fast by default: after a failure no further project is started (those already
        running finish) and the rest are reported as skipped; `keep_going` runs them all.
        An interrupt stops every worker and is re-raised.
        """
        for project in projects:  # a bad name, a typo, a broken template, an image the backend cannot get or a limit
            # over the host stops the run before anything starts
            self._check_declared(self.target(project), create=create)
            self._preflight(self.target(project))
        # every new project gets its server before any is created: when one fits nowhere, nothing is created
        placed = self._place_new(projects)
        return self.run_many(projects, lambda project: self.provision(project, create=create, server=placed.get(project)),
                             action="provision", keep_going=keep_going, parallel=parallel)

    def _place_new(self, projects: list[str], deployed: Mapping[str, Observed] | None = None) -> Mapping[str, str]:
        """{project: server} for those of `projects` with no stack yet, where the backend spreads stacks over
        servers (one observation of the env, then the backend's placement); ServersFull when one fits nowhere."""
        if not self.backend.spreads_stacks:
            return {}
        deployed = self._observe_env() if deployed is None else deployed
        new = [self.config.project(p) for p in projects if not (deployed.get(p) or ABSENT).exists]
        return self.backend.place(self.config, new)

    def run_many(self, projects: list[str], operation: Callable[[str], ProjectResult], *, action: str,
                 keep_going: bool = False, parallel: int = 1) -> RunSummary:
        """`operation` on each project, up to `parallel` at a time, results in the given order. Fail-fast by
        default: after a failure no further project is started (those already running finish) and the rest
        are reported as skipped; `keep_going` runs them all. An interrupt stops every worker and is re-raised."""
        results: dict[str, ProjectResult] = {}
        stop = threading.Event()

        def run(project: str) -> None:
            if stop.is_set():
                results[project] = self._skipped(project, action)
                return
            started = self.clock()
            try:
                results[project] = operation(project)
            except (Interrupted, KeyboardInterrupt):
                raise
            except ProvisionError as exc:
                results[project] = self._failed(project, action, exc, self.clock() - started)
                if not keep_going:
                    stop.set()

        if parallel <= 1:
            for project in projects:
                run(project)
        else:
            with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="provision") as pool:
                futures = [pool.submit(run, project) for project in projects]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    interrupts.CANCELLED.set()  # the workers' subprocesses and waits stop now
                    stop.set()
                    raise
        return RunSummary(self.env, self.backend.name, tuple(results[p] for p in projects))

    def _skipped(self, project: str, action: str = "provision") -> ProjectResult:
        return ProjectResult(
            project=project, env=self.env, backend=self.backend.name, status="skipped", changed=False,
            action=action, error="not started: an earlier project failed (use --keep-going to run every project)",
        )

    def _failed(self, project: str, action: str, exc: ProvisionError, duration: float = 0.0) -> ProjectResult:
        """A failed project's result; after a rollback, with the URLs of the version that serves again."""
        status = "rolled back" if isinstance(exc, RolledBack) else "failed"
        self.reporter.step(project, f"{status}: {str(exc).splitlines()[0]}")
        served = self._serving(project) if isinstance(exc, RolledBack) else None
        return ProjectResult(
            project=project, env=self.env, backend=self.backend.name, status=status,
            changed=isinstance(exc, RolledBack), action=action, error=str(exc), error_code=exc.exit_code,
            duration=duration,
            api_url=served.api_url if served else None, db_url=served.db_url if served else None,
            db_url_scope=served.db_url_scope if served else "host", server=served.server if served else None,
        )

    def _serving(self, project: str) -> ProjectResult | None:
        """What serves `project` now, read again (None when that read fails: the failure is reported already)."""
        try:
            target = self.known_target(project)
            record = self.record(project)
            return self.status_of(target, self._observe(target, record), record)
        except ProvisionError:
            return None

    # --- plan ------------------------------------------------------------------------------
    def plan(self, project: str | None = None) -> list[PlanItem]:
        """What provision would do, per project, including drift and orphans. Changes nothing."""
        if project is not None:
            target = self.target(project)
            observed = self._observe(target, self.record(project))
            return self._with_placement([self._plan_one(target, observed)], {project: observed})
        deployed = self._observe_env(full=True)
        items = [self._plan_one(self.target(p.name), deployed.get(p.name) or ABSENT) for p in self.config.projects]
        items = self._with_placement(items, deployed)
        for name in self._orphans(deployed):
            items.append(PlanItem(name, self.env, self.backend.name, "orphan",
                                  "deployed in this env but no longer declared (provision --prune --yes removes it)",
                                  declared=False))
        return items

    def _with_placement(self, items: list[PlanItem], deployed: Mapping[str, Observed]) -> list[PlanItem]:
        """Each new project's reason names the server it would go to (or why none can take it)."""
        creates = [i.project for i in items if i.outcome == "create"]
        if not creates or not self.backend.spreads_stacks:
            return items
        try:
            where = self._place_new(creates, deployed)
        except ServersFull as exc:
            return [replace(i, reason=f"{i.reason}; but {exc}") if i.outcome == "create" else i for i in items]
        return [replace(i, reason=f"{i.reason}, on server {where[i.project]}") if i.project in where else i
                for i in items]

    def plan_offline(self, project: str | None = None) -> list[PlanItem]:
        """What `plan` can say without asking the backend (`plan --offline`: CI without credentials):
        every project is validated and rendered, then compared with what this machine last applied
        (its record's configuration hash). Changes nothing and contacts no server; each reason says so."""
        records = self._records()
        names_ = [project] if project is not None else [p.name for p in self.config.projects]
        items = []
        for name in names_:
            target = self.target(name)
            stack, _ = self.render(name)
            compose_check.check(stack.text, template=self.config.template_path)
            items.append(PlanItem(name, self.env, self.backend.name, *_offline_decision(stack, records.get(name)),
                                  declared=target.spec.declared))
        if project is None:
            declared = set(names_)
            for name, record in sorted(records.items()):
                if name not in declared and record is not None and record.live:
                    items.append(PlanItem(name, self.env, self.backend.name, "orphan",
                                          f"recorded here but no longer declared{OFFLINE_NOTE}", declared=False))
        return items

    def _records(self) -> dict[str, ProjectRecord | None]:
        """Every project of the env with a record, and its record."""
        return {p: self.record(p) for _, p in self.store.known_projects(self.env)}

    def _observe_env(self, *, full: bool = False,
                     records: Mapping[str, ProjectRecord | None] | None = None) -> dict[str, Observed]:
        """Every project deployed in the env (one backend query), each given the handle its record holds."""
        records = self._records() if records is None else records
        known = {p: h for p, r in records.items() if (h := self._handle(r)) is not None}
        found = self.backend.observe_env(self.config, known, full=full)
        return {name: self._settle(observed, records.get(name)) for name, observed in found.items()}

    def _plan_one(self, target: Target, observed: Observed) -> PlanItem:
        if observed.foreign:
            return PlanItem(target.project, target.env, self.backend.name, "taken", observed.foreign,
                            declared=target.spec.declared)
        _, stack, decision = self._plan_for(target, observed, create=False)
        if decision.changes:
            majors = self.majors(target, self.record(target.project), observed)
            if majors is not None and majors[0] != majors[1]:
                back = self._back_to_kept(target, self.record(target.project), majors[1])
                if back is not None:
                    return PlanItem(target.project, target.env, self.backend.name, "upgrade-db",
                                    f"upgrade-db --rollback {majors[0]} → {majors[1]}: provision refuses it. {back}",
                                    declared=target.spec.declared)
                return PlanItem(target.project, target.env, self.backend.name, "upgrade-db",
                                f"upgrade-db {majors[0]} → {majors[1]}: provision refuses it; run "
                                f"{hints.command('upgrade-db', '--yes', env=target.env, project=target.project)}", declared=target.spec.declared)
        diff = ""
        if decision.outcome in ("update", "drift") and observed.applied_text:
            diff = unified_diff(observed.applied_text, stack.text, f"deployed/{target.project}", f"rendered/{target.project}")
        reason = f"{decision.reason}; {observed.adopting}" if observed.adopting and decision.changes else decision.reason
        return PlanItem(target.project, target.env, self.backend.name, decision.outcome, reason, diff,
                        declared=target.spec.declared)

    def prune(self, *, yes: bool = False) -> list[ProjectResult]:
        """Destroy (keeping data) every project deployed in the env but no longer declared."""
        orphans = self._orphans()
        if orphans and not yes:
            raise ConfirmationRequired(f"--prune would destroy {', '.join(orphans)} (data kept): add --yes to confirm")
        return [self.destroy(name) for name in orphans]

    def _orphans(self, deployed: Mapping[str, Observed] | None = None) -> list[str]:
        """Undeclared projects with a running or stopped stack (data kept by a destroy does not count)."""
        declared = {p.name for p in self.config.projects}
        deployed = self._observe_env() if deployed is None else deployed
        return sorted(name for name, observed in deployed.items() if observed.exists and name not in declared)

    # --- lifecycle -----------------------------------------------------------------------
    def control(self, project: str, verb: ControlVerb) -> ProjectResult:
        """stop / start / restart; start and restart wait until the stack answers again.
        Stop of a stopped stack and start of a running one change nothing and report changed=False."""
        target = self.known_target(project)
        with self._operation(target, verb) as op:
            record = self.record(project)
            if record is not None and record.status == "destroyed":
                raise ProjectConflict(
                    f"{project!r} in env {target.env!r} was destroyed (its data volume was kept): "
                    f"run {hints.command('provision', env=target.env, project=project)} to bring it back, not {verb}"
                )
            observed = self._observe(target, record)
            nothing_to_do = (verb == "stop" and not observed.any_running) or (verb == "start" and observed.ready)
            with ExitStack() as held:
                if not nothing_to_do:
                    observed = self._lock_and_observe(held, target, observed, record)
                prepared = self._prepare(target, observed, create=False)
                op.changed = self.backend.control(target, observed, verb, prepared=prepared)
                handle = self._known(observed, record)
                if verb == "stop":
                    endpoints = self.backend.endpoints(target, handle, prepared)
                    status = "stopped"
                else:
                    endpoints = self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout,
                                                  settled=None if op.changed else observed)
                    status = "running"
        note_text = {"stop": ("stopped", "already stopped"), "start": ("started", "already running"),
                     "restart": ("restarted", "restarted")}[verb]
        self.reporter.step(project, note_text[0] if op.changed else note_text[1])
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name, status=status, changed=op.changed,
            action=verb, api_url=endpoints.api_url, db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope,
            declared=target.spec.declared, duration=op.duration,
        )

    def destroy(self, project: str, *, delete_data: bool = False, yes: bool = False, backup: bool = True) -> ProjectResult:
        """Remove the project's stack. Keeps the data volume and its credentials unless `delete_data`.

        With `delete_data` (which needs `yes`), writes a pg_dump to the state directory first unless
        `backup` is False. Destroying what is already gone changes nothing and reports changed=False.
        """
        if delete_data and not yes:
            raise ConfirmationRequired(
                f"--delete-data permanently deletes the database of {project!r} in env {self.env!r}: "
                f"add --yes to confirm (a pg_dump is written to the state directory first unless --no-backup)"
            )
        target = self.known_target(project)
        action = "destroy --delete-data" if delete_data else "destroy"
        # deleting data is a data verb: the backup and the delete under the lock every runner sees, throughout
        with self._operation(target, action, shared=delete_data) as op:
            record = self.record(project)
            observed = self._observe(target, record)
            prepared = self._prepare(target, observed, create=False)
            handle = self._known(observed, record)
            self._hook("pre-destroy", target, action,
                       lambda: self.backend.endpoints(target, handle, prepared) if observed.exists else None)
            dumped = self.data.before_delete(target, observed, op) if delete_data and backup else None
            with ExitStack() as held:
                if observed.exists or delete_data:
                    observed = self._lock_and_observe(held, target, observed, record)
                done = self.backend.destroy(target, observed, delete_data=delete_data, prepared=prepared)
            messages = ([f"wrote a pg_dump of the database to {dumped.path}"] if dumped else []) + list(done.messages)
            op.changed = done.changed or dumped is not None
            if done.kept_secrets:
                self.store.write_secrets(target.env, project, done.kept_secrets)
            if delete_data:
                paths = self.store.paths(target.env, project)
                if record is not None or paths.secrets.is_file():
                    op.changed = True
                    messages.append("deleted the project's secrets and records (backups stay)")
                self.store.delete_secrets(target.env, project)
                self.store.delete_record(target.env, project)
            elif record is not None and (record.status != "destroyed" or done.changed):
                self._write(record.evolve(status="destroyed", destroyed_at=utc_now(), handle={}), record)
            if op.changed:
                self._hook("post-destroy", target, action, lambda: None)
        if not delete_data:
            messages.append(f"{hints.command('destroy', '--delete-data', '--yes', env=target.env, project=project)} "
                            f"deletes the data")
        if not op.changed:
            messages.insert(0, "nothing to destroy: no stack is deployed")
        for line in messages:
            self.reporter.step(project, line)
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name,
            status="deleted" if delete_data else "destroyed", changed=op.changed,
            action="destroy", declared=target.spec.declared, messages=tuple(messages), duration=op.duration,
        )

    def adopt(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Take over a same-named stack that this env's owner id does not mark (made before owner ids, by hand,
        or by another checkout); needs `yes`. Adopting what is ours already changes nothing."""
        if not yes:
            raise ConfirmationRequired(
                f"adopt makes {project!r} in env {self.env!r} this repository's: provision will then update, prune "
                f"and destroy it as its own. Add --yes to confirm"
            )
        target = self.target(project)
        with self._operation(target, "adopt") as op, \
                self.backend.lock(target, self._handle(self.record(project)), timeout=self.lock_timeout):
            messages = self.backend.adopt(target)
            op.changed = bool(messages)
        for line in messages or ("nothing to adopt: it is this env's already",):
            self.reporter.step(project, line)
        return ProjectResult(project=project, env=target.env, backend=self.backend.name, status="adopted",
                             changed=op.changed, action="adopt", declared=target.spec.declared,
                             messages=tuple(messages), duration=op.duration)

    def locks(self) -> list[LockInfo]:
        """The env's project locks held on the backend (where every runner sees them)."""
        return self.backend.locks(self.config)

    def unlock(self, project: str, *, yes: bool = False) -> bool:
        """Break the project's lock on the backend (its holder died); needs `yes`. True if there was one."""
        if not yes:
            raise ConfirmationRequired(
                f"unlock breaks the lock of {project!r} in env {self.env!r}: if its holder still runs, two runs may "
                f"then change the project at once. Check {hints.command('lock', env=self.env)} first, then add --yes"
            )
        return self.backend.unlock(self.target(project))

    # --- reads ---------------------------------------------------------------------------
    def status(self, project: str | None = None, *, usage: bool = True) -> RunSummary:
        """Status of one project, or of every declared, recorded or deployed project in the env; with `usage`,
        what each running stack costs (one sweep of the backend for all of them)."""
        if project is not None:
            target = self.known_target(project)
            record = self.record(project)
            observed = self._observe(target, record)
            costs = self.backend.usage(self.config, [project]) if usage and observed.exists else {}
            result = self.status_of(target, observed, record, costs.get(project))
            return RunSummary(self.env, self.backend.name, (result,))
        records = self._records()
        with ThreadPoolExecutor(max_workers=1) as pool:
            # what every stack of the env costs is read (its CPU sampled over a moment) while the env is observed
            asked = pool.submit(self.backend.usage, self.config, None) if usage else None
            observed_all = self._observe_env(records=records)
            costs = asked.result() if asked is not None else {}
        results = [self.status_of(self.target(name), observed_all.get(name) or ABSENT, records.get(name), costs.get(name))
                   for name in self.project_names(observed_all, recorded=records)]
        return RunSummary(self.env, self.backend.name, tuple(results))

    def status_of(self, target: Target, observed: Observed, record: ProjectRecord | None,
                  usage: Mapping[str, Usage] | None = None) -> ProjectResult:
        """One project's status from an observation and its record (None: it has none), with what its
        containers cost when `usage` is given."""
        prepared = self._prepare(target, observed, create=False)
        endpoints = (self.backend.endpoints(target, self._known(observed, record), prepared)
                     if (observed.exists or record) and not observed.foreign else NO_ENDPOINTS)
        status = observed.summary(expected=_applied_services(observed))
        if observed.foreign:
            status = "taken"
        elif status == "absent":
            status = "destroyed" if record is not None and record.status == "destroyed" else "not provisioned"
        usage = usage or {}
        oom = sorted(name for name, u in usage.items() if u.oom_killed)
        messages = [f"drift: {observed.drift}"] if observed.drift else []
        messages += [observed.foreign] if observed.foreign else []
        messages += [f"{name}: OOM-killed (over its memory limit"
                     + (f" of {_mib(usage[name].memory_limit_bytes)}" if usage[name].memory_limit_bytes else "")
                     + "): raise resources." + name + ".memory" for name in oom]
        return ProjectResult(
            project=target.project, env=target.env, backend=self.backend.name, status=status, changed=False,
            action="status", api_url=endpoints.api_url, db_url=endpoints.db_url,
            db_url_scope=endpoints.db_url_scope, declared=target.spec.declared,
            services=tuple(ServiceStatus(k, v.state, v.health, usage.get(k)) for k, v in sorted(observed.services.items())),
            messages=tuple(messages), server=observed.server,
        )

    def outputs(self, project: str) -> ProjectResult:
        """api_url and db_url of a provisioned project: ProjectNotFound if it never was, ProjectConflict (exit 1,
        no URLs) when it was destroyed, as its URLs answer no more."""
        target = self.known_target(project)
        record = self.record(project)
        if record is not None and record.status == "destroyed":
            raise ProjectConflict(
                f"{project!r} in env {self.env!r} was destroyed (its data volume was kept), so it has no URLs: "
                f"{hints.command('provision', env=self.env, project=project)} brings it back")
        result = self.status_of(target, self._observe(target, record), record)
        if result.api_url is None and result.db_url is None:
            raise ProjectNotFound(
                f"{project!r} has not been provisioned in env {self.env!r}: "
                f"run {hints.command('provision', env=self.env, project=project, create=not target.spec.declared)} "
                f"first"
            )
        return result

    def logs(self, project: str, *, service: str | None = None, tail: int = 100, since: datetime | None = None,
             follow: bool = False) -> Iterator[str]:
        """The project's container logs (secrets redacted) as chunks of text; with `follow`, endless until
        the reader stops (the caller's Ctrl-C)."""
        target = self.known_target(project)
        observed = self._observe(target, self.record(project))
        services = observed.services or self.render(project)[0].services
        if service is not None and service not in services:
            raise ConfigError(f"--service {service!r}: {project!r} has {', '.join(sorted(services))}")
        return self.backend.logs(target, observed, service=service, tail=tail, since=since, follow=follow)

    def psql(self, project: str, *, sql: str | None = None, via: str = "auto", tty: bool = False) -> ShellCommand:
        """The command that opens psql on the project's database: this machine's psql when there is one and the
        database is published to it (`via` auto or host), else psql inside the db container (auto or container).
        The password travels as PGPASSWORD in the child's environment. `sql`: run it and exit (psql --command)."""
        if via not in ("auto", "host", "container"):
            raise ConfigError(f"--via {via!r}: use auto, host or container")
        target = self.known_target(project)
        observed, prepared = self.data.running(target)
        options = ["--dbname", str(target.spec.variables["db_name"]), *(["--command", sql] if sql is not None else [])]
        if via != "container":
            client = shutil.which("psql")
            host = self.data.host_access(target, observed, prepared)
            if client is not None and host is not None:
                return ShellCommand(tuple(host.argv("psql", *options)), host.environment, via="this machine's psql")
            if via == "host":
                raise ProvisionError("this machine has no psql (install postgresql-client)" if client is None else
                                     f"the db of {project!r} is not published to this machine "
                                     f"(set variables.db_public_port), so only --via=container can reach it")
        inside = self.data.container_access(target, prepared, tty=tty)
        return ShellCommand(tuple(inside.argv("psql", *options)), inside.environment, via="psql in the db container")

    def project_names(self, deployed: Mapping[str, Observed] | None = None, *,
                      recorded: Mapping[str, ProjectRecord | None] | None = None) -> list[str]:
        """Declared projects first (in file order), then recorded or deployed undeclared ones."""
        declared = [p.name for p in self.config.projects]
        extra = set(self._records() if recorded is None else recorded)
        extra |= set(self._observe_env() if deployed is None else deployed)
        return declared + sorted(extra - set(declared))

    def deployed(self) -> list[str]:
        """The env's projects that have a stack (running or stopped), declared ones first: what `--all` acts on
        (one backend query)."""
        found = self._observe_env()
        return [name for name in self.project_names(found) if (seen := found.get(name)) is not None and seen.exists]

    # --- names taken, for requests that create projects --------------------------------------
    def is_taken(self, project: str) -> bool:
        """A live record or something deployed under this name. A destroyed or failed project, or one
        only declared in the env file, may be created (again): its kept data is reattached."""
        record = self.record(project)
        if record is not None and record.live:
            return True
        return self.backend.observe(self.target(project), self._handle(record)).exists

    def mark_requested(self, project: str, *, via: str) -> None:
        """Record that a request to create `project` was accepted (a destroyed project keeps its records)."""
        previous = self.record(project)
        base = previous or ProjectRecord(project=project, env=self.env)
        self._write(base.evolve(status="requested", created_via=via, requested_at=utc_now()), previous)

    def requested(self, *, via: str) -> list[str]:
        """Projects whose creation was requested through `via` and not finished (a killed server's work)."""
        unfinished = []
        for project, record in self._records().items():
            if record is not None and record.created_via == via and record.status in ("requested", "applying", "interrupted"):
                unfinished.append(project)
        return unfinished


def _applied_services(observed: Observed) -> tuple[str, ...]:
    """The services of the compose text last applied (none when the backend cannot tell, or the text is not
    a compose file)."""
    if not observed.applied_text:
        return ()
    try:
        return tuple(str(name) for name in parse_compose(observed.applied_text).get("services") or ())
    except TemplateError:
        return ()
