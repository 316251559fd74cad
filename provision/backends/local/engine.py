"""The Docker Engine beside compose: volumes, networks and container states read through the Docker SDK (imported
only when first needed), the volumes created with the owner label compose never sees, and the throwaway helper
containers that read data volumes."""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ...core import names
from ...core.errors import BackendError, BackendUnavailable, CommandFailed, ProvisionError
from .compose import ComposeCLI, ContainerState, container_state, service_containers

DockerClientFactory = Callable[[], Any]
# on a throwaway container that reads a project's data volume (`Engine.run_helper`): "<env>/<project>"
HELPER_LABEL = "io.provision.helper"
COMPOSE_VOLUME_LABEL = "com.docker.compose.volume"  # compose's own label on a volume it made: its key
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"


@contextlib.contextmanager
def sdk_errors(operation: str) -> Iterator[None]:
    """Translate the Docker SDK's exceptions (and the transport's under it) into ProvisionErrors, once, here."""
    try:
        yield
    except ProvisionError:
        raise
    except Exception as exc:
        import docker.errors
        import requests.exceptions

        if isinstance(exc, docker.errors.APIError):
            status = exc.status_code
            message = str(exc.explanation or exc).strip()
            raise BackendError(operation, message, status=status) from exc
        if isinstance(exc, (docker.errors.DockerException, requests.exceptions.RequestException)):
            raise BackendUnavailable(
                f"the Docker Engine is not reachable ({operation}: {exc}): start dockerd, or point DOCKER_HOST "
                f"at a running engine"
            ) from exc
        raise


def docker_from_env() -> Any:
    import docker  # deferred: importing the SDK costs ~0.2 s and most runs never need it

    with sdk_errors("connect to the engine"):
        client = docker.from_env(timeout=30)
        client.ping()
    return client


def compose_key(volume: Any, project_name: str) -> str:
    """The compose key of a project volume: compose's label, else its name without `<project>_`."""
    key = ((volume.attrs or {}).get("Labels") or {}).get(COMPOSE_VOLUME_LABEL)
    name = str(volume.name)
    return str(key) if key else name.removeprefix(f"{project_name}_")


class Engine:
    """One Docker Engine: a connection opened on first use (the same on a fresh instance), and `compose`'s runner
    for the commands the SDK is not used for."""

    def __init__(self, compose: ComposeCLI, docker_client: DockerClientFactory = docker_from_env) -> None:
        self.compose = compose
        self._factory = docker_client
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def warm_up(self) -> None:
        """Load what a health wait needs (psycopg, the Docker SDK) in the background, off the clock."""
        def load() -> None:
            importlib.import_module("psycopg")
            with contextlib.suppress(ProvisionError):
                self.client()

        threading.Thread(target=load, daemon=True).start()

    def containers_polled(self, label: str) -> list[ContainerState]:
        """The service containers carrying `label`, for a polling loop: through the SDK's socket once it is loaded
        (no process per poll, which matters with many projects at once), else `docker ps`."""
        client = self._client
        if client is None:
            return service_containers(self.compose.containers(label))
        with sdk_errors("list containers"):
            found = client.containers.list(all=True, sparse=True, filters={"label": label})
        return service_containers([container_state(c.attrs) for c in found])

    def volumes(self, label: str) -> list[Any]:
        """The SDK's volumes carrying `label`."""
        client = self.client()
        with sdk_errors("list volumes"):
            return list(client.volumes.list(filters={"label": label}))

    def subnets_in_use(self) -> list[str]:
        """Subnets of every Docker network on the engine (asked only when a new subnet is leased)."""
        subnets = []
        client = self.client()
        with sdk_errors("list networks"):
            # one list request, whose answer carries each network's IPAM: `networks.list(greedy=True)` inspects
            # them one by one, and a network removed meanwhile (another project's destroy) failed it with a 404
            networks = client.api.networks()
        for network in networks:
            for config in (network.get("IPAM") or {}).get("Config") or []:
                if config.get("Subnet"):
                    subnets.append(str(config["Subnet"]))
        return subnets

    def make_volumes(self, project: str, owner: str | None, volumes: object, *,
                     data_root: str | None = None) -> list[str]:
        """Create the stack's missing `volumes` (its compose document's) as compose would (its project and volume
        labels, the file's labels), plus the owner label, which compose never sees: a volume's labels cannot
        change once it exists, so the compose file keeps those of earlier versions (an existing volume is never
        touched). With `data_root` (local.data_root), each is a bind of the directory `<data_root>/<name>` (made
        here; one a branch's copy filled already is used as it is). Only with an owner id or a data root;
        returns the names created."""
        if (not owner and not data_root) or not isinstance(volumes, dict):
            return []
        existing = set(self.compose.labelled_volumes(f"{COMPOSE_PROJECT_LABEL}={project}"))
        made = []
        for key, definition in volumes.items():
            spec = definition if isinstance(definition, dict) else {}
            if spec.get("external") or spec.get("driver") not in (None, "local") or spec.get("driver_opts"):
                continue  # compose makes (or finds) those itself
            name = str(spec.get("name") or f"{project}_{key}")
            if name in existing:
                continue
            given = spec.get("labels")
            carried: Mapping[str, Any] = given if isinstance(given, dict) else {}
            labels = {**{str(k): str(v) for k, v in carried.items()}, COMPOSE_PROJECT_LABEL: project,
                      COMPOSE_VOLUME_LABEL: str(key), **({names.LABEL_OWNER: owner} if owner else {})}
            argv = ["docker", "volume", "create"]
            if data_root:
                directory = Path(data_root) / name
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                argv += ["--driver", "local", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={directory}"]
            for label, value in labels.items():
                argv += ["--label", f"{label}={value}"]
            result = self.compose.runner.run([*argv, "--", name], timeout=60)
            if result.returncode != 0:
                raise CommandFailed([*argv, "--", name], result.returncode, result.stderr, hint=f"create volume {name}")
            made.append(name)
        return made

    def remove_helpers(self, volumes: Iterable[str]) -> None:
        """Remove the helper containers on these volumes, which would keep them in use: one still running, or one
        an earlier version left behind when it was killed (labelled io.provision.env=helper, never removed)."""
        client = self.client()
        with sdk_errors("remove helper containers"):
            for volume in volumes:
                for container in client.containers.list(all=True, filters={"volume": volume}):
                    labels = container.labels or {}
                    if HELPER_LABEL in labels or labels.get(names.LABEL_ENV) == "helper":
                        container.remove(v=True, force=True)

    def run_helper(self, image: str, command: list[str], operation: str, *, project: str = "",
                   owner: str | None = None, volumes: Mapping[str, str] | None = None, timeout: float = 300) -> str:
        """Run `command` as root in a throwaway container of `image` without network, `volumes` mounted read-only;
        its output, or CommandFailed with the output's tail. `docker run --rm`: the engine removes the container,
        with its anonymous volumes (a postgres image declares one for its data directory), once it exits, even
        when this process was killed meanwhile; labelled HELPER_LABEL=`project` ("<env>/<project>", or "")
        (`remove_helpers`) and with the `owner` id."""
        argv = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", command[0],
                "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={project}"]
        if owner:
            argv += ["--label", f"{names.LABEL_OWNER}={owner}"]
        for name, path in (volumes or {}).items():
            argv += ["--volume", f"{name}:{path}:ro"]
        argv += [image, *command[1:]]
        result = self.compose.runner.run(argv, timeout=timeout)
        if result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stdout + result.stderr, hint=operation)
        return result.stdout
