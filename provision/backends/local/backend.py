"""The local backend: one compose project per env+project on a Docker Engine; the verbs, composed of compose
(`compose`: creates, updates, stops and removes stacks), the engine (`engine`: volumes, helper containers,
container states through the SDK), the waits (`waits`) and pure reads (`facts`)."""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from ...core import names
from ...core.archiving import (
    OFFSITE_SECRETS,
    ArchiveFacts,
    OffsiteCopy,
    Restored,
    RestoreRequest,
)
from ...core.config import EnvConfig
from ...core.errors import (
    CommandFailed,
    DatabaseStarting,
    HealthTimeout,
    ImageUnavailable,
    LimitsRefused,
    ProjectConflict,
    ProvisionError,
    StartingCommandFailed,
    StateError,
    redact,
    strip_ansi,
)
from ...core.model import (
    NO_ENDPOINTS,
    ControlVerb,
    Destroyed,
    Endpoints,
    Handle,
    Observed,
    Ports,
    Prepared,
    Target,
    Usage,
    db_url,
)
from ...core.planner import Action, Plan
from ...core.render import RenderedStack
from ...core.secrets import GENERATED_SECRETS, Secret, generate_missing
from ...infra import compose_check, hints, interrupts
from ...infra import doctor as checks
from ...infra.database import major_of, not_up_yet, psql_in_container
from ...infra.fsutil import atomic_write, env_file_text
from ...infra.probes import Probe, http_probe, postgres_ping, postgres_probe
from ...state.layout import BackendFiles
from ..base import Adopted, Backend
from . import archives, dumps, offsite, ownership
from .claims import ADOPTED_FILE, Claims
from .compose import ComposeCLI, ComposeFiles, ContainerState, service_containers
from .engine import DockerClientFactory, Engine, docker_from_env, sdk_errors
from .facts import (
    LocalHandle,
    check_limits,
    db_dependants,
    doctor_checks,
    drift,
    handle_of,
    image_key,
    logs_args,
    observed_from,
    run_exec,
    stack_images,
    url_host,
    volume_mark,
)
from .ports import LeaseBook, lease_key, lease_ports, preview_ports, release_ports
from .reflink import ReflinkCopier, remove_bound
from .usage import collect
from .volumes import DataVolumes
from .waits import Waiter

LOG_TAIL = 40
_HEALTH_FAILURE = ("unhealthy", "dependency failed", "timeout", "exited with code", "is not running")
PULL_TIMEOUT = 600.0  # seconds one `docker pull` of a missing image may take
CHECKED_FOR = 300.0  # seconds an image found on the engine (or the host's size) is not asked again
# the daemon's refusal of a limit (`docker run --cpus 4` on 2 CPUs, a reservation above the limit)
_LIMIT_REFUSED = re.compile(r"Range of CPUs is from|Minimum memory limit|memory reservation|NanoCPUs", re.I)

COMPOSE_FILE = "docker-compose.yml"  # in the working folder: the rendered stack last applied
ENV_FILE = "compose.env"  # in the working folder, 0600: the variables (the secrets) compose interpolates


class LocalBackend:
    """Runs each project as a compose project on the local Docker Engine."""

    name = "local"

    def __init__(
        self,
        files: BackendFiles,
        compose: ComposeCLI | None = None,
        *,
        docker_client: DockerClientFactory = docker_from_env,
        db_ping: Callable[[str, int], Probe] = postgres_ping,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = interrupts.sleep,
    ) -> None:
        self.files = files
        self.claims = Claims(files)
        self.leases = LeaseBook(files.ports, files.ports_lock)
        self.compose = compose or ComposeCLI(hidden_env=(*GENERATED_SECRETS, *OFFSITE_SECRETS))
        self.engine = Engine(self.compose, docker_client)  # a connection, not a memory: reopened on a fresh instance
        self._db_ping = db_ping  # does the db accept connections on a host port (pg_isready's rule)
        self._clock, self._sleep = clock, sleep
        self._images_seen: dict[str, float] = {}  # image -> when it was last found on the engine (preflight)
        self._host: tuple[float, int, int] | None = None  # (when asked, CPUs, memory bytes) of the engine's host
        self.reflink = ReflinkCopier(self.engine, self.exec_argv, lambda target: self._data(target).data_volume())
        # the CopiesRunningData ability (base.py): branches by reflink, reflink.py
        self.reflink_refusal, self.copy_running, self.own_disk = self.reflink.refusal, self.reflink.copy, self.reflink.own_disk
        self.scratch_server = partial(dumps.scratch_server, self.engine)  # RestoresDumps (base.py): dumps.py

    def describe(self) -> str:
        return "Local Docker provider"

    def load_handle(self, data: Mapping[str, Any]) -> LocalHandle | None:
        return LocalHandle.from_dict(data)

    # --- helpers ----------------------------------------------------------------------------
    def _project_name(self, target: Target) -> str:
        return names.compose_project_name(target.env, target.project)

    def _label(self, target: Target) -> str:
        """The label filter that selects the project's containers and volumes."""
        return f"com.docker.compose.project={self._project_name(target)}"

    def _work(self, target: Target, name: str) -> Path:
        """A file of the project's working folder."""
        return self.files.work(target.env, target.project) / name

    def _files(self, target: Target, *, with_file: bool = True) -> ComposeFiles:
        compose_file, env_file = self._work(target, COMPOSE_FILE), self._work(target, ENV_FILE)
        has_file = with_file and compose_file.is_file()
        return ComposeFiles(
            project_name=self._project_name(target),
            compose_file=compose_file if has_file else None,
            env_file=env_file if has_file and env_file.is_file() else None,
        )

    def _write_env_file(self, target: Target, prepared: Prepared | None) -> None:
        """The variables compose interpolates (the project's secrets), 0600 in the working folder: written from
        `prepared` (the service's copy) whenever it is given for a stack with a compose file and they differ from
        what is there."""
        if prepared is None or not self._work(target, COMPOSE_FILE).is_file():
            return
        body = env_file_text(prepared.secrets)
        path = self._work(target, ENV_FILE)
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == body:
                return
        self.files.ensure_work(target.env, target.project)
        atomic_write(path, body, mode=0o600)

    def _compose(self, target: Target) -> ComposeCLI:
        return self.compose.with_secrets(self._secret_values(target))

    def _containers(self, target: Target) -> list[ContainerState]:
        return service_containers(self.compose.containers(self._label(target)))

    # --- observe / prepare ------------------------------------------------------------------
    def observe(self, target: Target, known: Handle | None) -> Observed:
        """The project's containers, what provision last applied, and whether they still match it; without
        containers, the data volume a destroy kept (one `docker volume ls`). ProjectConflict naming the owner
        when they are another checkout's (`ownership`): no verb acts on those."""
        containers = self._containers(target)
        observed = observed_from(containers)
        labels: list[Mapping[str, str]] = [c.labels for c in containers]
        if not observed.exists:
            volumes = {name: carried for name, carried in
                       self.compose.labelled_volumes(self._label(target)).items() if names.LABEL_PROJECT in carried}
            observed = replace(observed, kept_data=list(volumes)[-1] if volumes else None,
                               branch=volume_mark(volumes.values()))
            labels = list(volumes.values())
        observed = self.claims.owned(target.config, target.project, observed, ownership.owners_of(labels))
        return self._complete(target.env, target.project, observed, known)

    def _complete(self, env: str, project: str, observed: Observed, known: Handle | None) -> Observed:
        """`observed` with the compose text last applied and the drift from the recorded baseline."""
        path = self.files.work(env, project) / COMPOSE_FILE
        applied = path.read_text(encoding="utf-8") if path.is_file() else None
        baseline = known if isinstance(known, LocalHandle) else None
        return replace(observed, applied_text=applied, drift=drift(observed, baseline))

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
                f"{self.files.secrets_path(target.env, target.project)} is missing: restore it from a backup "
                f"(a new password would not match the existing database)"
            )
        secrets = generate_missing(stored)
        local = target.config.local
        ports = lease_ports(
            self.leases, target.env, target.project, port_range=local.port_range, address=local.bind_address,
            network_pool=local.network_pool, network_prefix=local.network_prefix,
            networks_in_use=self.engine.subnets_in_use,
        )
        return Prepared(secrets=secrets, ports=ports, new_secrets=secrets != dict(stored))

    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        ports = prepared.ports
        if ports is None:
            return NO_ENDPOINTS
        host = url_host(target.config.local.bind_address)
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
        naming the key). An image found, and the host's size, are not asked again for CHECKED_FOR s. The engine is
        asked all of it at once; pulls and refusals keep the stack's order."""
        now = self._clock()
        unseen: dict[str, str] = {}  # image -> the first service naming it
        for service, image in stack_images(stack):
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
                            raise ImageUnavailable(image, image_key(target, service, image), why)
                    self._images_seen[image] = now
                if host is not None:
                    self._host = (now, *host.result())
            except KeyboardInterrupt:
                interrupts.CANCELLED.set()  # the questions still running stop now, not at their timeout
                raise
        assert self._host is not None
        check_limits(target, cpus=self._host[1], memory=self._host[2])

    def check_template(self, target: Target, stack: RenderedStack) -> None:
        """`docker compose config` on the rendered stack (`compose_check`): TemplateError for no valid Compose."""
        compose_check.check(stack.text, template=target.config.template_path, runner=self.compose.runner)

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> LocalHandle:
        """Write the compose file and `up` it; the handle carries compose's own config hashes of the
        containers, which later tell whether someone changed them outside provision."""
        self.files.ensure_work(target.env, target.project)
        atomic_write(self._work(target, COMPOSE_FILE), stack.text, mode=0o600)
        self._write_env_file(target, prepared)
        self.engine.warm_up()
        self.engine.make_volumes(self._project_name(target), target.config.owner, stack.document.get("volumes"),
                                 data_root=target.config.local.data_root)
        self.compose.remove_interrupted(self._label(target))  # what a killed `up` left (<id>_<name>, Created)
        self._up(target, stack.services, timeout=target.config.health.timeout, force=plan.action is Action.DRIFT,
                 db_port=prepared.ports.db if prepared.ports else None)
        containers = self._containers(target)
        return handle_of(containers)

    def _up(self, target: Target, stack_services: tuple[str, ...], *, timeout: float, services: tuple[str, ...] = (),
            recreate: bool = True, force: bool = False, db_port: int | None = None) -> None:
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
        others = db_dependants(stack_services) if db_port is not None else None
        if db_port is None or others is None:
            self._compose_up(target, args, timeout=timeout)
            return
        self._compose_up(target, [*args, "--", "db"], timeout=timeout)
        self._await_db(target, db_port, timeout=timeout)
        self._compose_up(target, [*args, "--", *others], timeout=timeout)

    def _await_db(self, target: Target, db_port: int, *, timeout: float) -> None:
        host = url_host(target.config.local.bind_address).strip("[]")
        self._waiter(target).db_accepts(self._db_ping(host, db_port), timeout=timeout)

    def _waiter(self, target: Target) -> Waiter:
        return Waiter(f"{target.project} ({target.env})", lambda: self.engine.containers_polled(self._label(target)),
                      lambda message, services: self._health_timeout(target, message, services),
                      clock=self._clock, sleep=self._sleep)

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

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        """Containers running and healthy, then api_url answering and db_url accepting connections."""
        started = self._clock()
        recorded = handle.service_hashes if isinstance(handle, LocalHandle) else {}
        services = tuple(recorded) or ("db", "api")
        waiter = self._waiter(target)
        if settled is None or not settled.ready:
            waiter.containers_ready(services, timeout=timeout)
        timeout = max(1.0, timeout - (self._clock() - started))
        endpoints = self.endpoints(target, handle, prepared)
        probes = {}
        if endpoints.api_url:
            probes["api"] = http_probe(endpoints.api_url)
        if endpoints.db_url:
            probes["db"] = postgres_probe(endpoints.db_url.reveal())
        waiter.answering(services, probes, timeout=timeout)
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
        return HealthTimeout(redact(message, self._secret_values(target)), logs=logs)

    # --- lifecycle --------------------------------------------------------------------------
    def control(self, target: Target, observed: Observed, verb: ControlVerb, *,
                prepared: Prepared | None = None) -> bool:
        """stop, start (the db first, as `apply`), restart (the db first); the compose env file written from
        `prepared` first."""
        self._write_env_file(target, prepared)
        services = tuple(observed.services)
        files = self._files(target)
        if files.compose_file is None:
            raise StateError(
                f"{target.project!r} in env {target.env!r} has no rendered compose file in "
                f"{self.files.work(target.env, target.project)}: run "
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
            self._up(target, services, timeout=target.config.health.timeout, recreate=False,
                     db_port=self._leased_db_port(target))
            return True
        if not observed.exists:
            self._up(target, services, timeout=target.config.health.timeout, recreate=False,
                     db_port=self._leased_db_port(target))
            return True
        # the db first, so that the api's first connection after its own restart finds it up
        db_port, others = self._leased_db_port(target), db_dependants(services)
        if db_port is None or others is None:
            self._compose(target).run(files, "restart", timeout=180)
            return True
        self._compose(target).run(files, "restart", "db", timeout=180)
        self._await_db(target, db_port, timeout=target.config.health.timeout)
        self._compose(target).run(files, "restart", *others, timeout=180)
        return True

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool,
                prepared: Prepared | None = None) -> Destroyed:
        """`compose down` when containers exist (or, with `delete_data`, volumes); a destroyed project's
        second destroy runs nothing. Kept volumes are reported, not counted as a change. With `delete_data`, a
        volume the rendered stack does not declare (data an upgrade-db kept) stops it before anything is removed,
        and helper containers a killed run may have left on the volumes go first."""
        self._write_env_file(target, prepared)
        files = self._files(target)
        done: list[str] = []
        volumes = self._volumes(target)
        changed = False
        if delete_data:
            kept = self._data(target).kept(volumes)
            if kept:
                command = f"provision upgrade-db --env={target.env} --project={target.project}"
                raise ProjectConflict(
                    f"{target.project!r} in env {target.env!r} has data that upgrade-db kept in volume(s) "
                    f"{', '.join(kept)}, which its stack no longer mounts; nothing was deleted. `{command} --finalize "
                    f"--yes` deletes it (--rollback --yes returns to it; after an interrupted upgrade, `{command} "
                    f"--yes` finishes it first), then destroy --delete-data deletes the rest; or delete it by name: "
                    f"`docker volume rm {' '.join(kept)}`")
            self.engine.remove_helpers(str(v.name) for v in volumes)
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
            done += [f"deleted its data directory {d}" for d in remove_bound(volumes, target.config.local.data_root)]
            release_ports(self.leases, target.env, target.project)
            for name in (ADOPTED_FILE, COMPOSE_FILE, ENV_FILE):
                self._work(target, name).unlink(missing_ok=True)
        elif volumes:
            done.append("kept data volume(s) " + ", ".join(sorted(v.name for v in volumes)) + " and the credentials: "
                        f"{hints.command('provision', env=target.env, project=target.project)} reattaches them")
        return Destroyed(changed=changed, messages=tuple(done))

    def _volumes(self, target: Target) -> list[Any]:
        return self._data(target).all()

    def _data(self, target: Target) -> DataVolumes:
        return DataVolumes(self.engine, self._project_name(target), self._label(target),
                           self._work(target, COMPOSE_FILE))

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        """`docker exec -i <db> psql` as `user` (default POSTGRES_USER) over the container's socket, `sql` on
        its stdin. DatabaseStarting (StartingCommandFailed) when its container or server is not up yet."""
        argv = self.exec_argv(target, "db", ["sh", "-c", psql_in_container(user)])
        with tempfile.TemporaryFile() as statements:
            statements.write(sql.encode())
            result = run_exec(self.compose.runner, argv, timeout=timeout, stdin=statements)
        if result.returncode != 0:
            failed = StartingCommandFailed if not_up_yet(result.stderr) else CommandFailed
            raise failed(argv, result.returncode, result.stderr)
        return result.stdout

    # --- data volumes: PostgreSQL major upgrades -----------------------------------------------
    def image_major(self, image: str) -> int:
        """The major version of the PostgreSQL server in `image`: its own `postgres --version` (entrypoint
        overridden), not a variable such as PG_MAJOR that not every image sets."""
        output = self.engine.run_helper(image, ["postgres", "--version"], f"run `postgres --version` in {image}")
        return major_of(output)

    def data_major(self, target: Target, image: str) -> int | None:
        """PG_VERSION of the volume the project's stack mounts (read with `image`'s shell); None without a volume
        or with an empty one."""
        volume = self._data(target).data_volume()
        if volume is None:
            return None
        output = self.engine.run_helper(image, ["sh", "-c", "cat /data/PG_VERSION 2>/dev/null || true"],
                                  f"read PG_VERSION in volume {volume}", project=f"{target.env}/{target.project}",
                                  owner=target.config.owner, volumes={volume: "/data"})
        return int(output.strip()) if output.strip().isdigit() else None

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        """The project's labelled volume of compose key `volume_key` (compose names it `<compose project>_<key>`)."""
        return self._data(target).find(volume_key)

    def drop_kept(self, target: Target, volume_key: str) -> str | None:
        """Remove the project's volume of compose key `volume_key` (refused while its rendered stack declares
        it), after any helper container left on it; its name, None when there is none."""
        data = self._data(target)
        if volume_key in data.declared():
            raise ProvisionError(f"volume key {volume_key!r} is the one the stack of {target.project!r} in env "
                                 f"{target.env!r} mounts: it is not deleted")
        return data.remove(volume_key)

    def archive_facts(self, target: Target, observed: Observed, lineage: str) -> ArchiveFacts:
        running = [c.name for c in self._containers(target) if c.service == "archiver" and c.running]
        return archives.facts(self.engine, self._data(target), target, observed, lineage,
                              archiver=running[0] if running else None)

    def restore_archive(self, target: Target, volume_key: str, request: RestoreRequest, *,
                        into: Target | None = None) -> Restored:
        return archives.restore_into(self.engine, self._data(target), self._data(into or target), into or target,
                                     volume_key, request)

    def offsite_copies(self, target: Target, lineage: str) -> list[OffsiteCopy]:
        return offsite.copies(self.engine, self._data(target), target, lineage)

    def pull_offsite(self, target: Target, lineage: str, system_identifier: str) -> str:
        return offsite.pull(self.engine, self._data(target), target, lineage, system_identifier)

    def adopt(self, target: Target) -> Adopted:
        """Take over the project's compose project made by another checkout (another owner id), by an earlier
        version elsewhere or by hand (no owner id): the owners its containers and volumes carry are recorded as
        this checkout's in the project's `adopted.json`, and the next provision recreates its containers with this
        env's owner label (a volume keeps its labels: it stays this checkout's through that file). Returns what
        was done, nothing when it is this checkout's already."""
        return self.claims.adopt_project(target, self.compose, self._label(target), self._project_name(target))

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        """`docker compose logs`, redacted; with `follow`, line by line until the reader stops."""
        if not follow:
            yield self._logs(target, service=service, tail=tail, since=since)
            return
        args = logs_args(tail, (service,) if service else (), since, follow=True)
        secrets = self._secret_values(target)
        for line in self._compose(target).stream(self._files(target, with_file=False), *args):
            yield redact(strip_ansi(line), secrets)

    def exec_argv(self, target: Target, service: str, command: list[str], *, env_names: tuple[str, ...] = (),
                  tty: bool = False) -> list[str]:
        """`docker exec` in the service's running container (none: DatabaseStarting for the db)."""
        running = [c for c in self._containers(target) if c.service == service and c.running]
        if not running:
            missing = DatabaseStarting if service == "db" else ProvisionError
            raise missing(f"{target.project!r} has no running {service} container in env {target.env!r}: "
                          f"run {hints.command('start', env=target.env, project=target.project)}")
        argv = ["docker", "exec", "--interactive", *(["--tty"] if tty else [])]
        for name in env_names:
            argv += ["--env", name]
        return [*argv, running[0].name, *command]

    def _logs(self, target: Target, *, service: str | None, tail: int, services: tuple[str, ...] = (),
              since: datetime | None = None) -> str:
        args = logs_args(tail, (service,) if service else services, since)
        result = self._compose(target).run(self._files(target, with_file=False), *args, timeout=60)
        return redact(strip_ansi(result.stdout + result.stderr), self._secret_values(target))

    def _secret_values(self, target: Target) -> list[str]:
        """The values of the compose env file the working folder holds (what to redact)."""
        path = self._work(target, ENV_FILE)
        if not path.is_file():
            return []
        return [v for v in dotenv_values(path, interpolate=False).values() if v]

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
                  and self.claims.mine(config, project, ownership.owners_of(c.labels for c in found)) for c in found]

        def api() -> Any:
            return self.engine.client().api

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
            if self.claims.mine(config, project, owners):
                seen = self.claims.owned(config, project, observed_from(containers), owners)
                observed[project] = self._complete(config.name, project, seen, known.get(project))
            elif taken := self.claims.taken(config, project, owners, f"compose project {names.compose_project_name(config.name, project)}"):
                observed[project] = taken
        for project, volumes in kept.items():
            owners = ownership.owners_of(volumes.values())
            if self.claims.mine(config, project, owners):
                observed[project] = Observed(exists=False, kept_data=list(volumes)[-1],
                                             branch=volume_mark(volumes.values()))
            elif taken := self.claims.taken(config, project, owners, f"data volume {list(volumes)[-1]}"):
                observed[project] = taken
        return observed

    def doctor(self, probe: checks.DoctorProbe) -> list[checks.Check]:
        """The Docker Engine answers and Compose is v2 (a local env has no API, token or server to check)."""
        return doctor_checks(self.compose)


def _implements_the_protocol(backend: LocalBackend) -> Backend:
    """Never called: mypy checks here that LocalBackend has every verb of the Backend protocol."""
    return backend
