"""Coolify's answers parsed once (models.py), the readings of a service's statuses, the choice of the env's server,
and lookups that last one run: a long-lived backend (`provision serve`'s) sees a server added later."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from provision.backends.coolify import CoolifyBackend, CoolifyClient
from provision.backends.coolify.context import LOOKUP_TTL, Lookups
from provision.backends.coolify.models import (
    App,
    Environment,
    LockVariable,
    Project,
    Server,
    Service,
    TaskRun,
    Variable,
    describe_status,
    is_up,
    refresh_marks,
    status_state,
)
from provision.core.config import EnvConfig, load_env
from provision.core.errors import ConfigError
from provision.core.model import ServiceState
from provision.core.secrets import Secret
from tests.conftest import write_env
from tests.coolify.conftest import coolify_env
from tests.unit.test_coolify_backend import Clock

API = "https://coolify.test/api/v1"
TOKEN = "9|unit-token"

# GET /services/{uuid} for a read:sensitive token, shaped as Coolify 4.3.11 answers (trimmed)
VIEW = {
    "uuid": "svc1", "name": "shop", "description": "provision=0123456789abcdef owner=o1", "status": "running:healthy",
    "server_id": 3, "docker_compose_raw": "services: {}\n",
    "destination": {"uuid": "dst1", "server": {"uuid": "srv1", "name": "edge", "ip": "10.0.0.5",
                                               "settings": {"server_id": 3}}},
    "applications": [{"name": "api", "status": "running:healthy", "fqdn": "http://a.example.test:3000,http://b",
                      "last_online_at": "2026-11-30T12:00:00.000000Z"}],
    "databases": [{"name": "db", "status": "running:healthy"}, {"status": "exited"}, "junk"],
}


def test_a_full_service_view_reads_its_containers_compose_and_server() -> None:
    service = Service.parse(VIEW)
    assert (service.uuid, service.name, service.status, service.server_id) == ("svc1", "shop", "running:healthy", 3)
    assert [a.name for a in service.apps] == ["api", "db"]  # a container without a name is skipped
    assert service.fqdn("api") == "http://a.example.test:3000" and service.fqdn("db") is None
    assert service.compose == "services: {}\n" and service.marks.owner == "o1"
    assert service.server == Server("srv1", "edge", "10.0.0.5", server_id=3)


@pytest.mark.parametrize(("answer", "expected"), [
    # a summary (an environment's `services`): no containers, no compose, no server
    ({"uuid": "s", "name": "shop", "status": "exited"}, Service("s", "shop", "", "exited")),
    # a token without read:sensitive: no compose; a destination without a server
    ({"uuid": "s", "description": None, "destination": {"uuid": "d"}}, Service("s")),
    # odd shapes Coolify never sent but a proxy might: nothing breaks, nothing is made up
    ({"uuid": "s", "applications": None, "databases": {"name": "db"}, "server_id": True}, Service("s")),
    ({"uuid": "s", "destination": {"server": {"uuid": ""}}}, Service("s")),
])
def test_what_a_service_answer_omits_reads_as_unknown(answer: dict[str, object], expected: Service) -> None:
    assert Service.parse(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ({"uuid": "u", "name": "edge", "ip": "1.2.3.4", "is_usable": True, "is_reachable": True,
      "settings": {"server_id": 7, "is_build_server": False, "sentinel_token": "x"}},
     Server("u", "edge", "1.2.3.4", True, True, False, 7, True)),
    ({"uuid": "u", "settings": {"is_build_server": True}}, Server("u", is_build_server=True)),
    ({"uuid": "u", "settings": None, "is_usable": 1}, Server("u", is_usable=True)),  # settings hidden or odd
    ({"uuid": "u", "settings": {"server_id": "7"}}, Server("u")),  # an id that is not a number is no id
    ({"name": "no uuid"}, None),
])
def test_servers_as_get_servers_lists_them(answer: dict[str, object], expected: Server | None) -> None:
    assert Server.parse(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ({"uuid": "p", "name": "app-shop", "description": "d", "id": 4, "environments": [{"uuid": "e1"}, {"id": 2}]},
     Project("p", "app-shop", "d", 4, ("e1",))),
    ({"uuid": "p", "id": "12"}, Project("p", id=12)),
    ({"uuid": "p", "id": None, "description": None}, Project("p")),
])
def test_projects(answer: dict[str, object], expected: Project) -> None:
    assert Project.parse(answer) == expected


@pytest.mark.parametrize(("answer", "services", "has_resources"), [
    ({"uuid": "e", "services": [{"uuid": "s", "name": "shop"}, {"name": "no uuid"}]}, ("s",), True),
    ({"uuid": "e", "services": [], "applications": [], "postgresqls": [{"uuid": "pg"}]}, (), True),
    ({"uuid": "e"}, (), False),
])
def test_environments(answer: dict[str, object], services: tuple[str, ...], has_resources: bool) -> None:
    environment = Environment.parse(answer)
    assert tuple(s.uuid for s in environment.services) == services and environment.has_resources is has_resources


@pytest.mark.parametrize(("answer", "expected"), [
    ({"key": "DB_PASSWORD", "value": "pw"}, Variable("DB_PASSWORD", "pw")),
    ({"key": "DB_PASSWORD", "value": None, "real_value": "pw"}, Variable("DB_PASSWORD", "pw")),
    ({"key": "DB_PASSWORD"}, Variable("DB_PASSWORD", None, readable=False)),  # hidden from this token
    ({"key": "DB_PASSWORD", "value": "", "is_shown_once": True}, Variable("DB_PASSWORD", None, shown_once=True)),
])
def test_service_variables(answer: dict[str, object], expected: Variable) -> None:
    assert Variable.parse(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ({"id": 5, "key": "lock.dev.shop", "comment": "c", "created_at": "t"}, LockVariable(5, "lock.dev.shop", "c", "t")),
    ({"id": 5, "key": "lock.dev.shop", "comment": None}, LockVariable(5, "lock.dev.shop")),
    ({"id": "5", "key": "lock.dev.shop"}, None),
    ({"id": True, "key": "lock.dev.shop"}, None),
])
def test_lock_variables(answer: dict[str, object], expected: LockVariable | None) -> None:
    assert LockVariable.parse(answer) == expected


def test_task_runs() -> None:
    assert TaskRun.parse({"uuid": "r", "status": "success", "message": "ok"}) == TaskRun("r", "success", "ok")
    assert TaskRun.parse({"uuid": "r", "message": None}) == TaskRun("r")


@pytest.mark.parametrize(("status", "state"), [
    ("running:healthy", ServiceState("running", "healthy")),
    ("running:unknown:excluded", ServiceState("running", "unknown")),
    ("exited", ServiceState("exited", "")),
    (None, ServiceState("exited", "")),
    ("", ServiceState("exited", "")),
])
def test_a_stored_status_as_a_state(status: str | None, state: ServiceState) -> None:
    assert status_state(status) == state


def _service(status: str | None, *apps: tuple[str, str | None]) -> Service:
    return Service("s", "shop", status=status, apps=tuple(App(name, state) for name, state in apps))


@pytest.mark.parametrize(("service", "up", "described"), [
    (_service("running:healthy", ("api", "running:healthy"), ("db", "running:healthy")), True,
     "running:healthy (api: running:healthy, db: running:healthy)"),
    (_service("running:unknown", ("api", "running:unknown")), True, "running:unknown (api: running:unknown)"),
    (_service("running:healthy", ("api", "running:healthy"), ("db", "exited")), False,
     "running:healthy (api: running:healthy, db: exited)"),
    (_service("starting:unhealthy", ("api", "running:healthy")), False, "starting:unhealthy (api: running:healthy)"),
    (_service(None, ("api", None)), False, "unknown (api: unknown)"),
    (_service("running:healthy"), True, "running:healthy"),  # a summary: the aggregate alone
])
def test_whether_a_service_reads_up_and_how_its_status_is_told(service: Service, up: bool, described: str) -> None:
    assert is_up(service) is up
    assert describe_status(service) == described


def test_refresh_marks_move_with_a_status_or_a_stamp() -> None:
    before = Service("s", apps=(App("api", "running:healthy", "t1"), App("db", "running:healthy", "t1")))
    assert refresh_marks(before) == refresh_marks(Service("s", apps=tuple(reversed(before.apps))))
    assert refresh_marks(before) != refresh_marks(Service("s", apps=(App("api", "running:healthy", "t2"),
                                                                     App("db", "running:healthy", "t1"))))


# --- the env's server -----------------------------------------------------------------------------------------
EDGE = {"uuid": "srv1", "name": "edge", "is_usable": True, "is_reachable": True, "settings": {}}
CORE = {"uuid": "srv2", "name": "core", "is_usable": True, "is_reachable": True, "settings": {}}
BUILDER = {"uuid": "srv3", "name": "builder", "is_usable": True, "is_reachable": True,
           "settings": {"is_build_server": True}}
DOWN = {"uuid": "srv4", "name": "down", "is_usable": True, "is_reachable": False, "settings": {}}


class Servers:
    """GET /servers answering `listing` (which a test may change), every request counted."""

    def __init__(self, *listing: dict[str, object]) -> None:
        self.listing = list(listing)
        self.asked = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/servers"
        self.asked += 1
        return httpx.Response(200, json=self.listing)


def _config(project_root: Path, server: str | None) -> EnvConfig:
    write_env(project_root, "dev", coolify_env(timeout=5) + (f"  server: {server}\n" if server else ""))
    return load_env("dev", project_root, environ={"COOLIFY_API_URL": API, "COOLIFY_API_TOKEN": TOKEN})


def _backend(coolify: Servers, config: EnvConfig, clock: Clock | None = None) -> CoolifyBackend:
    clock = clock or Clock()
    client = CoolifyClient.connect(API, Secret(TOKEN), transport=httpx.MockTransport(coolify))
    return CoolifyBackend(client, config, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize(("server", "listing", "chosen", "asked"), [
    ("abcdefghijklmnopqrstu", [EDGE], "abcdefghijklmnopqrstu", 0),  # a uuid: POST /services checks it
    ("core", [EDGE, CORE], "srv2", 1),  # a name
    ("srv1", [EDGE, CORE], "srv1", 1),  # a uuid too short for the shape: looked up
    (None, [EDGE, BUILDER, DOWN], "srv1", 1),  # the one usable server (a build server runs no stack)
])
def test_the_env_s_server(project_root: Path, server: str | None, listing: list[dict[str, object]], chosen: str,
                          asked: int) -> None:
    coolify = Servers(*listing)
    backend = _backend(coolify, _config(project_root, server))
    assert backend.servers.choose_server().uuid == chosen
    assert backend.servers.choose_server().uuid == chosen  # looked up once per run
    assert coolify.asked == asked


@pytest.mark.parametrize(("server", "listing", "message"), [
    ("gone", [EDGE], r"coolify.server: no server 'gone' in Coolify; candidates: edge \(srv1\)"),
    (None, [EDGE, CORE], r"Coolify has 2 usable servers: set coolify.server to one of edge \(srv1\), core \(srv2\)"),
    (None, [BUILDER, DOWN], r"has 0 usable servers: set coolify.server to one of builder \(srv3\), down \(srv4\)"),
])
def test_no_server_to_choose(project_root: Path, server: str | None, listing: list[dict[str, object]],
                             message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _backend(Servers(*listing), _config(project_root, server)).servers.choose_server()


def test_a_long_lived_backend_sees_a_server_added_later(project_root: Path) -> None:
    """`provision serve` keeps one backend for its life: what it looked up expires after about a run."""
    coolify = Servers(EDGE)
    clock = Clock()
    backend = _backend(coolify, _config(project_root, "core"), clock)
    with pytest.raises(ConfigError, match="no server 'core'"):
        backend.servers.choose_server()
    coolify.listing.append(CORE)  # added in Coolify while the server runs
    clock.now += LOOKUP_TTL / 2
    with pytest.raises(ConfigError, match="no server 'core'"):  # within one run: the listing it has
        backend.servers.choose_server()
    clock.now += LOOKUP_TTL
    assert backend.servers.choose_server().uuid == "srv2"
    assert coolify.asked == 2


def test_lookups_load_once_per_ttl() -> None:
    clock = Clock()
    lookups = Lookups(clock, ttl=10.0)
    loads: list[int] = []

    def load() -> int:
        loads.append(len(loads))
        return len(loads)

    assert [lookups.get("k", load) for _ in range(3)] == [1, 1, 1]
    clock.now = 10.0
    assert lookups.get("k", load) == 2 and lookups.peek("k") == 2 and lookups.peek("other") is None
