"""Resource limits: compose-style sizes, layering (defaults, env file, project), validation naming the key,
and the PostgreSQL settings a limit implies. Tables of cases; each expected value is written from the rule in
resources.py's docstrings (binary units as Docker reads them, a quarter/half/... of the memory limit)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from provision.core.resources import (
    DEFAULTS,
    MIB,
    ServiceLimits,
    StackLimits,
    limits,
    parse_size,
    postgres_settings,
    show_size,
)

GIB = 1024 * MIB


@pytest.mark.parametrize(("text", "size"), [
    ("256M", 256 * MIB), ("256MiB", 256 * MIB), ("256m", 256 * MIB), ("256mb", 256 * MIB), ("256 M", 256 * MIB),
    (" 256M ", 256 * MIB), ("1G", GIB), ("1GiB", GIB), ("1g", GIB), ("1T", 1024 * GIB), ("512k", 512 * 1024),
    ("512KiB", 512 * 1024), ("1.5G", 1536 * MIB), ("0.5k", 512), (1024, 1024), ("2048", 2048), ("2048b", 2048),
    (0, 0), ("0", 0),
])
def test_sizes_are_read_as_docker_reads_them(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "256 MB extra", "-1M", True, False, "M", "", "1P", "1.G", "1e6", None, -1,
                                  "256i"])
def test_what_is_no_size_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(("size", "shown"), [
    (256 * MIB, "256M"), (GIB, "1G"), (1536 * MIB, "1536M"), (3 * GIB, "3G"), (512 * 1024, "512k"),
    (1024, "1k"), (1536, "1536"), (1000, "1000"),
])
def test_sizes_show_in_the_shortest_whole_binary_unit(size: int, shown: str) -> None:
    assert show_size(size) == shown
    assert parse_size(shown) == size


Layer = Mapping[str, Any] | None


@dataclass(frozen=True)
class LimitsCase:
    id: str
    layers: tuple[Layer, ...]
    db: ServiceLimits | None = None  # expected; None: as DEFAULTS
    api: ServiceLimits | None = None
    error: str | None = None  # the start of the ValueError's message instead


D, A = DEFAULTS.db, DEFAULTS.api  # db: 256M, 128M reserved, 1 CPU; api: 64M, no reservation, 0.5 CPU

LIMITS_CASES = [
    LimitsCase("no-layers", ()),
    LimitsCase("none-and-empty-layers", (None, {}, {"db": {}})),
    # layering: field by field, the later layer wins
    LimitsCase("env-memory", ({"db": {"memory": "512M"}},), db=ServiceLimits(512 * MIB, 128 * MIB, 1.0)),
    LimitsCase("env-then-project", ({"db": {"memory": "512M"}, "api": {"cpus": 0.25}}, {"db": {"cpus": "2"}}),
               db=ServiceLimits(512 * MIB, 128 * MIB, 2.0), api=ServiceLimits(64 * MIB, None, 0.25)),
    LimitsCase("project-overrides-env", ({"api": {"memory": "128M"}}, {"api": {"memory": "96M"}}),
               api=ServiceLimits(96 * MIB, None, 0.5)),
    LimitsCase("sizes-as-bytes", ({"api": {"memory": 32 * MIB, "memory_reservation": 16 * MIB}},),
               api=ServiceLimits(32 * MIB, 16 * MIB, 0.5)),
    LimitsCase("api-reservation", ({"api": {"memory_reservation": "32M"}},), api=ServiceLimits(64 * MIB, 32 * MIB, 0.5)),
    # no limit: null removes one, and no reservation is derived from it
    LimitsCase("db-no-memory-limit", ({"db": {"memory": None}},), db=ServiceLimits(None, 128 * MIB, 1.0)),
    LimitsCase("db-no-limits-at-all", ({"db": {"memory": None, "memory_reservation": None, "cpus": None}},),
               db=ServiceLimits(None, None, None)),
    # the default reservation under a smaller limit is half of it; at the limit or over it, it stays
    LimitsCase("memory-under-default-reservation", ({"db": {"memory": "100M"}},), db=ServiceLimits(100 * MIB, 50 * MIB, 1.0)),
    LimitsCase("memory-at-minimum", ({"db": {"memory": "64M"}},), db=ServiceLimits(64 * MIB, 32 * MIB, 1.0)),
    LimitsCase("memory-equal-default-reservation", ({"db": {"memory": "128M"}},),
               db=ServiceLimits(128 * MIB, 128 * MIB, 1.0)),
    LimitsCase("reservation-equal-memory", ({"db": {"memory": "200M", "memory_reservation": "200M"}},),
               db=ServiceLimits(200 * MIB, 200 * MIB, 1.0)),
    LimitsCase("reservation-zero", ({"db": {"memory_reservation": 0}},), db=ServiceLimits(256 * MIB, 0, 1.0)),
    LimitsCase("api-at-minimum", ({"api": {"memory": "16M"}},), api=ServiceLimits(16 * MIB, None, 0.5)),
    # a reservation set by hand is checked, not halved, even when a later layer lowers the memory
    LimitsCase("reservation-over-memory", ({"db": {"memory": "128M", "memory_reservation": "256M"}},),
               error="db.memory_reservation: 256M is above memory (128M)"),
    LimitsCase("reservation-set-then-memory-lowered", ({"db": {"memory_reservation": "200M"}}, {"db": {"memory": "100M"}}),
               error="db.memory_reservation: 200M is above memory (100M)"),
    LimitsCase("api-reservation-over-default-memory", ({"api": {"memory_reservation": "65M"}},),
               error="api.memory_reservation: 65M is above memory (64M)"),
    # minimums
    LimitsCase("db-below-minimum", ({"db": {"memory": "32M"}},), error="db.memory: 32M is below the 64M a db service needs"),
    LimitsCase("db-just-below-minimum", ({"db": {"memory": 64 * MIB - 1}},), error="db.memory: 67108863 is below the 64M"),
    LimitsCase("api-below-minimum", ({"api": {"memory": "8M"}},), error="api.memory: 8M is below the 16M a api"),
    LimitsCase("zero-memory", ({"api": {"memory": 0}},), error="api.memory: 0"),
    LimitsCase("minimum-before-reservation", ({"db": {"memory": "32M", "memory_reservation": "48M"}},),
               error="db.memory: 32M is below"),
    # cpus
    LimitsCase("cpus-int", ({"db": {"cpus": 2}},), db=ServiceLimits(256 * MIB, 128 * MIB, 2.0)),
    LimitsCase("cpus-string", ({"db": {"cpus": "1.5"}},), db=ServiceLimits(256 * MIB, 128 * MIB, 1.5)),
    LimitsCase("cpus-lowest", ({"api": {"cpus": 0.01}},), api=ServiceLimits(64 * MIB, None, 0.01)),
    LimitsCase("cpus-highest", ({"api": {"cpus": 256}},), api=ServiceLimits(64 * MIB, None, 256.0)),
    LimitsCase("cpus-zero", ({"db": {"cpus": 0}},), error="db.cpus: 0 must be between 0.01 and 256"),
    LimitsCase("cpus-negative", ({"db": {"cpus": "-1"}},), error="db.cpus: -1 must be between"),
    LimitsCase("cpus-too-many", ({"api": {"cpus": 257}},), error="api.cpus: 257 must be between"),
    LimitsCase("cpus-nan", ({"api": {"cpus": "nan"}},), error="api.cpus: nan must be between"),
    LimitsCase("cpus-word", ({"db": {"cpus": "fast"}},), error="db.cpus: 'fast' is not a number such as 0.5"),
    LimitsCase("cpus-bool", ({"db": {"cpus": True}},), error="db.cpus: True is not a number"),
    LimitsCase("cpus-list", ({"db": {"cpus": [1]}},), error="db.cpus: [1] is not a number"),
    # shape and names
    LimitsCase("unknown-service", ({"web": {"memory": "64M"}},), error="'web': resources are set per service: db, api"),
    LimitsCase("unknown-service-in-project-layer", ({}, {"worker": {}}), error="'worker': resources are set per service"),
    LimitsCase("fields-not-a-mapping", ({"db": "512M"},), error="db: must be a mapping"),
    LimitsCase("fields-a-list", ({"api": ["memory"]},), error="api: must be a mapping"),
    LimitsCase("unknown-key", ({"db": {"memmory": "64M"}},), error="db.memmory: unknown: use memory, memory_reservation or cpus"),
    LimitsCase("bad-memory", ({"db": {"memory": "lots"}},), error="db.memory: 'lots' is not a size"),
    LimitsCase("bad-reservation", ({"api": {"memory_reservation": "1 MB extra"}},),
               error="api.memory_reservation: '1 MB extra' is not a size"),
    LimitsCase("negative-memory", ({"db": {"memory": -1}},), error="db.memory: -1 is not a size"),
    LimitsCase("negative-reservation", ({"db": {"memory_reservation": -1}},), error="db.memory_reservation: -1 is not a size"),
]


@pytest.mark.parametrize("case", LIMITS_CASES, ids=lambda c: c.id)
def test_limits(case: LimitsCase) -> None:
    if case.error is not None:
        with pytest.raises(ValueError) as caught:
            limits(*case.layers)
        assert str(caught.value).startswith(case.error)
        return
    assert limits(*case.layers) == StackLimits(db=case.db or D, api=case.api or A)


@dataclass(frozen=True)
class PostgresCase:
    id: str
    memory: int | None
    expected: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)


def derived(connections: int, shared: int, cache: int, work_kb: int, maintenance: int) -> dict[str, str]:
    return {"max_connections": str(connections), "shared_buffers": f"{shared}MB", "effective_cache_size": f"{cache}MB",
            "work_mem": f"{work_kb}kB", "maintenance_work_mem": f"{maintenance}MB"}


# shared_buffers: a quarter (at least 16MB); effective_cache_size: a half (at least 32MB); work_mem: a quarter shared by
# max_connections (40 unless set), in kB, at least 1024kB; maintenance_work_mem: a sixteenth, at least 8MB
POSTGRES_CASES = [
    PostgresCase("no-limit-no-overrides", None, {}),
    PostgresCase("no-limit-only-overrides", None, {"work_mem": "4MB"}, {"pg_work_mem": "4MB"}),
    PostgresCase("no-limit-empty-override-ignored", None, {}, {"pg_work_mem": ""}),
    PostgresCase("no-limit-other-variables-ignored", None, {}, {"pg_fsync": "off", "shared_buffers": "1GB"}),
    PostgresCase("256M", 256 * MIB, derived(40, 64, 128, 1638, 16)),  # 65536 kB / 4 / 40 = 1638.4
    PostgresCase("1G", GIB, derived(40, 256, 512, 6553, 64)),
    PostgresCase("4G", 4 * GIB, derived(40, 1024, 2048, 26214, 256)),
    PostgresCase("64M-floors", 64 * MIB, derived(40, 16, 32, 1024, 8)),
    PostgresCase("32M-floors", 32 * MIB, derived(40, 16, 32, 1024, 8)),
    PostgresCase("not-whole-mib", 100 * MIB + 12345, derived(40, 25, 50, 1024, 8)),  # 100 MiB: 102400/160 = 640
    PostgresCase("more-connections-less-work-mem", GIB, derived(100, 256, 512, 2621, 64), {"pg_max_connections": "100"}),
    PostgresCase("fewer-connections-more-work-mem", 256 * MIB, derived(5, 64, 128, 13107, 16), {"pg_max_connections": "5"}),
    PostgresCase("override-wins", 256 * MIB, {**derived(100, 64, 128, 1024, 16), "shared_buffers": "32MB"},
                 {"pg_max_connections": "100", "pg_shared_buffers": "32MB"}),
    PostgresCase("every-override", GIB, {"max_connections": "50", "shared_buffers": "1MB", "effective_cache_size": "2MB",
                                         "work_mem": "3MB", "maintenance_work_mem": "4MB"},
                 {"pg_max_connections": "50", "pg_shared_buffers": "1MB", "pg_effective_cache_size": "2MB",
                  "pg_work_mem": "3MB", "pg_maintenance_work_mem": "4MB"}),
]


@pytest.mark.parametrize("case", POSTGRES_CASES, ids=lambda c: c.id)
def test_postgres_settings(case: PostgresCase) -> None:
    assert postgres_settings(case.memory, case.variables) == case.expected
