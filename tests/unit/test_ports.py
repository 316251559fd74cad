from __future__ import annotations

import socket
from pathlib import Path

import pytest

from provision.backends.local.ports import LeaseBook, choose_ports, lease_ports, port_is_free, release_ports
from provision.core.errors import ProvisionError
from provision.core.model import Ports


def always_free(address: str, port: int) -> bool:
    return True


def test_new_project_gets_the_lowest_ports_no_lease_holds() -> None:
    leases = {"dev/a": {"db": 20000, "api": 20001}}
    ports = choose_ports(leases, "dev/b", port_range=(20000, 20010), address="127.0.0.1", is_free=always_free)
    assert ports == Ports(db=20002, api=20003)


def test_existing_lease_is_reused_even_if_the_port_is_busy_now() -> None:
    leases = {"dev/a": {"db": 20000, "api": 20001}}
    ports = choose_ports(leases, "dev/a", port_range=(20000, 20010), address="127.0.0.1", is_free=lambda a, p: False)
    assert ports == Ports(db=20000, api=20001)


def test_ports_in_use_by_other_processes_are_skipped() -> None:
    busy = {20000, 20002}
    ports = choose_ports({}, "dev/a", port_range=(20000, 20010), address="127.0.0.1", is_free=lambda a, p: p not in busy)
    assert ports == Ports(db=20001, api=20003)


def test_exhausted_range_says_what_to_do() -> None:
    with pytest.raises(ProvisionError, match="no free host port left in local.port_range 20000-20001"):
        choose_ports({"dev/a": {"db": 20000, "api": 20001}}, "dev/b", port_range=(20000, 20001),
                     address="127.0.0.1", is_free=always_free)


def test_port_is_free_detects_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)


def test_leases_persist_and_release(tmp_path: Path) -> None:
    store = LeaseBook(tmp_path / "state" / "ports.json", tmp_path / "state" / "ports.lock")
    first = lease_ports(store, "dev", "a", port_range=(41000, 41100), address="127.0.0.1")
    second = lease_ports(store, "dev", "b", port_range=(41000, 41100), address="127.0.0.1")
    assert {first.api, first.db}.isdisjoint({second.api, second.db})
    assert lease_ports(store, "dev", "a", port_range=(41000, 41100), address="127.0.0.1") == first
    release_ports(store, "dev", "a")
    assert "dev/a" not in store.read()
    assert (store.path.stat().st_mode & 0o777) == 0o600


def test_subnets_are_leased_from_the_pool_around_existing_networks() -> None:
    from provision.backends.local.ports import choose_subnet

    leases = {"dev/a": {"api": 1, "db": 2, "subnet": "10.201.0.0/26"}}
    assert choose_subnet(leases, "dev/a", pool="10.201.0.0/16", prefix=26) == "10.201.0.0/26"
    assert choose_subnet(leases, "dev/b", pool="10.201.0.0/16", prefix=26) == "10.201.0.64/26"
    taken_by_docker = ["10.201.0.64/27", "172.17.0.0/16"]
    assert choose_subnet(leases, "dev/b", pool="10.201.0.0/16", prefix=26, in_use=taken_by_docker) == "10.201.0.128/26"
    with pytest.raises(ProvisionError, match="no free /26 subnet left in local.network_pool 10.201.0.0/26"):
        choose_subnet(leases, "dev/b", pool="10.201.0.0/26", prefix=26)


def test_a_subnet_lease_is_kept_with_the_ports(tmp_path: Path) -> None:
    store = LeaseBook(tmp_path / "state" / "ports.json", tmp_path / "state" / "ports.lock")
    first = lease_ports(store, "dev", "a", port_range=(41200, 41300), address="127.0.0.1",
                        network_pool="10.202.0.0/24", network_prefix=28, networks_in_use=lambda: ["10.202.0.0/28"])
    assert first.subnet == "10.202.0.16/28"
    again = lease_ports(store, "dev", "a", port_range=(41200, 41300), address="127.0.0.1",
                        network_pool="10.202.0.0/24", network_prefix=28)
    assert again == first
