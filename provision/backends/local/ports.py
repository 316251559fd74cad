"""Host port leases for local stacks: free on the bind address, never shared, reused on re-provision."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ...core.errors import ProvisionError
from ...core.model import Ports
from ...infra.fsutil import read_json, write_json
from ...state.records import hold_lock

PortIsFree = Callable[[str, int], bool]
SERVICES = ("db", "api")


class LeaseBook:
    """`ports.json` in the state directory (`StateLayout.ports`): every local project's ports and subnet, guarded
    by `ports.lock`.
    Owned by the local backend; shared by every process on the machine."""

    def __init__(self, path: Path, lock: Path) -> None:
        self.path = path
        self._lock = lock

    def lock(self, *, timeout: float = 60.0) -> AbstractContextManager[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return hold_lock(self._lock, timeout, what="the port registry")

    def read(self) -> dict[str, dict[str, Any]]:
        """env/project -> {"api": port, "db": port[, "subnet": cidr]}."""
        data = read_json(self.path)
        return {k: dict(v) for k, v in data.get("leases", {}).items()}

    def write(self, leases: Mapping[str, Mapping[str, Any]]) -> None:
        write_json(self.path, {"leases": {k: dict(v) for k, v in sorted(leases.items())}})


def lease_key(env: str, project: str) -> str:
    return f"{env}/{project}"


def port_is_free(address: str, port: int) -> bool:
    """True if nothing listens on `address:port` (checked by binding it for a moment)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def choose_subnet(
    leases: Mapping[str, Mapping[str, Any]],
    key: str,
    *,
    pool: str,
    prefix: int,
    in_use: Iterable[str] = (),
) -> str:
    """The subnet leased to `key`, or the first block of the pool that no lease and no existing
    Docker network overlaps. Pure; raises ProvisionError when the pool is exhausted."""
    existing = (leases.get(key) or {}).get("subnet")
    if existing:
        return str(existing)
    taken = [ipaddress.ip_network(str(lease["subnet"])) for other, lease in leases.items()
             if other != key and lease.get("subnet")]
    taken += [ipaddress.ip_network(net) for net in in_use]
    for candidate in ipaddress.ip_network(pool).subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in taken):
            return str(candidate)
    raise ProvisionError(
        f"no free /{prefix} subnet left in local.network_pool {pool}: widen the pool or destroy unused projects "
        f"with --delete-data"
    )


def choose_ports(
    leases: Mapping[str, Mapping[str, Any]],
    key: str,
    *,
    port_range: tuple[int, int],
    address: str,
    is_free: PortIsFree = port_is_free,
) -> Ports:
    """The lease for `key` if it has one; otherwise the lowest free ports no other lease holds.

    Pure apart from `is_free`; raises ProvisionError when the range is exhausted.
    """
    existing = leases.get(key)
    if existing and all(s in existing for s in SERVICES):
        return Ports(api=existing["api"], db=existing["db"], subnet=existing.get("subnet"))
    taken = {port for other, lease in leases.items() if other != key
             for name, port in lease.items() if name in SERVICES}
    chosen: dict[str, int] = {}
    low, high = port_range
    candidate = low
    for service in SERVICES:
        while candidate <= high and (candidate in taken or not is_free(address, candidate)):
            candidate += 1
        if candidate > high:
            raise ProvisionError(
                f"no free host port left in local.port_range {low}-{high} on {address}: "
                f"widen the range in the env file or destroy unused projects with --delete-data"
            )
        chosen[service] = candidate
        candidate += 1
    return Ports(api=chosen["api"], db=chosen["db"])


def lease_ports(store: LeaseBook, env: str, project: str, *, port_range: tuple[int, int], address: str,
                network_pool: str | None = None, network_prefix: int = 26,
                networks_in_use: Callable[[], Iterable[str]] = tuple) -> Ports:
    """Allocate (or reuse) and persist the ports (and subnet) for env/project under the registry lock."""
    key = lease_key(env, project)
    with store.lock():
        leases = store.read()
        ports = choose_ports(leases, key, port_range=port_range, address=address)
        if network_pool and ports.subnet is None:
            subnet = choose_subnet(leases, key, pool=network_pool, prefix=network_prefix, in_use=networks_in_use())
            ports = Ports(api=ports.api, db=ports.db, subnet=subnet)
        record: dict[str, Any] = {"api": ports.api, "db": ports.db}
        if ports.subnet:
            record["subnet"] = ports.subnet
        if leases.get(key) != record:
            leases[key] = record
            store.write(leases)
    return ports


def preview_ports(store: LeaseBook, env: str, project: str, *, port_range: tuple[int, int], address: str) -> Ports:
    """The ports `lease_ports` would give, without reserving them."""
    return choose_ports(store.read(), lease_key(env, project), port_range=port_range, address=address)


def release_ports(store: LeaseBook, env: str, project: str) -> None:
    with store.lock():
        leases = store.read()
        if leases.pop(lease_key(env, project), None) is not None:
            store.write(leases)
