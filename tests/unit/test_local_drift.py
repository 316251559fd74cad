"""The local backend's drift reader (backends/local/facts.py `drift`): a table of cases, each expected answer
written from its rule: what runs differs from what provision last applied when a container's provision hash
label differs from the recorded one (a container replaced, added or gone), else when compose's own config hash
of a service both know differs (recreated by `docker compose` from another file); no baseline, nothing running
or another backend's handle: no drift."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from provision.backends.local.facts import LocalHandle, drift
from provision.core.model import Observed, ServiceState
from provision.core.render import stack_hash

APPLIED = LocalHandle({"db": "p-db", "api": "p-api"}, {"db": "c-db", "api": "c-api"})


def running(service_hashes: dict[str, str], compose_hashes: dict[str, str] | None = None) -> Observed:
    handle = LocalHandle(service_hashes, compose_hashes if compose_hashes is not None else APPLIED.compose_hashes)
    return Observed(exists=True, config_hash=stack_hash(service_hashes),
                    services={s: ServiceState("running") for s in service_hashes}, handle=handle)


class OtherHandle:
    """Another backend's handle: no baseline for the local backend's hashes."""

    def to_dict(self) -> dict[str, str]:
        return {"uuid": "abc"}


SAME = running(dict(APPLIED.service_hashes))


@dataclass(frozen=True)
class DriftCase:
    id: str
    observed: Observed
    baseline: LocalHandle | None
    says: tuple[str, ...] = ()  # () : no drift (None)
    not_says: tuple[str, ...] = ()


REPLACED = "were replaced outside provision (their config labels differ)"
RECREATED = "recreated outside provision from a different configuration"

DRIFT_CASES = [
    DriftCase("same", SAME, APPLIED),
    DriftCase("same-in-another-order", running({"api": "p-api", "db": "p-db"}, {"api": "c-api", "db": "c-db"}), APPLIED),
    # no baseline to compare with: nothing to say
    DriftCase("no-baseline", running({"db": "other"}), None),
    DriftCase("absent-stack", Observed(exists=False), APPLIED),
    DriftCase("absent-with-a-handle", Observed(exists=False, handle=LocalHandle({"db": "other"})), APPLIED),
    DriftCase("no-running-handle", Observed(exists=True, services={"db": ServiceState("running")}), APPLIED),
    DriftCase("another-backends-handle", Observed(exists=True, handle=OtherHandle()), APPLIED),
    # the provision hash labels
    DriftCase("one-label-differs", running({"db": "edited", "api": "p-api"}), APPLIED,
              (f"container(s) for db {REPLACED}",), ("api",)),
    DriftCase("every-label-differs", running({"db": "x", "api": "y"}), APPLIED, ("container(s) for api, db",)),
    DriftCase("container-added", running({**APPLIED.service_hashes, "worker": "w"}), APPLIED,
              ("container(s) for worker",), ("api", "db,")),
    DriftCase("container-gone", running({"db": "p-db"}), APPLIED, ("container(s) for api",), ("db",)),
    DriftCase("label-removed", running({"db": "", "api": "p-api"}), APPLIED, ("container(s) for db",)),
    DriftCase("labels-win-over-compose-hashes", running({"db": "edited", "api": "p-api"}, {"db": "c-db", "api": "other"}),
              APPLIED, (f"db {REPLACED}",), ("recreated",)),
    # no provision hashes recorded: only compose's hashes are compared
    DriftCase("no-recorded-labels-same-compose", running({"db": "anything"}), LocalHandle({}, APPLIED.compose_hashes)),
    DriftCase("no-recorded-labels-compose-differs", running({"db": "anything"}, {"db": "other", "api": "c-api"}),
              LocalHandle({}, APPLIED.compose_hashes), (f"db {RECREATED}",), ("api",)),
    # compose's own config hash, for the services both know
    DriftCase("compose-hash-differs", running(dict(APPLIED.service_hashes), {"db": "c-db", "api": "by-hand"}), APPLIED,
              (f"api {RECREATED} (docker compose by hand?)",), ("db",)),
    DriftCase("every-compose-hash-differs", running(dict(APPLIED.service_hashes), {"db": "x", "api": "y"}), APPLIED,
              (f"api, db {RECREATED}",)),
    DriftCase("compose-hash-only-running", running(dict(APPLIED.service_hashes), {"db": "c-db", "api": "c-api",
                                                                                  "worker": "c-w"}), APPLIED),
    DriftCase("compose-hash-only-recorded", running(dict(APPLIED.service_hashes), {"db": "c-db"}), APPLIED),
    DriftCase("no-compose-hashes-recorded", running(dict(APPLIED.service_hashes), {"db": "x"}),
              LocalHandle(APPLIED.service_hashes, {})),
]


@pytest.mark.parametrize("case", DRIFT_CASES, ids=lambda c: c.id)
def test_drift(case: DriftCase) -> None:
    found = drift(case.observed, case.baseline)
    if not case.says:
        assert found is None
        return
    assert found is not None
    for text in case.says:
        assert text in found
    for text in case.not_says:
        assert text not in found
