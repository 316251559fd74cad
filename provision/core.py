"""Operations on projects: observe, plan, apply, wait, record — the same on every backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .backends.base import Action, Backend, ControlVerb, Observed, Prepared, Target, plan
from .config import EnvConfig
from .errors import ConfirmationRequired, ProjectNotFound, ProvisionError
from .render import RenderedStack, build_context, render_stack
from .report import NullReporter, Reporter
from .results import ProjectResult, RunSummary, ServiceStatus
from .state import StateStore

DEFAULT_LOCK_TIMEOUT = 600.0


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Provisioner:
    """Runs operations for one env on one backend. Every changing operation holds the env+project lock."""

    def __init__(
        self,
        config: EnvConfig,
        backend: Backend,
        store: StateStore,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.backend = backend
        self.store = store
        self.lock_timeout = lock_timeout
        self.reporter = reporter or NullReporter()
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
        if project in self.backend.deployed_projects(self.config):
            return target
        raise ProjectNotFound(
            f"project {project!r} is not declared in {self.config.relpath} and was never provisioned in env "
            f"{self.config.name!r}: check the name, or run `invoke provision --env={self.config.name} --project={project}`"
        )

    def render(self, project: str) -> tuple[RenderedStack, Prepared]:
        """Render without changing anything: existing secrets and ports, or a preview of new ones."""
        target = self.target(project)
        prepared = self.backend.prepare(target, Observed(exists=False), create=False)
        stack = render_stack(
            self.config.template_path,
            build_context(self.config, target.spec, backend=self.backend.name, ports=prepared.ports),
            prepared.secrets,
        )
        return stack, prepared

    # --- provision -----------------------------------------------------------------------
    def provision(self, project: str) -> ProjectResult:
        """Create, update or start `project` until it answers; a no-op when it already matches.

        Raises ProvisionError (HealthTimeout with a log tail when the stack does not come up).
        """
        target = self.target(project)
        started = self.clock()
        with self.store.lock(target.env, project, timeout=self.lock_timeout):
            observed = self.backend.observe(target)
            prepared = self.backend.prepare(target, observed)
            stack = render_stack(
                self.config.template_path,
                build_context(self.config, target.spec, backend=self.backend.name, ports=prepared.ports),
                prepared.secrets,
            )
            decision = plan(stack, observed)
            if decision.changes:
                self.reporter.step(project, f"{decision.action.value}: {decision.reason}")
                self._record(target, stack, status="applying", prepared=prepared)
                self.backend.apply(target, stack, prepared, decision)
                self.reporter.step(project, "waiting until api_url answers and db_url accepts connections")
            endpoints = self.backend.wait(target, prepared, timeout=self.config.health.timeout)
            self._record(target, stack, status="provisioned", prepared=prepared)
        elapsed = self.clock() - started
        verb = {Action.CREATE: "created", Action.UPDATE: "updated", Action.START: "started", Action.NOOP: "unchanged"}
        self.reporter.step(project, f"{verb[decision.action]}, running ({elapsed:.1f} s)")
        return ProjectResult(
            project=project,
            env=target.env,
            backend=self.backend.name,
            status="running",
            changed=decision.changes,
            action=decision.action.value,
            api_url=endpoints.api_url,
            db_url=endpoints.db_url,
            db_url_scope=endpoints.db_url_scope,
            declared=target.spec.declared,
            duration=elapsed,
        )

    def provision_many(self, projects: list[str], *, keep_going: bool = False, parallel: int = 1) -> RunSummary:
        """Provision several projects, up to `parallel` at a time, results in the given order.

        Fail-fast by default: after a failure no further project is started (those already
        running finish) and the rest are reported as skipped; `keep_going` runs them all.
        """
        results: dict[str, ProjectResult] = {}
        stop = threading.Event()

        def run(project: str) -> None:
            if stop.is_set():
                results[project] = self._skipped(project)
                return
            try:
                results[project] = self.provision(project)
            except ProvisionError as exc:
                results[project] = self._failed(project, "provision", exc)
                if not keep_going:
                    stop.set()

        if parallel <= 1:
            for project in projects:
                run(project)
        else:
            with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="provision") as pool:
                for future in [pool.submit(run, project) for project in projects]:
                    future.result()
        return RunSummary(self.config.name, self.backend.name, tuple(results[p] for p in projects))

    def _skipped(self, project: str) -> ProjectResult:
        return ProjectResult(
            project=project, env=self.config.name, backend=self.backend.name, status="skipped", changed=False,
            action="provision", error="not started: an earlier project failed (use --keep-going to run every project)",
        )

    def _failed(self, project: str, action: str, exc: ProvisionError) -> ProjectResult:
        self.reporter.step(project, f"failed: {str(exc).splitlines()[0]}")
        return ProjectResult(
            project=project, env=self.config.name, backend=self.backend.name, status="failed",
            changed=False, action=action, error=str(exc),
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

    # --- lifecycle -----------------------------------------------------------------------
    def control(self, project: str, verb: ControlVerb) -> ProjectResult:
        """stop / start / restart; start and restart wait until the stack answers again."""
        target = self.known_target(project)
        started = self.clock()
        with self.store.lock(target.env, project, timeout=self.lock_timeout):
            self._refuse_destroyed(target, verb)
            changed = self.backend.control(target, verb)
            prepared = self.backend.prepare(target, self.backend.observe(target), create=False)
            if verb == "stop":
                endpoints = self.backend.endpoints(target, prepared)
                status = "stopped"
            else:
                endpoints = self.backend.wait(target, prepared, timeout=self.config.health.timeout)
                status = "running"
        note = {"stop": ("stopped", "already stopped"), "start": ("started", "already running"),
                "restart": ("restarted", "restarted")}[verb]
        self.reporter.step(project, note[0] if changed else note[1])
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name, status=status, changed=changed,
            action=verb, api_url=endpoints.api_url, db_url=endpoints.db_url, db_url_scope=endpoints.db_url_scope,
            declared=target.spec.declared, duration=self.clock() - started,
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
        started = self.clock()
        with self.store.lock(target.env, project, timeout=self.lock_timeout):
            paths = self.store.paths(target.env, project)
            backup_to = None
            if delete_data and backup:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                backup_to = paths.backups / f"{project}-{target.env}-{stamp}.sql"
            done = self.backend.destroy(target, delete_data=delete_data, backup_to=backup_to)
            changed = bool(done)
            state = self.store.read_state(target.env, project)
            if delete_data:
                self.store.delete_secrets(target.env, project)
                self.backend.forget(target)
                if paths.state.exists():
                    paths.state.unlink()
                if paths.compose.exists():
                    paths.compose.unlink()
                done.append("deleted the project's secrets and port lease")
            elif state:
                self.store.write_state(target.env, project, {**state, "status": "destroyed", "destroyed_at": utc_now()})
        if not delete_data:
            done.append(f"`invoke destroy --env={target.env} --project={project} --delete-data --yes` deletes the data")
        for line in done:
            self.reporter.step(project, line)
        return ProjectResult(
            project=project, env=target.env, backend=self.backend.name,
            status="deleted" if delete_data else "destroyed", changed=changed,
            action="destroy", declared=target.spec.declared, messages=tuple(done),
            duration=self.clock() - started,
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
            results.append(self._status_of(target, observed or Observed(exists=False)))
        return RunSummary(self.config.name, self.backend.name, tuple(results))

    def _status_of(self, target: Target, observed: Observed) -> ProjectResult:
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
        )

    def outputs(self, project: str) -> ProjectResult:
        """api_url and db_url of a provisioned project (ProjectNotFound if it never was)."""
        target = self.known_target(project)
        result = self._status_of(target, self.backend.observe(target))
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

