"""Operations on projects: observe, plan, apply, wait, record — the same on every backend.

Every changing operation holds the env+project lock, runs the user's hooks around itself,
and appends a line to the history. A failed update of a running project is rolled back to
what ran before; a failed first create is removed again, its data volume kept.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import history, interrupts
from .backends.base import Action, Backend, ControlVerb, Endpoints, Observed, Plan, Prepared, Target, plan
from .config import EnvConfig
from .errors import ConfirmationRequired, ProjectNotFound, ProvisionError
from .hooks import Hooks, hook_variables
from .interrupts import Interrupted
from .render import RenderedStack, build_context, deployed_stack_hash, normalized, render_stack
from .report import NullReporter, Reporter
from .results import ProjectResult, RunSummary, ServiceStatus
from .state import StateStore

DEFAULT_LOCK_TIMEOUT = 600.0
_VERB = {Action.CREATE: "created", Action.UPDATE: "updated", Action.DRIFT: "re-applied",
         Action.START: "started", Action.NOOP: "unchanged"}


class RolledBack(ProvisionError):
    """The new version failed; the previous one was restored and is serving again."""


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class PlanItem:
    """What `provision` would do to one project: create, update, no-op, drift or orphan."""

    project: str
    env: str
    backend: str
    outcome: str
    reason: str
    diff: str = field(default="", repr=False)
    declared: bool = True

    @property
    def changes(self) -> bool:
        return self.outcome != "no-op"

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "env": self.env, "backend": self.backend, "outcome": self.outcome,
                "reason": self.reason, "declared": self.declared, "diff": self.diff or None}


class Provisioner:
    """Runs operations for one env on one backend."""

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
    ) -> None:
        self.config = config
        self.backend = backend
        self.store = store
        self.lock_timeout = lock_timeout
        self.reporter = reporter or NullReporter()
        self.hooks = hooks or Hooks(config.root / "hooks")
        self.clock = clock

    # --- targets -------------------------------------------------------------------------
    def target(self, project: str) -> Target:
        """The target for `project`; the name is validated before anything else happens."""
        return Target(self.config, self.config.project(project))

    def known_target(self, project: str) -> Target:
        """Like `target`, but the project must be declared, recorded in state, or deployed."""
        target = self.target(project)
        if target.spec.declared or self.store.read_state(target.env, project):
            return target
        if project in self.backend.observe_env(self.config):
            return target
        raise ProjectNotFound(
            f"project {project!r} is not declared in {self.config.relpath} and was never provisioned in env "
            f"{self.config.name!r}: check the name, or run `invoke provision --env={self.config.name} --project={project}`"
        )

    def _render(self, target: Target, prepared: Prepared) -> RenderedStack:
        context = build_context(self.config, target.spec, backend=self.backend.name, ports=prepared.ports)
        return render_stack(self.config.template_path, context, prepared.secrets)

    def render(self, project: str) -> tuple[RenderedStack, Prepared]:
        """Render without changing anything: existing secrets and ports, or a preview of new ones."""
        target = self.target(project)
        prepared = self.backend.prepare(target, Observed(exists=False), create=False)
        return self._render(target, prepared), prepared

    @contextmanager
    def _operation(self, target: Target, action: str) -> Iterator[dict[str, Any]]:
        """Hold the lock, time the operation and write its history line, whatever the outcome."""
        started = self.clock()
        note: dict[str, Any] = {"result": "ok", "config_hash": None, "detail": "", "record": True}
        try:
            with self.store.lock(target.env, target.project, timeout=self.lock_timeout):
                yield note
        except (Interrupted, KeyboardInterrupt):
            note.update(result="interrupted", record=True)
            raise
        except RolledBack as exc:
            note.update(result="rolled back", detail=str(exc), record=True)
            raise
        except ProvisionError as exc:
            note.update(result="failed", detail=str(exc), record=True)
            raise
        finally:
            note["duration"] = self.clock() - started
            if note["record"]:
                history.record(self.store.root, env=target.env, project=target.project,
                               action=note.get("action", action), config_hash=note["config_hash"],
                               result=note["result"], duration=note["duration"], backend=self.backend.name,
                               detail=note["detail"])

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
    def provision(self, project: str) -> ProjectResult:
        """Create, update or start `project` until it answers; a no-op when it already matches.

        Raises ProvisionError: HealthTimeout (with a log tail) when the stack does not come up,
        RolledBack when an update failed and the previous version was restored.
        """
        target = self.target(project)
        interrupts.check()
        with self._operation(target, "provision") as note:
            observed = self.backend.observe(target)
            prepared = self.backend.prepare(target, observed)
            stack = self._render(target, prepared)
            decision = plan(stack, observed)
            note.update(action=decision.action.value, config_hash=stack.config_hash, record=decision.changes)
            self._hook("pre-provision", target, decision.action.value,
                       lambda: self.backend.endpoints(target, prepared) if observed.exists else None)
            if decision.changes:
                self.reporter.step(project, f"{decision.action.value}: {decision.reason}")
                endpoints = self._apply(target, stack, prepared, decision, observed)
            else:
                endpoints = self.backend.wait(target, prepared, timeout=self.config.health.timeout)
            self._record(target, stack, status="provisioned", prepared=prepared)
            self._hook("post-provision", target, decision.action.value, lambda: endpoints)
        elapsed = note["duration"]
        self.reporter.step(project, f"{_VERB[decision.action]}, running ({elapsed:.1f} s)")
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name, status="running",
            changed=decision.changes, action=decision.action.value, api_url=endpoints.api_url,
            db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope, declared=target.spec.declared,
            duration=elapsed,
        )

    def _apply(self, target: Target, stack: RenderedStack, prepared: Prepared, decision: Plan,
               observed: Observed) -> Endpoints:
        """Apply and wait; on failure roll an update of a running stack back, or remove a failed create."""
        previous = observed.applied_text if decision.action in (Action.UPDATE, Action.DRIFT) and observed.running else None
        self._record(target, stack, status="applying", prepared=prepared)
        try:
            self.backend.apply(target, stack, prepared, decision)
            self.reporter.step(target.project, "waiting until it is healthy and answers")
            return self.backend.wait(target, prepared, timeout=self.config.health.timeout)
        except (Interrupted, KeyboardInterrupt):
            self._set_status(target, "interrupted")
            raise
        except ProvisionError as exc:
            if previous is not None:
                raise self._roll_back(target, prepared, previous, exc) from exc
            if decision.action is Action.CREATE:
                self.reporter.step(target.project, "removing the stack that failed to start (data is kept)")
                try:
                    self.backend.destroy(target, delete_data=False, backup_to=None)
                    self._set_status(target, "failed")
                except ProvisionError as cleanup:
                    raise ProvisionError(f"{exc}\n(removing the failed stack failed too: {cleanup})") from exc
                raise ProvisionError(f"{exc}\nThe new stack was removed; its data volume and credentials are kept.") from exc
            self._set_status(target, "failed")
            raise

    def _roll_back(self, target: Target, prepared: Prepared, previous: str, failure: ProvisionError) -> ProvisionError:
        """Re-apply the compose text that ran before; returns the error to raise."""
        self.reporter.step(target.project, "the new version failed: rolling back to the previous one")
        try:
            stack = RenderedStack(
                project=target.project, env=target.env, compose_project="", text=previous, service_hashes={},
                config_hash=deployed_stack_hash(previous, prepared.secrets), secret_names=(), document={},
            )
            self.backend.observe(target)  # backends act on what they saw last
            self.backend.apply(target, stack, prepared, Plan(Action.UPDATE, "rollback"))
            self.backend.wait(target, prepared, timeout=self.config.health.timeout)
        except (Interrupted, KeyboardInterrupt):
            raise
        except ProvisionError as exc:
            self._set_status(target, "failed")
            return ProvisionError(f"{failure}\nRolling back failed too: {exc}")
        self._set_status(target, "rolled back")
        self.reporter.step(target.project, "rolled back: the previous version is serving again")
        return RolledBack(f"{target.project}: the new version failed and was rolled back; the previous version "
                          f"is serving again (data untouched).\n{failure}")

    def provision_many(self, projects: list[str], *, keep_going: bool = False, parallel: int = 1) -> RunSummary:
        """Provision several projects, up to `parallel` at a time, results in the given order.

        Fail-fast by default: after a failure no further project is started (those already
        running finish) and the rest are reported as skipped; `keep_going` runs them all.
        An interrupt stops every worker and is re-raised.
        """
        results: dict[str, ProjectResult] = {}
        stop = threading.Event()

        def run(project: str) -> None:
            if stop.is_set():
                results[project] = self._skipped(project)
                return
            started = self.clock()
            try:
                results[project] = self.provision(project)
            except (Interrupted, KeyboardInterrupt):
                raise
            except ProvisionError as exc:
                results[project] = self._failed(project, "provision", exc, self.clock() - started)
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
        return RunSummary(self.config.name, self.backend.name, tuple(results[p] for p in projects))

    def _skipped(self, project: str) -> ProjectResult:
        return ProjectResult(
            project=project, env=self.config.name, backend=self.backend.name, status="skipped", changed=False,
            action="provision", error="not started: an earlier project failed (use --keep-going to run every project)",
        )

    def _failed(self, project: str, action: str, exc: ProvisionError, duration: float = 0.0) -> ProjectResult:
        status = "rolled back" if isinstance(exc, RolledBack) else "failed"
        self.reporter.step(project, f"{status}: {str(exc).splitlines()[0]}")
        return ProjectResult(
            project=project, env=self.config.name, backend=self.backend.name, status=status,
            changed=isinstance(exc, RolledBack), action=action, error=str(exc), duration=duration,
        )

    def _record(self, target: Target, stack: RenderedStack, *, status: str, prepared: Prepared) -> None:
        previous = self.store.read_state(target.env, target.project)
        record: dict[str, Any] = {
            **previous,
            "project": target.project,
            "env": target.env,
            "backend": self.backend.name,
            "status": status,
            "config_hash": stack.config_hash,
            "service_hashes": dict(stack.service_hashes),
            "images": {"db": self.config.images.db, "api": self.config.images.api},
            "variables": {k: target.spec.variables[k] for k in ("db_user", "db_name")},
            "updated_at": utc_now(),
        }
        record.setdefault("created_at", record["updated_at"])
        if prepared.ports is not None:
            record["ports"] = {"api": prepared.ports.api, "db": prepared.ports.db}
        record.pop("destroyed_at", None)
        self.store.write_state(target.env, target.project, record)

    def _set_status(self, target: Target, status: str) -> None:
        state = self.store.read_state(target.env, target.project)
        if state:
            self.store.write_state(target.env, target.project, {**state, "status": status, "updated_at": utc_now()})

    # --- plan ------------------------------------------------------------------------------
    def plan(self, project: str | None = None) -> list[PlanItem]:
        """What provision would do, per project, including drift and orphans. Changes nothing."""
        if project is not None:
            target = self.target(project)
            return [self._plan_one(target, self.backend.observe(target))]
        deployed = self.backend.observe_env(self.config, full=True)
        items = [self._plan_one(self.target(p.name), deployed.get(p.name) or Observed(exists=False))
                 for p in self.config.projects]
        for name in self._orphans(deployed):
            items.append(PlanItem(name, self.config.name, self.backend.name, "orphan",
                                  "deployed in this env but no longer declared (provision --prune --yes removes it)",
                                  declared=False))
        return items

    def _plan_one(self, target: Target, observed: Observed) -> PlanItem:
        prepared = self.backend.prepare(target, observed, create=False)
        stack = self._render(target, prepared)
        decision = plan(stack, observed)
        outcome = {Action.CREATE: "create", Action.DRIFT: "drift", Action.UPDATE: "update",
                   Action.START: "update", Action.NOOP: "no-op"}[decision.action]
        diff = ""
        if outcome in ("update", "drift") and observed.applied_text:
            diff = unified_diff(observed.applied_text, stack.text, f"deployed/{target.project}", f"rendered/{target.project}")
        return PlanItem(target.project, target.env, self.backend.name, outcome, decision.reason, diff,
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
        deployed = self.backend.observe_env(self.config) if deployed is None else deployed
        return sorted(name for name, observed in deployed.items() if observed.exists and name not in declared)

    # --- lifecycle -----------------------------------------------------------------------
    def control(self, project: str, verb: ControlVerb) -> ProjectResult:
        """stop / start / restart; start and restart wait until the stack answers again."""
        target = self.known_target(project)
        with self._operation(target, verb) as note:
            self._refuse_destroyed(target, verb)
            changed = self.backend.control(target, verb)
            note["record"] = changed
            prepared = self.backend.prepare(target, self.backend.observe(target), create=False)
            if verb == "stop":
                endpoints = self.backend.endpoints(target, prepared)
                status = "stopped"
            else:
                endpoints = self.backend.wait(target, prepared, timeout=self.config.health.timeout)
                status = "running"
        note_text = {"stop": ("stopped", "already stopped"), "start": ("started", "already running"),
                     "restart": ("restarted", "restarted")}[verb]
        self.reporter.step(project, note_text[0] if changed else note_text[1])
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name, status=status, changed=changed,
            action=verb, api_url=endpoints.api_url, db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope,
            declared=target.spec.declared, duration=note["duration"],
        )

    def _refuse_destroyed(self, target: Target, verb: str) -> None:
        state = self.store.read_state(target.env, target.project)
        if state.get("status") == "destroyed":
            raise ProvisionError(
                f"{target.project!r} in env {target.env!r} was destroyed (its data volume was kept): "
                f"run `invoke provision --env={target.env} --project={target.project}` to bring it back, not {verb}"
            )

    def destroy(self, project: str, *, delete_data: bool = False, yes: bool = False, backup: bool = True) -> ProjectResult:
        """Remove the project's stack. Keeps the data volume and its credentials unless `delete_data`.

        With `delete_data` (which needs `yes`), writes a pg_dump to the state directory first unless
        `backup` is False.
        """
        if delete_data and not yes:
            raise ConfirmationRequired(
                f"--delete-data permanently deletes the database of {project!r} in env {self.config.name!r}: "
                f"add --yes to confirm (a pg_dump is written to the state directory first unless --no-backup)"
            )
        target = self.known_target(project)
        action = "destroy --delete-data" if delete_data else "destroy"
        with self._operation(target, action) as note:
            observed = self.backend.observe(target)
            prepared = self.backend.prepare(target, observed, create=False)
            self._hook("pre-destroy", target, action,
                       lambda: self.backend.endpoints(target, prepared) if observed.exists else None)
            paths = self.store.paths(target.env, project)
            backup_to = None
            if delete_data and backup:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                backup_to = paths.backups / f"{project}-{target.env}-{stamp}.sql"
            done = self.backend.destroy(target, delete_data=delete_data, backup_to=backup_to)
            note["record"] = changed = bool(done)
            state = self.store.read_state(target.env, project)
            if delete_data:
                self.store.delete_secrets(target.env, project)
                for path in (paths.state, paths.compose):
                    path.unlink(missing_ok=True)
                done.append("deleted the project's secrets and records (backups stay)")
            elif state:
                self.store.write_state(target.env, project, {**state, "status": "destroyed", "destroyed_at": utc_now()})
            self._hook("post-destroy", target, action, lambda: None)
        if not delete_data:
            done.append(f"`invoke destroy --env={target.env} --project={project} --delete-data --yes` deletes the data")
        for line in done:
            self.reporter.step(project, line)
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name,
            status="deleted" if delete_data else "destroyed", changed=changed,
            action="destroy", declared=target.spec.declared, messages=tuple(done), duration=note["duration"],
        )

    # --- reads ---------------------------------------------------------------------------
    def status(self, project: str | None = None) -> RunSummary:
        """Status of one project, or of every declared, recorded or deployed project in the env."""
        single = project is not None
        projects = [self.known_target(project).project] if project is not None else self.project_names()
        observed_all = {} if single else self.backend.observe_env(self.config)
        results = []
        for name in projects:
            target = self.target(name)
            observed = self.backend.observe(target) if single else observed_all.get(name)
            results.append(self.status_of(target, observed or Observed(exists=False)))
        return RunSummary(self.config.name, self.backend.name, tuple(results))

    def status_of(self, target: Target, observed: Observed) -> ProjectResult:
        state = self.store.read_state(target.env, target.project)
        prepared = self.backend.prepare(target, observed, create=False)
        endpoints = self.backend.endpoints(target, prepared) if (observed.exists or state) else None
        status = observed.summary()
        if status == "absent":
            status = {"destroyed": "destroyed"}.get(str(state.get("status")), "not provisioned")
        return ProjectResult(
            project=target.project, env=target.env, backend=self.backend.name, status=status, changed=False,
            action="status",
            api_url=endpoints.api_url if endpoints else None,
            db_url=endpoints.db_url if endpoints else None,
            db_url_scope=endpoints.db_url_scope if endpoints else "host",
            declared=target.spec.declared,
            services=tuple(ServiceStatus(k, v.state, v.health) for k, v in sorted(observed.services.items())),
            messages=(f"drift: {observed.drift}",) if observed.drift else (),
        )

    def outputs(self, project: str) -> ProjectResult:
        """api_url and db_url of a provisioned project (ProjectNotFound if it never was)."""
        target = self.known_target(project)
        result = self.status_of(target, self.backend.observe(target))
        if result.api_url is None and result.db_url is None:
            raise ProjectNotFound(
                f"{project!r} has not been provisioned in env {self.config.name!r}: "
                f"run `invoke provision --env={self.config.name} --project={project}` first"
            )
        return result

    def logs(self, project: str, *, service: str | None = None, tail: int = 100) -> str:
        target = self.known_target(project)
        return self.backend.logs(target, service=service, tail=tail)

    def project_names(self) -> list[str]:
        """Declared projects first (in file order), then recorded or deployed undeclared ones."""
        declared = [p.name for p in self.config.projects]
        extra = {p for env, p in self.store.known_projects(self.config.name)}
        extra |= set(self.backend.observe_env(self.config))
        return declared + sorted(extra - set(declared))


def unified_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """A unified diff of two compose texts, normalised (sorted keys, no hash labels) so that only
    real differences show; secrets are never in either text (only ${VAR} references)."""
    try:
        a, b = normalized(before), normalized(after)
    except ProvisionError:
        a, b = before, after
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), before_name, after_name))

