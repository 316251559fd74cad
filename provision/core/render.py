"""Render the compose template for one project in one env.

Rendering is pure: the same inputs give the same text and the same hashes. Values enter
the YAML only through the `q` filter (templating.py: a double-quoted scalar with `$` escaped for compose),
so no project variable can add keys; secrets enter only as `${VAR}` references.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from . import archive_scripts, archiving, names
from .branches import BranchMark
from .config import EnvConfig, ProjectSpec
from .errors import TemplateError
from .model import Ports
from .resources import postgres_settings
from .roles import Roles
from .secrets import GENERATED_SECRETS, Secret
from .templating import load_template

# libyaml's loader is ~8x faster; PyYAML may be built without it
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# `$$` is an escaped dollar for compose; only `${NAME...}` is a reference
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[?-])[^}]*)?\}")


def references(text: str) -> list[str]:
    """Names of the `${NAME}` interpolations in compose text, in order, escaped `$$` skipped."""
    return [m.group(1) for m in _REFERENCE.finditer(text) if m.group(1)]


@dataclass(frozen=True)
class RenderedStack:
    """A rendered compose file with the per-service hashes it labels its services with."""

    project: str
    env: str
    compose_project: str
    text: str
    service_hashes: Mapping[str, str]
    config_hash: str
    secret_names: tuple[str, ...]
    document: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.service_hashes)


def secret_ref(name: str, *, required: bool = True) -> str:
    """The compose interpolation for a secret: `${NAME:?...}` (fails loudly when unset) or plain `${NAME}`."""
    if not required:
        return "${" + name + "}"
    return "${" + name + ":?" + name + " is not set; it comes from the project's secrets}"


DEFAULT_DB_VOLUME = "pgdata"
ARCHIVER_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "archiver.sh"
OFFSITE_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "offsite.sh"


def volume_labels_of(config: EnvConfig, spec: ProjectSpec) -> dict[str, str]:
    """The labels the template gives a project's volumes (which never change once a volume exists)."""
    return {names.LABEL_MANAGED: "true", names.LABEL_PROJECT: spec.name, names.LABEL_ENV: config.name}


def archiver_context(config: EnvConfig, spec: ProjectSpec, db_volume: str, *, backend: str) -> dict[str, Any]:
    """What the template's archiver service needs (continuous archiving on): its script and settings. The archive
    of each data volume (its compose key, `db_volume`) is a lineage of its own under the repository: a restore into
    a new volume starts a new one, and a rollback finds the old one as it was. With backup.offsite, the offsite
    service's too (its keys only as `${VAR}` references)."""
    backup = spec.backup
    offsite = backup.offsite
    return {**backup.to_context(), "script": ARCHIVER_SCRIPT.read_text(encoding="utf-8"),
            "role": archiving.ARCHIVER_ROLE, "slot": archiving.SLOT, "poll": archiving.POLL_SECONDS,
            "repository_volume": archiving.REPOSITORY_VOLUME, "socket_volume": archiving.SOCKET_VOLUME,
            "directory": f"{archiving.REPOSITORY_PATH}/{db_volume}", "path": archiving.REPOSITORY_PATH,
            "start": archiving.START, "read": archive_scripts.READ_SCRIPT,
            # Coolify's verify: a drill in the archiver (templates/drill.sh), started by one short task
            "drill": {"script": archive_scripts.DRILL_SCRIPT.read_text(encoding="utf-8"),
                      "restore": archive_scripts.RESTORE_SCRIPT.read_text(encoding="utf-8"),
                      "checks": archive_scripts.DRILL_CHECKS, "counts": archive_scripts.COUNTS_SQL,
                      "admin": Roles.of(spec.variables).admin, "owner": Roles.of(spec.variables).owner,
                      "db": str(spec.variables["db_name"])} if backend == "coolify" else None,
            "offsite": {
                "script": OFFSITE_SCRIPT.read_text(encoding="utf-8"), "image": offsite.image,
                "endpoint": offsite.endpoint, "bucket": offsite.bucket, "region": offsite.region,
                "prefix": offsite.location(config.name, spec.name, db_volume), "every": int(offsite.every),
                "ca_cert": offsite.ca_base64,
                "secrets": {name.lower(): secret_ref(name, required=backend == "local")
                            for name in offsite.secret_names},
            } if offsite is not None else None}


def restore_context(request: Mapping[str, Any], db_volume: str) -> dict[str, Any]:
    """What the template's one-shot `restore` service needs: the restore script, its command, and the request's
    values (`lineage`, `base`, `target` as recovery_target_time takes it, `admin`, `dbname`, `mark`, `wait`) as its
    environment; none of them is a secret (the service runs as the image's root over the local socket)."""
    return {"script": archive_scripts.RESTORE_SCRIPT.read_text(encoding="utf-8"), "start": archive_scripts.RESTORE_START,
            "env": {"RESTORE_KEY": db_volume, "LINEAGE": str(request["lineage"]), "BASE": str(request["base"]),
                    "TARGET": str(request.get("target") or ""), "ADMIN": str(request["admin"]),
                    "DB": str(request["dbname"]), "MARK": str(request["mark"]), "COUNTS": archive_scripts.COUNTS_SQL,
                    "WAIT": str(int(request.get("wait") or 600))}}


def build_context(
    config: EnvConfig,
    spec: ProjectSpec,
    *,
    backend: str,
    ports: Ports | None,
    db_volume: str = DEFAULT_DB_VOLUME,
    branch: BranchMark | None = None,
    restore: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables the template sees; pure data, no secrets (only `${VAR}` references). `db_volume`: the
    compose key of the db's data volume (another after a PostgreSQL major upgrade on Coolify). On the local backend
    with an owner id, the containers and the network carry it (`names.LABEL_OWNER`); Coolify marks ownership in
    its descriptions instead. A `branch` (issue 23) labels its containers with its parent and expiry
    (`branch_labels`), and its data volume with its parent. `restore` (a point-in-time restore's request, which the
    record of a restore --to-time on Coolify carries while it switches: `restore_context`) adds the one-shot `restore`
    service that fills the new data volume before the db starts."""
    volume_labels = {**volume_labels_of(config, spec), **(branch.volume_labels() if branch is not None else {})}
    owner = {names.LABEL_OWNER: config.owner} if backend == "local" and config.owner else {}
    return {
        "db_volume": db_volume,
        "roles": Roles.of(spec.variables).to_context(),
        "resources": {"db": spec.limits.db.to_context(), "api": spec.limits.api.to_context()},
        "postgres": {**postgres_settings(spec.limits.db.memory, spec.variables),
                     **({"max_slot_wal_keep_size": spec.backup.slot_keep_setting} if spec.backup.continuous else {})},
        "backup": archiver_context(config, spec, db_volume, backend=backend) if spec.backup.continuous else None,
        "restore": restore_context(restore, db_volume) if restore and spec.backup.continuous else None,
        "project": spec.name,
        "env": config.name,
        "backend": backend,
        "compose_project": names.compose_project_name(config.name, spec.name),
        "images": {"db": (spec.images or config.images).db, "api": (spec.images or config.images).api},
        "vars": dict(spec.variables),
        "labels": {**volume_labels_of(config, spec), **owner},
        # a volume's labels never change once it exists (compose may offer to recreate it, data lost, when they
        # differ): the data volume keeps the labels of earlier versions, and the local backend adds the owner
        # label to a new one by creating it itself before compose runs
        "volume_labels": volume_labels,
        "branch_labels": branch.labels() if branch is not None else {},
        "publish": (
            {"bind_address": config.local.bind_address, "api_port": ports.api, "db_port": ports.db,
             "subnet": ports.subnet}
            if ports is not None
            else None
        ),
        "health": {"interval": _duration(config.health.interval)},
        # Coolify discovers plain ${NAME} references and fills them from the service's variables
        "secrets": {name.lower(): secret_ref(name, required=backend == "local") for name in GENERATED_SECRETS},
    }


def render_stack(
    template_path: Path,
    context: Mapping[str, Any],
    secrets: Mapping[str, Secret] | None = None,
) -> RenderedStack:
    """Render the template, check the result is a compose file, and label each service with its hash.

    A service's hash covers its own definition, the top-level volumes and networks, and a
    digest of the secrets it references, so a change to one service recreates only that one.
    """
    template = load_template(template_path)
    first = _render(template, template_path, {**context, "service_hashes": {}})
    document = _parse(first, template_path)
    hashes, referenced = hash_services(document, secrets)
    # the second pass only adds the hash labels, so its structure is the first pass's
    text = _render(template, template_path, {**context, "service_hashes": hashes})
    return RenderedStack(
        project=str(context["project"]),
        env=str(context["env"]),
        compose_project=str(context["compose_project"]),
        text=text,
        service_hashes=hashes,
        config_hash=stack_hash(hashes),
        secret_names=tuple(sorted(referenced)),
        document=document,
    )


def hash_services(document: Mapping[str, Any], secrets: Mapping[str, Secret] | None) -> tuple[dict[str, str], set[str]]:
    """Each service's hash, and the variables the services reference.

    A service's hash covers its own definition, the top-level volumes and networks, and a
    digest of the secrets it references, so a change to one service recreates only that one.
    """
    shared = {k: document.get(k) for k in ("volumes", "networks")}
    hashes: dict[str, str] = {}
    referenced: set[str] = set()
    for service, definition in (document.get("services") or {}).items():
        body = json.dumps({"service": definition, "shared": shared}, sort_keys=True, default=str)
        refs = sorted(set(references(body)))
        referenced.update(refs)
        digest = hashlib.sha256(body.encode())
        for ref in refs:
            value = secrets.get(ref) if secrets else None
            digest.update(f"\0{ref}=".encode() + hashlib.sha256((value.reveal() if value else "").encode()).digest())
        hashes[str(service)] = digest.hexdigest()[:16]
    return hashes, referenced


def stack_hash(service_hashes: Mapping[str, str]) -> str:
    """The hash of a whole stack from its per-service hashes."""
    return hashlib.sha256(json.dumps(dict(service_hashes), sort_keys=True).encode()).hexdigest()[:16]


def without_hash_labels(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a compose document without provision's config-hash labels (what was hashed)."""
    copy: dict[str, Any] = json.loads(json.dumps(document, default=str))
    for definition in (copy.get("services") or {}).values():
        labels = definition.get("labels") if isinstance(definition, dict) else None
        if isinstance(labels, dict):
            labels.pop(names.LABEL_CONFIG_HASH, None)
        elif isinstance(labels, list):
            definition["labels"] = [item for item in labels if not str(item).startswith(names.LABEL_CONFIG_HASH + "=")]
    return copy


def parse_compose(text: str) -> dict[str, Any]:
    """A compose text as data; raises TemplateError when it is not a compose mapping."""
    return _parse(text, Path("<deployed compose>"))


def deployed_stack_hash(text: str, secrets: Mapping[str, Secret] | None) -> str:
    """The stack hash of a deployed compose text (e.g. as Coolify stores it, re-dumped): equal to
    the hash provision recorded when nothing was edited since."""
    hashes, _ = hash_services(without_hash_labels(parse_compose(text)), secrets)
    return stack_hash(hashes)


def normalized(text: str) -> str:
    """A compose text re-dumped with sorted keys and without hash labels, for readable diffs."""
    return yaml.safe_dump(without_hash_labels(parse_compose(text)), sort_keys=True, default_flow_style=False)


def _render(template: jinja2.Template, path: Path, context: Mapping[str, Any]) -> str:
    try:
        return template.render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"{path}: {exc.message}: define it under 'variables' in the env file or the project"
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{path}: {exc}") from exc


def _parse(text: str, path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: the rendered compose is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict) or not document["services"]:
        raise TemplateError(f"{path}: the rendered compose has no 'services:' mapping")
    return document


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds % 1 else f"{int(seconds)}s"


def reveal_secrets(text: str, secrets: Mapping[str, Secret]) -> str:
    """`text` with each `${NAME...}` reference replaced by the secret's value, for display only.

    A reference to a secret that does not exist yet reads `<generated on first provision>`.
    """

    def substitute(match: re.Match[str]) -> str:
        if not match.group(1) or match.group(1) not in secrets and match.group(1) not in GENERATED_SECRETS:
            return match.group(0)
        value = secrets.get(match.group(1))
        return value.reveal() if value else "<generated on first provision>"

    return _REFERENCE.sub(substitute, text)
