"""The Coolify drift reader (backends/coolify/models.py `drift`): a table of cases. Rule: drift is told only when
both the compose Coolify stores (read:sensitive tokens see it) and the `compose=` mark provision wrote are there;
the mark is the hash of the text provision pushed (create.py), equal for Coolify's re-dumped copy of it, so only
an edit of its structure, or text that no longer parses as compose, is drift."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from provision.backends.coolify import marks
from provision.backends.coolify.models import Service, compose_hash, drift

PUSHED = ("services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${SERVICE_PASSWORD_DB}\n"
          "  api:\n    image: postgrest/postgrest:v12.2.3\n    depends_on: [db]\n")
REDUMPED = ("services:\n  api:\n    depends_on:\n    - db\n    image: 'postgrest/postgrest:v12.2.3'\n  db:\n"
            "    environment:\n      POSTGRES_PASSWORD: '${SERVICE_PASSWORD_DB}'\n    image: \"postgres:16\"\n")
MARKED = marks.service_description("0123456789abcdef", compose_hash(PUSHED), "team-abc123")
UNMARKED = "a service someone made by hand"

EDITED = "the compose stored in Coolify was edited after provision pushed it"
BROKEN = "the compose stored in Coolify is no longer valid YAML"


@dataclass(frozen=True)
class DriftCase:
    id: str
    service: Service
    says: str | None  # the start of the drift, or None


def service(description: str, compose: str | None) -> Service:
    return Service("svc-uuid", "shop-dev", description, "running:healthy", compose=compose)


DRIFT_CASES = [
    DriftCase("as-pushed", service(MARKED, PUSHED), None),
    DriftCase("re-dumped-by-coolify", service(MARKED, REDUMPED), None),
    DriftCase("compose-not-readable", service(MARKED, None), None),  # a token without read:sensitive
    DriftCase("empty-compose-reads-as-none", Service.parse({"uuid": "svc-uuid", "description": MARKED,
                                                            "docker_compose_raw": ""}), None),
    DriftCase("no-compose-mark", service(UNMARKED, PUSHED.replace("16", "17")), None),
    DriftCase("image-edited", service(MARKED, PUSHED.replace("postgres:16", "postgres:17")), EDITED),
    DriftCase("service-added", service(MARKED, PUSHED + "  worker:\n    image: busybox\n"), EDITED),
    DriftCase("service-removed", service(MARKED, PUSHED.split("  api:")[0]), EDITED),
    DriftCase("not-yaml", service(MARKED, "services: [db\n"), BROKEN),
    DriftCase("yaml-but-not-a-mapping", service(MARKED, "- db\n- api\n"), BROKEN),
]


@pytest.mark.parametrize("case", DRIFT_CASES, ids=lambda c: c.id)
def test_drift(case: DriftCase) -> None:
    found = drift(case.service)
    if case.says is None:
        assert found is None
    else:
        assert found is not None and found.startswith(case.says)
