"""Docker mode: run services for real on the local Docker Engine, like Coolify's actions.

Start/restart write ``<workdir>/<uuid>/docker-compose.yml`` + ``.env`` and run
``docker compose --project-directory W -f W/docker-compose.yml --project-name <uuid> up -d
--remove-orphans --force-recreate``; stop runs ``stop`` + ``rm -f``; delete runs ``down``
(``-v`` only with delete_volumes). Every container, volume and network carries
``io.provision.test=coolify-emulator`` plus an instance label used by :meth:`cleanup`.
Statuses come from a poller thread reading ``docker ps``; no docker call ever runs while
the store lock is held.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import compose as C
from .state import PendingAction, Service, SubResource, new_uuid, now_iso

if TYPE_CHECKING:
    from .core import Core

LABEL = "io.provision.test"
LABEL_VALUE = "coolify-emulator"
INSTANCE_LABEL = "io.provision.test.instance"
_ENV_PASSTHROUGH = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH",
                    "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR", "TMPDIR")


def dotenv_line(key: str, value: str | None) -> str:
    """One ``.env`` line whose value reaches the container unchanged (no interpolation)."""
    if value is None or value == "":
        return f"{key}="
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"{key}='{value}'"
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("$", "\\$"))
    return f'{key}="{escaped}"'


class CommandError(RuntimeError):
    """A docker command failed (its output is kept, the argv is not secret)."""


class DockerBackend:
    """Runs queued service actions with docker compose and tracks container states."""

    def __init__(self, workdir: str | None = None, *, docker_bin: str = "docker", command_timeout: float = 180.0,
                 stop_timeout: int = 10, poll_interval: float = 0.5, keep_resources: bool = False,
                 stored_exited_seconds: float = 2.0) -> None:
        self.instance_id = new_uuid()
        self.root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="coolify-emulator-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.docker_bin = docker_bin
        self.command_timeout = command_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.keep_resources = keep_resources
        # StopService (a stop, or a restart's first half) stores every container `exited` at once, and that stays
        # until the next refresh, up to a minute later (app/Actions/Service/StopService.php:49-53, API-NOTES §18).
        # Docker mode reads the containers live, so a restart that takes a second would leave no trace for a
        # reader that was starved of CPU meanwhile: the stored `exited` lasts this long after the job instead.
        self.stored_exited_seconds = stored_exited_seconds
        self._exited_until: dict[str, float] = {}  # service uuid -> monotonic time its stored `exited` ends
        self.core: Core | None = None
        self.errors: dict[str, str] = {}
        self._queues: dict[str, queue.Queue[PendingAction | None]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._snapshot: dict[str, dict[str, Any]] = {}  # container name -> {id, state, health}
        self._ips: dict[str, dict[str, str]] = {}  # container id -> network -> ip
        self._snap_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def labels(self) -> dict[str, str]:
        """Labels put on everything this emulator instance creates."""
        return {LABEL: LABEL_VALUE, INSTANCE_LABEL: self.instance_id}

    # ------------------------------------------------------------------ lifecycle
    def attach(self, core: Core) -> None:
        self.core = core

    def start(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="coolify-emulator-docker-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        for q in self._queues.values():
            q.put(None)
        for worker in self._workers.values():
            worker.join(timeout=self.command_timeout)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        if not self.keep_resources:
            self.cleanup()

    # ------------------------------------------------------------------ commands
    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in _ENV_PASSTHROUGH}

    def run(self, args: list[str], timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``docker <args>`` (argv list, explicit timeout, clean environment)."""
        try:
            proc = subprocess.run(  # noqa: S603 - fixed binary, argv list
                [self.docker_bin, *args], capture_output=True, text=True,
                timeout=timeout or self.command_timeout, env=self._env(), check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandError(f"docker {args[0]} timed out after {exc.timeout}s") from exc
        if check and proc.returncode != 0:
            raise CommandError(f"docker {' '.join(args[:6])} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def exec(self, container: str, command: str, *, timeout: float) -> tuple[int, str]:
        """`docker exec <container> sh -c <command>` as ScheduledTaskJob runs it (no -i, no -t, the image's
        user); stdout and stderr merged."""
        for _ in range(3):  # runc failing to start the exec (a busy test host) ran nothing: Coolify's host is not ours
            try:
                proc = subprocess.run(  # noqa: S603 - fixed binary, argv list
                    [self.docker_bin, "exec", container, "sh", "-c", command], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, timeout=timeout, env=self._env(), check=False)
            except subprocess.TimeoutExpired:
                return 124, f"The command timed out after {timeout:g} seconds."
            # runc failing to start the exec, or the engine failing to attach to it, on a busy test host
            if not ((proc.returncode == 126 and "OCI runtime exec failed" in proc.stdout)
                    or "unable to upgrade to tcp" in proc.stdout):
                break
        return proc.returncode, proc.stdout

    def workdir(self, uuid: str) -> Path:
        return self.root / uuid

    def _compose(self, uuid: str, *args: str) -> list[str]:
        wd = self.workdir(uuid)
        return ["compose", "--project-directory", str(wd), "-f", str(wd / "docker-compose.yml"),
                "--project-name", uuid, *args]

    # ------------------------------------------------------------------ queue
    def submit(self, uuid: str, action: PendingAction) -> None:
        """Queue an action for the service's worker (one worker per service, FIFO)."""
        if uuid not in self._queues:
            self._queues[uuid] = queue.Queue()
            worker = threading.Thread(target=self._work, args=(uuid,), name=f"coolify-emulator-{uuid}", daemon=True)
            self._workers[uuid] = worker
            worker.start()
        self._queues[uuid].put(action)

    def _work(self, uuid: str) -> None:
        q = self._queues[uuid]
        while True:
            action = q.get()
            if action is None:
                return
            assert self.core is not None
            delay = self.core.settings.action_delay
            if delay:
                self._stop.wait(delay)
            try:
                self._perform(uuid, action)
            except Exception as exc:  # noqa: BLE001 - keep the worker alive, expose the error
                self.errors[uuid] = str(exc)
            finally:
                self.refresh()
                with self.core.store.lock:
                    svc = self.core.store.services.get(uuid)
                    if svc is not None and action in svc.pending:
                        svc.pending.remove(action)
                    self.core.idle.notify_all()

    def _perform(self, uuid: str, action: PendingAction) -> None:
        core = self.core
        assert core is not None
        with core.store.lock:
            svc = core.store.services.get(uuid)
            if svc is None:
                return
            server = core.server_of(svc)
            functional = server.functional
            compose_doc = core.generated_compose(svc, extra_labels=self.labels)
            env_lines = [dotenv_line(e.key, e.value) for e in core.store.envs_of(svc)]
        if action.kind in ("start", "restart"):
            if not functional:
                raise CommandError(f"server {server.name} is not reachable/usable")
            self._write_files(uuid, compose_doc, env_lines)
            self._ensure_network(uuid)
            if action.kind == "restart":
                self.run(self._compose(uuid, "stop", "-t", str(self.stop_timeout)), check=False)
                self._exited_until[uuid] = math.inf
            elif time.monotonic() < self._exited_until.get(uuid, 0.0):
                self._exited_until[uuid] = math.inf  # a start while a stop is still stored: no refresh before it ends
            try:
                self.run(self._compose(uuid, "up", "-d", "--remove-orphans", "--force-recreate"))
            finally:
                if uuid in self._exited_until:
                    self._exited_until[uuid] = time.monotonic() + self.stored_exited_seconds
            self.errors.pop(uuid, None)
            with core.store.lock:
                svc = core.store.services.get(uuid)
                if svc is not None:
                    core.mark_deployed(svc)
                    for sub in svc.apps:
                        sub.status_override = None
                        sub.last_online_at = now_iso(core.clock.time())
        elif action.kind == "stop":
            with core.store.lock:
                for sub in svc.apps:
                    sub.status_override = None
            if (self.workdir(uuid) / "docker-compose.yml").exists():
                self.run(self._compose(uuid, "stop", "-t", str(self.stop_timeout)), check=False)
                self.run(self._compose(uuid, "rm", "-f"), check=False)
        elif action.kind == "delete":
            self._delete(uuid, action.options)
            with core.store.lock:
                svc = core.store.services.get(uuid)
                if svc is not None:
                    core.remove_service(svc)
            q = self._queues.get(uuid)
            if q is not None:
                q.put(None)

    def _write_files(self, uuid: str, compose_doc: dict[str, Any], env_lines: list[str]) -> None:
        wd = self.workdir(uuid)
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "docker-compose.yml").write_text(C.dump_yaml(compose_doc))
        env_path = wd / ".env"
        env_path.write_text("\n".join(env_lines) + ("\n" if env_lines else ""))
        env_path.chmod(0o600)

    def _ensure_network(self, uuid: str) -> None:
        probe = self.run(["network", "inspect", uuid], check=False, timeout=30)
        if probe.returncode != 0:
            label_args = [a for k, v in self.labels.items() for a in ("--label", f"{k}={v}")]
            self.run(["network", "create", "--attachable", *label_args, uuid], timeout=30)

    def _delete(self, uuid: str, options: dict[str, Any]) -> None:
        wd = self.workdir(uuid)
        if (wd / "docker-compose.yml").exists():
            args = ["down", "--remove-orphans", "-t", str(self.stop_timeout)]
            if options.get("delete_volumes", True):
                args.append("-v")
            self.run(self._compose(uuid, *args), check=False)
        if options.get("delete_connected_networks", True):
            self.run(["network", "rm", uuid], check=False, timeout=30)
        if options.get("delete_configurations", True):
            shutil.rmtree(wd, ignore_errors=True)

    # ------------------------------------------------------------------ status
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001,S112 - the poller must survive docker hiccups
                continue

    def refresh(self) -> None:
        """Re-read this instance's containers (``docker ps -a``) and their network IPs."""
        proc = self.run(["ps", "-a", "--no-trunc", "--filter", f"label={INSTANCE_LABEL}={self.instance_id}",
                         "--format", "{{json .}}"], check=False, timeout=30)
        if proc.returncode != 0:
            return
        snapshot: dict[str, dict[str, Any]] = {}
        for line in proc.stdout.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            status_text = str(row.get("Status", ""))
            health = ""
            if "(healthy)" in status_text:
                health = "healthy"
            elif "(unhealthy)" in status_text:
                health = "unhealthy"
            elif "health: starting" in status_text:
                health = "starting"
            snapshot[str(row.get("Names", "")).split(",")[0]] = {
                "id": row.get("ID"), "state": row.get("State", ""), "health": health}
        missing = [v["id"] for v in snapshot.values() if v["state"] == "running" and v["id"] not in self._ips]
        for cid in missing:
            insp = self.run(["inspect", "--format", "{{json .NetworkSettings.Networks}}", cid], check=False,
                            timeout=30)
            if insp.returncode == 0 and insp.stdout.strip():
                nets = json.loads(insp.stdout)
                self._ips[cid] = {name: cfg.get("IPAddress", "") for name, cfg in (nets or {}).items()}
        with self._snap_lock:
            self._snapshot = snapshot

    @staticmethod
    def _to_status(info: dict[str, Any]) -> str:
        state, health = info["state"], info["health"]
        if state == "running":
            if health == "starting":
                # app/Actions/Docker/GetContainersStatus.php stores a running container whose healthcheck is
                # still starting as running:starting (API-NOTES §17: aggregated as running)
                return "running:starting"
            return f"running:{health or 'unknown'}"
        if state == "restarting":
            return "restarting:unknown"
        if state == "paused":
            return "paused:unknown"
        return "exited"

    def stored_statuses(self, svc: Service) -> dict[str, str]:
        """What Coolify's stored statuses say: the containers' (container_statuses), or none (every one reads
        `exited`) while a restart's stop is stored (see stored_exited_seconds)."""
        if time.monotonic() < self._exited_until.get(svc.uuid, 0.0):
            return {}
        return self.container_statuses(svc)

    def container_statuses(self, svc: Service) -> dict[str, str]:
        """Status per container name from the latest snapshot (no docker call)."""
        with self._snap_lock:
            return {name: self._to_status(info) for name, info in self._snapshot.items()
                    if name.endswith(f"-{svc.uuid}")}

    def container_ip(self, svc: Service, sub: SubResource) -> str | None:
        """IP of ``<key>-<uuid>`` on the service network (cached by the poller)."""
        with self._snap_lock:
            info = self._snapshot.get(f"{sub.name}-{svc.uuid}")
        if not info:
            return None
        nets = self._ips.get(info["id"], {})
        return nets.get(svc.uuid) or next((ip for ip in nets.values() if ip), None)

    def logs(self, svc: Service, sub: SubResource, lines: int, timestamps: bool) -> str:
        """``docker logs -n <lines> [-t] <key>-<uuid>`` (stdout and stderr merged)."""
        args = ["logs", "-n", str(lines)]
        if timestamps:
            args.append("-t")
        proc = self.run([*args, f"{sub.name}-{svc.uuid}"], check=False, timeout=30)
        if proc.returncode != 0:
            return ""
        return (proc.stdout + proc.stderr).rstrip("\n")

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, all_instances: bool = False) -> None:
        """Remove containers, volumes and networks of this instance (or of every emulator)."""
        selector = f"label={LABEL}={LABEL_VALUE}" if all_instances else f"label={INSTANCE_LABEL}={self.instance_id}"
        ids = self.run(["ps", "-aq", "--filter", selector], check=False, timeout=60).stdout.split()
        if ids:
            self.run(["rm", "-f", "-v", *ids], check=False, timeout=120)
        vols = self.run(["volume", "ls", "-q", "--filter", selector], check=False, timeout=60).stdout.split()
        if vols:
            self.run(["volume", "rm", "-f", *vols], check=False, timeout=120)
        nets = self.run(["network", "ls", "-q", "--filter", selector], check=False, timeout=60).stdout.split()
        for net in nets:
            self.run(["network", "rm", net], check=False, timeout=60)
        if not all_instances:
            shutil.rmtree(self.root, ignore_errors=True)
