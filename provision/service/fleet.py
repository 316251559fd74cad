"""One operation over several projects: up to `parallel` at a time, fail-fast unless `keep_going`, results in
the given order; an interrupt stops every worker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..core.errors import Interrupted, ProvisionError, RolledBack
from ..core.results import ProjectResult, RunSummary
from ..infra import interrupts
from .engine import Engine
from .reads import Reads


class Fleet:
    """run_many for one env on `engine`; a rolled-back project's result is read with `reads`."""

    def __init__(self, engine: Engine, reads: Reads) -> None:
        self.engine = engine
        self.reads = reads

    def run_many(self, projects: list[str], operation: Callable[[str], ProjectResult], *, action: str,
                 keep_going: bool = False, parallel: int = 1) -> RunSummary:
        """`operation` on each project, up to `parallel` at a time, results in the given order. Fail-fast by
        default: after a failure no further project is started (those already running finish) and the rest
        are reported as skipped; `keep_going` runs them all. An interrupt stops every worker and is re-raised."""
        results: dict[str, ProjectResult] = {}
        stop = threading.Event()

        def run(project: str) -> None:
            if stop.is_set():
                results[project] = self.skipped(project, action)
                return
            started = self.engine.clock()
            try:
                results[project] = operation(project)
            except (Interrupted, KeyboardInterrupt):
                raise
            except ProvisionError as exc:
                results[project] = self.failed(project, action, exc, self.engine.clock() - started)
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
        return RunSummary(self.engine.env, self.engine.backend.name, tuple(results[p] for p in projects))

    def skipped(self, project: str, action: str = "provision") -> ProjectResult:
        return ProjectResult(
            project=project, env=self.engine.env, backend=self.engine.backend.name, status="skipped", changed=False,
            action=action, error="not started: an earlier project failed (use --keep-going to run every project)",
        )

    def failed(self, project: str, action: str, exc: ProvisionError, duration: float = 0.0) -> ProjectResult:
        """A failed project's result; after a rollback, with the URLs of the version that serves again."""
        status = "rolled back" if isinstance(exc, RolledBack) else "failed"
        self.engine.reporter.step(project, f"{status}: {str(exc).splitlines()[0]}")
        served = self.serving(project) if isinstance(exc, RolledBack) else None
        return ProjectResult(
            project=project, env=self.engine.env, backend=self.engine.backend.name, status=status,
            changed=isinstance(exc, RolledBack), action=action, error=str(exc), error_code=exc.exit_code,
            duration=duration,
            api_url=served.api_url if served else None, db_url=served.db_url if served else None,
            db_url_scope=served.db_url_scope if served else "host", server=served.server if served else None,
        )

    def serving(self, project: str) -> ProjectResult | None:
        """What serves `project` now, read again (None when that read fails: the failure is reported already)."""
        try:
            target = self.engine.known_target(project)
            record = self.engine.record(project)
            return self.reads.status_of(target, self.engine.observe(target, record), record)
        except ProvisionError:
            return None

