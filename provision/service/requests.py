"""Requests to create projects that arrive over HTTP: part of the service layer, on top of a Provisioner.

It holds the rules the HTTP module must not: name reservation, background jobs, idempotency keys
(kept in the state directory, so they survive a restart), resuming what a killed server accepted,
and the short-lived listing cache. Every error it raises is a ProvisionError.
"""

from __future__ import annotations

import secrets as _random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..core.errors import IdempotencyMismatch, ProjectConflict, ProvisionError
from ..core.model import ControlVerb
from ..core.results import ProjectResult
from ..infra import incidents
from ..infra.clock import utc_now
from ..state.records import ProjectRecord
from . import Provisioner
from .engine import Engine

LIST_CACHE_SECONDS = 2.0
VIA = "api"


@dataclass(frozen=True)
class Job:
    """A create that is queued or running in the background, or that failed there."""

    status: str = "provisioning"
    error: str | None = None
    unexpected: bool = False  # failed on a bug (an incident), not on the backend


@dataclass(frozen=True)
class Accepted:
    """The answer to a create request: `result` when it finished (or was finished before), else a job runs."""

    project: str
    finished: bool
    result: ProjectResult | Job | None = None


class ProjectRequests:
    """Create, list, control and delete projects of one env for the HTTP API."""

    def __init__(self, provisioner: Provisioner, *, workers: int = 16) -> None:
        self.provisioner = provisioner
        self.store = provisioner.store
        self.env = provisioner.env
        self.backend = provisioner.backend.name
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api-job")
        self.jobs: dict[str, Job] = {}
        self.futures: dict[str, Future[ProjectResult | None]] = {}  # background creates, until they finish
        self._lock = threading.Lock()  # reservations and idempotency keys
        self._listing: tuple[float, list[ProjectResult]] | None = None
        self._refreshing = threading.Lock()

    @property
    def min_name_length(self) -> int:
        return self.provisioner.config.min_project_name

    def create(self, name: str | None, *, wait: bool, key: str | None) -> Accepted:
        """Reserve a name (or return the project an idempotency key already created) and provision it.

        Only the reservation is serialised; checking the backend and provisioning run concurrently
        for different names. Raises ProjectConflict when the name is taken or being created.
        """
        with self._lock:
            if key:
                seen = self.store.read_idempotency(self.env, key)
                known = seen.get("project")
                if known:
                    if seen.get("requested", name) != name:  # records from before this rule have no "requested"
                        raise IdempotencyMismatch(
                            f"Idempotency-Key {key!r} was used for a request with "
                            f"{_described(seen.get('requested'))}, and this one has {_described(name)}: a key "
                            f"names one request; use a new key for a different one")
                    job = self.jobs.get(str(known))
                    return Accepted(str(known), finished=not (job is not None and job.status == "provisioning"))
            requested = name
            if name is None:
                name = _random.token_hex(6)  # 48 random bits: a clash is checked below all the same
            self.provisioner.target(name)  # the one name rule (InvalidName)
            if name in self.jobs and self.jobs[name].status == "provisioning":
                raise ProjectConflict(f"a project named {name!r} is being created in env {self.env!r}")
            self.jobs[name] = Job()
            if key:
                self.store.write_idempotency(self.env, key, {"project": name, "requested": requested,
                                                             "at": utc_now()})
        try:
            if is_taken(self.provisioner.engine, name):
                raise ProjectConflict(f"a project named {name!r} already exists in env {self.env!r}")
            mark_requested(self.provisioner.engine, name, via=VIA)
        except BaseException:
            with self._lock:
                self.jobs.pop(name, None)
                if key:
                    self.store.delete_idempotency(self.env, key)
            raise
        if not wait:
            self.futures[name] = self.pool.submit(self._run, name)
            return Accepted(name, finished=False)
        return Accepted(name, finished=True, result=self._run(name) or self.jobs.get(name))

    def _run(self, name: str) -> ProjectResult | None:
        """Provision `name` and record the outcome in the job table; in the background errors are kept, not
        raised, and an unexpected one fails the job (with an incident id) instead of leaving it provisioning."""
        try:
            result = self.provisioner.provision(name, create=True)  # a POST is an explicit create
        except ProvisionError as exc:
            self.jobs[name] = Job(status="failed", error=str(exc))
            self._changed()
            return None
        except Exception as exc:
            self.jobs[name] = Job(status="failed", error=str(incidents.record(exc)), unexpected=True)
            self._changed()
            return None
        finally:
            self.futures.pop(name, None)
        self.jobs.pop(name, None)
        self._changed()
        return result

    def resume(self) -> list[str]:
        """Finish the API requests a previous server process accepted but did not complete."""
        unfinished = requested(self.provisioner.engine, via=VIA)
        for name in unfinished:
            self.jobs[name] = Job()
            self.futures[name] = self.pool.submit(self._run, name)
        return unfinished

    def get(self, name: str) -> ProjectResult | Job:
        job = self.jobs.get(name)
        if job is not None:
            return job
        return self.provisioner.status(name, usage=False).results[0]

    def all_projects(self) -> list[tuple[str, ProjectResult | Job]]:
        """Every project, from a listing at most LIST_CACHE_SECONDS old; an older one is served while a
        fresh one is built in the background (only the first request ever waits for one)."""
        listing = self._listing
        if listing is None:
            with self._refreshing:
                listing = self._listing or self._refresh()
        elif time.monotonic() - listing[0] > LIST_CACHE_SECONDS and self._refreshing.acquire(blocking=False):
            def refresh() -> None:
                try:
                    self._refresh()
                finally:
                    self._refreshing.release()

            self.pool.submit(refresh)
        jobs = dict(self.jobs)
        items: list[tuple[str, ProjectResult | Job]] = [(r.project, jobs.pop(r.project, r)) for r in listing[1]]
        items.extend(jobs.items())
        return items

    def _refresh(self) -> tuple[float, list[ProjectResult]]:
        self._listing = (time.monotonic(), list(self.provisioner.status(usage=False).results))
        return self._listing

    def _changed(self) -> None:
        """Something changed through the API: the next listing is built afresh."""
        self._listing = None

    def control(self, name: str, verb: ControlVerb) -> ProjectResult:
        try:
            return self.provisioner.control(name, verb)
        finally:
            self._changed()

    def delete(self, name: str, *, delete_data: bool, backup: bool = True,
               leave_branches: bool = False) -> ProjectResult:
        """Destroy `name`; a create of it still queued is cancelled, one already running is waited for, so
        what the DELETE answers is the final state."""
        future = self.futures.pop(name, None)
        if future is not None and not future.cancel():
            future.result()  # the create runs: let it finish (its errors are kept in the job), then destroy
        self.jobs.pop(name, None)
        try:
            return self.provisioner.destroy(name, delete_data=delete_data, yes=True, backup=delete_data and backup,
                                            leave_branches=leave_branches)
        finally:
            self._changed()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _described(name: object) -> str:
    return f"name {name!r}" if name else "no name (a generated one)"


def is_taken(engine: Engine, project: str) -> bool:
    """A live record or something deployed under this name. A destroyed or failed project, or one
    only declared in the env file, may be created (again): its kept data is reattached."""
    record = engine.record(project)
    if record is not None and record.live:
        return True
    return engine.backend.observe(engine.target(project), engine.handle(record)).exists


def mark_requested(engine: Engine, project: str, *, via: str) -> None:
    """Record that a request to create `project` was accepted (a destroyed project keeps its records)."""
    previous = engine.record(project)
    base = previous or ProjectRecord(project=project, env=engine.env)
    engine.write(base.evolve(status="requested", created_via=via, requested_at=utc_now()), previous)


def requested(engine: Engine, *, via: str) -> list[str]:
    """Projects whose creation was requested through `via` and not finished (a killed server's work)."""
    return [project for project, record in engine.records().items()
            if record is not None and record.created_via == via
            and record.status in ("requested", "applying", "interrupted")]
