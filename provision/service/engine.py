"""The engine every verb runs on: targets and records, the locks (the state directory's file lock and the
backend's lock every runner sees), observe and prepare, render and plan, apply and wait (with rollback of a
failed update, removal of a failed create), the user's hooks, and the history line of each operation.

It is the only writer of project records and secrets files. Verb modules (lifecycle, planning, reads, data,
upgrade, move, requests) call its public methods; it knows none of them: a killed data verb that a converge
must finish first is handed to `recover_pending`, which the Provisioner wires to the data verbs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..backends.base import (
    Backend,
    ChecksTemplate,
    DataVolumes,
    Locking,
    Preflighting,
    RunsSql,
    StoresSecrets,
    refusal,
)
from ..core import names, roles
from ..core.branches import BranchMark
from ..core.config import EnvConfig
from ..core.errors import (
    DatabaseStarting,
    HealthTimeout,
    Interrupted,
    MajorUpgradeRequired,
    NotSupported,
    ProjectConflict,
    ProjectNotFound,
    ProvisionError,
    RolledBack,
    UndeclaredProject,
    with_note,
)
from ..core.model import ABSENT, Endpoints, Handle, Observed, Prepared, Target
from ..core.planner import Action, Plan, plan
from ..core.render import DEFAULT_DB_VOLUME, RenderedStack, build_context, deployed_stack_hash, render_stack
from ..core.results import ProjectResult
from ..core.secrets import Secret
from ..infra import hints, interrupts
from ..infra.clock import utc_now
from ..infra.hooks import Hooks, hook_variables
from ..infra.report import NullReporter, Reporter
from ..state import history
from ..state.records import ProjectRecord, StateStore
from . import upgrade_state

DEFAULT_LOCK_TIMEOUT = 600.0
Ability = TypeVar("Ability")


@dataclass(frozen=True)
class Checked:
    """A project's stack as `Engine.preflight` rendered (`template_checked`: and had the backend check) it, from
    `record` and `prepared` (secrets and ports, without creating any): the converge of the same run reuses it
    while it reads those same inputs."""

    stack: RenderedStack
    prepared: Prepared
    record: ProjectRecord | None
    template_checked: bool

    def fits(self, prepared: Prepared, record: ProjectRecord | None) -> bool:
        return record == self.record and same_inputs(prepared, self.prepared)


def same_inputs(a: Prepared, b: Prepared) -> bool:
    """Whether a stack rendered with `a` is the one rendered with `b` (same secrets, same ports)."""
    return dict(a.secrets) == dict(b.secrets) and a.ports == b.ports


@dataclass
class Operation:
    """What one locked operation did, for its history line."""

    action: str
    changed: bool = False
    config_hash: str | None = None
    duration: float = 0.0


class Engine:
    """Runs the steps of operations for one env on one backend; owns the env's project records."""

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
        self.image_majors: dict[str, int] = {}  # image -> its PostgreSQL major, asked once per run
        # finishes or undoes what a killed data verb left under way (the state's pending.json); the lock is held
        self.recover_pending: Callable[[Target], object] = lambda target: None

    @property
    def env(self) -> str:
        return self.config.name

    def capability(self, ability: type[Ability], target: Target) -> Ability:
        """The backend as `ability` (a protocol of backends/base.py); the one NotSupported saying what it cannot
        do (`base.refusal`) where it lacks it."""
        if isinstance(self.backend, ability):
            return self.backend
        raise refusal(self.backend, ability, target.config, target.project)

    def sql(self, target: Target) -> RunsSql:
        """The backend as the runner of SQL in the project's db container (NotSupported where it cannot)."""
        return self.capability(RunsSql, target)

    def backend_lock(self, target: Target, known: Handle | None) -> AbstractContextManager[None]:
        """The project's lock every runner sees, waited for up to lock_timeout; nothing to hold where the backend
        has none (local: the state directory's file lock serialises every runner)."""
        if isinstance(self.backend, Locking):
            return self.backend.lock(target, known, timeout=self.lock_timeout)
        return nullcontext()

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
        if project in self.observe_env():
            return target
        hint = names.did_you_mean(project, [p.name for p in self.config.projects])
        raise ProjectNotFound(
            f"project {project!r} is not declared in {self.config.relpath} and was never provisioned in env "
            f"{self.env!r}: {hint}check the name, or create it: "
            f"{hints.command('provision', env=self.env, project=project, create=True)}"
        )

    def handle(self, record: ProjectRecord | None) -> Handle | None:
        return self.backend.load_handle(record.handle) if record is not None and record.handle else None

    def known(self, observed: Observed, record: ProjectRecord | None) -> Handle | None:
        """The handle to act on: what was just observed, else what the record holds."""
        return observed.handle or self.handle(record)

    def lock_and_observe(self, held: ExitStack, target: Target, observed: Observed,
                          record: ProjectRecord | None) -> Observed:
        """Take the backend lock every runner sees (released with `held`), then observe again under it."""
        held.enter_context(self.backend_lock(target, self.known(observed, record)))
        return self.observe(target, record)

    def observe(self, target: Target, record: ProjectRecord | None) -> Observed:
        """What runs, with drift only for a project whose last provision finished (after an interrupted
        one, the difference is an update anyway) or that this machine has no record of."""
        observed = self.backend.observe(target, self.handle(record))
        return self.settle(observed, record)

    @staticmethod
    def settle(observed: Observed, record: ProjectRecord | None) -> Observed:
        if observed.drift and record is not None and record.status != "provisioned":
            return replace(observed, drift=None)
        return observed

    def prepare(self, target: Target, observed: Observed, *, create: bool) -> Prepared:
        """Secrets and ports; with `create`, newly generated secrets are saved (0600) before anything is deployed."""
        stored = self.store.read_secrets(target.env, target.project)
        prepared = self.backend.prepare(target, observed, stored, create=create)
        if create and prepared.new_secrets:
            self.store.write_secrets(target.env, target.project, prepared.secrets)
        return with_env_secrets(target, prepared)

    def write(self, record: ProjectRecord, previous: ProjectRecord | None) -> ProjectRecord:
        """Write `record` if it says something `previous` did not (timestamps aside); returns what is stored."""
        if previous is not None and record.evolve(updated_at=previous.updated_at) == previous:
            return previous
        record = record.evolve(updated_at=utc_now())
        self.store.write_record(record)
        return record

    def set_status(self, target: Target, status: str) -> None:
        record = self.record(target.project)
        if record is not None:
            self.write(record.evolve(status=status), record)

    def applied_record(self, target: Target, stack: RenderedStack, prepared: Prepared, status: str,
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

    def render_stack(self, target: Target, prepared: Prepared) -> RenderedStack:
        record = self.record(target.project)
        context = build_context(target.config, target.spec, backend=self.backend.name, ports=prepared.ports,
                                db_volume=(record.db_volume if record is not None else "") or DEFAULT_DB_VOLUME,
                                branch=BranchMark.from_dict(record.branch) if record is not None else None,
                                restore=upgrade_state.stack_restore(record))
        return render_stack(target.config.template_path, context, prepared.secrets)

    def render(self, project: str) -> tuple[RenderedStack, Prepared]:
        """Render without changing anything: existing secrets and ports, or a preview of new ones."""
        target = self.target(project)
        prepared = self.prepare(target, ABSENT, create=False)
        return self.render_stack(target, prepared), prepared

    @contextmanager
    def operation(self, target: Target, action: str, *, shared: bool = False) -> Iterator[Operation]:
        """Hold the lock, time the operation and, when it changed something or failed, write its history line.
        With `shared` (the data verbs), the backend's lock every runner sees is held for the whole operation too
        (Coolify: no deploy from another machine between its steps); the converge inside it re-enters it."""
        started = self.clock()
        op = Operation(action)
        result, detail = "ok", ""
        try:
            with self.store.lock(target.env, target.project, timeout=self.lock_timeout), \
                    self.backend_lock(target, self.handle(self.record(target.project))) if shared else nullcontext():
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

    def hook(self, name: str, target: Target, action: str, endpoints: Callable[[], Endpoints | None]) -> None:
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

    def converge(self, target: Target, op: Operation, *, major_change: bool = False,
                 checked: Checked | None = None) -> tuple[Endpoints, Plan]:
        """Under the state-directory lock: read, plan and, for a change, take the backend lock, plan again and
        apply, then record. A change of the db image to another PostgreSQL major is refused (MajorUpgradeRequired)
        unless `major_change` (upgrade-db, which has moved the stack to a new data volume). `checked`: this run's
        preflight, whose stack is reused while its inputs are those read here. Without a backend lock (local: the
        file lock held serialises every runner) nothing is read twice: only secrets and ports are made (create),
        and the stack rendered again if they differ from what it was rendered with."""
        project = target.project
        with ExitStack() as held:
            pending = bool(self.store.read_pending(target.env, project))
            if pending:  # finishing or undoing a killed data verb writes (Coolify's copy of a secret, the role):
                # under the lock every runner sees, as the verb itself ran (re-entered when it is this run's)
                held.enter_context(self.backend_lock(target, self.handle(self.record(project))))
            db = self.observe(target, self.record(project)).services.get("db") if pending else None
            if db is not None and db.running:
                self.recover_pending(target)  # a killed data verb: finish or undo it before anything else
                pending = False
            record = self.record(project)
            observed = self.observe(target, record)
            prepared = self.prepare(target, observed, create=False)
            reused = checked if checked is not None and checked.fits(prepared, record) else None
            stack = reused.stack if reused is not None else self.render_stack(target, prepared)
            decision = plan(stack, observed)
            if not major_change:
                self.check_upgrade(target, record)  # even a no-op: the stack may be between two data volumes
            if decision.changes:
                if reused is None or not reused.template_checked:
                    self.check_template(target, stack)  # before anything changes
                if not major_change:
                    self.check_major(target, record, observed)
                if isinstance(self.backend, Locking):  # only a change takes the lock every runner sees; then read
                    # and plan again under it
                    held.enter_context(self.backend_lock(target, self.known(observed, record)))
                    record, observed, prepared, stack, decision = self.read_and_plan(target, create=True)
                else:
                    made = self.prepare(target, observed, create=True)
                    if not same_inputs(made, prepared):
                        stack = self.render_stack(target, made)
                        decision = plan(stack, observed)
                    prepared = made
            op.action, op.config_hash = decision.action.value, stack.config_hash
            op.changed = op.changed or decision.changes  # a verb's own action (a rotation) stays a change
            handle = self.known(observed, record)
            self.hook("pre-provision", target, decision.action.value,
                       lambda: self.backend.endpoints(target, handle, prepared) if observed.exists else None)
            if decision.changes:
                if observed.adopting:
                    self.reporter.step(project, f"adopting: {observed.adopting}")
                self.reporter.step(project, f"{decision.action.value}: {decision.reason}")
                record = self.write(self.applied_record(target, stack, prepared, "applying", None, record), record)
                endpoints, handle = self.apply(target, observed, stack, prepared, decision, record)
                record = self.record(project) or record  # _apply recorded the handle and the roles
            else:
                endpoints = self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout,
                                              settled=observed)
            if pending:  # a killed data verb, and the db was not running before: finish or undo it now
                self.recover_pending(target)
            record = self.write(self.applied_record(target, stack, prepared, "provisioned", handle, record), record)
            if decision.changes and isinstance(self.backend, StoresSecrets):
                self.store.delete_secrets(target.env, project)  # the backend holds them from now on
            self.hook("post-provision", target, decision.action.value, lambda: endpoints)
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
            return self.read_majors(target, previous or image, image)
        try:
            return self.read_majors(target, previous or image, image)
        except NotSupported:
            return None

    def read_majors(self, target: Target, previous: str, image: str) -> tuple[int, int] | None:
        volumes = self.capability(DataVolumes, target)
        data = volumes.data_major(target, previous)
        if data is None:
            return None
        if image not in self.image_majors:
            self.image_majors[image] = volumes.image_major(image)
        return data, self.image_majors[image]

    def check_upgrade(self, target: Target, record: ProjectRecord | None) -> None:
        """Refuse to apply or serve a project whose upgrade-db (or its rollback) a run left half done: its stack
        may be between its old and its new data volume. The error names the command that finishes or undoes it."""
        unfinished = upgrade_state.unfinished_upgrade(target, record)
        if unfinished is not None:
            raise ProjectConflict(unfinished)

    def check_major(self, target: Target, record: ProjectRecord | None, observed: Observed) -> None:
        found = self.majors(target, record, observed)
        if found is not None and found[0] != found[1]:
            data, image = found
            back = self.back_to_kept(target, record, image)
            if back is not None:
                raise MajorUpgradeRequired(f"{target.project!r} in env {target.env!r}: its data directory is "
                                           f"PostgreSQL {data} and {target.images.db} is PostgreSQL {image}, which "
                                           f"cannot start on it. Nothing was changed. {back}")
            raise MajorUpgradeRequired(
                f"{target.project!r} in env {target.env!r}: its data directory is PostgreSQL {data} and "
                f"{target.images.db} is PostgreSQL {image}, which cannot start on it. Nothing was changed. "
                f"Run {hints.command('upgrade-db', '--yes', env=target.env, project=target.project)} (dump, new data "
                f"directory, restore, row counts checked; the old data is kept until --finalize)")

    def back_to_kept(self, target: Target, record: ProjectRecord | None, image_major: int) -> str | None:
        """When the db image is the major an upgrade kept the data of (the env file set back to the old image):
        the sentence proposing `upgrade-db --rollback` (not an upgrade-db, which would be a downgrade); else None."""
        facts = upgrade_state.upgrade_facts(record)
        if facts is None or facts.get("state") != upgrade_state.DONE or facts.get("major") != image_major:
            return None
        command = hints.command("upgrade-db", "--rollback", "--yes", env=target.env, project=target.project)
        return (f"Its PostgreSQL {image_major} data is the one upgrade-db kept (volume {facts.get('volume')}): run "
                f"{command} to return to it, or set {target.spec.key('images.db')} in "
                f"{self.config.relpath} back to {facts.get('new_image')}")

    def read_and_plan(self, target: Target, *, create: bool
                       ) -> tuple[ProjectRecord | None, Observed, Prepared, RenderedStack, Plan]:
        """Read (record, observation, secrets and ports: missing ones made only with `create`), render, plan."""
        record = self.record(target.project)
        observed = self.observe(target, record)
        return (record, observed, *self.plan_for(target, observed, create=create))

    def plan_for(self, target: Target, observed: Observed, *, create: bool
                  ) -> tuple[Prepared, RenderedStack, Plan]:
        """Secrets and ports, the rendered stack, and what it takes to make `observed` match it."""
        prepared = self.prepare(target, observed, create=create)
        stack = self.render_stack(target, prepared)
        return prepared, stack, plan(stack, observed)

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
               decision: Plan, record: ProjectRecord) -> tuple[Endpoints, Handle]:
        """Apply and wait; on failure roll an update of a running stack back, or remove a failed create."""
        rollback_to = observed.applied_text if decision.action in (Action.UPDATE, Action.DRIFT) and observed.running else None
        wanted = roles.Roles.of(target.spec.variables, archiving=target.spec.backup.continuous)
        roles_sql = roles.ensure_sql(wanted, str(target.spec.variables["db_name"]), prepared.secrets,
                                     record.db_volume or DEFAULT_DB_VOLUME)
        prepared = replace(prepared, roles_sql=Secret(roles_sql))  # the backend may hand it to the db container
        try:
            handle = self.backend.apply(target, observed, stack, prepared, decision)
            record = self.write(record.evolve(handle=handle.to_dict()), record)
            self.ensure_roles(target, prepared, record, roles_sql, fresh=decision.action is Action.CREATE)
            self.reporter.step(target.project, "waiting until it is healthy and answers")
            return self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout), handle
        except (Interrupted, KeyboardInterrupt):
            self.set_status(target, "interrupted")
            raise
        except ProvisionError as exc:
            if rollback_to is not None:
                raise self.roll_back(target, prepared, rollback_to, exc) from exc
            if decision.action is Action.CREATE:
                self.reporter.step(target.project, "removing the stack that failed to start (data is kept)")
                try:
                    self.backend.destroy(target, self.observe(target, self.record(target.project)),
                                         delete_data=False, prepared=prepared)
                except ProvisionError as cleanup:
                    self.set_status(target, "failed")
                    raise with_note(exc, f"(removing the failed stack failed too: {cleanup})") from exc
                self.set_status(target, "failed")
                raise with_note(exc, "The new stack was removed; its data volume and credentials are kept.") from exc
            self.set_status(target, "failed")
            raise

    def ensure_roles(self, target: Target, prepared: Prepared, record: ProjectRecord, roles_sql: str, *,
                      fresh: bool) -> None:
        """Make the database's roles (`roles_sql`: roles.ensure_sql for this stack) as the bootstrap superuser
        over the db container's socket, for a new stack (`fresh`) or when what they depend on changed (names,
        passwords, data volume: the record's digest); a stack made before them (its owner was that superuser) is migrated. Waits for a db that is
        still starting, up to health.timeout; any other failure is raised at once."""
        wanted = roles.Roles.of(target.spec.variables, archiving=target.spec.backup.continuous)
        dbname = str(target.spec.variables["db_name"])
        digest = roles.digest(wanted, dbname, prepared.secrets, record.db_volume)
        if not fresh and record.roles == digest:
            return
        deadline = self.clock() + self.config.health.timeout
        delay = 0.25
        while True:
            observed = self.observe(target, record)
            db = observed.services.get("db")
            try:
                if db is None or not db.running:  # a look costs less than a task that finds no container
                    raise DatabaseStarting(f"{target.project!r} has no running db container yet")
                self.make_roles(target, observed, wanted, dbname, prepared, roles_sql,
                                 record.db_volume or DEFAULT_DB_VOLUME)
                break
            except ProvisionError as exc:
                if not isinstance(exc, DatabaseStarting) or self.clock() >= deadline:
                    raise with_note(exc, f"The roles of {target.project!r} could not be made (docs/security.md); "
                                         f"nothing was handed out.") from exc
            interrupts.check()
            self.sleep(delay)
            delay = min(delay * 2, 2.0)
        self.write(record.evolve(roles=digest), record)

    def make_roles(self, target: Target, observed: Observed, wanted: roles.Roles, dbname: str,
                    prepared: Prepared, roles_sql: str, volume: str) -> None:
        """One psql run of `roles_sql` as the admin; where the admin does not exist (a stack made before the
        roles, whose bootstrap superuser is the owner), the migration as the owner instead."""
        try:
            self.sql(target).run_sql(target, observed, roles_sql, user=wanted.admin, purpose="roles")
            return
        except ProvisionError as exc:
            if f'role "{wanted.admin}" does not exist' not in str(exc):
                raise
        self.reporter.step(target.project, f"moving the owner role {wanted.owner!r} off the superuser "
                                           f"(docs/security.md)")
        try:
            self.sql(target).run_sql(target, observed,
                                                     roles.migration_sql(wanted, dbname, prepared.secrets, volume),
                                                     user=wanted.owner, purpose="roles-migration")
        except ProvisionError as exc:
            if f'role "{wanted.owner}" does not exist' not in str(exc):
                raise
            raise ProvisionError(f"the database of {target.project!r} has neither the role {wanted.admin!r} nor "
                                 f"db_user {wanted.owner!r} as its superuser: set variables.db_user in "
                                 f"{self.config.relpath} to the name it was made with") from exc

    def roll_back(self, target: Target, prepared: Prepared, previous: str, failure: ProvisionError) -> ProvisionError:
        """Re-apply the compose text that ran before; returns the error to raise (the failure's log tail kept)."""
        self.reporter.step(target.project, "the new version failed: rolling back to the previous one")
        try:
            stack = RenderedStack(
                project=target.project, env=target.env, compose_project="", text=previous, service_hashes={},
                config_hash=deployed_stack_hash(previous, prepared.secrets), secret_names=(), document={},
            )
            now = self.observe(target, self.record(target.project))  # what the failed update left running
            handle = self.backend.apply(target, now, stack, prepared, Plan(Action.UPDATE, "rollback"))
            self.backend.wait(target, handle, prepared, timeout=self.config.health.timeout)
        except (Interrupted, KeyboardInterrupt):
            raise
        except ProvisionError as exc:
            self.set_status(target, "failed")
            return with_note(failure, f"Rolling back failed too: {exc}")
        record = self.record(target.project)
        if record is not None:
            self.write(record.evolve(status="rolled back", handle=handle.to_dict()), record)
        self.reporter.step(target.project, "rolled back: the previous version is serving again")
        summary = (f"{target.project}: the new version failed and was rolled back; the previous version is "
                   f"serving again (data untouched).")
        if isinstance(failure, HealthTimeout):
            return RolledBack(f"{summary}\n{failure.message}", logs=failure.logs)
        return RolledBack(f"{summary}\n{failure}")

    def preflight(self, target: Target) -> Checked:
        """Render the project's stack (a template error surfaces here) and let the backend refuse what it could not
        run (an image it cannot get, a limit over the host), before any state is written or anything created.
        Returns what it rendered, for the converge of the same run."""
        record = self.record(target.project)
        stack, prepared = self.render(target.project)
        new = not self.store.paths(target.env, target.project).dir.exists()
        if new:  # a new project's template that is no valid Compose is refused before its state directory, lock
            # file and history line exist (and before the backend looks for images: what is wrong is said first)
            self.check_template(target, stack)
        if isinstance(self.backend, Preflighting):
            self.backend.preflight(target, stack)
        return Checked(stack, prepared, record, template_checked=new)

    def check_template(self, target: Target, stack: RenderedStack) -> None:
        """TemplateError when the backend checks stacks beforehand and `stack` is no file it could run; nothing
        where it does not (Coolify: its own parse at apply)."""
        if isinstance(self.backend, ChecksTemplate):
            self.backend.check_template(target, stack)

    def check_declared(self, target: Target, *, create: bool) -> None:
        if create or target.spec.declared or self.config.allow_undeclared or self.record(target.project) is not None:
            return
        declared = [p.name for p in self.config.projects]
        hint = names.did_you_mean(target.project, declared)
        raise UndeclaredProject(
            f"project {target.project!r} is not declared in {self.config.relpath}: {hint}to create it anyway pass "
            f"--create (or set allow_undeclared: true in {self.config.relpath}); declared: "
            f"{', '.join(declared) or 'none'}"
        )

    def records(self) -> dict[str, ProjectRecord | None]:
        """Every project of the env with a record, and its record."""
        return {p: self.record(p) for _, p in self.store.known_projects(self.env)}

    def observe_env(self, *, full: bool = False,
                     records: Mapping[str, ProjectRecord | None] | None = None) -> dict[str, Observed]:
        """Every project deployed in the env (one backend query), each given the handle its record holds."""
        records = self.records() if records is None else records
        known = {p: h for p, r in records.items() if (h := self.handle(r)) is not None}
        found = self.backend.observe_env(self.config, known, full=full)
        return {name: self.settle(observed, records.get(name)) for name, observed in found.items()}


    def running(self, target: Target) -> tuple[Observed, Prepared]:
        """What runs and the project's secrets, once its db is seen running (ProvisionError saying to start it)."""
        observed = self.observe(target, self.record(target.project))
        db = observed.services.get("db")
        if db is None or not db.running:
            raise ProvisionError(f"the db of {target.project!r} is not running in env {target.env!r}: run "
                                 f"{hints.command('start', env=target.env, project=target.project)} first")
        return observed, self.prepare(target, observed, create=False)

    def result(self, target: Target, action: str, status: str, op: Operation, messages: list[str],
               details: dict[str, Any]) -> ProjectResult:
        """A data verb's result; each message is reported first."""
        for line in messages:
            self.reporter.step(target.project, line)
        return ProjectResult(project=target.project, env=target.env, backend=self.backend.name,
                             status=status, changed=op.changed, action=action, declared=target.spec.declared,
                             messages=tuple(messages), duration=op.duration, details=details)


def with_env_secrets(target: Target, prepared: Prepared) -> Prepared:
    """`prepared` with the env-level secrets the project's stack references (backup.offsite's keys): they are the
    env's, read from its environment each run and never stored with the project's own."""
    backup = target.spec.backup
    if not backup.continuous or backup.offsite is None:
        return prepared
    extra = {name: target.config.backup_secrets[name] for name in backup.offsite.secret_names
             if name in target.config.backup_secrets}
    return replace(prepared, secrets={**prepared.secrets, **extra})
