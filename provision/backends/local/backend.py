"""The local backend: one compose project per env+project on a Docker Engine.

Compose (v2 CLI) creates, updates, stops and removes stacks; the Docker SDK inspects
volumes, finds deployed projects and runs the throwaway containers that read and move data volumes.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import yaml

from ... import doctor as checks
from ... import hints, interrupts, names
from ...config import EnvConfig, ProjectSpec
from ...database import major_of, psql_in_container
from ...errors import (
    BackendError,
    BackendUnavailable,
    CommandFailed,
    ContainerCrashed,
    HealthTimeout,
    ImageUnavailable,
    LimitsRefused,
    NotSupported,
    ProjectConflict,
    ProvisionError,
    StateError,
    redact,
    strip_ansi,
)
from ...model import (
    NO_ENDPOINTS,
    ControlVerb,
    Destroyed,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Ports,
    Prepared,
    ServiceState,
    Target,
    Usage,
    db_url,
)
from ...planner import Action, Plan
from ...probes import Probe, http_probe, postgres_ping, postgres_probe, wait_for
from ...render import RenderedStack, stack_hash
from ...secrets import GENERATED_SECRETS, Secret, generate_missing
from ...state import StateStore, atomic_write, read_json, write_json
from ..base import Backend
from . import ownership
from .compose import ComposeCLI, ComposeFiles, ContainerState, container_state, service_containers
from .ports import LeaseBook, lease_key, lease_ports, preview_ports, release_ports
from .usage import collect

DockerClientFactory = Callable[[], Any]
LOG_TAIL = 40
COMPOSE_HASH_LABEL = "com.docker.compose.config-hash"
_HEALTH_FAILURE = ("unhealthy", "dependency failed", "timeout", "exited with code", "is not running")
PULL_TIMEOUT = 600.0  # seconds one `docker pull` of a missing image may take
CHECKED_FOR = 300.0  # seconds an image found on the engine (or the host's size) is not asked again
# a container in one of these states during a wait has stopped at least once: the wait ends at once
CRASHED_STATES = ("exited", "dead", "restarting")
CRASH_POLL = 0.5  # seconds between two looks at the containers' states during a wait
# the daemon's refusal of a limit (`docker run --cpus 4` on 2 CPUs, a reservation above the limit)
_LIMIT_REFUSED = re.compile(r"Range of CPUs is from|Minimum memory limit|memory reservation|NanoCPUs", re.I)


class _Crashed(Exception):
    """Raised by a probe inside a wait when a container crashed; caught where the wait is awaited."""

    def __init__(self, services: tuple[str, ...], what: str) -> None:
        super().__init__(what)
        self.services = services
        self.what = what


def _docker_from_env() -> Any:
    import docker  # deferred: importing the SDK costs ~0.2 s and most runs never need it

    with sdk_errors("connect to the engine"):
        client = docker.from_env(timeout=30)
        client.ping()
    return client


# on a throwaway container that reads a project's data volume (`_run_helper`): "<env>/<project>"
HELPER_LABEL = "io.provision.helper"
COMPOSE_VOLUME_LABEL = "com.docker.compose.volume"  # compose's own label on a volume it made: its key
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
ADOPTED_FILE = "adopted.json"  # beside the project's record: the owners `adopt` took its resources over from


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


class LocalBackend:
    """Runs each project as a compose project on the local Docker Engine."""

    name = "local"
    holds_secrets = False

    def __init__(
        self,
        store: StateStore,
        compose: ComposeCLI | None = None,
        *,
        docker_client: DockerClientFactory = _docker_from_env,
        db_ping: Callable[[str, int], Probe] = postgres_ping,
    ) -> None:
        self.store = store  # read-only here: the rendered compose file and the secrets file compose reads
        self.leases = LeaseBook(store.root)
        self.compose = compose or ComposeCLI(hidden_env=GENERATED_SECRETS)
        self._docker_factory = docker_client
        self._db_ping = db_ping  # does the db accept connections on a host port (pg_isready's rule)
        self._docker: Any = None  # a connection, not a memory: reopened the same on a fresh instance
        self._docker_lock = threading.Lock()
        self._probes_loading = False  # psycopg's import started (_load_probes)
        self._images_seen: dict[str, float] = {}  # image -> when it was last found on the engine (preflight)
        self._host: tuple[float, int, int] | None = None  # (when asked, CPUs, memory bytes) of the engine's host

    @property
    def spreads_stacks(self) -> bool:
        return False

    def place(self, config: EnvConfig, projects: Sequence[ProjectSpec]) -> dict[str, str]:
        """One engine: every stack goes to it."""
        return {}

    def set_aside(self, target: Target, observed: Observed, label: str) -> tuple[str, dict[str, Secret]]:
        raise NotSupported("the local backend has one Docker Engine: there is no other server to move to")

    def put_back(self, target: Target, name: str) -> None:
        raise NotSupported("the local backend has one Docker Engine: nothing was moved")

    def drop_set_aside(self, target: Target) -> list[str]:
        return []

    def describe(self) -> str:
        return "Local Docker provider"

    def load_handle(self, data: Mapping[str, Any]) -> LocalHandle | None:
        return LocalHandle.from_dict(data)

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

    def _load_probes(self) -> None:
        """Start importing psycopg, the db probe's, in the background (once): the import overlaps the engine's
        answers that preflight and observe wait for, instead of following them."""
        with self._docker_lock:
            if self._probes_loading:
                return
            self._probes_loading = True
        threading.Thread(target=importlib.import_module, args=("psycopg",), daemon=True).start()

    def _project_name(self, target: Target) -> str:
        return names.compose_project_name(target.env, target.project)

    def _label(self, target: Target) -> str:
        """The label filter that selects the project's containers and volumes."""
        return f"com.docker.compose.project={self._project_name(target)}"

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
        return service_containers(self.compose.containers(self._label(target)))

    # --- observe / prepare ------------------------------------------------------------------
    def observe(self, target: Target, known: Handle | None) -> Observed:
        """The project's containers, what provision last applied, and whether they still match it; without
        containers, the data volume a destroy kept (one `docker volume ls`). ProjectConflict naming the owner
        when they are another checkout's (`ownership`): no verb acts on those."""
        containers = self._containers(target)
        observed = _observed(containers)
        labels: list[Mapping[str, str]] = [c.labels for c in containers]
        if not observed.exists:
            volumes = {name: carried for name, carried in
                       self.compose.labelled_volumes(self._label(target)).items() if names.LABEL_PROJECT in carried}
            observed = replace(observed, kept_data=list(volumes)[-1] if volumes else None)
            labels = list(volumes.values())
        observed = self._owned(target.config, target.project, observed, ownership.owners_of(labels))
        return self._complete(target.env, target.project, observed, known)

    def _accepted(self, config: EnvConfig, project: str) -> frozenset[str]:
        """The owners whose resources of `project` are this checkout's (`ownership.accepted_owners`)."""
        paths = self.store.paths(config.name, project)
        adopted = read_json(paths.dir / ADOPTED_FILE).get("owners") if (paths.dir / ADOPTED_FILE).is_file() else None
        return ownership.accepted_owners(config.owner, recorded=paths.state.is_file(),
                                         adopted=[str(o) for o in adopted] if isinstance(adopted, list) else ())

    def _owned(self, config: EnvConfig, project: str, observed: Observed, owners: frozenset[str]) -> Observed:
        """`observed` when the resources carrying `owners` are this checkout's (a stack an earlier version made
        here noted as taken over at its next apply); ProjectConflict naming the other owner when not."""
        if not owners:
            return observed
        foreign = ownership.foreign_owner(owners, self._accepted(config, project))
        if foreign is not None:
            what = f"compose project {names.compose_project_name(config.name, project)}"
            raise ProjectConflict(ownership.refusal(config.name, project, what, foreign, config.owner))
        if ownership.legacy(owners, config.owner):
            return replace(observed, adopting=(
                f"made by an earlier version without an owner label, and recorded here: taken over as owner "
                f"{config.owner}'s (its containers are recreated with the label; its data volume keeps its labels)"))
        return observed

    def _mine(self, config: EnvConfig, project: str, owners: frozenset[str]) -> bool:
        """Whether resources of `project` carrying `owners` are this checkout's."""
        return ownership.foreign_owner(owners, self._accepted(config, project)) is None

    def _complete(self, env: str, project: str, observed: Observed, known: Handle | None) -> Observed:
        """`observed` with the compose text last applied and the drift from the recorded baseline."""
        paths = self.store.paths(env, project)
        applied = paths.compose.read_text(encoding="utf-8") if paths.compose.is_file() else None
        baseline = known if isinstance(known, LocalHandle) else None
        return replace(observed, applied_text=applied, drift=_drift(observed, baseline))

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        """The project's secrets (missing ones generated) and its leased ports."""
        if not create:
            lease = self._lease(target)
            ports = Ports(api=lease["api"], db=lease["db"], subnet=lease.get("subnet")) if lease else None
            if ports is None:
                ports = preview_ports(
                    self.leases, target.env, target.project,
                    port_range=target.config.local.port_range, address=target.config.local.bind_address,
                ) if not observed.exists else None
                return Prepared(secrets=stored, ports=ports, preview=True)
            return Prepared(secrets=stored, ports=ports)
        kept = observed.kept_data  # observe names a kept data volume whenever no container exists
        if not stored.get("DB_PASSWORD") and (observed.exists or kept):
            what = "containers" if observed.exists else f"its data volume {kept}"
            raise StateError(
                f"{what} for {target.project!r} in env {target.env!r} exist but its secrets file "
                f"{self.store.paths(target.env, target.project).secrets} is missing: restore it from a backup "
                f"(a new password would not match the existing database)"
            )
        secrets = generate_missing(stored)
        local = target.config.local
        ports = lease_ports(
            self.leases, target.env, target.project, port_range=local.port_range, address=local.bind_address,
            network_pool=local.network_pool, network_prefix=local.network_prefix,
            networks_in_use=self._subnets_in_use,
        )
        return Prepared(secrets=secrets, ports=ports, new_secrets=secrets != dict(stored))

    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        ports = prepared.ports
        if ports is None:
            return NO_ENDPOINTS
        host = _url_host(target.config.local.bind_address)
        variables = target.spec.variables
        return Endpoints(
            api_url=f"http://{host}:{ports.api}",
            db_url=db_url(variables["db_user"], prepared.secrets.get("DB_PASSWORD"), host, ports.db,
                          variables["db_name"]),
            db_url_scope="host",
        )

    # --- preflight / apply / wait ----------------------------------------------------------------
    def preflight(self, target: Target, stack: RenderedStack) -> None:
        """Refuse, before anything is created, what the engine could not run: an image neither on it nor pullable
        (a missing one is pulled, for up to PULL_TIMEOUT s; ImageUnavailable names the image, the env file's key
        and how to make it available), and a cpus or memory limit over what the engine's host has (LimitsRefused
        naming the key). An image found, and the host's size, are not asked again for CHECKED_FOR s.
        Meanwhile psycopg, which the health wait's db probe needs, loads in the background."""
        self._load_probes()
        now = time.monotonic()
        unseen: dict[str, str] = {}  # image -> the first service naming it
        for service, image in _stack_images(stack):
            if now - self._images_seen.get(image, -CHECKED_FOR) >= CHECKED_FOR:
                unseen.setdefault(image, service)
        ask_host = self._host is None or now - self._host[0] >= CHECKED_FOR
        with ThreadPoolExecutor(max_workers=len(unseen) + 1, thread_name_prefix="preflight") as pool:
            host = pool.submit(self.compose.host_resources) if ask_host else None  # asked meanwhile, used last
            try:
                present = list(pool.map(self.compose.image_present, unseen))
                for (image, service), found in zip(unseen.items(), present, strict=True):
                    if not found:
                        why = self.compose.pull(image, timeout=PULL_TIMEOUT)
                        if why is not None:
                            raise ImageUnavailable(image, _image_key(target, service, image), why)
                    self._images_seen[image] = now
                if host is not None:
                    self._host = (now, *host.result())
            except KeyboardInterrupt:
                interrupts.CANCELLED.set()  # the questions still running stop now, not at their timeout
                raise
        assert self._host is not None
        _check_limits(target, cpus=self._host[1], memory=self._host[2])

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> LocalHandle:
        """Write the compose file and `up` it; the handle carries compose's own config hashes of the
        containers, which later tell whether someone changed them outside provision."""
        paths = self.store.ensure_dir(target.env, target.project)
        atomic_write(paths.compose, stack.text, mode=0o600)
        self._warm_up()
        self._make_volumes(target, stack)
        self.compose.remove_interrupted(self._label(target))  # what a killed `up` left (<id>_<name>, Created)
        self._up(target, timeout=target.config.health.timeout, force=plan.action is Action.DRIFT,
                 db_port=prepared.ports.db if prepared.ports else None)
        containers = self._containers(target)
        return LocalHandle(
            service_hashes={c.service: c.labels.get(names.LABEL_CONFIG_HASH, "") for c in containers},
            compose_hashes={c.service: c.labels.get(COMPOSE_HASH_LABEL, "") for c in containers},
        )

    def _make_volumes(self, target: Target, stack: RenderedStack) -> list[str]:
        """Create the stack's missing volumes as compose would (its project and volume labels, the file's labels),
        plus the owner label, which compose never sees: a volume's labels cannot change once it exists, so the
        compose file keeps those of earlier versions (an existing volume is never touched). Only with an owner id;
        returns the names created."""
        owner = target.config.owner
        volumes = stack.document.get("volumes")
        if not owner or not isinstance(volumes, dict):
            return []
        project = self._project_name(target)
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
                      COMPOSE_VOLUME_LABEL: str(key), names.LABEL_OWNER: owner}
            argv = ["docker", "volume", "create"]
            for label, value in labels.items():
                argv += ["--label", f"{label}={value}"]
            result = self.compose.runner.run([*argv, "--", name], timeout=60)
            if result.returncode != 0:
                raise CommandFailed([*argv, "--", name], result.returncode, result.stderr, hint=f"create volume {name}")
            made.append(name)
        return made

    def _up(self, target: Target, *, timeout: float, services: tuple[str, ...] = (), recreate: bool = True,
            force: bool = False, db_port: int | None = None) -> None:
        """`compose up --detach`. With `db_port` (the whole stack), in two steps: the db first, then, once it
        accepts connections on that port (`postgres_ping`, polled every 50-250 ms), the rest. So the api's
        first connection succeeds: PostgREST retries a failed one only after 1, 2, 4 ... s, and depends_on
        is service_started, not service_healthy, so that the db's healthcheck can run seldom (it costs CPU on
        every stack at every interval). The rest of the readiness is `wait`'s: the tool's own probes.
        The second step names its services with their dependencies (no `--no-deps`, which would drop the db
        from the api's depends_on and so from compose's config hash): compose finds the db up to date and leaves
        it, and a plain `docker compose up -d` on the same file later finds nothing to recreate.
        """
        args = ["up", "--detach", "--remove-orphans"]
        if not recreate:
            args.append("--no-recreate")
        elif force:
            args.append("--force-recreate")
        if services:
            self._compose_up(target, [*args, "--", *services], timeout=timeout)
            return
        others = self._db_dependants(target) if db_port is not None else None
        if db_port is None or others is None:
            self._compose_up(target, args, timeout=timeout)
            return
        self._compose_up(target, [*args, "--", "db"], timeout=timeout)
        self._await_db(target, db_port, timeout=timeout)
        self._compose_up(target, [*args, "--", *others], timeout=timeout)

    def _db_dependants(self, target: Target) -> tuple[str, ...] | None:
        """The rendered stack's services other than `db`; None when it has no `db` or nothing else."""
        services = self._compose_services(target)
        others = tuple(s for s in services if s != "db")
        return others if others and len(others) < len(services) else None

    def _await_db(self, target: Target, db_port: int, *, timeout: float) -> None:
        host = _url_host(target.config.local.bind_address).strip("[]")
        watched = self._watched(target, ("db",), {"db": self._db_ping(host, db_port)})
        try:
            outcome = wait_for(watched, timeout=timeout, interval=0.05, max_interval=0.25)
        except _Crashed as crash:
            raise self._crash(target, crash) from None
        if not outcome.ok:
            raise self._health_timeout(target, f"{target.project} ({target.env}): the db does not accept connections "
                                                f"after {outcome.elapsed:.0f} s: {outcome.failures['db']}",
                                       services=("db",))

    def _lease(self, target: Target) -> Mapping[str, Any] | None:
        """The project's entry in ports.json (its host ports and subnet), or None."""
        return self.leases.read().get(lease_key(target.env, target.project))

    def _leased_db_port(self, target: Target) -> int | None:
        lease = self._lease(target)
        return int(lease["db"]) if lease else None

    def _compose_up(self, target: Target, args: list[str], *, timeout: float) -> None:
        try:
            self._compose(target).run(self._files(target), *args, timeout=timeout + 120)
        except CommandFailed as exc:
            refused = [line for line in exc.stderr_tail.splitlines() if _LIMIT_REFUSED.search(line)]
            if refused:
                keys = ", ".join(target.spec.key(f"resources.{s}.{k}") for s in ("db", "api")
                                 for k in ("cpus", "memory", "memory_reservation"))
                raise LimitsRefused(f"{target.project} ({target.env}): the Docker Engine refuses the stack's limits "
                                    f"({refused[-1].strip().removeprefix('Error response from daemon: ')}): change "
                                    f"the one at fault of {keys} in {target.config.relpath}") from exc
            if any(marker in exc.stderr_tail.lower() for marker in _HEALTH_FAILURE):
                raise self._health_timeout(target, f"the stack did not become healthy: {exc}") from exc
            raise

    def _compose_services(self, target: Target) -> tuple[str, ...]:
        """The services of the project's rendered compose file (its top-level `services` keys)."""
        path = self.store.paths(target.env, target.project).compose
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return ()
        services = loaded.get("services") if isinstance(loaded, dict) else None
        return tuple(str(name) for name in services) if isinstance(services, dict) else ()

    def _watched(self, target: Target, services: tuple[str, ...], probes: Mapping[str, Probe]) -> dict[str, Probe]:
        """`probes`, each first looking (every CRASH_POLL s at most, shared) whether a container of `services`
        exited or restarts: then `_Crashed` ends the wait at once, whatever the timeout. The first look comes
        CRASH_POLL s in, so probes that pass at once (a no-op) cost no container listing."""
        last = [time.monotonic()]
        looking = threading.Lock()  # probes may run at once (wait_for's `together`): one of them looks

        def watch() -> None:
            now = time.monotonic()
            with looking:
                if now - last[0] < CRASH_POLL:
                    return
                last[0] = now
            _raise_crashed(self._containers_polled(target), services)

        def guarded(probe: Probe) -> Probe:
            def check() -> str | None:
                watch()
                return probe()
            return check

        return {name: guarded(probe) for name, probe in probes.items()}

    def _crash(self, target: Target, crash: _Crashed) -> ContainerCrashed:
        """The error for a container that crashed during a wait: its state and log tail."""
        found = self._health_timeout(target, f"{target.project} ({target.env}): {crash.what} while the stack was "
                                             f"awaited (it crashed: the wait ended at once, see the log tail)",
                                     services=crash.services)
        return ContainerCrashed(found.message, logs=found.logs)

    def _await_ready(self, target: Target, services: tuple[str, ...], *, timeout: float) -> None:
        """Poll until the containers of `services` run and none is judged unhealthy; one that exited or
        restarts ends the wait at once (ContainerCrashed)."""
        try:
            outcome = wait_for({"containers": self._containers_ready(target, services)}, timeout=timeout,
                               interval=0.1, max_interval=0.5)
        except _Crashed as crash:
            raise self._crash(target, crash) from None
        if not outcome.ok:
            raise self._health_timeout(
                target, f"{target.project} ({target.env}): containers not running after {timeout:.0f} s: "
                f"{outcome.failures['containers']}"
            )

    def _containers_ready(self, target: Target, services: tuple[str, ...]) -> Probe:
        expected = set(services)

        def check() -> str | None:
            polled = self._containers_polled(target)
            _raise_crashed(polled, services)
            containers = {c.service: c for c in polled}
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
        label = self._label(target)
        with sdk_errors("list containers"):
            found = client.containers.list(all=True, sparse=True, filters={"label": label})
        return service_containers([container_state(c.attrs) for c in found])

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        """Containers running and healthy, then api_url answering and db_url accepting connections."""
        started = time.monotonic()
        if settled is None or not settled.ready:
            recorded = handle.service_hashes if isinstance(handle, LocalHandle) else {}
            self._await_ready(target, tuple(recorded) or ("db", "api"), timeout=timeout)
        timeout = max(1.0, timeout - (time.monotonic() - started))
        endpoints = self.endpoints(target, handle, prepared)
        probes = {}
        if endpoints.api_url:
            probes["api"] = http_probe(endpoints.api_url)
        if endpoints.db_url:
            probes["db"] = postgres_probe(endpoints.db_url.reveal())
        recorded = handle.service_hashes if isinstance(handle, LocalHandle) else {}
        try:
            outcome = wait_for(self._watched(target, tuple(recorded) or ("db", "api"), probes), timeout=timeout,
                               together=True)
        except _Crashed as crash:
            raise self._crash(target, crash) from None
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
            logs = self._logs(target, service=None, tail=LOG_TAIL, services=failing).strip()
            logs = "\n".join(states) + "\n" + (logs or f"({', '.join(failing) or 'the containers'} printed no logs)")
        except ProvisionError as exc:
            logs = f"(could not read logs: {exc})"
        secrets = [s.reveal() for s in self.store.read_secrets(target.env, target.project).values()]
        return HealthTimeout(redact(message, secrets), logs=logs)

    # --- lifecycle --------------------------------------------------------------------------
    def control(self, target: Target, observed: Observed, verb: ControlVerb) -> bool:
        files = self._files(target)
        if files.compose_file is None:
            raise StateError(
                f"{target.project!r} in env {target.env!r} has no rendered compose file in "
                f"{self.store.paths(target.env, target.project).dir}: run "
                f"{hints.command('provision', env=target.env, project=target.project)} first"
            )
        if verb == "stop":
            if not observed.any_running:
                return False
            self._compose(target).run(files, "stop", timeout=120)
            return True
        if verb == "start":
            if observed.exists and observed.running:
                return False
            self._up(target, timeout=target.config.health.timeout, recreate=False,
                     db_port=self._leased_db_port(target))
            return True
        if not observed.exists:
            self._up(target, timeout=target.config.health.timeout, recreate=False,
                     db_port=self._leased_db_port(target))
            return True
        # the db first, so that the api's first connection after its own restart finds it up
        db_port, others = self._leased_db_port(target), self._db_dependants(target)
        if db_port is None or others is None:
            self._compose(target).run(files, "restart", timeout=180)
            return True
        self._compose(target).run(files, "restart", "db", timeout=180)
        self._await_db(target, db_port, timeout=target.config.health.timeout)
        self._compose(target).run(files, "restart", *others, timeout=180)
        return True

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool) -> Destroyed:
        """`compose down` when containers exist (or, with `delete_data`, volumes); a destroyed project's
        second destroy runs nothing. Kept volumes are reported, not counted as a change. With `delete_data`, a
        volume the rendered stack does not declare (data an upgrade-db kept) stops it before anything is removed,
        and helper containers a killed run may have left on the volumes go first."""
        files = self._files(target)
        done: list[str] = []
        volumes = self._volumes(target)
        changed = False
        if delete_data:
            kept = self._kept_volumes(target, volumes)
            if kept:
                command = f"provision upgrade-db --env={target.env} --project={target.project}"
                raise ProjectConflict(
                    f"{target.project!r} in env {target.env!r} has data that upgrade-db kept in volume(s) "
                    f"{', '.join(kept)}, which its stack no longer mounts; nothing was deleted. `{command} --finalize "
                    f"--yes` deletes it (--rollback --yes returns to it; after an interrupted upgrade, `{command} "
                    f"--yes` finishes it first), then destroy --delete-data deletes the rest; or delete it by name: "
                    f"`docker volume rm {' '.join(kept)}`")
            self._remove_helpers(str(v.name) for v in volumes)
        args = ["down", "--remove-orphans", "--timeout", "20"]
        if delete_data:
            args.append("--volumes")
        containers = self._containers(target)
        if containers or (delete_data and (volumes or files.compose_file is not None)):
            self._compose(target).run(files, *args, timeout=180)
            if containers:
                done.append(f"removed {len(containers)} container(s) and the network")
                changed = True
        if delete_data:
            left = self._volumes(target)
            with sdk_errors("remove a volume"):
                for volume in left:  # declared outside the compose file, or created by hand with our labels
                    volume.remove(force=True)
            if volumes:
                done.append("deleted data volume(s) " + ", ".join(sorted(v.name for v in volumes)))
                changed = True
            release_ports(self.leases, target.env, target.project)
            (self.store.paths(target.env, target.project).dir / ADOPTED_FILE).unlink(missing_ok=True)
        elif volumes:
            done.append(
                "kept data volume(s) " + ", ".join(sorted(v.name for v in volumes)) + " and the credentials: "
                f"{hints.command('provision', env=target.env, project=target.project)} reattaches them"
            )
        return Destroyed(changed=changed, messages=tuple(done))

    def _volumes(self, target: Target) -> list[Any]:
        client = self._docker_client()
        label = self._label(target)
        with sdk_errors("list volumes"):
            return list(client.volumes.list(filters={"label": label}))

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        """`docker exec -i <db> psql` as `user` (default POSTGRES_USER) over the container's socket, `sql` on
        its stdin."""
        argv = self.exec_argv(target, "db", ["sh", "-c", psql_in_container(user)])
        with tempfile.TemporaryFile() as statements:
            statements.write(sql.encode())
            statements.seek(0)
            result = self.compose.runner.run(argv, timeout=timeout, stdin=statements)
        if result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stderr)
        return result.stdout

    def store_secrets(self, target: Target, observed: Observed, secrets: Mapping[str, Secret]) -> None:
        """Nothing: the service's secrets file is the copy the compose env file is written from."""

    # --- data volumes: PostgreSQL major upgrades -----------------------------------------------
    def image_major(self, image: str) -> int:
        """The major version of the PostgreSQL server in `image`: its own `postgres --version` (entrypoint
        overridden), not a variable such as PG_MAJOR that not every image sets."""
        output = self._run_helper(image, ["postgres", "--version"], f"run `postgres --version` in {image}")
        return major_of(output)

    def data_major(self, target: Target, image: str) -> int | None:
        """PG_VERSION of the volume the project's stack mounts (read with `image`'s shell); None without a volume
        or with an empty one."""
        volume = self._data_volume(target)
        if volume is None:
            return None
        output = self._run_helper(image, ["sh", "-c", "cat /data/PG_VERSION 2>/dev/null || true"],
                                  f"read PG_VERSION in volume {volume}", target=target, volumes={volume: "/data"})
        return int(output.strip()) if output.strip().isdigit() else None

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        """The project's labelled volume of compose key `volume_key` (compose names it `<compose project>_<key>`)."""
        prefix = self._project_name(target)
        return next((str(v.name) for v in self._volumes(target) if _volume_key(v, prefix) == volume_key), None)

    def drop_kept(self, target: Target, volume_key: str) -> str | None:
        """Remove the project's volume of compose key `volume_key` (refused while its rendered stack declares
        it), after any helper container left on it; its name, None when there is none."""
        if volume_key in self._declared_volumes(target):
            raise ProvisionError(f"volume key {volume_key!r} is the one the stack of {target.project!r} in env "
                                 f"{target.env!r} mounts: it is not deleted")
        prefix = self._project_name(target)
        for volume in self._volumes(target):
            if _volume_key(volume, prefix) == volume_key:
                self._remove_helpers([str(volume.name)])
                with sdk_errors(f"remove volume {volume.name}"):
                    volume.remove(force=True)
                return str(volume.name)
        return None

    def _data_volume(self, target: Target) -> str | None:
        """The project's data volume: the one its rendered stack declares (that its db mounts, if several), else,
        without a compose file, its labelled volume (`<project>_pgdata` first)."""
        declared = self._declared_volumes(target)
        prefix = self._project_name(target)
        keys = {_volume_key(v, prefix): str(v.name) for v in self._volumes(target)}
        if declared:
            return next((keys[key] for key in declared if key in keys), None)
        found = sorted(keys.values())
        preferred = [name for name in found if name.endswith("_pgdata")]
        return (preferred or found)[0] if found else None

    def _declared_volumes(self, target: Target) -> list[str]:
        """The volume keys of the project's rendered compose file, the db's mounts first; empty without one."""
        try:
            loaded = yaml.safe_load(self.store.paths(target.env, target.project).compose.read_text())
        except (OSError, yaml.YAMLError):
            return []
        if not isinstance(loaded, dict) or not isinstance(loaded.get("volumes"), dict):
            return []
        services = loaded.get("services")
        db = services.get("db") if isinstance(services, dict) else None
        mounts = db.get("volumes") if isinstance(db, dict) else None
        sources = {str(m.get("source") if isinstance(m, dict) else str(m).split(":")[0])
                   for m in (mounts if isinstance(mounts, list) else [])}
        return sorted((str(key) for key in loaded["volumes"]), key=lambda key: key not in sources)

    def _kept_volumes(self, target: Target, volumes: Sequence[Any]) -> list[str]:
        """The names of the project's `volumes` that its rendered stack does not declare: data an upgrade-db kept
        (or the other volume of an upgrade a run left half done); none without a compose file that declares one."""
        declared = self._declared_volumes(target)
        prefix = self._project_name(target)
        return sorted(str(v.name) for v in volumes if declared and _volume_key(v, prefix) not in declared)

    def _remove_helpers(self, volumes: Iterable[str]) -> None:
        """Remove the helper containers on these volumes, which would keep them in use: one still running, or one
        an earlier version left behind when it was killed (labelled io.provision.env=helper, never removed)."""
        client = self._docker_client()
        with sdk_errors("remove helper containers"):
            for volume in volumes:
                for container in client.containers.list(all=True, filters={"volume": volume}):
                    labels = container.labels or {}
                    if HELPER_LABEL in labels or labels.get(names.LABEL_ENV) == "helper":
                        container.remove(v=True, force=True)

    def _run_helper(self, image: str, command: list[str], operation: str, *, target: Target | None = None,
                    volumes: Mapping[str, str] | None = None, timeout: float = 300) -> str:
        """Run `command` as root in a throwaway container of `image` without network, `volumes` mounted read-only;
        its output, or CommandFailed with the output's tail. `docker run --rm`: the engine removes the container,
        with its anonymous volumes (a postgres image declares one for its data directory), once it exits, even
        when this process was killed meanwhile; labelled HELPER_LABEL=<env>/<project> (`_remove_helpers`)."""
        owner = f"{target.env}/{target.project}" if target is not None else ""
        argv = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", command[0],
                "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={owner}"]
        if target is not None and target.config.owner:
            argv += ["--label", f"{names.LABEL_OWNER}={target.config.owner}"]
        for name, path in (volumes or {}).items():
            argv += ["--volume", f"{name}:{path}:ro"]
        argv += [image, *command[1:]]
        result = self.compose.runner.run(argv, timeout=timeout)
        if result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stdout + result.stderr, hint=operation)
        return result.stdout

    def adopt(self, target: Target) -> tuple[str, ...]:
        """Take over the project's compose project made by another checkout (another owner id), by an earlier
        version elsewhere or by hand (no owner id): the owners its containers and volumes carry are recorded as
        this checkout's in the project's `adopted.json`, and the next provision recreates its containers with this
        env's owner label (a volume keeps its labels: it stays this checkout's through that file). Returns what
        was done, nothing when it is this checkout's already."""
        label = self._label(target)
        containers = service_containers(self.compose.containers(label))
        volumes = self.compose.labelled_volumes(label)
        if not containers and not volumes:
            raise ProvisionError(f"no compose project {self._project_name(target)} (containers or volumes) on this "
                                 f"Docker Engine to adopt for {target.project!r} in env {target.env!r}")
        owners = ownership.owners_of([*(c.labels for c in containers), *volumes.values()])
        accepted = self._accepted(target.config, target.project)
        taken = sorted(owners - accepted)
        if not taken:
            return ()
        paths = self.store.ensure_dir(target.env, target.project)
        previous = read_json(paths.dir / ADOPTED_FILE).get("owners") if (paths.dir / ADOPTED_FILE).is_file() else []
        kept = [str(o) for o in previous] if isinstance(previous, list) else []
        write_json(paths.dir / ADOPTED_FILE, {"owners": sorted({*kept, *taken})})
        whose = ", ".join(f"owner {o}" if o else "no owner id" for o in taken)
        done = [f"adopted compose project {self._project_name(target)} ({len(containers)} container(s), "
                f"{len(volumes)} volume(s); {whose}): it is this checkout's now"]
        if containers:
            done.append(f"{hints.command('provision', env=target.env, project=target.project)} recreates its containers with "
                        f"owner {target.config.owner or '(none)'}'s label; its volumes keep their labels")
        if not paths.secrets.is_file():
            done.append(f"it needs the secrets of the checkout that made it: copy that checkout's "
                        f"<state>/{target.env}/{target.project}/secrets.env to {paths.secrets} before provision")
        return tuple(done)

    def lock(self, target: Target, known: Handle | None, *,
             timeout: float) -> contextlib.AbstractContextManager[None]:
        """Nothing more to hold: the state directory's file lock serialises every run on this engine."""
        return contextlib.nullcontext()

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        return []

    def unlock(self, target: Target) -> bool:
        return False

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        """`docker compose logs`, redacted; with `follow`, line by line until the reader stops."""
        if not follow:
            yield self._logs(target, service=service, tail=tail, since=since)
            return
        args = _logs_args(tail, (service,) if service else (), since, follow=True)
        secrets = self._secret_values(target)
        for line in self._compose(target).stream(self._files(target, with_file=False), *args):
            yield redact(strip_ansi(line), secrets)

    def exec_argv(self, target: Target, service: str, command: list[str], *, env_names: tuple[str, ...] = (),
                  tty: bool = False) -> list[str]:
        """`docker exec` in the service's running container."""
        running = [c for c in self._containers(target) if c.service == service and c.running]
        if not running:
            raise ProvisionError(f"{target.project!r} has no running {service} container in env {target.env!r}: "
                                 f"run {hints.command('start', env=target.env, project=target.project)}")
        argv = ["docker", "exec", "--interactive", *(["--tty"] if tty else [])]
        for name in env_names:
            argv += ["--env", name]
        return [*argv, running[0].name, *command]

    def _logs(self, target: Target, *, service: str | None, tail: int, services: tuple[str, ...] = (),
              since: datetime | None = None) -> str:
        args = _logs_args(tail, (service,) if service else services, since)
        result = self._compose(target).run(self._files(target, with_file=False), *args, timeout=60)
        return redact(strip_ansi(result.stdout + result.stderr), self._secret_values(target))

    def _secret_values(self, target: Target) -> list[str]:
        return [s.reveal() for s in self.store.read_secrets(target.env, target.project).values()]

    def _subnets_in_use(self) -> list[str]:
        """Subnets of every Docker network on the engine (asked only when a new subnet is leased)."""
        subnets = []
        client = self._docker_client()
        with sdk_errors("list networks"):
            networks = client.networks.list(greedy=True)
        for network in networks:
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                if config.get("Subnet"):
                    subnets.append(str(config["Subnet"]))
        return subnets

    def usage(self, config: EnvConfig, projects: Collection[str] | None) -> dict[str, dict[str, Usage]]:
        """Memory, CPU, uptime and OOM kills of the projects' containers: one `docker ps` for the env, then each
        running container's cgroup files (`usage.collect`); the Engine API only where those do not tell."""
        if projects is not None and not projects:
            return {}
        listed = self.compose.containers(f"{names.LABEL_ENV}={config.name}")
        by_project: dict[str, list[ContainerState]] = {}
        for container in listed:
            by_project.setdefault(container.labels.get(names.LABEL_PROJECT, ""), []).append(container)
        listed = [c for project, found in by_project.items() if project
                  and self._mine(config, project, ownership.owners_of(c.labels for c in found)) for c in found]

        def api() -> Any:
            return self._docker_client().api

        with sdk_errors("read container stats"):
            return collect(listed, api, projects)

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> dict[str, Observed]:
        """Every project of the env with containers or kept data volumes: one `docker ps` and one
        `docker volume ls` for the whole env; each observation is as complete as `observe`'s."""
        label = f"{names.LABEL_ENV}={config.name}"
        by_project: dict[str, list[ContainerState]] = {}
        for container in service_containers(self.compose.containers(label)):
            project = container.labels.get(names.LABEL_PROJECT)
            if project:
                by_project.setdefault(project, []).append(container)
        kept: dict[str, dict[str, Mapping[str, str]]] = {}
        for volume, carried in self.compose.labelled_volumes(label).items():
            if carried.get(names.LABEL_PROJECT) and carried[names.LABEL_PROJECT] not in by_project:
                kept.setdefault(carried[names.LABEL_PROJECT], {})[volume] = carried
        observed: dict[str, Observed] = {}
        for project, containers in by_project.items():
            owners = ownership.owners_of(c.labels for c in containers)
            if self._mine(config, project, owners):
                seen = self._owned(config, project, _observed(containers), owners)
                observed[project] = self._complete(config.name, project, seen, known.get(project))
            elif taken := self._taken(config, project, owners, f"compose project {names.compose_project_name(config.name, project)}"):
                observed[project] = taken
        for project, volumes in kept.items():
            owners = ownership.owners_of(volumes.values())
            if self._mine(config, project, owners):
                observed[project] = Observed(exists=False, kept_data=list(volumes)[-1])
            elif taken := self._taken(config, project, owners, f"data volume {list(volumes)[-1]}"):
                observed[project] = taken
        return observed

    def _taken(self, config: EnvConfig, project: str, owners: frozenset[str], what: str) -> Observed | None:
        """Another owner's stack is no project of this env: listed (as taken, nothing observed) only under a name
        this checkout declares or records, so that plan and status say why it cannot be provisioned here."""
        if not any(p.name == project for p in config.projects) and not self.store.paths(config.name, project).state.is_file():
            return None
        foreign = ownership.foreign_owner(owners, self._accepted(config, project)) or ""
        return Observed(exists=False, foreign=ownership.refusal(config.name, project, what, foreign, config.owner))

    def doctor(self, probe: checks.DoctorProbe) -> list[checks.Check]:
        """The Docker Engine answers and Compose is v2 (a local env has no API, token or server to check)."""
        return _doctor(self.compose)


def _raise_crashed(containers: Sequence[ContainerState], services: tuple[str, ...]) -> None:
    """`_Crashed` when a container of `services` exited, is dead or restarts."""
    crashed = [c for c in containers if c.service in services and c.state in CRASHED_STATES]
    if crashed:
        raise _Crashed(tuple(sorted({c.service for c in crashed})), "; ".join(
            f"{c.service} {c.state}" + (f" (exit code {c.exit_code})" if c.exit_code else "") for c in crashed))


def _stack_images(stack: RenderedStack) -> list[tuple[str, str]]:
    """(service, image) of each service of the rendered stack that names an image."""
    services = stack.document.get("services") if isinstance(stack.document, Mapping) else None
    found = []
    for name, service in (services.items() if isinstance(services, Mapping) else ()):
        image = service.get("image") if isinstance(service, Mapping) else None
        if isinstance(image, str) and image:
            found.append((str(name), image))
    return found


def _image_key(target: Target, service: str, image: str) -> str:
    """Where `image` of `service` is set: the env file's key, else the template."""
    if service in ("db", "api") and getattr(target.images, service) == image:
        return f"{target.spec.key(f'images.{service}')} in {target.config.relpath}"
    return f"services.{service}.image in the template {target.config.template_path.name}"


def _check_limits(target: Target, *, cpus: int, memory: int) -> None:
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


def _volume_key(volume: Any, project_name: str) -> str:
    """The compose key of a project volume: compose's label, else its name without `<project>_`."""
    key = ((volume.attrs or {}).get("Labels") or {}).get(COMPOSE_VOLUME_LABEL)
    name = str(volume.name)
    return str(key) if key else name.removeprefix(f"{project_name}_")


def _drift(observed: Observed, baseline: LocalHandle | None) -> str | None:
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


def _observed(containers: list[ContainerState]) -> Observed:
    """What a project's containers say: which services run, how healthy, with which config hashes
    (the handle of what runs: compared with the recorded one, it tells drift)."""
    if not containers:
        return Observed(exists=False)
    services = {c.service: ServiceState(c.state, c.health) for c in containers}
    running = LocalHandle(
        service_hashes={c.service: c.labels.get(names.LABEL_CONFIG_HASH, "") for c in containers},
        compose_hashes={c.service: c.labels.get(COMPOSE_HASH_LABEL, "") for c in containers},
    )
    return Observed(exists=True, config_hash=stack_hash(running.service_hashes), services=services, handle=running)


def _logs_args(tail: int, services: tuple[str, ...], since: datetime | None, *, follow: bool = False) -> list[str]:
    """`docker compose logs` arguments: the last `tail` lines per service, written since `since` (UTC)."""
    args = ["logs", "--no-color", "--tail", str(tail)]
    if since is not None:
        args += ["--since", since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
    if follow:
        args.append("--follow")
    return args + (["--", *services] if services else [])


def _url_host(address: str) -> str:
    if address in ("0.0.0.0", ""):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


def _doctor(compose: ComposeCLI) -> list[checks.Check]:
    """LocalBackend.doctor: the two things a local run needs from this machine, asked the way provision asks
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


def _implements_the_protocol(backend: LocalBackend) -> Backend:
    """Never called: mypy checks here that LocalBackend has every verb of the Backend protocol."""
    return backend
