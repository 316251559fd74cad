"""The service layer: every operation on projects, the same on every backend, for every entry point.

`tasks.py`, the HTTP API (through `requests.ProjectRequests`) and the tests call a `Provisioner`: a thin
facade over one `engine.Engine` (locks, records, observe, plan, apply, hooks, history) and the verb groups
that use it (lifecycle, planning, reads, fleet, data, upgrade, move). Each changing operation reads
(observe), plans (pure), then applies, under the env+project lock, with the user's hooks around it.
`changed` is true exactly when the backend changed something, and only then is a history line written. A
failed update of a running project is rolled back to what ran before; a failed first create is removed
again, its data volume kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from ..backends.base import Backend
from ..core.config import EnvConfig
from ..core.model import ControlVerb, LockInfo, Observed, Prepared, Target, Usage
from ..core.render import RenderedStack
from ..core.results import PlanItem, ProjectResult, RunSummary
from ..infra import doctor as checkup
from ..infra.commands import Runner
from ..infra.hooks import Hooks
from ..infra.report import Reporter
from ..infra.shell import ShellCommand
from ..state.records import ProjectRecord, StateStore
from .archive import ArchiveVerbs
from .branching import Branches
from .data import DataVerbs
from .engine import DEFAULT_LOCK_TIMEOUT, Engine, Operation
from .fleet import Fleet
from .lifecycle import Lifecycle
from .move import Moves
from .planning import Planning
from .reads import Reads
from .upgrade import Upgrades

__all__ = ["DEFAULT_LOCK_TIMEOUT", "Engine", "Operation", "Provisioner"]


class Provisioner:
    """Runs operations for one env on one backend; owns the env's project records. `runner` runs
    PostgreSQL's client tools for the data verbs (a fake in unit tests)."""

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
        runner: Runner | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = Engine(config, backend, store, lock_timeout=lock_timeout, reporter=reporter, hooks=hooks,
                             clock=clock, sleep=sleep)
        self.data = DataVerbs(self.engine, runner)  # backup, restore, rotate
        self.engine.recover_pending = self.data.recover
        self.upgrades = Upgrades(self.engine, self.data)  # upgrade-db, --rollback, --finalize
        self.moves = Moves(self.engine, self.data)  # move, move --finalize
        self.archive = ArchiveVerbs(self.engine, self.upgrades)  # backups (archives), restore --to-time
        self.reads = Reads(self.engine)
        self.planning = Planning(self.engine)
        self.fleet = Fleet(self.engine, self.reads)
        self.lifecycle = Lifecycle(self.engine, self.planning, self.fleet, self.data.before_delete)
        self.branches = Branches(self.engine, self.data, self.lifecycle.destroy, wall)  # branches, gc, fill

    @property
    def config(self) -> EnvConfig:
        return self.engine.config

    @property
    def backend(self) -> Backend:
        return self.engine.backend

    @property
    def store(self) -> StateStore:
        return self.engine.store

    @property
    def reporter(self) -> Reporter:
        return self.engine.reporter

    @property
    def hooks(self) -> Hooks:
        return self.engine.hooks

    @property
    def env(self) -> str:
        return self.engine.env

    # --- targets and records -------------------------------------------------------------
    def target(self, project: str, *, server: str | None = None) -> Target:
        return self.engine.target(project, server=server)

    def record(self, project: str) -> ProjectRecord | None:
        return self.engine.record(project)

    def known_target(self, project: str) -> Target:
        return self.engine.known_target(project)

    def render(self, project: str) -> tuple[RenderedStack, Prepared]:
        return self.engine.render(project)

    # --- changing verbs ----------------------------------------------------------------------
    def provision(self, project: str, *, create: bool = False, server: str | None = None) -> ProjectResult:
        return self.lifecycle.provision(project, create=create, server=server)

    def provision_many(self, projects: list[str], *, keep_going: bool = False, parallel: int = 1,
                       create: bool = False) -> RunSummary:
        return self.lifecycle.provision_many(projects, keep_going=keep_going, parallel=parallel, create=create)

    def prune(self, *, yes: bool = False) -> list[ProjectResult]:
        return self.lifecycle.prune(yes=yes)

    def control(self, project: str, verb: ControlVerb) -> ProjectResult:
        return self.lifecycle.control(project, verb)

    def destroy(self, project: str, *, delete_data: bool = False, yes: bool = False,
                backup: bool = True, leave_branches: bool = False) -> ProjectResult:
        return self.lifecycle.destroy(project, delete_data=delete_data, yes=yes, backup=backup,
                                      leave_branches=leave_branches)

    def adopt(self, project: str, *, yes: bool = False) -> ProjectResult:
        return self.lifecycle.adopt(project, yes=yes)

    def locks(self) -> list[LockInfo]:
        return self.lifecycle.locks()

    def unlock(self, project: str, *, yes: bool = False) -> bool:
        return self.lifecycle.unlock(project, yes=yes)

    def run_many(self, projects: list[str], operation: Callable[[str], ProjectResult], *, action: str,
                 keep_going: bool = False, parallel: int = 1) -> RunSummary:
        return self.fleet.run_many(projects, operation, action=action, keep_going=keep_going, parallel=parallel)

    # --- plans and reads -----------------------------------------------------------------------
    def plan(self, project: str | None = None) -> list[PlanItem]:
        return self.planning.plan(project)

    def plan_offline(self, project: str | None = None) -> list[PlanItem]:
        return self.planning.plan_offline(project)

    def status(self, project: str | None = None, *, usage: bool = True) -> RunSummary:
        return self.reads.status(project, usage=usage)

    def status_of(self, target: Target, observed: Observed, record: ProjectRecord | None,
                  usage: Mapping[str, Usage] | None = None) -> ProjectResult:
        return self.reads.status_of(target, observed, record, usage)

    def outputs(self, project: str) -> ProjectResult:
        return self.reads.outputs(project)

    def logs(self, project: str, *, service: str | None = None, tail: int = 100, since: datetime | None = None,
             follow: bool = False) -> Iterator[str]:
        return self.reads.logs(project, service=service, tail=tail, since=since, follow=follow)

    def psql(self, project: str, *, sql: str | None = None, via: str = "auto", tty: bool = False) -> ShellCommand:
        return self.reads.psql(project, sql=sql, via=via, tty=tty)

    def doctor(self) -> checkup.Report:
        return self.reads.doctor()

    def project_names(self, deployed: Mapping[str, Observed] | None = None, *,
                      recorded: Mapping[str, ProjectRecord | None] | None = None) -> list[str]:
        return self.reads.project_names(deployed, recorded=recorded)

    def deployed(self) -> list[str]:
        return self.reads.deployed()
