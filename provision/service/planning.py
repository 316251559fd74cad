"""plan (what provision would do, drift and orphans included), plan --offline (against this machine's
records only), and where new projects go on a backend that places stacks over several servers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from ..backends.base import Placing
from ..core.errors import ServersFull
from ..core.model import ABSENT, Observed, Target
from ..core.planner import unified_diff
from ..core.render import RenderedStack
from ..core.results import PlanItem
from ..infra import compose_check, hints
from ..state.records import ProjectRecord
from .branching import branches_of
from .engine import Engine

OFFLINE_NOTE = " (offline: the backend was not asked)"


def _offline_decision(stack: RenderedStack, record: ProjectRecord | None) -> tuple[str, str]:
    """Outcome and reason of an offline plan: the rendered stack against the record of the last apply. Pure."""
    if record is None or not record.live or record.config_hash is None:
        return "create", f"this machine has no record of it{OFFLINE_NOTE}"
    if record.config_hash == stack.config_hash:
        return "no-op", f"matches what this machine last applied{OFFLINE_NOTE}"
    changed = sorted(s for s, h in stack.service_hashes.items() if record.service_hashes.get(s) != h)
    what = f"service(s) {', '.join(changed)} differ" if changed else "the configuration differs"
    return "update", f"{what} from what this machine last applied{OFFLINE_NOTE}"


class Planning:
    """plan, plan --offline and placement for one env on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def place_new(self, projects: list[str], deployed: Mapping[str, Observed] | None = None) -> Mapping[str, str]:
        """{project: server} for those of `projects` with no stack yet, where the backend spreads stacks over
        servers (one observation of the env, then the backend's placement); ServersFull when one fits nowhere."""
        backend = self.engine.backend
        if not isinstance(backend, Placing) or not backend.listed_servers(self.engine.config):
            return {}
        deployed = self.engine.observe_env() if deployed is None else deployed
        new = [self.engine.config.project(p) for p in projects if not (deployed.get(p) or ABSENT).exists]
        return backend.place(self.engine.config, new)

    def plan(self, project: str | None = None) -> list[PlanItem]:
        """What provision would do, per project, including drift and orphans. Changes nothing."""
        if project is not None:
            target = self.engine.target(project)
            observed = self.engine.observe(target, self.engine.record(project))
            return self.with_placement([self.plan_one(target, observed)], {project: observed})
        deployed = self.engine.observe_env(full=True)
        items = [self.plan_one(self.engine.target(p.name), deployed.get(p.name) or ABSENT) for p in self.engine.config.projects]
        items = self.with_placement(items, deployed)
        branches = branches_of(self.engine, deployed)
        for name in self.orphans(deployed):
            items.append(PlanItem(name, self.engine.env, self.engine.backend.name, "orphan",
                                  "deployed in this env but no longer declared (provision --prune --yes removes it)",
                                  declared=False))
        for name, mark in branches.items():
            if name not in {p.name for p in self.engine.config.projects}:
                expiry = f"expires {mark.expires_at}" if mark.expires_at else "never expires"
                items.append(PlanItem(name, self.engine.env, self.engine.backend.name, "branch",
                                      f"a branch of {mark.parent!r} taken {mark.taken_at}, {expiry} (gc or destroy "
                                      f"removes it; provision and --prune leave it alone)", declared=False))
        return items

    def with_placement(self, items: list[PlanItem], deployed: Mapping[str, Observed]) -> list[PlanItem]:
        """Each new project's reason names the server it would go to (or why none can take it)."""
        creates = [i.project for i in items if i.outcome == "create"]
        backend = self.engine.backend
        if not creates or not isinstance(backend, Placing) or not backend.listed_servers(self.engine.config):
            return items
        try:
            where = self.place_new(creates, deployed)
        except ServersFull as exc:
            return [replace(i, reason=f"{i.reason}; but {exc}") if i.outcome == "create" else i for i in items]
        return [replace(i, reason=f"{i.reason}, on server {where[i.project]}") if i.project in where else i
                for i in items]

    def plan_offline(self, project: str | None = None) -> list[PlanItem]:
        """What `plan` can say without asking the backend (`plan --offline`: CI without credentials):
        every project is validated and rendered, then compared with what this machine last applied
        (its record's configuration hash). Changes nothing and contacts no server; each reason says so. Each
        stack is checked with this machine's `docker compose config` where it has docker, whatever the backend:
        with no backend to ask, that is the check of the file CI gets (a Coolify env's included)."""
        records = self.engine.records()
        names_ = [project] if project is not None else [p.name for p in self.engine.config.projects]
        items = []
        for name in names_:
            target = self.engine.target(name)
            stack, _ = self.engine.render(name)
            compose_check.check(stack.text, template=self.engine.config.template_path)
            items.append(PlanItem(name, self.engine.env, self.engine.backend.name, *_offline_decision(stack, records.get(name)),
                                  declared=target.spec.declared))
        if project is None:
            declared = set(names_)
            for name, record in sorted(records.items()):
                if name not in declared and record is not None and record.live and record.branch:
                    items.append(PlanItem(name, self.engine.env, self.engine.backend.name, "branch",
                                          f"a branch of {record.branch.get('parent')!r}{OFFLINE_NOTE}", declared=False))
                elif name not in declared and record is not None and record.live:
                    items.append(PlanItem(name, self.engine.env, self.engine.backend.name, "orphan",
                                          f"recorded here but no longer declared{OFFLINE_NOTE}", declared=False))
        return items

    def plan_one(self, target: Target, observed: Observed) -> PlanItem:
        if observed.foreign:
            return PlanItem(target.project, target.env, self.engine.backend.name, "taken", observed.foreign,
                            declared=target.spec.declared)
        _, stack, decision = self.engine.plan_for(target, observed, create=False)
        if decision.changes:
            majors = self.engine.majors(target, self.engine.record(target.project), observed)
            if majors is not None and majors[0] != majors[1]:
                back = self.engine.back_to_kept(target, self.engine.record(target.project), majors[1])
                if back is not None:
                    return PlanItem(target.project, target.env, self.engine.backend.name, "upgrade-db",
                                    f"upgrade-db --rollback {majors[0]} → {majors[1]}: provision refuses it. {back}",
                                    declared=target.spec.declared)
                return PlanItem(target.project, target.env, self.engine.backend.name, "upgrade-db",
                                f"upgrade-db {majors[0]} → {majors[1]}: provision refuses it; run "
                                f"{hints.command('upgrade-db', '--yes', env=target.env, project=target.project)}", declared=target.spec.declared)
        diff = ""
        if decision.outcome in ("update", "drift") and observed.applied_text:
            diff = unified_diff(observed.applied_text, stack.text, f"deployed/{target.project}", f"rendered/{target.project}")
        reason = f"{decision.reason}; {observed.adopting}" if observed.adopting and decision.changes else decision.reason
        return PlanItem(target.project, target.env, self.engine.backend.name, decision.outcome, reason, diff,
                        declared=target.spec.declared)

    def orphans(self, deployed: Mapping[str, Observed] | None = None) -> list[str]:
        """Undeclared projects with a running or stopped stack (data kept by a destroy does not count), branches
        aside (recorded here or labelled so on the backend)."""
        declared = {p.name for p in self.engine.config.projects}
        deployed = self.engine.observe_env() if deployed is None else deployed
        branches = branches_of(self.engine, deployed)
        return sorted(name for name, observed in deployed.items()
                      if observed.exists and name not in declared and name not in branches)

