"""The reads: status (with what each stack costs), outputs, logs, psql, doctor, and the env's project names.
They change nothing and take no lock."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from ..backends.base import Archives, Diagnosing, Metering
from ..core import roles
from ..core.errors import ConfigError, ProjectConflict, ProjectNotFound, ProvisionError, TemplateError, redact
from ..core.model import ABSENT, NO_ENDPOINTS, Observed, Target, Usage
from ..core.render import parse_compose
from ..core.results import ProjectResult, RunSummary, ServiceStatus
from ..core.secrets import generate_missing
from ..infra import dbaccess, hints
from ..infra import doctor as checkup
from ..infra.shell import ShellCommand
from ..state.records import ProjectRecord
from .archive import lineage_of, read_archive
from .branching import mark_of
from .engine import Engine


def _mib(size: int | None) -> str:
    return f"{(size or 0) / 2**20:.0f} MiB"


class Reads:
    """The reads of one env on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def doctor(self) -> checkup.Report:
        """`provision doctor`: the backend's checks before a first run (backends' `doctor`), given what provision
        would send for a throwaway project `provision-doctor-<hex>`: its rendered stack and the SQL every change
        of a stack runs (the roles, `Engine.make_roles`, with throwaway passwords). Writes no state and takes no lock:
        the throwaway project is nobody's, and what the backend makes of it, it removes again."""
        target = self.engine.target(checkup.throwaway_name())

        def task_sql() -> tuple[str, str | None]:
            wanted = roles.Roles.of(target.spec.variables, archiving=target.spec.backup.continuous)
            return roles.ensure_sql(wanted, str(target.spec.variables["db_name"]), generate_missing({})), wanted.admin

        backend = self.engine.backend
        probe = checkup.DoctorProbe(target, lambda: self.engine.render(target.project)[0], task_sql)
        checks = backend.doctor(probe) if isinstance(backend, Diagnosing) else []
        return checkup.Report(self.engine.env, backend.name, tuple(checks))

    def status(self, project: str | None = None, *, usage: bool = True) -> RunSummary:
        """Status of one project, or of every declared, recorded or deployed project in the env; with `usage`,
        what each running stack costs (one sweep of the backend for all of them), and the backup health of each
        project with continuous archiving."""
        if project is not None:
            target = self.engine.known_target(project)
            record = self.engine.record(project)
            observed = self.engine.observe(target, record)
            costs = self.usage([project]) if usage and observed.exists else {}
            health = self.backup_health({project: (target, observed, record)}) if usage else {}
            result = self.status_of(target, observed, record, costs.get(project), health.get(project))
            return RunSummary(self.engine.env, self.engine.backend.name, (result,))
        records = self.engine.records()
        with ThreadPoolExecutor(max_workers=1) as pool:
            # what every stack of the env costs is read (its CPU sampled over a moment) while the env is observed
            asked = pool.submit(self.usage, None) if usage else None
            observed_all = self.engine.observe_env(records=records)
            costs = asked.result() if asked is not None else {}
        seen = {name: (self.engine.target(name), observed_all.get(name) or ABSENT, records.get(name))
                for name in self.project_names(observed_all, recorded=records)}
        health = self.backup_health(seen) if usage else {}
        results = [self.status_of(target, observed, record, costs.get(name), health.get(name))
                   for name, (target, observed, record) in seen.items()]
        return RunSummary(self.engine.env, self.engine.backend.name, tuple(results))

    def backup_health(self, seen: Mapping[str, tuple[Target, Observed, ProjectRecord | None]]
                      ) -> dict[str, dict[str, str]]:
        """The backup health (`health`, `reason`) of each project of `seen` with continuous archiving and a stack,
        read in parallel where the backend reads archives; a read that fails is a `failed` health saying why."""
        wanted = {name: parts for name, parts in seen.items()
                  if parts[0].spec.backup.continuous and parts[1].exists and not parts[1].foreign
                  and isinstance(self.engine.backend, Archives)}

        def one(parts: tuple[Target, Observed, ProjectRecord | None]) -> dict[str, str]:
            target, observed, record = parts
            try:
                found = read_archive(self.engine, target, observed, lineage_of(record), datetime.now(UTC))
            except ProvisionError as exc:
                return {"health": "failed", "reason": f"its archive could not be read: {str(exc).splitlines()[0]}"}
            return {"health": found.health, "reason": found.reason}

        if not wanted:
            return {}
        with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
            return dict(zip(wanted, pool.map(one, wanted.values()), strict=True))

    def usage(self, projects: Collection[str] | None) -> Mapping[str, Mapping[str, Usage]]:
        """What the containers of `projects` (None: all of the env) cost now; empty where the backend cannot tell."""
        backend = self.engine.backend
        return backend.usage(self.engine.config, projects) if isinstance(backend, Metering) else {}

    def status_of(self, target: Target, observed: Observed, record: ProjectRecord | None,
                  usage: Mapping[str, Usage] | None = None, backup: Mapping[str, str] | None = None) -> ProjectResult:
        """One project's status from an observation and its record (None: it has none), with what its
        containers cost when `usage` is given and its backup health when `backup` is."""
        prepared = self.engine.prepare(target, observed, create=False)
        endpoints = (self.engine.backend.endpoints(target, self.engine.known(observed, record), prepared)
                     if (observed.exists or record) and not observed.foreign else NO_ENDPOINTS)
        status = observed.summary(expected=_applied_services(observed))
        if observed.foreign:
            status = "taken"
        elif status == "absent":
            status = "destroyed" if record is not None and record.status == "destroyed" else "not provisioned"
        usage = usage or {}
        oom = sorted(name for name, u in usage.items() if u.oom_killed)
        messages = [f"drift: {observed.drift}"] if observed.drift else []
        mark = mark_of(record, observed)
        if mark is not None:
            messages.append(f"branch of {mark.parent!r}" + (f" (env {mark.parent_env})" if mark.parent_env != target.env
                            else "") + f", taken {mark.taken_at}, " +
                            (f"expires {mark.expires_at}" if mark.expires_at else "never expires"))
        messages += [observed.foreign] if observed.foreign else []
        if backup is not None and backup["health"] != "ok":
            messages.append(f"backup {backup['health']}: {backup['reason']}")
        messages += [f"{name}: OOM-killed (over its memory limit"
                     + (f" of {_mib(usage[name].memory_limit_bytes)}" if usage[name].memory_limit_bytes else "")
                     + "): raise resources." + name + ".memory" for name in oom]
        return ProjectResult(
            project=target.project, env=target.env, backend=self.engine.backend.name, status=status, changed=False,
            action="status", api_url=endpoints.api_url, db_url=endpoints.db_url,
            db_url_scope=endpoints.db_url_scope, declared=target.spec.declared,
            services=tuple(ServiceStatus(k, v.state, v.health, usage.get(k)) for k, v in sorted(observed.services.items())),
            messages=tuple(messages), server=observed.server,
            details={**({"branch": mark.to_dict()} if mark is not None else {}),
                     **({"backup": dict(backup)} if backup is not None else {})},
        )

    def outputs(self, project: str) -> ProjectResult:
        """api_url and db_url of a provisioned project: ProjectNotFound if it never was, ProjectConflict (exit 1,
        no URLs) when it was destroyed, as its URLs answer no more."""
        target = self.engine.known_target(project)
        record = self.engine.record(project)
        if record is not None and record.status == "destroyed":
            raise ProjectConflict(
                f"{project!r} in env {self.engine.env!r} was destroyed (its data volume was kept), so it has no URLs: "
                f"{hints.command('provision', env=self.engine.env, project=project)} brings it back")
        result = self.status_of(target, self.engine.observe(target, record), record)
        if result.api_url is None and result.db_url is None:
            raise ProjectNotFound(
                f"{project!r} has not been provisioned in env {self.engine.env!r}: "
                f"run {hints.command('provision', env=self.engine.env, project=project, create=not target.spec.declared)} "
                f"first"
            )
        return result

    def logs(self, project: str, *, service: str | None = None, tail: int = 100, since: datetime | None = None,
             follow: bool = False) -> Iterator[str]:
        """The project's container logs as chunks of text; with `follow`, endless until the reader stops (the
        caller's Ctrl-C). Every secret of the project is redacted here, whatever the backend redacts itself (local:
        a stack applied before its compose.env existed has no file to redact with)."""
        target = self.engine.known_target(project)
        observed = self.engine.observe(target, self.engine.record(project))
        services = observed.services or self.engine.render(project)[0].services
        if service is not None and service not in services:
            raise ConfigError(f"--service {service!r}: {project!r} has {', '.join(sorted(services))}")
        secrets = [s.reveal() for s in self.engine.prepare(target, observed, create=False).secrets.values()]
        chunks = self.engine.backend.logs(target, observed, service=service, tail=tail, since=since, follow=follow)
        return (redact(chunk, secrets) for chunk in chunks)

    def psql(self, project: str, *, sql: str | None = None, via: str = "auto", tty: bool = False) -> ShellCommand:
        """The command that opens psql on the project's database: this machine's psql when there is one and the
        database is published to it (`via` auto or host), else psql inside the db container (auto or container).
        The password travels as PGPASSWORD in the child's environment. `sql`: run it and exit (psql --command)."""
        if via not in ("auto", "host", "container"):
            raise ConfigError(f"--via {via!r}: use auto, host or container")
        target = self.engine.known_target(project)
        observed, prepared = self.engine.running(target)
        handle = self.engine.known(observed, self.engine.record(project))
        return dbaccess.psql_command(self.engine.backend, target, handle, prepared, sql=sql, via=via, tty=tty)

    def project_names(self, deployed: Mapping[str, Observed] | None = None, *,
                      recorded: Mapping[str, ProjectRecord | None] | None = None) -> list[str]:
        """Declared projects first (in file order), then recorded or deployed undeclared ones."""
        declared = [p.name for p in self.engine.config.projects]
        extra = set(self.engine.records() if recorded is None else recorded)
        extra |= set(self.engine.observe_env() if deployed is None else deployed)
        return declared + sorted(extra - set(declared))

    def deployed(self) -> list[str]:
        """The env's projects that have a stack (running or stopped), declared ones first: what `--all` acts on
        (one backend query)."""
        found = self.engine.observe_env()
        return [name for name in self.project_names(found) if (seen := found.get(name)) is not None and seen.exists]



def _applied_services(observed: Observed) -> tuple[str, ...]:
    """The services of the compose text last applied (none when the backend cannot tell, or the text is not
    a compose file)."""
    if not observed.applied_text:
        return ()
    try:
        return tuple(str(name) for name in parse_compose(observed.applied_text).get("services") or ())
    except TemplateError:
        return ()
