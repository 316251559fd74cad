"""Continuous archiving on the local engine: read a project's archive (the repository volume's status.json and
backup_info files, through a throwaway container of the db image that mounts it read-only), and restore a point in
time into a new data volume with a one-off container of the db image (the repository mounted read-only): the
base backup untarred, recovery.signal, restore_command copying from the archive, recovery_target_time, promotion,
row counts, a clean stop. The container has no network; it is labelled like every helper and removed when it ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

from ...core import archive_scripts, names
from ...core.archiving import (
    REPOSITORY_PATH,
    REPOSITORY_VOLUME,
    ArchiveFacts,
    Restored,
    RestoreRequest,
    pg_time,
)
from ...core.errors import CommandFailed, ProvisionError
from ...core.model import Observed, Target
from ...core.render import volume_labels_of
from .engine import COMPOSE_PROJECT_LABEL, COMPOSE_VOLUME_LABEL, HELPER_LABEL, Engine
from .facts import run_exec
from .volumes import DataVolumes

_READ = archive_scripts.READ_SCRIPT
_COUNTS = archive_scripts.COUNTS_SQL


def read_archive(engine: Engine, image: str, repository: str, lineage: str, running: bool, *,
                 label: str, owner: str | None, offsite_running: bool = False) -> ArchiveFacts:
    """The facts of `lineage` in the repository volume `repository` (absent volume: no facts)."""
    argv = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "sh",
            "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={label}",
            *(["--label", f"{names.LABEL_OWNER}={owner}"] if owner else []),
            "--volume", f"{repository}:{REPOSITORY_PATH}:ro",
            "--tmpfs", "/var/lib/postgresql/data",  # the image's VOLUME: no anonymous volume made per read
            image, "-c", _READ, "read",
            f"{REPOSITORY_PATH}/{lineage}"]
    result = engine.compose.runner.run(argv, timeout=120)
    if result.returncode != 0:
        raise CommandFailed(argv[:-3], result.returncode, result.stderr, hint=f"read the archive in {repository}")
    return archive_scripts.parse_read(result.stdout, lineage, running, offsite_running=offsite_running)


def read_running(engine: Engine, container: str, lineage: str, *, offsite_running: bool = False) -> ArchiveFacts:
    """The facts of `lineage` read inside the running archiver `container` (an exec: no container to create)."""
    argv = ["docker", "exec", container, "sh", "-c", _READ, "read", f"{REPOSITORY_PATH}/{lineage}"]
    result = run_exec(engine.compose.runner, argv, timeout=60)
    if result.returncode != 0:
        raise CommandFailed(argv[:4], result.returncode, result.stderr, hint=f"read the archive in {container}")
    return archive_scripts.parse_read(result.stdout, lineage, True, offsite_running=offsite_running)


def create_volume(engine: Engine, project_name: str, key: str, labels: Mapping[str, str], owner: str | None) -> str:
    """Create the project's volume of compose key `key` with the labels compose gives it (so that `up` takes it as
    its own) and the owner's; its name. ProvisionError when it exists already."""
    name = f"{project_name}_{key}"
    if engine.compose.labelled_volumes(f"{COMPOSE_VOLUME_LABEL}={key}", f"{COMPOSE_PROJECT_LABEL}={project_name}"):
        raise ProvisionError(f"volume {name} exists already: nothing was restored into it")
    argv = ["docker", "volume", "create"]
    for label, value in {**labels, COMPOSE_PROJECT_LABEL: project_name, COMPOSE_VOLUME_LABEL: key,
                         **({names.LABEL_OWNER: owner} if owner else {})}.items():
        argv += ["--label", f"{label}={value}"]
    result = engine.compose.runner.run([*argv, "--", name], timeout=60)
    if result.returncode != 0:
        raise CommandFailed([*argv, "--", name], result.returncode, result.stderr, hint=f"create volume {name}")
    return name


def restore(engine: Engine, request: RestoreRequest, *, repository: str, volume: str, label: str,
            owner: str | None) -> Restored:
    """Run the one-off restore of `request` into `volume` (empty, made by `create_volume`), the repository
    `repository` mounted read-only; what it reached and the row counts. CommandFailed with PostgreSQL's log tail
    when recovery fails; the container is removed in any case."""
    container = f"{volume}-restore-{int(time.time())}"
    argv = ["docker", "run", "--rm", "--name", container, "--network", "none", "--user", "0:0",
            "--entrypoint", "sh", "--label", f"{names.LABEL_MANAGED}=true", "--label", f"{HELPER_LABEL}={label}",
            *(["--label", f"{names.LABEL_OWNER}={owner}"] if owner else []),
            "--volume", f"{volume}:/var/lib/postgresql/data", "--volume", f"{repository}:{REPOSITORY_PATH}:ro",
            "-e", f"LINEAGE={request.lineage}", "-e", f"BASE={request.base}", "-e", f"TARGET={pg_time(request.target)}",
            "-e", f"XID={request.target_xid or ''}",
            "-e", f"ADMIN={request.admin}", "-e", f"DB={request.dbname}", "-e", f"MARK={request.mark_sql}",
            "-e", f"COUNTS={_COUNTS}", "-e", f"WAIT={int(request.timeout)}", request.image, "-c",
            archive_scripts.RESTORE_SCRIPT.read_text(encoding="utf-8")]
    started = time.monotonic()
    try:
        result = engine.compose.runner.run(argv, timeout=request.timeout + 120)
    finally:
        with contextlib.suppress(ProvisionError):  # a run that timed out leaves its container: it goes
            engine.compose.runner.run(["docker", "rm", "-f", container], timeout=60)
    if result.returncode != 0:
        raise CommandFailed(["docker", "run", "...", request.image, "restore"], result.returncode,
                            result.stdout[-2000:] + result.stderr[-4000:],
                            hint="restore the archive into a new volume (PostgreSQL's log above)")
    reached, counts, log = archive_scripts.parse_restored(result.stdout)
    return Restored(volume=volume, reached=reached, row_counts=counts, log=tuple(log),
                    duration=time.monotonic() - started)


def facts(engine: Engine, data: DataVolumes, target: Target, observed: Observed, lineage: str, *,
          archiver: str | None = None) -> ArchiveFacts:
    """`Archives.archive_facts` on the local engine: read inside the running `archiver` container when there is
    one, else the repository volume read with a throwaway container of the db image."""
    running = bool((service := observed.services.get("archiver")) and service.running)
    offsite_running = bool((offsite := observed.services.get("offsite")) and offsite.running)
    if archiver is not None:
        return read_running(engine, archiver, lineage, offsite_running=offsite_running)
    repository = data.find(REPOSITORY_VOLUME)
    if repository is None:
        return ArchiveFacts(lineage=lineage, running=running, status_text=None, offsite_running=offsite_running)
    return read_archive(engine, target.images.db, repository, lineage, running,
                        label=f"{target.env}/{target.project}", owner=target.config.owner,
                        offsite_running=offsite_running)


def restore_into(engine: Engine, data: DataVolumes, into: DataVolumes, target: Target, volume_key: str,
                 request: RestoreRequest) -> Restored:
    """`Archives.restore_archive` on the local engine: a new labelled volume of `into` (the project `target`), then
    the one-off restore from the archive of `data`'s project."""
    repository = data.find(REPOSITORY_VOLUME)
    if repository is None:
        raise ProvisionError(f"the archive volume ({REPOSITORY_VOLUME}) of {data.project_name} is missing: is "
                             f"backup.continuous on?")
    volume = create_volume(engine, into.project_name, volume_key, volume_labels_of(target.config, target.spec),
                           target.config.owner)
    return restore(engine, request, repository=repository, volume=volume, label=f"{target.env}/{target.project}",
                   owner=target.config.owner)
