from __future__ import annotations

from provision.core.model import Observed, ServiceState
from provision.core.planner import Action, plan
from provision.core.render import RenderedStack, stack_hash


def stack(hashes: dict[str, str]) -> RenderedStack:
    return RenderedStack(project="shop", env="dev", compose_project="shop_dev", text="", service_hashes=hashes,
                         config_hash=stack_hash(hashes), secret_names=(), document={})


DESIRED = stack({"db": "h-db", "api": "h-api"})
RUNNING = {"db": ServiceState("running", "healthy"), "api": ServiceState("running")}


def test_nothing_deployed_means_create() -> None:
    assert plan(DESIRED, Observed(exists=False)).action is Action.CREATE


def test_same_hash_and_running_means_no_op() -> None:
    decision = plan(DESIRED, Observed(exists=True, config_hash=DESIRED.config_hash, services=RUNNING))
    assert decision.action is Action.NOOP and not decision.changes


def test_changed_hash_means_update() -> None:
    observed = Observed(exists=True, config_hash=stack_hash({"db": "h-db", "api": "old"}), services=RUNNING)
    assert plan(DESIRED, observed).action is Action.UPDATE


def test_stopped_service_with_same_config_means_start() -> None:
    services = {**RUNNING, "api": ServiceState("exited")}
    decision = plan(DESIRED, Observed(exists=True, config_hash=DESIRED.config_hash, services=services))
    assert decision.action is Action.START and "api" in decision.reason


def test_missing_service_means_update() -> None:
    observed = Observed(exists=True, config_hash=DESIRED.config_hash, services={"db": RUNNING["db"]})
    assert plan(DESIRED, observed).action is Action.UPDATE


def test_observed_summary() -> None:
    assert Observed(exists=False).summary() == "absent"
    assert Observed(exists=True, services=RUNNING).summary() == "running"
    assert Observed(exists=True, services={**RUNNING, "db": ServiceState("exited")}).summary() == "partial"
    assert Observed(exists=True, services={"db": ServiceState("exited")}).summary() == "stopped"
    assert Observed(exists=True, services={"db": ServiceState("running", "unhealthy")}).summary() == "unhealthy"
    # a healthcheck not run yet (health.interval is long) is no verdict: the tool's probes decide readiness
    assert Observed(exists=True, services={"db": ServiceState("running", "starting")}).summary() == "running"
    assert Observed(exists=True, services={"db": ServiceState("starting")}).summary() == "starting"


