"""Resource limits: compose-style sizes, layering (defaults, env file, project), validation naming the key,
and the PostgreSQL settings a limit implies."""

from __future__ import annotations

import pytest

from provision.core.resources import DEFAULTS, MIB, limits, parse_size, postgres_settings, show_size


@pytest.mark.parametrize(("text", "size"), [("256M", 256 * MIB), ("256MiB", 256 * MIB), ("256m", 256 * MIB),
                                            ("1G", 1024 * MIB), ("1GiB", 1024 * MIB), ("512k", 512 * 1024),
                                            ("1.5G", 1536 * MIB), (1024, 1024), ("2048", 2048)])
def test_sizes_are_read_as_docker_reads_them(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "256 MB extra", "-1M", True, "M"])
def test_what_is_no_size_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_layers_override_field_by_field() -> None:
    assert limits() == DEFAULTS
    stack = limits({"db": {"memory": "512M"}, "api": {"cpus": 0.25}}, {"db": {"cpus": "2"}})
    assert (stack.db.memory, stack.db.memory_reservation, stack.db.cpus) == (512 * MIB, 128 * MIB, 2.0)
    assert (stack.api.memory, stack.api.cpus) == (64 * MIB, 0.25)
    assert show_size(stack.db.memory or 0) == "512M" and show_size(1536 * MIB) == "1536M"
    # a limit under the default reservation takes half of it as reservation; one set by hand is checked
    assert limits({"db": {"memory": "64M"}}).db.memory_reservation == 32 * MIB


@pytest.mark.parametrize(("layer", "says"), [
    ({"db": {"memory": "32M"}}, "db.memory: 32M is below the 64M"),
    ({"api": {"memory": "8M"}}, "api.memory: 8M is below the 16M"),
    ({"db": {"memory": "128M", "memory_reservation": "256M"}}, "db.memory_reservation: 256M is above memory"),
    ({"db": {"cpus": 0}}, "db.cpus: 0 must be between"),
    ({"db": {"cpus": "fast"}}, "db.cpus: 'fast' is not a number"),
    ({"web": {"memory": "64M"}}, "'web': resources are set per service"),
    ({"db": {"memmory": "64M"}}, "db.memmory: unknown"),
    ({"db": {"memory": "lots"}}, "db.memory: 'lots' is not a size"),
])
def test_bad_limits_name_their_key(layer: dict[str, dict[str, object]], says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        limits(layer)


def test_postgres_settings_follow_the_memory_limit() -> None:
    small = postgres_settings(256 * MIB, {})
    assert small == {"max_connections": "40", "shared_buffers": "64MB", "effective_cache_size": "128MB",
                     "work_mem": "1638kB", "maintenance_work_mem": "16MB"}
    assert postgres_settings(1024 * MIB, {})["shared_buffers"] == "256MB"
    tuned = postgres_settings(256 * MIB, {"pg_max_connections": "100", "pg_shared_buffers": "32MB"})
    assert tuned["max_connections"] == "100" and tuned["shared_buffers"] == "32MB" and tuned["work_mem"] == "1024kB"
    assert postgres_settings(None, {}) == {} and postgres_settings(None, {"pg_work_mem": "4MB"}) == {"work_mem": "4MB"}
