"""Branches (issue 23): projects cloned from a parent, recorded as its branches (their record's `branch`, and
labels on the backend), listed by `branches`, removed when expired by `gc`, brought back to the parent's
current data by `reset`, and filled with the parent's data behind a closed API so that a masking script runs
before anything can be read through it.

A branch's data comes in through `fill`: the dump restored, its row counts checked and the masking script
run as the owner role in ONE transaction, so no unmasked row is ever committed, hence never readable through
the branch's API; until `fill` returns, no URL of the branch is printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import CopiesRunningData
from ..core.branches import BranchMark, age_seconds
from ..core.config import EnvConfig
from ..core.errors import ConfigError
from ..core.model import ABSENT, Observed
from ..core.results import ProjectResult
from ..infra import database
from ..state import backups
from ..state.records import ProjectRecord
from .data import DUMP_TIMEOUT, DataVerbs
from .engine import Engine


def mark_of(record: ProjectRecord | None, observed: Observed | None) -> BranchMark | None:
    """A project's branch mark: its record's (this checkout's, the whole mark), else the backend's labels."""
    recorded = BranchMark.from_dict(record.branch) if record is not None else None
    return recorded or (observed.branch if observed is not None else None)


def branches_of(engine: Engine, deployed: Mapping[str, Observed] | None = None) -> dict[str, BranchMark]:
    """Every live branch of the env ({project: mark}): recorded here, or labelled so on the backend (another
    checkout of the same owner made it)."""
    deployed = engine.observe_env() if deployed is None else deployed
    records = engine.records()
    found: dict[str, BranchMark] = {}
    for name in sorted(set(records) | set(deployed)):
        record, observed = records.get(name), deployed.get(name)
        live = (record is not None and record.live) or (observed is not None and (observed.exists or observed.kept_data))
        mark = mark_of(record, observed)
        if live and mark is not None:
            found[name] = mark
    return found


def children(engine: Engine, parent: str, deployed: Mapping[str, Observed] | None = None) -> list[str]:
    """The live branches of `parent` in this env."""
    return sorted(name for name, mark in branches_of(engine, deployed).items()
                  if mark.parent == parent and mark.parent_env in ("", engine.env))


@dataclass(frozen=True)
class BranchInfo:
    """One branch as `branches` lists it."""

    project: str
    mark: BranchMark
    status: str
    api_url: str | None
    expired: bool
    age_s: float | None
    disk_bytes: int | None  # its own data (not shared with the parent) where the backend tells; None: unknown

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, **self.mark.to_dict(), "status": self.status, "api_url": self.api_url,
                "expired": self.expired, "age_s": None if self.age_s is None else round(self.age_s),
                "disk_bytes": self.disk_bytes}


class Branches:
    """branches, gc and the filling of a branch for one env on `engine`; `destroy` is the lifecycle's."""

    def __init__(self, engine: Engine, data: DataVerbs, destroy: Callable[..., ProjectResult],
                 now: Callable[[], float]) -> None:
        self.engine, self.data, self.destroy, self.now = engine, data, destroy, now

    def listing(self) -> list[BranchInfo]:
        """Every live branch of the env with its parent, age, expiry, status and API URL."""
        engine = self.engine
        deployed = engine.observe_env()
        now = self.now()
        infos = []
        for name, mark in branches_of(engine, deployed).items():
            target = engine.target(name)
            observed = deployed.get(name) or ABSENT
            record = engine.record(name)
            prepared = engine.prepare(target, observed, create=False)
            endpoints = engine.backend.endpoints(target, engine.known(observed, record), prepared) \
                if observed.exists else None
            backend = engine.backend
            disk = backend.own_disk(target) if isinstance(backend, CopiesRunningData) else None
            infos.append(BranchInfo(name, mark, observed.summary() if observed.exists else "destroyed",
                                    endpoints.api_url if endpoints else None, mark.expired(now),
                                    age_seconds(mark, now), disk))
        return infos

    def gc(self, *, dry_run: bool = False, keep_data: bool = False) -> list[ProjectResult]:
        """Destroy every expired branch, with its data unless `keep_data`; with `dry_run`, only say which."""
        expired = [info for info in self.listing() if info.expired]
        results = []
        for info in expired:
            if dry_run:
                results.append(ProjectResult(project=info.project, env=self.engine.env,
                                             backend=self.engine.backend.name, status=info.status, changed=False,
                                             action="gc", messages=(f"would remove (expired {info.mark.expires_at})",),
                                             details=info.to_dict()))
                continue
            done = self.destroy(info.project, delete_data=not keep_data, yes=True, backup=False, leave_branches=True)
            results.append(ProjectResult(project=info.project, env=self.engine.env, backend=done.backend,
                                         status=done.status, changed=done.changed, action="gc",
                                         messages=(f"removed (expired {info.mark.expires_at})", *done.messages),
                                         details=info.to_dict(), duration=done.duration))
        return results

    # --- filling a branch with its parent's data -------------------------------------------------
    def fill(self, project: str, chosen: backups.Backup, *, mask: Path | None, action: str) -> ProjectResult:
        """Restore `chosen` into the branch `project`, its row counts checked and `mask` run in the same one
        transaction (database.restore_masked): neither the API nor any client ever sees an unmasked row; then
        the API must answer again."""
        engine = self.engine
        target = engine.known_target(project)
        with engine.operation(target, action, shared=True) as op:
            observed, prepared, access = self.data.running_db(target)
            op.changed = True
            engine.reporter.step(project, f"restoring {chosen.path.name} {access.where}"
                                 + (f", masked with {mask.name} in the same transaction" if mask else ""))
            database.restore_masked(access, self.data.runner, chosen.path, expected=chosen.row_counts, mask=mask,
                                    timeout=DUMP_TIMEOUT)
            engine.backend.wait(target, engine.known(observed, engine.record(project)), prepared,
                                timeout=engine.config.health.timeout)
        return engine.result(target, action, "running", op,
                             [f"restored {chosen.path.name}" + (f", masked with {mask.name}" if mask else "")],
                             {"restored_from": str(chosen.path), "row_counts": chosen.row_counts,
                              "masked_with": str(mask) if mask else None})


def mask_script(source: EnvConfig, dest: EnvConfig, given: str | None, *, no_mask: bool) -> Path | None:
    """The masking script a new branch gets: `given` (--mask), else the branch env's `branches.mask`, else the
    parent env's; none with `no_mask`. ConfigError for a branch of a prod-like env without one (unless
    `no_mask`) and for a script that is not a readable file. Relative paths are the checkout's."""
    if no_mask:
        if given:
            raise ConfigError("--mask and --no-mask exclude each other")
        return None
    chosen = given or dest.branches.mask or source.branches.mask
    if chosen is None:
        if source.branches.prod_like:
            raise ConfigError(f"{source.relpath} is prod-like (branches.prod_like): a branch of it must be masked. "
                              f"Give --mask=FILE.sql (or branches.mask), or --no-mask to copy its rows as they are")
        return None
    path = Path(chosen).expanduser()
    path = path if path.is_absolute() else source.root / path
    if not path.is_file():
        raise ConfigError(f"masking script {chosen}: no such file ({path})")
    return path.resolve()

