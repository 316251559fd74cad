"""restore --from on the local engine: a one-off server of the db image on a NEW data volume, for the service to
restore a dump into beside the running stack (`RestoresDumps.scratch_server`).

The image's own entrypoint initialises the volume exactly as the stack's db would on a new volume (POSTGRES_USER,
POSTGRES_DB, POSTGRES_PASSWORD; its pg_hba), so the stack later starts on it as on any volume it made. The server
listens on its socket only and the container has no network; the client tools reach it with `docker exec`. It
runs within the project's db limits and settings (`bulk_load`), with wal_level=minimal (and so max_wal_senders=0):
a table created in the restore's one transaction is written and synced at commit instead of WAL-logged, which is
what makes this faster than a pg_restore into a running server; the settings are on its command line only, the
volume's own configuration is the image's. The stop is a fast shutdown (the image's STOPSIGNAL), i.e. a checkpoint,
and must exit 0."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from ...core import names
from ...core.errors import CommandFailed, ProvisionError
from ...core.model import Target
from ...core.render import volume_labels_of
from ...core.resources import postgres_settings
from ...core.secrets import Secret
from ...infra.database import DbAccess
from .archives import create_volume
from .engine import HELPER_LABEL, Engine

SOCKET = "/var/run/postgresql"
# PID 1 is the entrypoint (bash) while it initialises, with a temporary server on the socket; it execs postgres
# once done: only then is the server the one to restore into
_READY = (f'i=0; until [ "$(cat /proc/1/comm)" = postgres ] && pg_isready -q -h {SOCKET}; do '
          'i=$((i + 1)); [ "$i" -gt "$1" ] && exit 1; sleep 0.1; done')
BULK_SETTINGS = ("listen_addresses=", "wal_level=minimal", "max_wal_senders=0", "max_wal_size=4GB",
                 "checkpoint_timeout=30min")


def bulk_load(target: Target) -> tuple[list[str], list[str]]:
    """The one-off server's `docker run` limits and its settings: the project's db limits and PostgreSQL settings
    (the same budget as its stack's db), then BULK_SETTINGS, and, with a memory limit, a quarter of it for
    maintenance_work_mem (index builds: the server serves no one else)."""
    db = target.spec.limits.db
    limits = [*(["--memory", str(db.memory)] if db.memory else []), *(["--cpus", f"{db.cpus:g}"] if db.cpus else [])]
    settings = {**postgres_settings(db.memory, target.spec.variables),
                **dict(s.split("=", 1) for s in BULK_SETTINGS),
                **({"maintenance_work_mem": f"{db.memory // 4 // 1024}kB"} if db.memory else {})}
    return limits, [f"{key}={value}" for key, value in settings.items()]


@contextlib.contextmanager
def scratch_server(engine: Engine, target: Target, volume_key: str, *, image: str, admin: str, dbname: str,
                   password: Secret, timeout: float) -> Iterator[DbAccess]:
    """`RestoresDumps.scratch_server` on the local engine (see the module's docstring)."""
    owner, label = target.config.owner, f"{target.env}/{target.project}"
    volume = create_volume(engine, names.compose_project_name(target.env, target.project), volume_key,
                           volume_labels_of(target.config, target.spec), owner)
    container = f"{volume}-scratch-{int(time.time())}"
    limits, settings = bulk_load(target)
    runner = engine.compose.runner
    argv = ["docker", "run", "--detach", "--name", container, "--network", "none",
            "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={label}",
            "--label", f"{names.LABEL_ENV}={target.env}",  # an env's cleanup finds it (no project label: no stack's)
            *(["--label", f"{names.LABEL_OWNER}={owner}"] if owner else []),
            "--volume", f"{volume}:/var/lib/postgresql/data",
            "-e", f"POSTGRES_USER={admin}", "-e", f"POSTGRES_DB={dbname}",
            "-e", "POSTGRES_PASSWORD",  # its value from this process's environment, never in argv
            *limits, image, "postgres", *(arg for setting in settings for arg in ("-c", setting))]
    try:
        started = runner.run(argv, timeout=120, env={**os.environ, "POSTGRES_PASSWORD": password.reveal()})
        if started.returncode != 0:
            raise CommandFailed(argv, started.returncode, started.stderr, hint=f"start a server on {volume}")
        ready = runner.run(["docker", "exec", container, "sh", "-c", _READY, "ready", str(int(timeout * 10))],
                           timeout=timeout + 30)
        if ready.returncode != 0:
            logs = runner.run(["docker", "logs", "--tail", "20", container], timeout=30)
            raise CommandFailed(["docker", "run", "...", image, "postgres"], ready.returncode,
                                (logs.stdout + logs.stderr)[-3000:], hint=f"initialise the new volume {volume}")
        yield DbAccess(prefix=("docker", "exec", "-i", container), host=SOCKET, port=5432, user=admin,
                       dbname=dbname, where=f"in a one-off server on the new volume {volume}")
        stop = runner.run(["docker", "stop", "--time", str(int(timeout)), container], timeout=timeout + 30)
        code = runner.run(["docker", "inspect", "--format", "{{.State.ExitCode}}", container], timeout=30).stdout.strip()
        if stop.returncode != 0 or code != "0":
            logs = runner.run(["docker", "logs", "--tail", "20", container], timeout=30)
            raise CommandFailed(["docker", "stop", container], stop.returncode or (int(code) if code.isdigit() else 1),
                                (logs.stdout + logs.stderr)[-3000:],
                                hint=f"stop the one-off server on {volume} cleanly (its log above)")
    finally:  # the new volume stays: the caller drops it, or switches the stack to it
        with contextlib.suppress(ProvisionError):
            runner.run(["docker", "rm", "--force", "--volumes", container], timeout=60)
