"""Host port leases for local stacks: free on the bind address, never shared, reused on re-provision."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping

from .errors import ProvisionError
from .render import Ports
from .state import StateStore

PortIsFree = Callable[[str, int], bool]
SERVICES = ("db", "api")


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


def choose_ports(
    leases: Mapping[str, Mapping[str, int]],
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
        return Ports(api=existing["api"], db=existing["db"])
    taken = {port for other, lease in leases.items() if other != key for port in lease.values()}
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


def lease_ports(store: StateStore, env: str, project: str, *, port_range: tuple[int, int], address: str) -> Ports:
    """Allocate (or reuse) and persist the ports for env/project under the registry lock."""
    key = lease_key(env, project)
    with store.ports_lock():
        leases = store.read_leases()
        ports = choose_ports(leases, key, port_range=port_range, address=address)
        if leases.get(key) != {"api": ports.api, "db": ports.db}:
            leases[key] = {"api": ports.api, "db": ports.db}
            store.write_leases(leases)
    return ports


def preview_ports(store: StateStore, env: str, project: str, *, port_range: tuple[int, int], address: str) -> Ports:
    """The ports `lease_ports` would give, without reserving them."""
    return choose_ports(store.read_leases(), lease_key(env, project), port_range=port_range, address=address)


def release_ports(store: StateStore, env: str, project: str) -> None:
    with store.ports_lock():
        leases = store.read_leases()
        if leases.pop(lease_key(env, project), None) is not None:
            store.write_leases(leases)
