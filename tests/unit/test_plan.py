"""plan(rendered, observed): one table of cases, a row per branch (create, drift, update, start, no-op), each
expected value written from the rule in planner.plan's docstring; the unified diff of two compose texts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from provision.core.model import Observed, ServiceState
from provision.core.planner import Action, Plan, plan, unified_diff
from provision.core.render import RenderedStack, stack_hash


def stack(hashes: dict[str, str]) -> RenderedStack:
    return RenderedStack(project="shop", env="dev", compose_project="shop_dev", text="", service_hashes=hashes,
                         config_hash=stack_hash(hashes), secret_names=(), document={})


DESIRED = stack({"db": "h-db", "api": "h-api"})
SAME = DESIRED.config_hash
OTHER = stack_hash({"db": "h-db", "api": "old"})
UP = ServiceState("running")
HEALTHY = ServiceState("running", "healthy")
RUNNING = {"db": HEALTHY, "api": UP}


@dataclass(frozen=True)
class PlanCase:
    id: str
    observed: Observed
    action: Action
    says: tuple[str, ...] = ()  # in the reason
    not_says: tuple[str, ...] = ()  # not in the reason
    desired: RenderedStack = DESIRED


PLAN_CASES = [
    # create: nothing deployed, whatever else the backend says
    PlanCase("absent", Observed(exists=False), Action.CREATE, ("nothing is deployed",)),
    PlanCase("absent-with-drift-and-services", Observed(exists=False, drift="edited", config_hash=OTHER,
                                                        services={"db": ServiceState("exited")}),
             Action.CREATE, ("nothing is deployed",)),
    PlanCase("absent-foreign", Observed(exists=False, foreign="taken by team-x"), Action.CREATE),
    # drift: changed outside provision; it comes before every comparison with the rendered stack
    PlanCase("drift-same-config", Observed(exists=True, config_hash=SAME, services=RUNNING,
                                           drift="db was replaced outside provision"),
             Action.DRIFT, ("db was replaced outside provision",)),
    PlanCase("drift-over-update", Observed(exists=True, config_hash=OTHER, services=RUNNING, drift="edited in Coolify"),
             Action.DRIFT, ("edited in Coolify",)),
    PlanCase("drift-over-start", Observed(exists=True, config_hash=SAME, services={"db": ServiceState("exited")},
                                          drift="edited"), Action.DRIFT, ("edited",)),
    # update: the deployed configuration differs
    PlanCase("hash-differs", Observed(exists=True, config_hash=OTHER, services=RUNNING), Action.UPDATE,
             ("deployed configuration differs",)),
    PlanCase("hash-unknown", Observed(exists=True, config_hash=None, services=RUNNING), Action.UPDATE,
             ("deployed configuration differs",)),
    PlanCase("hash-differs-and-stopped", Observed(exists=True, config_hash=OTHER,
                                                  services={"db": ServiceState("exited"), "api": UP}),
             Action.UPDATE, ("deployed configuration differs",)),
    PlanCase("one-service-missing", Observed(exists=True, config_hash=SAME, services={"db": HEALTHY}), Action.UPDATE,
             ("service(s) api are not deployed",), ("db",)),
    PlanCase("every-service-missing", Observed(exists=True, config_hash=SAME), Action.UPDATE,
             ("db", "api", "not deployed")),
    PlanCase("missing-over-stopped", Observed(exists=True, config_hash=SAME, services={"db": ServiceState("exited")}),
             Action.UPDATE, ("api", "not deployed"), ("db",)),
    # start: same configuration, something not running
    PlanCase("one-exited", Observed(exists=True, config_hash=SAME, services={**RUNNING, "api": ServiceState("exited")}),
             Action.START, ("service(s) api are not running",), ("db",)),
    PlanCase("all-exited", Observed(exists=True, config_hash=SAME, services={"db": ServiceState("exited"),
                                                                           "api": ServiceState("exited")}),
             Action.START, ("service(s) api, db are not running",)),
    PlanCase("restarting", Observed(exists=True, config_hash=SAME, services={**RUNNING, "db": ServiceState("restarting")}),
             Action.START, ("db",)),
    PlanCase("created-not-started", Observed(exists=True, config_hash=SAME,
                                             services={**RUNNING, "api": ServiceState("created")}),
             Action.START, ("api",)),
    PlanCase("extra-observed-service-stopped", Observed(exists=True, config_hash=SAME,
                                                        services={**RUNNING, "worker": ServiceState("exited")}),
             Action.START, ("worker",)),
    # no-op: same configuration, every service running; health is the waits' business, not the plan's
    PlanCase("all-running", Observed(exists=True, config_hash=SAME, services=RUNNING), Action.NOOP,
             ("matches and every service is running",)),
    PlanCase("running-unhealthy", Observed(exists=True, config_hash=SAME,
                                           services={"db": ServiceState("running", "unhealthy"), "api": UP}),
             Action.NOOP),
    PlanCase("running-health-starting", Observed(exists=True, config_hash=SAME,
                                                 services={"db": ServiceState("running", "starting"), "api": UP}),
             Action.NOOP),
    PlanCase("no-drift-empty-string", Observed(exists=True, config_hash=SAME, services=RUNNING, drift=""), Action.NOOP),
    PlanCase("adopting-is-no-plan-of-its-own", Observed(exists=True, config_hash=SAME, services=RUNNING,
                                                        adopting="takes over shop"), Action.NOOP),
    PlanCase("one-service-stack", Observed(exists=True, config_hash=stack_hash({"db": "h"}), services={"db": UP}),
             Action.NOOP, desired=stack({"db": "h"})),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=lambda c: c.id)
def test_plan(case: PlanCase) -> None:
    decision = plan(case.desired, case.observed)
    assert decision.action is case.action
    for text in case.says:
        assert text in decision.reason
    for text in case.not_says:
        assert text not in decision.reason


@pytest.mark.parametrize(("action", "outcome", "changes"), [
    (Action.CREATE, "create", True), (Action.DRIFT, "drift", True), (Action.UPDATE, "update", True),
    (Action.START, "update", True),  # `plan` shows a start as an update of what runs
    (Action.NOOP, "no-op", False),
], ids=lambda v: str(v))
def test_outcome_and_changes(action: Action, outcome: str, changes: bool) -> None:
    decision = Plan(action, "why")
    assert (decision.outcome, decision.changes) == (outcome, changes)


COMPOSE = "services:\n  db:\n    image: postgres:16\n    labels:\n      io.provision.config-hash: aaa\n"


@dataclass(frozen=True)
class DiffCase:
    id: str
    before: str
    after: str
    lines: tuple[str, ...]  # lines the diff holds; () for no diff at all


DIFF_CASES = [
    DiffCase("identical", COMPOSE, COMPOSE, ()),
    DiffCase("only-hash-labels-differ", COMPOSE, COMPOSE.replace("aaa", "bbb"), ()),
    DiffCase("only-key-order-differs", "services:\n  db:\n    image: x\n    restart: always\n",
             "services:\n  db:\n    restart: always\n    image: x\n", ()),
    DiffCase("image-changed", COMPOSE, COMPOSE.replace("postgres:16", "postgres:17"),
             ("--- deployed", "+++ rendered", "-    image: postgres:16", "+    image: postgres:17")),
    DiffCase("not-compose-is-diffed-as-text", "not: [compose\n", "still not\n", ("-not: [compose", "+still not")),
]


@pytest.mark.parametrize("case", DIFF_CASES, ids=lambda c: c.id)
def test_unified_diff(case: DiffCase) -> None:
    diff = unified_diff(case.before, case.after, "deployed", "rendered")
    if not case.lines:
        assert diff == ""
    for line in case.lines:
        assert line in diff.splitlines()


def test_observed_summary() -> None:
    assert Observed(exists=False).summary() == "absent"
    assert Observed(exists=True, services=RUNNING).summary() == "running"
    assert Observed(exists=True, services={**RUNNING, "db": ServiceState("exited")}).summary() == "partial"
    assert Observed(exists=True, services={"db": ServiceState("exited")}).summary() == "stopped"
    assert Observed(exists=True, services={"db": ServiceState("running", "unhealthy")}).summary() == "unhealthy"
    # a healthcheck not run yet (health.interval is long) is no verdict: the tool's probes decide readiness
    assert Observed(exists=True, services={"db": ServiceState("running", "starting")}).summary() == "running"
    assert Observed(exists=True, services={"db": ServiceState("starting")}).summary() == "starting"
