"""The env file's schema (`envs/<env>.yml`): pydantic models that check each key as it is read (images,
variables, projects, health, local and coolify settings, the owner id), and the defaults they fall back to.
Loading a file, its overrides and its secrets is config.py's."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import names
from .errors import InvalidName
from .resources import parse_size

BackendName = Literal["local", "coolify"]
BACKENDS: tuple[BackendName, ...] = ("local", "coolify")
DEFAULT_TEMPLATE = "templates/docker-compose.project.yml.j2"
PACKAGED_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "docker-compose.project.yml.j2"
Scalar = str | int | float | bool

# Variables every template can rely on; env- and project-level `variables` override them.
DEFAULT_VARIABLES: dict[str, str] = {
    "db_user": "app",
    "db_name": "app",
    "api_schemas": "public",
}
_VARIABLE_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_variables(value: dict[str, Scalar]) -> dict[str, Scalar]:
    if not isinstance(value, dict):
        return value  # the schema says what is wrong
    for key, item in value.items():
        if not isinstance(key, str) or not _VARIABLE_KEY.match(key):
            raise ValueError(f"variable name {key!r} must be lowercase letters, digits and '_'")
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"variable {key!r} must be a string, number or boolean")
    for key in ("db_user", "db_name", "api_anon_role"):
        if key in value and not _PG_IDENTIFIER.match(str(value[key])):
            raise ValueError(f"{key} {value[key]!r} must be a lowercase PostgreSQL identifier such as 'app'")
    connections = value.get("pg_max_connections")
    if connections is not None and (isinstance(connections, bool) or not str(connections).isdigit()
                                    or not 5 <= int(connections) <= 10000):
        raise ValueError(f"pg_max_connections {connections!r} must be a whole number from 5 to 10000")
    if "db_public_port" in value:
        port = value["db_public_port"]
        if isinstance(port, bool) or not str(port).isdigit() or not 1024 <= int(port) <= 65535:
            raise ValueError(f"db_public_port {port!r} must be a port number from 1024 to 65535")
    return value


def _check_image(value: str | None) -> str | None:
    if value is not None and not _IMAGE.match(value):
        raise ValueError(f"{value!r} is not an image reference such as 'postgres:16-alpine'")
    return value


class ImageOverrides(_Strict):
    """A project's own images (`projects[i].images`), each laid over the env's `images`: e.g. one project
    upgraded to a new PostgreSQL major while the others keep the env's db image."""

    db: str | None = None
    api: str | None = None

    _images = field_validator("db", "api")(_check_image)


class ProjectDecl(_Strict):
    name: str
    variables: dict[str, Scalar] = Field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    images: ImageOverrides | None = None
    backup: dict[str, Any] = Field(default_factory=dict)  # laid over the env's (core/archiving.py checks it)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return names.validate_name(value)
        except InvalidName as exc:
            raise ValueError(str(exc)) from exc

    _variables = field_validator("variables", mode="before")(_check_variables)


class Images(_Strict):
    db: str
    api: str

    @field_validator("db", "api")
    @classmethod
    def _image(cls, value: str) -> str:
        return _check_image(value) or value


class Health(_Strict):
    timeout: float = Field(default=180.0, gt=0, le=3600, description="seconds to wait for a healthy stack")
    # steady state only: provision probes readiness itself, so a long interval slows no provision; each check
    # costs ~60 ms of CPU (a process exec in the container), so 100 stacks at 60 s keep ~10 % of a core busy
    interval: float = Field(default=60.0, ge=0.5, le=3600, description="seconds between container healthchecks")


class LocalSettings(_Strict):
    bind_address: str = "127.0.0.1"
    port_range: tuple[int, int] = (20000, 29999)
    # Docker's default address pools give about 30 bridge networks; a pool here gives each project
    # a leased subnet of this size instead (e.g. 10.201.0.0/16 in /26 blocks = 1,024 projects)
    network_pool: str | None = None
    network_prefix: int = Field(default=26, ge=16, le=29)
    # a directory (on a filesystem with reflinks: XFS reflink=1, btrfs) where new projects' data volumes live
    # (bind-mounted named volumes): `clone` then copies a running project's data by reflink (issue 23)
    data_root: str | None = None

    @field_validator("data_root")
    @classmethod
    def _data_root(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path such as /srv/provision-data")
        return value.rstrip("/") or "/" if value is not None else None

    @field_validator("network_pool")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            network = ipaddress.ip_network(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network such as 10.201.0.0/16") from exc
        if not network.is_private:
            raise ValueError(f"{value!r} is not a private network range")
        return str(network)

    @model_validator(mode="after")
    def _pool_fits_prefix(self) -> LocalSettings:
        if self.network_pool is not None:
            pool = ipaddress.ip_network(self.network_pool)
            if pool.prefixlen > self.network_prefix:
                raise ValueError(f"network_pool: {self.network_pool} is smaller than one /{self.network_prefix} "
                                 f"project network (network_prefix): use a pool of /{self.network_prefix} or larger, "
                                 f"such as 10.201.0.0/16")
        return self

    @field_validator("bind_address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address such as 127.0.0.1") from exc
        return value

    @field_validator("port_range")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (1024 <= low < high <= 65535):
            raise ValueError("must be [low, high] with 1024 <= low < high <= 65535")
        return value


class BranchSettings(_Strict):
    """`branches:` what `clone --to` gives a branch of this env's projects unless told otherwise (issue 23)."""

    ttl: str | None = Field(default=None, description="a branch's lifetime (3d, 12h, 90m); none: it never expires")
    mask: str | None = Field(default=None, description="a SQL file run in every branch before its API opens")
    # a branch of a prod-like env must be masked: `clone` refuses one without a mask unless --no-mask
    prod_like: bool = False

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?", value.strip() or "x"):
            raise ValueError(f"{value!r} is not a lifetime such as 3d, 12h or 90m")
        return value


class CoolifyServer(_Strict):
    """One server new stacks may go to: its Coolify name or uuid, how many stacks it holds at most, and
    optionally how much memory it may hand out to stacks' memory limits."""

    name: str = Field(min_length=1)
    max_stacks: int = Field(gt=0, le=100000)
    memory: int | None = None

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> int | None:
        if value is None:
            return None
        size = parse_size(value)
        if size < 64 * 2**20:
            raise ValueError(f"{value!r} is less than one stack needs (64M); use a size such as 16GiB")
        return size


class CoolifySettings(_Strict):
    server: str | None = None
    # several servers: each new project goes to the one with the most free capacity (placement.py)
    servers: list[CoolifyServer] | None = None
    destination: str | None = None
    domain: str | None = None
    project_prefix: str = ""
    request_timeout: float = Field(default=30.0, gt=0, le=300, description="seconds per Coolify API request")
    # what this process sends to the Coolify at COOLIFY_API_URL in any 60 s, all its workers together; Coolify
    # allows 200 a minute (API_RATE_LIMIT) and counts other runs sharing its bucket too, which this does not see
    requests_per_minute: int = Field(default=150, ge=1, le=100000,
                                     description="requests this run sends to Coolify in any minute, at most")

    @field_validator("project_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.match(r"^[a-z0-9][a-z0-9._-]*$", value):
            raise ValueError(f"{value!r} may hold only lowercase letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _one_way_to_name_servers(self) -> CoolifySettings:
        if self.server and self.servers is not None:
            raise ValueError("set coolify.server (one server) or coolify.servers (several), not both")
        if self.servers is not None:
            if not self.servers:
                raise ValueError("servers: list at least one server, or remove the key")
            seen = [s.name for s in self.servers]
            for i, name in enumerate(seen):
                if name in seen[:i]:
                    raise ValueError(f"servers[{i}].name: {name!r} is listed twice")
        return self

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?://)?[a-z0-9.-]+(:\d+)?$", value):
            raise ValueError(f"{value!r} must be a base domain such as 'apps.example.com' or 'https://apps.example.com'")
        return value


OWNER_PATTERN = r"^[a-z0-9][a-z0-9-]{5,39}$"


def new_owner_id() -> str:
    """A fresh owner id: a letter, then 10 random hex characters. The letter matters: an id of digits only
    (`owner: 0123456789`) or in the shape of a number (`owner: 12e4567890`) would be read by YAML as a number."""
    import secrets as _random
    import string

    return _random.choice(string.ascii_lowercase) + _random.token_hex(5)


class EnvFile(_Strict):
    owner: str | None = Field(default=None, pattern=OWNER_PATTERN)
    allow_undeclared: bool = False
    backend: BackendName | None = None
    template: str = DEFAULT_TEMPLATE
    images: Images
    projects: list[ProjectDecl] = Field(default_factory=list)
    variables: dict[str, Scalar] = Field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    backup: dict[str, Any] = Field(default_factory=dict)  # continuous archiving (core/archiving.py checks it)
    health: Health = Field(default_factory=Health)
    local: LocalSettings = Field(default_factory=LocalSettings)
    branches: BranchSettings = Field(default_factory=BranchSettings)
    coolify: CoolifySettings = Field(default_factory=CoolifySettings)

    _variables = field_validator("variables", mode="before")(_check_variables)

    @model_validator(mode="after")
    def _unique_projects(self) -> EnvFile:
        for first, later in names.find_collisions(p.name for p in self.projects):
            index = [p.name for p in self.projects].index(later, [p.name for p in self.projects].index(first) + 1)
            raise ValueError(f"projects[{index}].name: {later!r} collides with {first!r}: project names must be unique")
        return self
