"""Pure: what the local backend reads from containers, rendered stacks and the env's settings, and the handle
it records (compose's own config hashes, the baseline for drift)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from ...core import names
from ...core.branches import BranchMark
from ...core.errors import LimitsRefused, ProvisionError
from ...core.model import Observed, ServiceState, Target
from ...core.render import RenderedStack, stack_hash
from ...infra import doctor as checks
from ...infra.commands import Completed, Runner
from .compose import ComposeCLI, ContainerState

COMPOSE_HASH_LABEL = "com.docker.compose.config-hash"


@dataclass(frozen=True)
class LocalHandle:
    """What the local backend recorded at its last apply: each service's provision hash and compose's own
    config hash, the baseline that tells whether the containers were changed outside provision."""

    service_hashes: Mapping[str, str] = field(default_factory=dict)
    compose_hashes: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"service_hashes": dict(self.service_hashes), "compose_hashes": dict(self.compose_hashes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalHandle | None:
        if not data.get("service_hashes") and not data.get("compose_hashes"):
            return None
        return cls({str(k): str(v) for k, v in (data.get("service_hashes") or {}).items()},
                   {str(k): str(v) for k, v in (data.get("compose_hashes") or {}).items()})


def db_dependants(services: tuple[str, ...]) -> tuple[str, ...] | None:
    """The stack's services other than `db`; None when it has no `db` or nothing else."""
    others = tuple(s for s in services if s != "db")
    return others if others and len(others) < len(services) else None



def stack_images(stack: RenderedStack) -> list[tuple[str, str]]:
    """(service, image) of each service of the rendered stack that names an image."""
    services = stack.document.get("services") if isinstance(stack.document, Mapping) else None
    found = []
    for name, service in (services.items() if isinstance(services, Mapping) else ()):
        image = service.get("image") if isinstance(service, Mapping) else None
        if isinstance(image, str) and image:
            found.append((str(name), image))
    return found


def image_key(target: Target, service: str, image: str) -> str:
    """Where `image` of `service` is set: the env file's key, else the template."""
    if service in ("db", "api") and getattr(target.images, service) == image:
        return f"{target.spec.key(f'images.{service}')} in {target.config.relpath}"
    return f"services.{service}.image in the template {target.config.template_path.name}"


def check_limits(target: Target, *, cpus: int, memory: int) -> None:
    """LimitsRefused, naming the key, for a limit over the host's `cpus` or `memory` bytes."""
    where = f"{target.project} ({target.env})"
    for service in ("db", "api"):
        limit = getattr(target.spec.limits, service)
        key = target.spec.key(f"resources.{service}.cpus")
        if limit.cpus is not None and limit.cpus > cpus:
            raise LimitsRefused(f"{where}: {key} in {target.config.relpath} is {limit.cpus:g} but this Docker "
                                f"Engine's host has {cpus} CPU(s), so the engine would refuse it: set it to {cpus} or "
                                f"less. Nothing was created.")
        for name, size in (("memory", limit.memory), ("memory_reservation", limit.memory_reservation)):
            if size is not None and size > memory:
                key = target.spec.key(f"resources.{service}.{name}")
                raise LimitsRefused(f"{where}: {key} in {target.config.relpath} is {size / 2**30:.1f} GiB but this "
                                    f"Docker Engine's host has {memory / 2**30:.1f} GiB of memory: set it lower. Nothing "
                                    f"was created.")



def drift(observed: Observed, baseline: LocalHandle | None) -> str | None:
    """Why the running containers differ from what provision last applied (`baseline`), or None."""
    running = observed.handle if isinstance(observed.handle, LocalHandle) else None
    if not observed.exists or baseline is None or running is None:
        return None
    recorded, labels = baseline.service_hashes, running.service_hashes
    if recorded and stack_hash(labels) != stack_hash(recorded):
        changed = sorted(s for s in set(recorded) | set(labels) if recorded.get(s) != labels.get(s))
        return f"container(s) for {', '.join(changed)} were replaced outside provision (their config labels differ)"
    compose, now = baseline.compose_hashes, running.compose_hashes
    changed = sorted(s for s in compose if s in now and now[s] != compose[s])
    if changed:
        return f"{', '.join(changed)} recreated outside provision from a different configuration (docker compose by hand?)"
    return None


def handle_of(containers: Sequence[ContainerState]) -> LocalHandle:
    """The handle of what runs: each container's provision hash and compose's own config hash."""
    return LocalHandle(
        service_hashes={c.service: c.labels.get(names.LABEL_CONFIG_HASH, "") for c in containers},
        compose_hashes={c.service: c.labels.get(COMPOSE_HASH_LABEL, "") for c in containers},
    )


def observed_from(containers: list[ContainerState]) -> Observed:
    """What a project's containers say: which services run, how healthy, with which config hashes
    (the handle of what runs: compared with the recorded one, it tells drift)."""
    if not containers:
        return Observed(exists=False)
    services = {c.service: ServiceState(c.state, c.health) for c in containers}
    running = handle_of(containers)
    marks = [mark for c in containers if (mark := BranchMark.from_labels(c.labels)) is not None]
    return Observed(exists=True, config_hash=stack_hash(running.service_hashes), services=services, handle=running,
                    branch=marks[0] if marks else None)


def volume_mark(labels: Iterable[Mapping[str, str]]) -> BranchMark | None:
    """The branch mark a project's kept volumes carry (their parent only), or None."""
    marks = [mark for carried in labels if (mark := BranchMark.from_labels(carried)) is not None]
    return marks[0] if marks else None


def logs_args(tail: int, services: tuple[str, ...], since: datetime | None, *, follow: bool = False) -> list[str]:
    """`docker compose logs` arguments: the last `tail` lines per service, written since `since` (UTC)."""
    args = ["logs", "--no-color", "--tail", str(tail)]
    if since is not None:
        args += ["--since", since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
    if follow:
        args.append("--follow")
    return args + (["--", *services] if services else [])


def url_host(address: str) -> str:
    if address in ("0.0.0.0", ""):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def doctor_checks(compose: ComposeCLI) -> list[checks.Check]:
    """the local backend's doctor: the two things a local run needs from this machine, asked the way provision asks
    them (its ComposeCLI, PROVISION_COMPOSE included); nothing is created."""
    found: list[checks.Check] = []
    try:
        found.append(checks.passed("docker engine", f"Docker Engine {compose.engine_version()} answers"))
    except ProvisionError as exc:
        found.append(checks.from_error("docker engine", exc))
        found[-1] = replace(found[-1], fix=found[-1].fix or "start dockerd (scripts/ensure-docker.sh installs and "
                                                            "starts it on Debian/Ubuntu), or set DOCKER_HOST")
    try:
        version = compose.version()  # first: it may fall back to a standalone docker-compose
        found.append(checks.passed("compose v2", f"{' '.join(compose.command)} {version}"))
    except ProvisionError as exc:
        found.append(checks.from_error("compose v2", exc))
    return found


def exec_not_started(returncode: int, stderr: str) -> bool:
    """`docker exec` failed before its command started (runc could not set the process up, e.g. `write init-p:
    broken pipe` on a busy host): nothing ran, so the exec may be sent again."""
    return returncode == 126 and "OCI runtime exec failed" in stderr


def run_exec(runner: Runner, argv: Sequence[str], *, timeout: float, stdin: IO[bytes] | None = None) -> Completed:
    """Run a `docker exec` argv, sent again (up to 3 times in all, `stdin` rewound) while it failed before its
    command started (exec_not_started): such a run ran nothing."""
    for _ in range(3):
        if stdin is not None:
            stdin.seek(0)
        result = runner.run(argv, timeout=timeout, stdin=stdin)
        if not exec_not_started(result.returncode, result.stderr):
            break
    return result
