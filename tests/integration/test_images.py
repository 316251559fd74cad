"""The stand-in images (tests/images) against what the real ones do: every double is a suspect.

provision-test/postgres stands in for the official `postgres` image and provision-test/postgrest for
postgrest/postgrest v12; the rest of the suite trusts them to behave like those. These tests start the
built images directly (labelled io.provision.test=<this run>, all removed afterwards; a db published on
127.0.0.1 only, an api reached at its address on the test's own network) and check them against the
upstream behaviour written down here, with its source.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import psycopg
import pytest

from tests.sandbox import DEFAULT_PORTS, worker_ports

LABEL = "io.provision.test"

# The official image's pg_hba.conf, read in docker-library/postgres at commit
# 6edb0a8c4def40c371514b34aef9037ec82d9110, 15/bookworm/docker-entrypoint.sh (the 14, 16, 17 and 18
# variants are the same file): docker_init_database_dir runs
#   initdb --username=... --pwfile=... $POSTGRES_INITDB_ARGS
# with no --auth option of its own, so initdb's defaults stand (PostgreSQL's pg_hba.conf.sample with
# "trust" for @authmethodlocal@ and @authmethodhost@: the first six rules below), and pg_setup_hba_conf then
# appends `host all all all $POSTGRES_HOST_AUTH_METHOD`, that method defaulting to the server's
# password_encryption (scram-sha-256 from PostgreSQL 14 on). POSTGRES_INITDB_ARGS (--auth-local,
# --auth-host) changes the first six, POSTGRES_HOST_AUTH_METHOD the last.
OFFICIAL_SOURCE = "docker-library/postgres@6edb0a8c4def40c371514b34aef9037ec82d9110:15/bookworm/docker-entrypoint.sh"


def official_pg_hba(*, local: str = "trust", host: str = "trust", method: str = "scram-sha-256") -> list[list[str]]:
    return [
        ["local", "all", "all", local],
        ["host", "all", "all", "127.0.0.1/32", host],
        ["host", "all", "all", "::1/128", host],
        ["local", "replication", "all", local],
        ["host", "replication", "all", "127.0.0.1/32", host],
        ["host", "replication", "all", "::1/128", host],
        ["host", "all", "all", "all", method],
    ]


def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


class Resources:
    """Containers and networks of one test, all labelled io.provision.test=<value>."""

    def __init__(self) -> None:
        self.value = "images-" + uuid.uuid4().hex[:10]
        self.clients: list[httpx.Client] = []

    def network(self) -> str:
        name = f"{self.value}-net"
        _docker("network", "create", "--label", f"{LABEL}={self.value}", name)
        return name

    def container(self, image: str, *, env: Mapping[str, str] = {}, publish: str | None = None,
                  network: str | None = None, alias: str | None = None) -> str:
        name = f"{self.value}-{uuid.uuid4().hex[:6]}"
        args = ["run", "-d", "--name", name, "--label", f"{LABEL}={self.value}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        if publish:
            args += ["--publish", f"127.0.0.1:{_free_port()}:{publish}"]
        if network:
            args += ["--network", network] + (["--network-alias", alias] if alias else [])
        _docker(*args, image)
        return name

    def cleanup(self) -> list[str]:
        """Remove everything labelled for this test (-v: the db image's anonymous volume too); what is left."""
        for client in self.clients:
            client.close()
        where = f"label={LABEL}={self.value}"
        ids = _docker("ps", "-aq", "--filter", where).stdout.split()
        if ids:
            _docker("rm", "-f", "-v", *ids, check=False)
        for kind in ("network", "volume"):
            names = _docker(kind, "ls", "-q", "--filter", where).stdout.split()
            if names:
                _docker(kind, "rm", *names, check=False)
        left = _docker("ps", "-aq", "--filter", where).stdout.split()
        return left + [n for kind in ("network", "volume") for n in _docker(kind, "ls", "-q", "--filter", where).stdout.split()]


@pytest.fixture
def resources(test_images: Mapping[str, str]) -> Iterator[Resources]:
    found = Resources()
    try:
        yield found
    finally:
        left = found.cleanup()
    assert left == [], f"left behind: {left}"


def _free_port() -> int:
    """A free port on 127.0.0.1 outside the range the suite's sandboxes lease (the kernel's choice, from 32768 on,
    is outside the default one; a PROVISION_TEST_PORTS range may not be)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        low, high = worker_ports({"PROVISION_TEST_PORTS": os.environ.get("PROVISION_TEST_PORTS", DEFAULT_PORTS)})
        if not low <= port <= high:
            return port


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _wait_db(container: str) -> None:
    """Until the final server answers on TCP (the entrypoint's temporary one listens only on the socket)."""
    def ready() -> bool:
        if _docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() != "true":
            raise AssertionError(f"{container} stopped:\n{_docker('logs', container, check=False).stderr}")
        return _docker("exec", container, "pg_isready", "-q", "-h", "127.0.0.1", check=False).returncode == 0
    _wait(f"{container} to accept TCP connections", ready)


def _port(container: str, port: int) -> int:
    return int(_docker("port", container, f"{port}/tcp").stdout.split()[0].rsplit(":", 1)[1])


def _pg_hba(container: str) -> list[list[str]]:
    text = _docker("exec", container, "cat", "/var/lib/postgresql/data/pg_hba.conf").stdout
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# --- the db image (official postgres) ---------------------------------------------------------------------

@pytest.mark.parametrize("image", ["provision-test/postgres:15", "provision-test/postgres:17"])
@pytest.mark.parametrize(("env", "expected"), [
    ({"POSTGRES_PASSWORD": "pw"}, official_pg_hba()),
    ({"POSTGRES_PASSWORD": "pw", "POSTGRES_HOST_AUTH_METHOD": "md5",
      # quoted as a shell would read it: the official entrypoint evals POSTGRES_INITDB_ARGS
      "POSTGRES_INITDB_ARGS": "--auth-local=scram-sha-256 --auth-host='md5'"},
     official_pg_hba(local="scram-sha-256", host="md5", method="md5")),
    ({"POSTGRES_HOST_AUTH_METHOD": "trust"}, official_pg_hba(method="trust")),
], ids=["defaults", "host-auth-method-and-initdb-args", "trust-without-password"])
def test_db_writes_the_official_images_pg_hba(resources: Resources, image: str, env: dict[str, str],
                                              expected: list[list[str]]) -> None:
    db = resources.container(image, env=env)
    _wait_db(db)
    assert _pg_hba(db) == expected, f"the rules the official image writes ({OFFICIAL_SOURCE})"
    # the server read every rule without an error
    errors = _docker("exec", "--env", f"PGPASSWORD={env.get('POSTGRES_PASSWORD', '')}", db, "psql", "-U", "postgres",
                     "-tAc",
                     "select count(*) from pg_hba_file_rules where error is not null").stdout.strip()
    assert errors == "0"


def test_db_without_a_password_stops_as_the_official_image_does(test_images: Mapping[str, str]) -> None:
    result = _docker("run", "--rm", "--label", f"{LABEL}=images-no-password", test_images["db"], check=False)
    assert result.returncode == 1
    assert "superuser password is not specified" in result.stderr


def test_db_trusts_loopback_inside_the_container_and_wants_the_password_from_outside(resources: Resources) -> None:
    db = resources.container("provision-test/postgres:15", env={"POSTGRES_PASSWORD": "right-password"},
                             publish="5432")
    _wait_db(db)
    # inside: 127.0.0.1 is `host all all 127.0.0.1/32 trust`, so a wrong password is never even asked for
    inside = _docker("exec", "--env", "PGPASSWORD=wrong-password", db, "psql", "-h", "127.0.0.1", "-U", "postgres",
                     "-d", "postgres", "-tAc", "select 1", check=False)
    assert (inside.returncode, inside.stdout.strip()) == (0, "1"), inside.stderr
    # from the host, through the published port: `host all all all scram-sha-256`
    port = _port(db, 5432)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="wrong-password",
                        dbname="postgres", connect_timeout=10).close()
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="right-password",
                         dbname="postgres", connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# --- the api image (PostgREST 12) -------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], secret: str, alg: str = "HS256") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg)
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), digest).digest() if digest else b""
    return f"{header}.{payload}.{_b64(signature)}"


def _psql(container: str, statement: str) -> str:
    return _docker("exec", container, "psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "app", "-tA",
                   "-c", statement).stdout.strip()


ROLES_SQL = """
CREATE ROLE app LOGIN PASSWORD 'x';
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'y';
CREATE ROLE anon NOLOGIN;
CREATE ROLE authenticated NOLOGIN;
GRANT anon, authenticated TO authenticator;
ALTER DATABASE app OWNER TO app;
SET ROLE app;
CREATE TABLE items (id serial PRIMARY KEY, name text,
                    who text DEFAULT current_user,
                    sub text DEFAULT current_setting('request.jwt.claims', true)::json->>'sub');
GRANT ALL ON items TO authenticated;
GRANT USAGE ON SEQUENCE items_id_seq TO authenticated;
"""


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        return self.client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})

    def post(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        headers = {"Prefer": "return=representation"} | ({"Authorization": f"Bearer {token}"} if token else {})
        return self.client.post(path, json=body, headers=headers)


def _start_api(resources: Resources, network: str, env: dict[str, str], token: str | None = None) -> Api:
    """The stand-in on the test's network, reached at its address there: no host port, so no answer can come
    from another stack that a concurrent test publishes."""
    api = resources.container("provision-test/postgrest:12", network=network, env={
        "PGRST_DB_URI": "postgres://authenticator:y@db:5432/app", "PGRST_DB_SCHEMAS": "public", **env})
    address = _docker("inspect", "-f", f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}",
                      api).stdout.strip()
    client = Api(f"http://{address}:3000")
    resources.clients.append(client.client)

    def serving() -> bool:
        try:
            return client.get("/", token).status_code != 503
        except httpx.TransportError:
            return False
    _wait("the api to reach the database", serving)
    return client


def _error(response: httpx.Response, status: int, code: str, message: str | None = None) -> dict[str, Any]:
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), (response.url, response.headers, response.text)
    if message is not None:
        assert body["message"] == message, body
    return body


def test_api_runs_requests_as_the_jwt_role_or_the_anonymous_role(resources: Resources) -> None:
    network = resources.network()
    db = resources.container("provision-test/postgres:15", network=network, alias="db",
                             env={"POSTGRES_PASSWORD": "admin-password", "POSTGRES_DB": "app"})
    _wait_db(db)
    _psql(db, ROLES_SQL)
    # the authenticator itself may do nothing with the table
    assert _psql(db, "select has_table_privilege('authenticator', 'items', 'SELECT')") == "f"
    secret = secrets.token_hex(24)  # what provision generates: 48 hex characters
    api = _start_api(resources, network, {"PGRST_DB_ANON_ROLE": "anon", "PGRST_JWT_SECRET": secret})
    now = int(time.time())
    user = _jwt({"role": "authenticated", "sub": "user-1", "exp": now + 300}, secret)

    # anonymous: the table is in the schema cache (read from pg_catalog as the authenticator), anon may not
    # use it: 42501 as the anonymous role is a 401 asking for a token
    anonymous = api.get("/items")
    _error(anonymous, 401, "42501", "permission denied for table items")
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    _error(api.post("/items", {"name": "a"}), 401, "42501")
    assert "/items" not in api.get("/").json()["paths"]  # the root lists what the role may use

    # a valid JWT: its role, and its claims in request.jwt.claims
    assert (api.get("/items", user).status_code, api.get("/items", user).json()) == (200, [])
    created = api.post("/items", {"name": "a"}, user)
    assert created.status_code == 201, created.text
    assert created.json() == [{"id": 1, "name": "a", "who": "authenticated", "sub": "user-1"}]
    assert "/items" in api.get("/", user).json()["paths"]
    # the scheme in any case, and HS384 with this 48-byte secret (jose accepts any HMAC alg whose digest
    # is not longer than the key; HS512 needs 64 bytes)
    assert api.client.get("/items", headers={"Authorization": f"bearer {user}"}).status_code == 200
    assert api.get("/items", _jwt({"role": "authenticated"}, secret, "HS384")).status_code == 200
    _error(api.get("/items", _jwt({"role": "authenticated"}, secret, "HS512")), 401, "PGRST301",
           "JWSError JWSInvalidSignature")
    # within PostgREST's 30 s leeway an expired token still passes
    assert api.get("/items", _jwt({"role": "authenticated", "exp": now - 10}, secret)).status_code == 200

    # invalid tokens: 401 PGRST301 with the reason in WWW-Authenticate
    bad = api.get("/items", _jwt({"role": "authenticated"}, "another-secret-" + secret))
    _error(bad, 401, "PGRST301", "JWSError JWSInvalidSignature")
    assert bad.headers["WWW-Authenticate"] == \
        'Bearer error="invalid_token", error_description="JWSError JWSInvalidSignature"'
    expired = api.get("/items", _jwt({"role": "authenticated", "exp": now - 60}, secret))
    # PostgREST 12 (every v12 tag; test/spec/Feature/Auth/AuthSpec.hs "fails with an expired token"):
    # PGRST301 "JWT expired". PGRST303 is what v13 answers.
    _error(expired, 401, "PGRST301", "JWT expired")
    assert expired.headers["WWW-Authenticate"] == 'Bearer error="invalid_token", error_description="JWT expired"'
    _error(api.get("/items", _jwt({"role": "authenticated", "nbf": now + 120}, secret)), 401, "PGRST301",
           "JWTNotYetValid")
    _error(api.get("/items", _jwt({"role": "authenticated", "iat": now + 120}, secret)), 401, "PGRST301",
           "JWTIssuedAtFuture")
    _error(api.get("/items", _jwt({"role": "authenticated"}, secret, "none")), 401, "PGRST301",
           "JWSError JWSNoSignatures")
    _error(api.get("/items", "not-a-jwt"), 401, "PGRST301",
           "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)")

    # a role the authenticator may not switch to: permission denied, 403 for a JWT's role
    _error(api.get("/items", _jwt({"role": "app"}, secret)), 403, "42501")
    # a JWT without a role claim runs as the anonymous role (and is answered as anonymous)
    _error(api.get("/items", _jwt({"sub": "user-1"}, secret)), 401, "42501")

    # a grant to anon and a schema reload: anonymous reads work
    _psql(db, "GRANT SELECT ON items TO anon; NOTIFY pgrst, 'reload schema'")
    _wait("anonymous reads after the grant", lambda: api.get("/items").status_code == 200)
    assert [row["name"] for row in api.get("/items?select=name").json()] == ["a"]
    _error(api.post("/items", {"name": "b"}), 401, "42501")  # still no INSERT for anon

    # a table made after the start is found on NOTIFY although the authenticator has no privilege on it
    _psql(db, "SET ROLE app; CREATE TABLE later (id int); GRANT SELECT ON later TO authenticated")
    _error(api.get("/later", user), 404, "PGRST205")
    _psql(db, "NOTIFY pgrst, 'reload schema'")
    _wait("the new table in the schema cache", lambda: api.get("/later", user).status_code == 200)

    # no anonymous role: a request without a token is refused before anything else
    closed = _start_api(resources, network, {"PGRST_JWT_SECRET": secret}, token=user)
    refused = closed.get("/items")
    _error(refused, 401, "PGRST302", "Anonymous access is disabled")
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    _error(closed.get("/"), 401, "PGRST302")
    assert closed.get("/items", user).status_code == 200
