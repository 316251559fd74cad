"""The verbs that change a project's stack: provision (one or many), prune, stop/start/restart, destroy,
adopt, and the backend's locks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

from ..backends.base import Adopting, Locking
from ..core.errors import ConfirmationRequired, ProjectConflict
from ..core.model import ControlVerb, LockInfo, Observed, Target
from ..core.planner import Action
from ..core.results import ProjectResult, RunSummary
from ..infra import hints, interrupts
from ..infra.clock import utc_now
from ..state import backups
from . import upgrade_state
from .branching import children
from .engine import Checked, Engine, Operation
from .fleet import Fleet
from .planning import Planning

_VERB = {Action.CREATE: "created", Action.UPDATE: "updated", Action.DRIFT: "re-applied",
         Action.START: "started", Action.NOOP: "unchanged"}

# destroy --delete-data's dump (the lock is held): None when the project has no data at all
DumpBeforeDelete = Callable[[Target, Observed, Operation], "backups.Backup | None"]


class Lifecycle:
    """The changing verbs of one env on `engine`; `dump_before_delete` writes destroy --delete-data's backup."""

    def __init__(self, engine: Engine, planning: Planning, fleet: Fleet, dump_before_delete: DumpBeforeDelete) -> None:
        self.engine = engine
        self.planning = planning
        self.fleet = fleet
        self.dump_before_delete = dump_before_delete

    def provision(self, project: str, *, create: bool = False, server: str | None = None,
                  checked: Checked | None = None) -> ProjectResult:
        """Create, update or start `project` until it answers; a no-op when it already matches.

        A project the env file does not declare, and that this state directory never provisioned, is made
        only with `create` (or `allow_undeclared: true` in the env file): a typo never creates a stack.
        Raises ProvisionError: UndeclaredProject (before anything is contacted), HealthTimeout (with a log
        tail) when the stack does not come up, RolledBack when an update failed and the previous version was
        restored. `server`: where a new stack goes, when placement decided it beforehand. `checked`: the
        project's preflight, when the caller made it this run (provision_many), else it is made here.
        """
        target = self.engine.target(project, server=server)
        self.engine.check_declared(target, create=create)
        checked = checked or self.engine.preflight(target)
        interrupts.check()
        with self.engine.operation(target, "provision") as op:
            endpoints, decision = self.engine.converge(target, op, checked=checked)
        self.engine.reporter.step(project, f"{_VERB[decision.action]}, running ({op.duration:.1f} s)")
        return ProjectResult(
            project=project, env=target.env, backend=self.engine.backend.name, status="running",
            changed=decision.changes, action=decision.action.value, api_url=endpoints.api_url,
            db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope, declared=target.spec.declared,
            duration=op.duration,
        )

    def provision_many(self, projects: list[str], *, keep_going: bool = False, parallel: int = 1,
                       create: bool = False) -> RunSummary:
        """Provision several projects, up to `parallel` at a time, results in the given order.

        Fail-fast by default: after a failure no further project is started (those already
        running finish) and the rest are reported as skipped; `keep_going` runs them all.
        An interrupt stops every worker and is re-raised.
        """
        checked: dict[str, Checked] = {}
        for project in projects:  # a bad name, a typo, a broken template, an image the backend cannot get or a limit
            # over the host stops the run before anything starts
            self.engine.check_declared(self.engine.target(project), create=create)
            checked[project] = self.engine.preflight(self.engine.target(project))
        # every new project gets its server before any is created: when one fits nowhere, nothing is created
        placed = self.planning.place_new(projects)
        return self.fleet.run_many(projects, lambda project: self.provision(
            project, create=create, server=placed.get(project), checked=checked.get(project)),
            action="provision", keep_going=keep_going, parallel=parallel)

    def prune(self, *, yes: bool = False) -> list[ProjectResult]:
        """Destroy (keeping data) every project deployed in the env but no longer declared; never a branch (only
        `gc` or `destroy` remove those)."""
        orphans = self.planning.orphans()
        if orphans and not yes:
            raise ConfirmationRequired(f"--prune would destroy {', '.join(orphans)} (data kept): add --yes to confirm")
        return [self.destroy(name) for name in orphans]

    def control(self, project: str, verb: ControlVerb) -> ProjectResult:
        """stop / start / restart; start and restart wait until the stack answers again.
        Stop of a stopped stack and start of a running one change nothing and report changed=False."""
        target = self.engine.known_target(project)
        with self.engine.operation(target, verb) as op:
            record = self.engine.record(project)
            if record is not None and record.status == "destroyed":
                raise ProjectConflict(
                    f"{project!r} in env {target.env!r} was destroyed (its data volume was kept): "
                    f"run {hints.command('provision', env=target.env, project=project)} to bring it back, not {verb}"
                )
            observed = self.engine.observe(target, record)
            nothing_to_do = (verb == "stop" and not observed.any_running) or (verb == "start" and observed.ready)
            with ExitStack() as held:
                if not nothing_to_do:
                    observed = self.engine.lock_and_observe(held, target, observed, record)
                prepared = self.engine.prepare(target, observed, create=False)
                op.changed = self.engine.backend.control(target, observed, verb, prepared=prepared)
                handle = self.engine.known(observed, record)
                if verb == "stop":
                    endpoints = self.engine.backend.endpoints(target, handle, prepared)
                    status = "stopped"
                else:
                    endpoints = self.engine.backend.wait(target, handle, prepared, timeout=self.engine.config.health.timeout,
                                                  settled=None if op.changed else observed)
                    status = "running"
        note_text = {"stop": ("stopped", "already stopped"), "start": ("started", "already running"),
                     "restart": ("restarted", "restarted")}[verb]
        self.engine.reporter.step(project, note_text[0] if op.changed else note_text[1])
        return ProjectResult(
            project=project, env=target.env, backend=self.engine.backend.name, status=status, changed=op.changed,
            action=verb, api_url=endpoints.api_url, db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope,
            declared=target.spec.declared, duration=op.duration,
        )

    def destroy(self, project: str, *, delete_data: bool = False, yes: bool = False, backup: bool = True,
                leave_branches: bool = False) -> ProjectResult:
        """Remove the project's stack. Keeps the data volume and its credentials unless `delete_data`. A parent
        with live branches is refused (naming them) unless `leave_branches`: they are copies and keep running.

        With `delete_data` (which needs `yes`), writes a pg_dump to the state directory first unless
        `backup` is False. Destroying what is already gone changes nothing and reports changed=False.
        """
        if delete_data and not yes:
            raise ConfirmationRequired(
                f"--delete-data permanently deletes the database of {project!r} in env {self.engine.env!r}: "
                f"add --yes to confirm (a pg_dump is written to the state directory first unless --no-backup)"
            )
        target = self.engine.known_target(project)
        kids = [] if leave_branches else children(self.engine, project)
        if kids:
            raise ConfirmationRequired(
                f"{project!r} in env {self.engine.env!r} has live branches: {', '.join(kids)}. Destroy them first "
                f"({hints.command('destroy', env=self.engine.env, project=kids[0])}, or {hints.command('gc', env=self.engine.env)} "
                f"once they expire), or add --leave-branches (HTTP: ?leave_branches=true; they are copies: they keep "
                f"running without it)")
        action = "destroy --delete-data" if delete_data else "destroy"
        # deleting data is a data verb: the backup and the delete under the lock every runner sees, throughout
        with self.engine.operation(target, action, shared=delete_data) as op:
            record = self.engine.record(project)
            kept = upgrade_state.upgrade_facts(record) if delete_data else None
            if kept is not None:  # before any backup: the kept data goes with its own verb's --finalize
                raise ProjectConflict(
                    f"{project!r} in env {target.env!r} has data that {upgrade_state.what_kept(kept)} kept in volume "
                    f"{kept['volume']}; nothing was deleted. "
                    f"{upgrade_state.kept_command(target, kept, '--finalize', '--yes')} deletes it (--rollback --yes "
                    f"returns to it), then destroy --delete-data deletes the rest")
            observed = self.engine.observe(target, record)
            prepared = self.engine.prepare(target, observed, create=False)
            handle = self.engine.known(observed, record)
            self.engine.hook("pre-destroy", target, action,
                       lambda: self.engine.backend.endpoints(target, handle, prepared) if observed.exists else None)
            dumped = self.dump_before_delete(target, observed, op) if delete_data and backup else None
            with ExitStack() as held:
                if observed.exists or delete_data:
                    observed = self.engine.lock_and_observe(held, target, observed, record)
                done = self.engine.backend.destroy(target, observed, delete_data=delete_data, prepared=prepared)
            messages = ([f"wrote a pg_dump of the database to {dumped.path}"] if dumped else []) + list(done.messages)
            op.changed = done.changed or dumped is not None
            if done.kept_secrets:
                self.engine.store.write_secrets(target.env, project, done.kept_secrets)
            if delete_data:
                paths = self.engine.store.paths(target.env, project)
                if record is not None or paths.secrets.is_file():
                    op.changed = True
                    messages.append("deleted the project's secrets and records (backups stay)")
                self.engine.store.delete_secrets(target.env, project)
                self.engine.store.delete_record(target.env, project)
            elif record is not None and (record.status != "destroyed" or done.changed):
                self.engine.write(record.evolve(status="destroyed", destroyed_at=utc_now(), handle={}), record)
            if op.changed:
                self.engine.hook("post-destroy", target, action, lambda: None)
        if not delete_data:
            messages.append(f"{hints.command('destroy', '--delete-data', '--yes', env=target.env, project=project)} "
                            f"deletes the data")
        if not op.changed:
            messages.insert(0, "nothing to destroy: no stack is deployed")
        for line in messages:
            self.engine.reporter.step(project, line)
        return ProjectResult(
            project=project, env=target.env, backend=self.engine.backend.name,
            status="deleted" if delete_data else "destroyed", changed=op.changed,
            action="destroy", declared=target.spec.declared, messages=tuple(messages), duration=op.duration,
        )

    def adopt(self, project: str, *, yes: bool = False) -> ProjectResult:
        """Take over a same-named stack that this env's owner id does not mark (made before owner ids, by hand,
        or by another checkout); needs `yes`. Adopting what is ours already changes nothing."""
        if not yes:
            raise ConfirmationRequired(
                f"adopt makes {project!r} in env {self.engine.env!r} this repository's: provision will then update, prune "
                f"and destroy it as its own. Add --yes to confirm"
            )
        target = self.engine.target(project)
        adopter = self.engine.capability(Adopting, target)
        with self.engine.operation(target, "adopt") as op, \
                self.engine.backend_lock(target, self.engine.handle(self.engine.record(project))):
            done = adopter.adopt(target)
            op.changed, messages = done.changed, done.messages
        for line in messages or ("nothing to adopt: it is this env's already",):
            self.engine.reporter.step(project, line)
        return ProjectResult(project=project, env=target.env, backend=self.engine.backend.name, status="adopted",
                             changed=op.changed, action="adopt", declared=target.spec.declared,
                             messages=tuple(messages), duration=op.duration)

    def locks(self) -> list[LockInfo]:
        """The env's project locks held on the backend (where every runner sees them)."""
        backend = self.engine.backend
        return backend.locks(self.engine.config) if isinstance(backend, Locking) else []

    def unlock(self, project: str, *, yes: bool = False) -> bool:
        """Break the project's lock on the backend (its holder died); needs `yes`. True if there was one."""
        if not yes:
            raise ConfirmationRequired(
                f"unlock breaks the lock of {project!r} in env {self.engine.env!r}: if its holder still runs, two runs may "
                f"then change the project at once. Check {hints.command('lock', env=self.engine.env)} first, then add --yes"
            )
        target = self.engine.target(project)
        backend = self.engine.backend
        return backend.unlock(target) if isinstance(backend, Locking) else False

