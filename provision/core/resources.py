"""Per-service resource limits (`resources:` in an env file, per project over it) and the PostgreSQL
settings a stack of that size gets. Sizes are compose-style (`256M`, `256MiB`, `1G`, `1GiB`, `512k`: binary
units, as Docker reads them); limits render as the service keys both `docker compose` and Coolify apply
(`mem_limit`, `mem_reservation`, `cpus`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIB = 1024**2
# the smallest limits accepted: PostgreSQL needs some 40 MiB to start and serve a few connections
MINIMUM_MEMORY = {"db": 64 * MIB, "api": 16 * MIB}
SERVICES = ("db", "api")
POSTGRES_SETTINGS = ("max_connections", "shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem")


def parse_size(value: object) -> int:
    """Bytes in a compose-style size: a whole number of bytes (never negative), or with k, m, g, t (optionally i
    and b: 256MiB)."""
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError(f"{value!r} is not a size such as 256M")
    if isinstance(value, int):
        return value
    found = _SIZE.match(str(value))
    if found is None:
        raise ValueError(f"{value!r} is not a size such as 256M, 256MiB, 1G or 1GiB")
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def show_size(size: int) -> str:
    """256M, 1G, 1536M: the shortest whole binary unit."""
    for unit, factor in (("G", 1024**3), ("M", MIB), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclass(frozen=True)
class ServiceLimits:
    memory: int | None = None  # bytes: the hard limit (OOM kill past it)
    memory_reservation: int | None = None  # bytes: the soft floor under memory pressure
    cpus: float | None = None

    def to_context(self) -> dict[str, Any]:
        return {"memory": self.memory, "memory_reservation": self.memory_reservation, "cpus": self.cpus}


@dataclass(frozen=True)
class StackLimits:
    db: ServiceLimits
    api: ServiceLimits


DEFAULTS = StackLimits(db=ServiceLimits(256 * MIB, 128 * MIB, 1.0), api=ServiceLimits(64 * MIB, None, 0.5))


def limits(*layers: Mapping[str, Any] | None) -> StackLimits:
    """The defaults with each layer (env file, then project) laid over them, field by field; ValueError naming
    the key (`db.memory`) at fault."""
    merged: dict[str, dict[str, Any]] = {s: dict(getattr(DEFAULTS, s).to_context()) for s in SERVICES}
    reserved: set[str] = set()  # services whose memory_reservation a layer set (else the default follows memory)
    for layer in layers:
        for service, fields in (layer or {}).items():
            if service not in SERVICES:
                raise ValueError(f"{service!r}: resources are set per service: {', '.join(SERVICES)}")
            if not isinstance(fields, Mapping):
                raise ValueError(f"{service}: must be a mapping such as {{memory: 256M, cpus: 1.0}}")
            for key, value in fields.items():
                if key not in ("memory", "memory_reservation", "cpus"):
                    raise ValueError(f"{service}.{key}: unknown: use memory, memory_reservation or cpus")
                merged[service][key] = value
                if key == "memory_reservation":
                    reserved.add(service)
    built = {}
    for service in SERVICES:
        fields = merged[service]
        memory = _size(service, "memory", fields["memory"])
        reservation = _size(service, "memory_reservation", fields["memory_reservation"])
        if service not in reserved and memory is not None and reservation is not None and reservation > memory:
            reservation = memory // 2  # the default reservation under a smaller limit: half of it
        cpus = fields["cpus"]
        if memory is not None and memory < MINIMUM_MEMORY[service]:
            raise ValueError(f"{service}.memory: {show_size(memory)} is below the {show_size(MINIMUM_MEMORY[service])} "
                             f"a {service} service needs")
        if memory is not None and reservation is not None and reservation > memory:
            raise ValueError(f"{service}.memory_reservation: {show_size(reservation)} is above memory "
                             f"({show_size(memory)})")
        if cpus is not None:
            if isinstance(cpus, bool) or not isinstance(cpus, (int, float, str)):
                raise ValueError(f"{service}.cpus: {cpus!r} is not a number such as 0.5")
            try:
                cpus = float(cpus)
            except ValueError:
                raise ValueError(f"{service}.cpus: {cpus!r} is not a number such as 0.5") from None
            if not 0.01 <= cpus <= 256:
                raise ValueError(f"{service}.cpus: {cpus:g} must be between 0.01 and 256")
        built[service] = ServiceLimits(memory, reservation, cpus)
    return StackLimits(db=built["db"], api=built["api"])


def _size(service: str, key: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{service}.{key}: {exc}") from None


def postgres_settings(memory: int | None, variables: Mapping[str, str]) -> dict[str, str]:
    """PostgreSQL settings for a db limited to `memory` bytes: shared_buffers a quarter of it,
    effective_cache_size a half, work_mem its share of a quarter per connection, so a busy small stack stays
    under its limit and an idle one holds little. A variable `pg_<setting>` overrides one; without a memory
    limit only those overrides are set (PostgreSQL's own defaults otherwise)."""
    overrides = {k: str(variables[f"pg_{k}"]) for k in POSTGRES_SETTINGS if variables.get(f"pg_{k}")}
    if memory is None:
        return overrides
    mib = memory // MIB
    connections = int(overrides.get("max_connections", "40"))  # a whole number: the env file's schema checked it
    derived = {
        "max_connections": str(connections),
        "shared_buffers": f"{max(16, mib // 4)}MB",
        "effective_cache_size": f"{max(32, mib // 2)}MB",
        "work_mem": f"{max(1024, mib * 1024 // 4 // max(1, connections))}kB",
        "maintenance_work_mem": f"{max(8, mib // 16)}MB",
    }
    return {**derived, **overrides}
