"""`verify`: restore drills of the continuous archive (issue 22). A drill proves end to end that a project's archive
restores, and never says ok for less:

1. a marker row is written into the running database (`provision_drill.marks`, a schema of its own, which the API's
   schemas do not expose; the owner role's, so that its dumps read it) and awaited in the archive (its latest recoverable moment passes the marker's commit);
2. the archive is restored (its end, or `at`) into a throwaway project with a stack of its own (clone --at's path,
   archiving off), which must start and answer: PostgreSQL promoted, the API probed by provision's own wait;
3. in it, the marker must be there (unless `at` is before it), every table must read to its end (exact row
   counts), and amcheck must report nothing in any btree index or table (`bt_index_check`, `verify_heapam`);
4. the throwaway is removed with its data, whatever happened.

The result, with its duration and the restore's share, is the project's history line (action `verify`, result
ok or failed with the reason); `backups` shows the last one, or that none ran."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..backends.base import RestoresArchive
from ..core import archiving
from ..core.errors import ConfigError, ProvisionError
from ..core.results import ProjectResult
from ..core.roles import Roles
from ..infra.clock import utc_stamp
from ..infra.probes import http_probe
from ..state import history

if TYPE_CHECKING:
    from . import Provisioner

ACTION = "verify"
NO_ARCHIVING = {"backup": "{continuous: false}"}  # the throwaway's env override: it archives nothing
_MARK = ("CREATE SCHEMA IF NOT EXISTS provision_drill;\n"
         "CREATE TABLE IF NOT EXISTS provision_drill.marks "
         "(token text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());\n"
         "DELETE FROM provision_drill.marks WHERE at < now() - interval '30 days';\n"
         "INSERT INTO provision_drill.marks (token) VALUES ('{token}') "
         "RETURNING to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"');\n")
_FOUND = "SELECT count(*) FROM provision_drill.marks WHERE token = '{token}';\n"
# amcheck on every permanent btree index and table: one line per problem found (none: a clean database)
_AMCHECK = ("CREATE EXTENSION IF NOT EXISTS amcheck;\n"
            "SELECT count(bt_index_check(c.oid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p' "
            "AND i.indisvalid AND i.indisready;\n"
            "SELECT count(*) FROM pg_class c, LATERAL verify_heapam(c.oid) "
            "WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence = 'p';\n")


class Drills:
    """Restore drills of `source`'s projects into throwaway projects of `throwaway` (the same env, archiving
    off); `wall`/`sleep`: the clock the marker is awaited on."""

    def __init__(self, source: Provisioner, throwaway: Provisioner, *,
                 wall: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = source
        self.throwaway = throwaway
        self.wall = wall
        self.sleep = sleep

    def verify(self, project: str, *, at: str | None = None) -> ProjectResult:
        """One drill of `project` (see the module); its result, also written as the project's history line.
        ConfigError, before anything runs, when archiving is off for it or `at` does not parse."""
        engine = self.source.engine
        target = engine.known_target(project)
        if not target.spec.backup.continuous:
            raise ConfigError(f"verify: {project!r} in env {target.env!r} has no continuous archive to drill: set "
                              f"{target.spec.key('backup.continuous')}: true in {engine.config.relpath}")
        engine.capability(RestoresArchive, target)  # a drill restores into a throwaway project: refused first
        moment = None
        if at is not None:
            try:
                moment = archiving.parse_time(at, datetime.now(UTC))
            except ValueError as exc:
                raise ConfigError(f"--at: {exc}") from None
        started = self.wall()
        name = f"{project}-drill-{utc_stamp().lower()}"[:63]
        found: dict[str, object] = {}
        try:
            found = self._drill(project, name, moment)
            result, detail = "ok", (f"restored {found['to']} into a throwaway stack in {found['restore_s']:.1f} s "
                                    f"and checked it: marker {found['marker']}, {found['tables']} tables, "
                                    f"{found['rows']} rows, amcheck clean, api answered")
        except ProvisionError as exc:
            result, detail = "failed", str(exc).splitlines()[0]
        finally:
            removed = self._remove(name)
        duration = self.wall() - started
        history.record(engine.store.root, env=target.env, project=project, action=ACTION, config_hash=None,
                       result=result, duration=duration, backend=engine.backend.name, detail=detail)
        messages = (f"drill {result}: {detail}", f"the throwaway {name!r} was removed" if removed else
                    f"the throwaway {name!r} could not be removed: destroy it with --delete-data")
        return ProjectResult(project=project, env=target.env, backend=engine.backend.name,
                             status="verified" if result == "ok" else "failed", changed=True, action=ACTION,
                             declared=target.spec.declared, messages=messages, duration=duration,
                             details={"result": result, "detail": detail, "throwaway": name, **found})

    def _drill(self, project: str, name: str, moment: datetime | None) -> dict[str, object]:
        engine = self.source.engine
        target = engine.known_target(project)
        wanted_roles = Roles.of(target.spec.variables)
        admin, owner = wanted_roles.admin, wanted_roles.owner
        token = secrets.token_hex(8)
        observed = engine.observe(target, engine.record(project))
        # as the owner role: its schema is then the owner's, so its own dumps (backup, clone) can read it
        written = engine.sql(target).run_sql(target, observed, _MARK.format(token=token), user=owner,
                                             purpose="verify").split()
        marked = datetime.fromisoformat(written[-1].replace("Z", "+00:00")) if written else None
        wanted = marked is not None and (moment is None or moment >= marked)
        if wanted and marked is not None:
            self._await_archive(project, marked)
        engine.reporter.step(project, f"restoring its archive ({archiving.iso(moment) or 'to its end'}) into the "
                                      f"throwaway project {name!r}")
        made = self.source.archive.clone(project, archiving.iso(moment) or "latest", name,
                                         lambda copy: self.throwaway.provision(copy, create=True),
                                         lambda copy: self.throwaway.destroy(copy, delete_data=True, yes=True,
                                                                             backup=False))
        copy = self.throwaway.engine.known_target(name)
        api = self.throwaway.outputs(name).api_url or ""
        failure = http_probe(api, timeout=10)() if api else "no api_url"
        if failure is not None:
            raise ProvisionError(f"the restored stack's api does not answer: {failure}")
        seen = self.throwaway.engine.observe(copy, self.throwaway.engine.record(name))
        runs = self.throwaway.engine.sql(copy)
        present = runs.run_sql(copy, seen, _FOUND.format(token=token), user=admin, purpose="verify").split()
        if wanted and present != ["1"]:
            raise ProvisionError(f"the marker written at {archiving.iso(marked)} is not in the restored database: "
                                 f"the archive does not reach what it says it does")
        problems = runs.run_sql(copy, seen, _AMCHECK, user=admin, timeout=1800, purpose="verify").split()
        if len(problems) != 2 or problems[1] != "0":
            raise ProvisionError(f"amcheck found corruption in the restored database: {' '.join(problems)[:200]}")
        counts = dict(made.details.get("row_counts") or {})
        return {"to": made.details.get("at") or "the archive's end", "marker": "found" if wanted else "not asked",
                "tables": len(counts), "rows": sum(int(n) for n in counts.values()),
                "restore_s": round(made.duration, 3), "indexes_checked": int(problems[0])}

    def _await_archive(self, project: str, marked: datetime) -> None:
        """Until the archive's latest recoverable moment passes the marker's commit (its max_lag plus a minute)."""
        spec = self.source.engine.known_target(project).spec
        deadline = self.wall() + spec.backup.max_lag + 60
        while True:
            status = self.source.archive.status(project).status
            latest = status.window.latest if status is not None and status.window else None
            if latest is not None and latest >= marked + timedelta(microseconds=1):
                return
            if self.wall() > deadline:
                raise ProvisionError(f"the archive did not reach the marker written at {archiving.iso(marked)} "
                                     f"within {spec.backup.max_lag + 60:.0f} s (latest {archiving.iso(latest)})")
            self.sleep(1.0)

    def _remove(self, name: str) -> bool:
        if self.throwaway.record(name) is None and self.source.record(name) is None:
            return True
        with suppress(ProvisionError):
            self.throwaway.destroy(name, delete_data=True, yes=True, backup=False)
            return True
        return False

