"""Compose handling the way Coolify does it: base64 check, YAML parse, injection checks,
variable discovery, magic ``SERVICE_*`` variables, URL generation and the generated compose.

Sources: API-NOTES §6, §9, §14; ``bootstrap/helpers/parsers.php`` and ``shared.php``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

COOLIFY_VERSION = "4.3.11"


class ComposeValidationError(Exception):
    """A 422 whose message goes to ``errors.docker_compose_raw`` (as a plain string)."""


class MalformedYaml(Exception):
    """``Yaml::parse`` failed outside any try block: Coolify answers 500."""


# --------------------------------------------------------------------------------------
# base64 / YAML
# --------------------------------------------------------------------------------------
def is_base64(value: str) -> bool:
    """PHP ``base64_encode(base64_decode($s, true)) === $s`` (standard alphabet, padded, no newlines)."""
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return base64.b64encode(decoded).decode("ascii") == value


def decode_compose(value: str) -> str:
    """Validate and decode ``docker_compose_raw``; raises ComposeValidationError."""
    if not is_base64(value):
        raise ComposeValidationError("The docker_compose_raw should be base64 encoded.")
    raw = base64.b64decode(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # ServicesController.php:687-694, 1221-1228: mb_detect_encoding fails, and the message is the base64 one
        raise ComposeValidationError("The docker_compose_raw should be base64 encoded.") from exc


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys like Symfony's parser."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f'Duplicate key "{key}" detected', key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    """Parse YAML; any error is a MalformedYaml (Coolify: HTTP 500)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise MalformedYaml(str(exc)) from exc


class _Dumper(yaml.SafeDumper):
    """Dump like ``Yaml::dump(..., 10, 2, MULTI_LINE_LITERAL_BLOCK)``."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    """Re-dump parsed YAML (comments and formatting are lost, as in Coolify)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, indent=2, width=4096,
                     allow_unicode=True)


# --------------------------------------------------------------------------------------
# Injection checks (validateDockerComposeForInjection)
# --------------------------------------------------------------------------------------
_DANGEROUS = [
    ("`", "backtick (command substitution)"),
    ("$(", "command substitution"),
    ("${", "variable substitution with potential command injection"),
    ("|", "pipe operator"),
    ("&", "background/AND operator"),
    (";", "command separator"),
    ("\n", "newline (command separator)"),
    ("\r", "carriage return"),
    ("\t", "tab (token separator)"),
    (">", "output redirection"),
    ("<", "input redirection"),
]
_VALID_MODES = {"ro", "rw", "z", "Z", "rslave", "rprivate", "rshared", "slave", "private", "shared", "cached",
                "delegated", "consistent"}
_SIMPLE_ENV = re.compile(r"^\$\{[a-zA-Z_][a-zA-Z0-9_]*\}$")
_ENV_WITH_PATH = re.compile(r"^\$\{[a-zA-Z_][a-zA-Z0-9_]*\}[/\w.\-]*$")
_ENV_WITH_DEFAULT = re.compile(r"^\$\{[^}]+:-[^}]*\}")


def validate_shell_safe(value: str, context: str) -> None:
    """``validateShellSafePath``: raise on shell metacharacters."""
    for char, description in _DANGEROUS:
        if char in value:
            raise ComposeValidationError(
                f"Invalid {context}: contains forbidden character '{char}' ({description}). "
                "Shell metacharacters are not allowed for security reasons."
            )


def parse_volume_string(volume: str) -> tuple[str | None, str | None, str | None]:
    """Port of ``parseDockerVolumeString`` (returns source, target, mode; validates both ends)."""
    volume = volume.strip()
    source: str | None
    target: str | None
    mode: str | None = None
    m = _ENV_WITH_DEFAULT.match(volume)
    env_end = len(m.group(0)) if m else 0
    colons = volume[env_end:].count(":") if m else volume.count(":")
    if colons == 0:
        source = target = volume
    elif colons == 1:
        if m:
            source, rest = volume[:env_end], volume[env_end:]
            target = rest[1:] if rest.startswith(":") else rest
        else:
            source, target = volume.split(":", 1)
            target = target.split(":")[0]
    elif colons == 2 and m:
        source, rest = volume[:env_end], volume[env_end + 1:]
        head, _, tail = rest.rpartition(":")
        if head and tail in _VALID_MODES:
            target, mode = head, tail
        else:
            target = rest
    elif re.match(r"^[A-Za-z]:", volume):
        second = volume.find(":", 2)
        source, target = volume[:second], volume[second + 1:]
        head, _, tail = target.rpartition(":")
        if head and tail in _VALID_MODES:
            target, mode = head, tail
    else:
        source, _, rest = volume.partition(":")
        head, _, tail = rest.rpartition(":")
        if head and tail in _VALID_MODES:
            target, mode = head, tail
        else:
            target = rest
    if source is not None:
        env = re.match(r"^\$\{([^}]+)\}$", source)
        if env and ":-" in env.group(1):
            name, _, default = env.group(1).partition(":-")
            source = default if default != "" else "${" + name + "}"
    if source is not None and not (_SIMPLE_ENV.match(source) or _ENV_WITH_PATH.match(source)):
        try:
            validate_shell_safe(source, "volume source")
        except ComposeValidationError as exc:
            raise ComposeValidationError(
                f"Invalid Docker volume definition: {exc} Please use safe path names without shell metacharacters."
            ) from None
    if target is not None:
        try:
            validate_shell_safe(target, "volume target")
        except ComposeValidationError as exc:
            raise ComposeValidationError(
                f"Invalid Docker volume definition: {exc} Please use safe path names without shell metacharacters."
            ) from None
    return source, target, mode


def validate_injection(parsed: Any) -> None:
    """``validateDockerComposeForInjection``: a ``services`` map, shell-safe names and volumes."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("services"), dict):
        raise ComposeValidationError('Docker Compose file must contain a "services" section')
    for name, cfg in parsed["services"].items():
        try:
            validate_shell_safe(str(name), "service name")
        except ComposeValidationError as exc:
            raise ComposeValidationError(
                f"Invalid Docker Compose service name: {exc} Service names must not contain shell metacharacters."
            ) from None
        volumes = cfg.get("volumes") if isinstance(cfg, dict) else None
        if not isinstance(volumes, list):
            continue
        for vol in volumes:
            if isinstance(vol, str):
                parse_volume_string(vol)
            elif isinstance(vol, dict):
                src = vol.get("source")
                if isinstance(src, str) and not (
                    _SIMPLE_ENV.match(src) or re.match(r"^\$\{[^}]+:-[^}]*\}$", src) or _ENV_WITH_PATH.match(src)
                ):
                    try:
                        validate_shell_safe(src, "volume source")
                    except ComposeValidationError as exc:
                        raise ComposeValidationError(
                            f"Invalid Docker volume definition (array syntax): {exc} "
                            "Please use safe path names without shell metacharacters."
                        ) from None
                tgt = vol.get("target")
                if isinstance(tgt, str):
                    try:
                        validate_shell_safe(tgt, "volume target")
                    except ComposeValidationError as exc:
                        raise ComposeValidationError(
                            f"Invalid Docker volume definition (array syntax): {exc} "
                            "Please use safe path names without shell metacharacters."
                        ) from None


# --------------------------------------------------------------------------------------
# Variables
# --------------------------------------------------------------------------------------
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scan_refs(text: str, out: dict[str, str | None]) -> None:
    """Collect ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}`` and ``$VAR``."""
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            i += 1
            continue
        if i + 1 < n and text[i + 1] == "$":
            i += 2  # escaped "$$"
            continue
        if i + 1 < n and text[i + 1] == "{":
            depth, j = 1, i + 2
            while j < n and depth:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            inner = text[i + 2: j - 1] if depth == 0 else text[i + 2:]
            m = _NAME_RE.match(inner)
            if m:
                name, rest = m.group(0), inner[m.end():]
                default: str | None = None
                for op in (":-", "-"):
                    if rest.startswith(op):
                        default = rest[len(op):]
                        _scan_refs(default, out)
                        break
                if name not in out or (out[name] is None and default is not None):
                    out[name] = default
            i = j
            continue
        m = _NAME_RE.match(text, i + 1)
        if m:
            out.setdefault(m.group(0), None)
            i = m.end()
            continue
        i += 1


def _walk_strings(node: Any, out: dict[str, str | None]) -> None:
    if isinstance(node, str):
        _scan_refs(node, out)
    elif isinstance(node, dict):
        for value in node.values():
            _walk_strings(value, out)
    elif isinstance(node, list):
        for value in node:
            _walk_strings(value, out)


def environment_items(cfg: Any) -> list[tuple[str, Any]]:
    """A compose service's ``environment`` as (key, value-or-None) pairs, list or map form."""
    env = cfg.get("environment") if isinstance(cfg, dict) else None
    items: list[tuple[str, Any]] = []
    if isinstance(env, dict):
        items = [(str(k), v) for k, v in env.items()]
    elif isinstance(env, list):
        for entry in env:
            text = str(entry)
            key, sep, value = text.partition("=")
            items.append((key.strip(), value if sep else None))
    return items


def referenced_variables(parsed: dict[str, Any]) -> dict[str, str | None]:
    """Every variable the compose references, with its default (None when it has none).

    Key-only environment entries (``- FOO`` / ``FOO:``) count as references to ``FOO``.
    """
    found: dict[str, str | None] = {}
    for cfg in (parsed.get("services") or {}).values():
        if not isinstance(cfg, dict):
            continue
        for key, value in environment_items(cfg):
            if value is None or value == "":
                if _NAME_RE.fullmatch(key):
                    found.setdefault(key, None)
        _walk_strings(cfg, found)
    return found


@dataclass(frozen=True)
class MagicVar:
    """A ``SERVICE_<TYPE>_<NAME>[_<PORT>]`` variable."""

    name: str
    kind: str  # FQDN, URL, USER, PASSWORD, ...
    target: str  # NAME part (upper case)
    port: int | None


_MAGIC_KINDS = ("PASSWORDWITHSYMBOLS", "PASSWORD64", "PASSWORD", "REALBASE64_128", "REALBASE64_64", "REALBASE64",
                "BASE64_128", "BASE64_64", "BASE64", "HEX_128", "HEX_64", "HEX_32", "FQDN", "URL", "USER")


def parse_magic(name: str) -> MagicVar | None:
    """Recognise Coolify's magic variable names."""
    if not name.startswith("SERVICE_"):
        return None
    rest = name[len("SERVICE_"):]
    for kind in _MAGIC_KINDS:
        if rest.startswith(kind + "_") and len(rest) > len(kind) + 1:
            target = rest[len(kind) + 1:]
            port: int | None = None
            if kind in ("FQDN", "URL"):
                head, sep, tail = target.rpartition("_")
                if sep and head and tail.isdigit():
                    target, port = head, int(tail)
            return MagicVar(name, kind, target, port)
    return None


def generate_magic_value(var: MagicVar) -> str:
    """Values for generated (non-URL) magic variables."""
    alnum = string.ascii_letters + string.digits
    kind = var.kind
    if kind == "USER":
        return "".join(secrets.choice(string.ascii_letters) for _ in range(16))
    if kind == "PASSWORD":
        return "".join(secrets.choice(alnum) for _ in range(32))
    if kind == "PASSWORD64":
        return "".join(secrets.choice(alnum) for _ in range(64))
    if kind == "PASSWORDWITHSYMBOLS":
        return "".join(secrets.choice(alnum + "!@#%^*") for _ in range(32))
    if kind.startswith("REALBASE64"):
        size = int(kind.split("_")[1]) if "_" in kind else 32
        return base64.b64encode(secrets.token_bytes(size)).decode()
    if kind.startswith("BASE64"):
        size = int(kind.split("_")[1]) if "_" in kind else 32
        return "".join(secrets.choice(alnum) for _ in range(size))
    if kind.startswith("HEX"):
        return secrets.token_hex(int(kind.split("_")[1]) // 2)
    return "".join(secrets.choice(alnum) for _ in range(32))


def compose_key_matches(service_name: str, target: str) -> bool:
    """``SERVICE_FQDN_<TARGET>`` refers to compose key ``service_name`` (upper-cased, ``-`` → ``_``)."""
    return service_name.upper().replace("-", "_") == target


# --------------------------------------------------------------------------------------
# Images, health checks
# --------------------------------------------------------------------------------------
DATABASE_DOCKER_IMAGES = (
    "bitnami/mariadb", "bitnami/mongodb", "bitnami/redis", "bitnamilegacy/mariadb", "bitnamilegacy/mongodb",
    "bitnamilegacy/redis", "bitnamisecure/mariadb", "bitnamisecure/mongodb", "bitnamisecure/redis", "mysql",
    "bitnami/mysql", "bitnamilegacy/mysql", "bitnamisecure/mysql", "mysql/mysql-server", "mariadb",
    "postgis/postgis", "postgres", "bitnami/postgresql", "bitnamilegacy/postgresql", "bitnamisecure/postgresql",
    "supabase/postgres", "elestio/postgres", "mongo", "redis", "memcached", "couchdb", "neo4j", "influxdb",
    "clickhouse/clickhouse-server", "timescaledb/timescaledb", "timescaledb", "timescaledb-ha", "pgvector/pgvector",
)


def image_name(image: str) -> str:
    """Image reference without registry ``docker.io``/``library``, tag or digest."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: len(ref) - len(last[-1]) + last[-1].index(":")]
    for prefix in ("docker.io/library/", "docker.io/", "library/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    return ref


def is_database_image(image: str | None) -> bool:
    """``isDatabaseImage``: known DB images go to ``databases[]``."""
    if not image:
        return False
    name = image_name(str(image))
    if name in DATABASE_DOCKER_IMAGES:
        return True
    tail = name.rsplit("/", 1)[-1]
    return tail in ("timescaledb", "timescaledb-ha")


def has_healthcheck(cfg: Any) -> bool:
    """A compose service with an enabled ``healthcheck`` (pure mode: running:healthy)."""
    if not isinstance(cfg, dict):
        return False
    hc = cfg.get("healthcheck")
    if not isinstance(hc, dict) or hc.get("disable") is True:
        return False
    test = hc.get("test")
    if test in (None, "", []):
        return False
    if isinstance(test, list) and test and str(test[0]).upper() == "NONE":
        return False
    return True


def excluded_from_status(cfg: Any) -> bool:
    """``exclude_from_hc: true`` or ``restart: "no"`` in a compose service (a one-shot): its sub-resource's
    ``exclude_from_status`` (bootstrap/helpers/parsers.php:2704-2706, serviceParser). PyYAML reads an unquoted
    ``no`` as false where Symfony's YAML 1.2 parser reads the string 'no': both count."""
    return isinstance(cfg, dict) and (cfg.get("exclude_from_hc") in (True, "true", 1)
                                      or cfg.get("restart") in ("no", False))


# --------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------
def sslip_base(server_ip: str, public_ip: str) -> str:
    """``sslip()``: ``http://<ip>.sslip.io`` (host.docker.internal → the instance's public IP)."""
    if server_ip == "host.docker.internal":
        return f"http://{public_ip}.sslip.io"
    if ":" in server_ip:
        return f"http://{server_ip.replace(':', '-')}.sslip.io"
    return f"http://{server_ip}.sslip.io"


def generate_url(prefix: str, server_ip: str, wildcard: str | None, public_ip: str) -> tuple[str, str]:
    """``generateFqdn``: returns (url-with-scheme, host[/path]) for ``<prefix>.<wildcard or sslip>``."""
    base = wildcard if wildcard else sslip_base(server_ip, public_ip)
    if "://" not in base:
        base = "http://" + base
    parts = urlsplit(base)
    path = "" if parts.path in ("", "/") else parts.path
    host = f"{prefix}.{parts.hostname}{path}"
    return f"{parts.scheme}://{host}", host


def split_urls(fqdn: str | None) -> list[str]:
    """An fqdn column is a comma-separated URL list."""
    if not fqdn:
        return []
    return [u.strip() for u in fqdn.split(",") if u.strip()]


def url_host_path(url: str) -> tuple[str, str, int | None]:
    """(lower-cased host, path, port) of one URL."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = (parts.hostname or "").lower()
    path = parts.path.rstrip("/")
    try:
        port = parts.port
    except ValueError:
        port = None
    return host, path, port


def public_url(url: str) -> str:
    """The public URL: the container ``:port`` removed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path.rstrip('/') if parts.path != '/' else ''}"


# --------------------------------------------------------------------------------------
# Generated compose (what Coolify writes to /data/coolify/services/<uuid>/docker-compose.yml)
# --------------------------------------------------------------------------------------
def slug(value: str) -> str:
    """Laravel ``Str::slug`` (ASCII, ``_`` → ``-``, ``@`` → ``-at-``, lower case)."""
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    text = text.replace("_", "-").replace("@", "-at-")
    text = re.sub(r"[^\-\w\s]+", "", text.lower())
    text = re.sub(r"[\-\s_]+", "-", text)
    return text.strip("-")


def _is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith(("/", ".", "~", "$"))


@dataclass
class SubInfo:
    """What the generated compose needs to know about one sub-resource."""

    name: str
    kind: str
    sub_id: int
    fqdn: str | None


def generate_compose(
    parsed: dict[str, Any],
    *,
    service_uuid: str,
    service_id: int,
    service_name: str,
    project_name: str,
    environment_name: str,
    subs: dict[str, SubInfo],
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rewrite the user's compose the way Coolify does before ``docker compose up``.

    container_name ``<key>-<uuid>``, the ``<uuid>`` external network on every service,
    named volumes renamed ``<uuid>_<slug>``, ``coolify.*`` and Traefik labels, COOLIFY_* env.
    ``extra_labels`` go on every service, non-external volume and network (test cleanup).
    """
    data = copy.deepcopy(parsed)
    services: dict[str, Any] = data.get("services") or {}
    top_volumes: dict[str, Any] = data.get("volumes") or {}
    if not isinstance(top_volumes, dict):
        top_volumes = {}
    renamed: dict[str, str] = {}

    def rename(vol: str) -> str:
        cfg = top_volumes.get(vol)
        if isinstance(cfg, dict) and (cfg.get("external") or cfg.get("name")):
            return vol
        if vol not in renamed:
            renamed[vol] = f"{service_uuid}_{slug(vol)}"
        return renamed[vol]

    for key, cfg in list(services.items()):
        key = str(key)
        if not isinstance(cfg, dict):
            cfg = {}
            services[key] = cfg
        cfg.pop("exclude_from_hc", None)
        cfg["container_name"] = f"{key}-{service_uuid}"
        cfg.setdefault("restart", "unless-stopped")
        sub = subs.get(key)
        # environment (map form, key-only entries resolved from .env)
        env: dict[str, Any] = {}
        for ekey, evalue in environment_items(cfg):
            env[ekey] = "${" + ekey + "}" if evalue is None else evalue
        env.setdefault("COOLIFY_RESOURCE_UUID", service_uuid)
        env.setdefault("COOLIFY_CONTAINER_NAME", f"{key}-{service_uuid}")
        urls = split_urls(sub.fqdn if sub else None)
        if urls:
            env.setdefault("COOLIFY_URL", ",".join(public_url(u) for u in urls))
            env.setdefault("COOLIFY_FQDN", ",".join(url_host_path(u)[0] for u in urls))
        cfg["environment"] = env
        # labels
        labels: dict[str, Any] = {}
        raw_labels = cfg.get("labels")
        if isinstance(raw_labels, dict):
            labels.update({str(k): v for k, v in raw_labels.items()})
        elif isinstance(raw_labels, list):
            for entry in raw_labels:
                lk, _, lv = str(entry).partition("=")
                labels[lk] = lv
        labels.update({
            "coolify.managed": "true",
            "coolify.version": COOLIFY_VERSION,
            "coolify.serviceId": str(service_id),
            "coolify.type": "service",
            "coolify.name": f"{key}-{service_uuid}",
            "coolify.resourceName": slug(service_name),
            "coolify.projectName": slug(project_name),
            "coolify.serviceName": key,
            "coolify.environmentName": slug(environment_name),
            "coolify.pullRequestId": "0",
            "coolify.service.subId": str(sub.sub_id if sub else 0),
            "coolify.service.subType": sub.kind if sub else "application",
            "coolify.service.subName": key,
        })
        for i, url in enumerate(urls):
            host, path, port = url_host_path(url)
            router = f"http-{i}-{service_uuid}-{key}"
            rule = f"Host(`{host}`)" + (f" && PathPrefix(`{path}`)" if path else " && PathPrefix(`/`)")
            labels["traefik.enable"] = "true"
            labels[f"traefik.http.routers.{router}.rule"] = rule
            labels[f"traefik.http.routers.{router}.entryPoints"] = "http"
            if port:
                labels[f"traefik.http.services.{router}.loadbalancer.server.port"] = str(port)
        if extra_labels:
            labels.update(extra_labels)
        cfg["labels"] = labels
        # networks
        if "network_mode" not in cfg:
            nets = cfg.get("networks")
            if isinstance(nets, list):
                if service_uuid not in nets:
                    nets.append(service_uuid)
            elif isinstance(nets, dict):
                nets.setdefault(service_uuid, None)
            else:
                cfg["networks"] = [service_uuid]
        # volumes
        vols = cfg.get("volumes")
        if isinstance(vols, list):
            new_vols: list[Any] = []
            for vol in vols:
                if isinstance(vol, str):
                    src, sep, rest = vol.partition(":")
                    if sep and _is_named_volume(src):
                        vol = f"{rename(src)}:{rest}"
                elif isinstance(vol, dict) and vol.get("type", "volume") == "volume":
                    long_src = vol.get("source")
                    if isinstance(long_src, str) and _is_named_volume(long_src):
                        vol = {**vol, "source": rename(long_src)}
                new_vols.append(vol)
            cfg["volumes"] = new_vols

    if top_volumes or renamed:
        new_top: dict[str, Any] = {}
        for vol, cfg in top_volumes.items():
            if vol in renamed:
                continue
            new_top[vol] = cfg
        for old, new in renamed.items():
            base = top_volumes.get(old)
            vcfg: dict[str, Any] = dict(base) if isinstance(base, dict) else {}
            vcfg["name"] = new
            if extra_labels:
                vcfg["labels"] = {**(vcfg.get("labels") or {}), **extra_labels}
            new_top[new] = vcfg
        data["volumes"] = new_top
    networks = data.get("networks")
    if not isinstance(networks, dict):
        networks = {}
    if extra_labels:
        for ncfg_name, ncfg in list(networks.items()):
            if not (isinstance(ncfg, dict) and ncfg.get("external")):
                base = dict(ncfg) if isinstance(ncfg, dict) else {}
                base["labels"] = {**(base.get("labels") or {}), **extra_labels}
                networks[ncfg_name] = base
    networks[service_uuid] = {"name": service_uuid, "external": True}
    data["networks"] = networks
    return data
