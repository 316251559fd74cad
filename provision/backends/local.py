"""The local backend: one compose project per env+project on a Docker Engine.

Compose (v2 CLI) creates, updates, stops and removes stacks; the Docker SDK inspects
volumes, finds deployed projects and streams `pg_dump` out of the db container.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import names
from ..compose import ComposeCLI, ComposeFiles, ContainerState, container_state
from ..config import EnvConfig
from ..errors import (
    BackendUnavailable,
    CommandFailed,
    HealthTimeout,
    ProvisionError,
    StateError,
    redact,
    strip_ansi,
)
from ..ports import lease_key, lease_ports, preview_ports, release_ports
from ..probes import Probe, http_probe, postgres_probe, wait_for
from ..render import Ports, RenderedStack, stack_hash
from ..secrets import GENERATED_SECRETS, SecretURL, generate_missing
from ..state import StateStore, atomic_write
from .base import Action, ControlVerb, Endpoints, Observed, Plan, Prepared, ServiceState, Target

DockerClientFactory = Callable[[], Any]
LOG_TAIL = 40
COMPOSE_HASH_LABEL = "com.docker.compose.config-hash"
_HEALTH_FAILURE = ("unhealthy", "dependency failed", "timeout", "exited with code", "is not running")


def _docker_from_env() -> Any:
    import docker  # deferred: importing the SDK costs ~0.2 s and most runs never need it

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(
            f"the Docker Engine is not reachable ({exc}): start dockerd, or point DOCKER_HOST at a running engine"
        ) from exc
    return client


class LocalBackend:
    """Runs each project as a compose project on the local Docker Engine."""

    name = "local"

    def __init__(
        self,
        store: StateStore,
        compose: ComposeCLI | None = None,
        *,
        docker_client: DockerClientFactory = _docker_from_env,
    ) -> None:
        self.store = store
        self.compose = compose or ComposeCLI(hidden_env=GENERATED_SECRETS)
        self._docker_factory = docker_client
        self._docker: Any = None
        self._docker_lock = threading.Lock()

    def describe(self) -> str:
        return "Local Docker provider"

    # --- helpers ----------------------------------------------------------------------------
    def _docker_client(self) -> Any:
        with self._docker_lock:
            if self._docker is None:
                self._docker = self._docker_factory()
            return self._docker

    def _warm_up(self) -> None:
        """Load what the health wait needs (psycopg, the Docker SDK) while compose works, off the clock."""
        def load() -> None:
            importlib.import_module("psycopg")
            with contextlib.suppress(ProvisionError):
                self._docker_client()

        threading.Thread(target=load, daemon=True).start()

    def _project_name(self, target: Target) -> str:
        return names.compose_project_name(target.env, target.project)

    def _files(self, target: Target, *, with_file: bool = True) -> ComposeFiles:
        paths = self.store.paths(target.env, target.project)
        has_file = with_file and paths.compose.is_file()
        return ComposeFiles(
            project_name=self._project_name(target),
            compose_file=paths.compose if has_file else None,
            env_file=paths.secrets if has_file and paths.secrets.is_file() else None,
        )

    def _compose(self, target: Target) -> ComposeCLI:
        secrets = self.store.read_secrets(target.env, target.project)
        return self.compose.with_secrets([s.reveal() for s in secrets.values()])

    def _containers(self, target: Target) -> list[ContainerState]:
        return self.compose.containers(f"com.docker.compose.project={self._project_name(target)}")

    # --- observe / prepare ------------------------------------------------------------------
    def observe(self, target: Target) -> Observed:
        """The project's containers, what provision last applied, and whether they still match it."""
        return self._with_records(target.env, target.project, _observed(self._containers(target)))

    def _with_records(self, env: str, project: str, observed: Observed) -> Observed:
        paths = self.store.paths(env, project)
        applied = paths.compose.read_text(encoding="utf-8") if paths.compose.is_file() else None
        return replace(observed, applied_text=applied, drift=_drift(observed, self.store.read_state(env, project)))

    def prepare(self, target: Target, observed: Observed, *, create: bool = True) -> Prepared:
        """Load the project's secrets (generating and saving missing ones first) and lease its ports."""
        existing = self.store.read_secrets(target.env, target.project)
        if not create:
            lease = self.store.read_leases().get(lease_key(target.env, target.project))
            ports = Ports(api=lease["api"], db=lease["db"], subnet=lease.get("subnet")) if lease else None
            if ports is None:
                ports = preview_ports(
                    self.store, target.env, target.project,
                    port_range=target.config.local.port_range, address=target.config.local.bind_address,
                ) if not observed.exists else None
                return Prepared(secrets=existing, ports=ports, preview=True)
            return Prepared(secrets=existing, ports=ports)
        if observed.exists and not existing.get("DB_PASSWORD"):
            raise StateError(
                f"containers for {target.project!r} in env {target.env!r} exist but its secrets file "
                f"{self.store.paths(target.env, target.project).secrets} is missing: restore it from a backup "
                f"(a new password would not match the existing database)"
            )
        secrets = generate_missing(existing)
        if secrets != existing:
            self.store.write_secrets(target.env, target.project, secrets)
        local = target.config.local
        ports = lease_ports(
            self.store, target.env, target.project, port_range=local.port_range, address=local.bind_address,
            network_pool=local.network_pool, network_prefix=local.network_prefix,
            networks_in_use=self._subnets_in_use,
        )
        return Prepared(secrets=secrets, ports=ports, new_secrets=secrets != existing)

    def endpoints(self, target: Target, prepared: Prepared) -> Endpoints:
        ports = prepared.ports
        if ports is None:
            return Endpoints(None, None)
        host = _url_host(target.config.local.bind_address)
        variables = target.spec.variables
        password = prepared.secrets.get("DB_PASSWORD")
        user = quote(variables["db_user"], safe="")
        db = quote(variables["db_name"], safe="")
        auth = f"{user}:{password.reveal()}" if password else user
        return Endpoints(
            api_url=f"http://{host}:{ports.api}",
            db_url=SecretURL(f"postgresql://{auth}@{host}:{ports.db}/{db}"),
            db_url_scope="host",
        )

    # --- apply / wait -----------------------------------------------------------------------
    def apply(self, target: Target, stack: RenderedStack, prepared: Prepared, plan: Plan) -> None:
        """Write the compose file and `up` it; then record compose's own config hashes of the
        containers, which later tell whether someone changed them outside provision."""
        paths = self.store.ensure_dir(target.env, target.project)
        atomic_write(paths.compose, stack.text, mode=0o600)
        self._warm_up()
        self._up(target, timeout=target.config.health.timeout, force=plan.action is Action.DRIFT)
        compose_hashes = {c.service: c.labels.get(COMPOSE_HASH_LABEL, "") for c in self._containers(target)}
        state = self.store.read_state(target.env, target.project)
        self.store.write_state(target.env, target.project, {**state, "compose_hashes": compose_hashes})

    def _up(self, target: Target, *, timeout: float, services: tuple[str, ...] = (), recreate: bool = True,
            force: bool = False) -> None:
        """`compose up --detach`; compose holds the api back until the db is healthy (depends_on).

        Waiting for the rest is `_await_ready`'s job: it polls container health itself, sooner than
        `up --wait`, which polls every 0.5 s.
        """
        args = ["up", "--detach", "--remove-orphans"]
        if not recreate:
            args.append("--no-recreate")
        elif force:
            args.append("--force-recreate")
        if services:
            args += ["--", *services]
        try:
            self._compose(target).run(self._files(target), *args, timeout=timeout + 120)
        except CommandFailed as exc:
            if any(marker in exc.stderr_tail.lower() for marker in _HEALTH_FAILURE):
                raise self._health_timeout(target, f"the stack did not become healthy: {exc}") from exc
            raise

    def _await_ready(self, target: Target, *, timeout: float, services: tuple[str, ...] = ()) -> None:
        """Poll until the containers of `services` (default: all) run and pass their healthchecks."""
        outcome = wait_for({"containers": self._containers_ready(target, services)}, timeout=timeout,
                           interval=0.1, max_interval=0.5)
        if not outcome.ok:
            raise self._health_timeout(
                target, f"{target.project} ({target.env}): containers not healthy after {timeout:.0f} s: "
                f"{outcome.failures['containers']}"
            )

    def _containers_ready(self, target: Target, services: tuple[str, ...]) -> Probe:
        expected = set(services) or set(self._declared_services(target))

        def check() -> str | None:
            containers = {c.service: c for c in self._containers_polled(target)}
            problems = [f"{name}: missing" for name in sorted(expected - set(containers))]
            problems += [
                f"{c.service}: {c.state}" + (f" ({c.health})" if c.health else "")
                for c in containers.values() if c.service in expected and not c.ready
            ]
            return "; ".join(problems) or None

        return check

    def _containers_polled(self, target: Target) -> list[ContainerState]:
        """The project's containers for a polling loop: through the SDK's socket once it is loaded
        (no process per poll, which matters with many projects at once), else `docker ps`."""
        client = self._docker
        if client is None:
            return self._containers(target)
        label = f"com.docker.compose.project={self._project_name(target)}"
        return [container_state(c.attrs) for c in client.containers.list(all=True, sparse=True, filters={"label": label})]

    def _declared_services(self, target: Target) -> list[str]:
        state = self.store.read_state(target.env, target.project)
        return list(state.get("service_hashes", {})) or ["db", "api"]

    def wait(self, target: Target, prepared: Prepared, *, timeout: float) -> Endpoints:
        """Containers running and healthy, then api_url answering and db_url accepting connections."""
        started = time.monotonic()
        self._await_ready(target, timeout=timeout)
        timeout = max(1.0, timeout - (time.monotonic() - started))
        endpoints = self.endpoints(target, prepared)
        probes = {}
        if endpoints.api_url:
            probes["api"] = http_probe(endpoints.api_url)
        if endpoints.db_url:
            probes["db"] = postgres_probe(endpoints.db_url.reveal())
        outcome = wait_for(probes, timeout=timeout)
        if not outcome.ok:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(outcome.failures.items()))
            raise self._health_timeout(
                target, f"{target.project} ({target.env}) is not answering after {outcome.elapsed:.0f} s: {reasons}",
                services=tuple(sorted(outcome.failures)),
            )
        return endpoints

    def _health_timeout(self, target: Target, message: str, services: tuple[str, ...] = ()) -> HealthTimeout:
        """A HealthTimeout carrying the state and the log tail of the failing services."""
        try:
            containers = self._containers(target)
            failing = services or tuple(c.service for c in containers if not c.ready)
            states = [
                f"{c.service}: {c.state}" + (f" ({c.health})" if c.health else "") + (f", exit code {c.exit_code}" if c.exit_code else "")
                for c in containers if not failing or c.service in failing
            ]
            logs = self.logs(target, service=None, tail=LOG_TAIL, services=failing).strip()
            logs = "\n".join(states) + "\n" + (logs or f"({', '.join(failing) or 'the containers'} printed no logs)")
        except ProvisionError as exc:
            logs = f"(could not read logs: {exc})"
        secrets = [s.reveal() for s in self.store.read_secrets(target.env, target.project).values()]
        return HealthTimeout(redact(message, secrets), logs=logs)

    # --- lifecycle --------------------------------------------------------------------------
    def control(self, target: Target, verb: ControlVerb) -> bool:
        observed = self.observe(target)
        files = self._files(target)
        if files.compose_file is None:
            raise StateError(
                f"{target.project!r} in env {target.env!r} has no rendered compose file in "
                f"{self.store.paths(target.env, target.project).dir}: run `invoke provision` first"
            )
        if verb == "stop":
            if not observed.any_running:
                return False
            self._compose(target).run(files, "stop", timeout=120)
            return True
        if verb == "start":
            if observed.exists and observed.running:
                return False
            self._up(target, timeout=target.config.health.timeout, recreate=False)
            return True
        if not observed.exists:
            self._up(target, timeout=target.config.health.timeout, recreate=False)
            return True
        self._compose(target).run(files, "restart", timeout=180)
        return True

    def destroy(self, target: Target, *, delete_data: bool, backup_to: Path | None) -> list[str]:
        files = self._files(target)
        done: list[str] = []
        volumes = self._volumes(target)
        if delete_data and backup_to is not None and volumes:
            if files.compose_file is None:
                raise StateError(
                    f"cannot back up {target.project!r}: its compose file is missing from the state directory; "
                    f"re-run provision first, or pass --no-backup to delete without a dump"
                )
            self._up(target, timeout=target.config.health.timeout, services=("db",), recreate=False)
            self._await_ready(target, timeout=target.config.health.timeout, services=("db",))
            self._dump(target, backup_to)
            done.append(f"wrote a pg_dump of the database to {backup_to}")
        args = ["down", "--remove-orphans", "--timeout", "20"]
        if delete_data:
            args.append("--volumes")
        containers = self._containers(target)
        if containers or (delete_data and volumes) or files.compose_file is not None:
            self._compose(target).run(files, *args, timeout=180)
            if containers:
                done.append(f"removed {len(containers)} container(s) and the network")
        if delete_data:
            left = self._volumes(target)
            for volume in left:  # declared outside the compose file, or created by hand with our labels
                volume.remove(force=True)
            if volumes:
                done.append("deleted data volume(s) " + ", ".join(sorted(v.name for v in volumes)))
            release_ports(self.store, target.env, target.project)
        elif volumes:
            done.append(
                "kept data volume(s) " + ", ".join(sorted(v.name for v in volumes)) + " and the credentials: "
                f"`invoke provision --env={target.env} --project={target.project}` reattaches them"
            )
        return done

    def _volumes(self, target: Target) -> list[Any]:
        client = self._docker_client()
        label = f"com.docker.compose.project={self._project_name(target)}"
        return list(client.volumes.list(filters={"label": label}))

    def _dump(self, target: Target, backup_to: Path) -> None:
        """Stream `pg_dump` of the project's database into `backup_to` (0600), written atomically."""
        client = self._docker_client()
        containers = client.containers.list(
            filters={"label": [f"com.docker.compose.project={self._project_name(target)}", "com.docker.compose.service=db"]}
        )
        if not containers:
            raise ProvisionError(f"cannot back up {target.project!r}: its db container is not running")
        variables = target.spec.variables
        argv = ["pg_dump", "--username", variables["db_user"], "--dbname", variables["db_name"], "--no-password"]
        backup_to.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = backup_to.with_name(backup_to.name + ".partial")
        exec_id = client.api.exec_create(containers[0].id, argv, stdout=True, stderr=True)["Id"]
        errors = b""
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                for out, err in client.api.exec_start(exec_id, stream=True, demux=True):
                    if out:
                        handle.write(out)
                    if err:
                        errors += err
                handle.flush()
                os.fsync(handle.fileno())
            code = client.api.exec_inspect(exec_id).get("ExitCode")
            if code != 0:
                raise CommandFailed(argv, int(code or -1), errors.decode(errors="replace"),
                                    hint="the data was NOT deleted")
            os.replace(partial, backup_to)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    def logs(self, target: Target, *, service: str | None, tail: int, services: tuple[str, ...] = ()) -> str:
        selected = (service,) if service else services
        args = ["logs", "--no-color", "--tail", str(tail)]
        if selected:
            args += ["--", *selected]
        result = self._compose(target).run(self._files(target, with_file=False), *args, timeout=60)
        secrets = [s.reveal() for s in self.store.read_secrets(target.env, target.project).values()]
        return redact(strip_ansi(result.stdout + result.stderr), secrets)

    def _subnets_in_use(self) -> list[str]:
        """Subnets of every Docker network on the engine (asked only when a new subnet is leased)."""
        subnets = []
        for network in self._docker_client().networks.list(greedy=True):
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                if config.get("Subnet"):
                    subnets.append(str(config["Subnet"]))
        return subnets

    def observe_env(self, config: EnvConfig, *, full: bool = False) -> dict[str, Observed]:
        """Every project of the env with containers or kept data volumes: one `docker ps` and one
        `docker volume ls` for the whole env; each observation is as complete as `observe`'s."""
        label = f"{names.LABEL_ENV}={config.name}"
        by_project: dict[str, list[ContainerState]] = {}
        for container in self.compose.containers(label):
            project = container.labels.get(names.LABEL_PROJECT)
            if project:
                by_project.setdefault(project, []).append(container)
        observed = {project: self._with_records(config.name, project, _observed(containers))
                    for project, containers in by_project.items()}
        for project, volume in self.compose.volumes(label).items():
            if project not in observed:
                observed[project] = Observed(exists=False, detail={"data_volume": volume})
        return observed


def _drift(observed: Observed, state: Mapping[str, Any]) -> str | None:
    """Why the running containers differ from what provision last applied, or None.

    Only a finished provision is compared: after an interrupted one, the plan sees the
    difference as an update anyway.
    """
    if not observed.exists or state.get("status") != "provisioned":
        return None
    recorded = state.get("service_hashes") or {}
    labels = {name: str(hashes) for name, hashes in (observed.detail.get("provision_hashes") or {}).items()}
    if recorded and stack_hash(labels) != stack_hash(recorded):
        changed = sorted(s for s in set(recorded) | set(labels) if recorded.get(s) != labels.get(s))
        return f"container(s) for {', '.join(changed)} were replaced outside provision (their config labels differ)"
    compose = state.get("compose_hashes") or {}
    running = observed.detail.get("compose_hashes") or {}
    changed = sorted(s for s in compose if s in running and running[s] != compose[s])
    if changed:
        return f"{', '.join(changed)} recreated outside provision from a different configuration (docker compose by hand?)"
    return None


def _observed(containers: list[ContainerState]) -> Observed:
    """What a project's containers say: which services run, how healthy, with which config hashes."""
    if not containers:
        return Observed(exists=False)
    services = {c.service: ServiceState(c.state, c.health) for c in containers}
    hashes = {c.service: c.labels.get(names.LABEL_CONFIG_HASH, "") for c in containers}
    return Observed(exists=True, config_hash=stack_hash(hashes), services=services,
                    detail={"containers": [c.name for c in containers], "provision_hashes": hashes,
                            "compose_hashes": {c.service: c.labels.get(COMPOSE_HASH_LABEL, "") for c in containers}})


def _url_host(address: str) -> str:
    if address in ("0.0.0.0", ""):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address



def create(config: EnvConfig, store: StateStore) -> LocalBackend:
    """The registry factory: a LocalBackend on the default Docker Engine."""
    return LocalBackend(store)
