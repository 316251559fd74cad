"""The Backend protocol: where stacks run. Every verb takes a Target; a backend returns facts and
keeps no memory between calls, so any verb works on a fresh instance given the target and the handle
that `observe` returned (the service keeps it in the project's record).

`Backend` is the core every backend has. What only some backends can do is one `@runtime_checkable`
protocol per ability (Locking, Placing, Moving, ...): the service asks `isinstance(backend, Ability)` and,
where it lacks one, takes its no-op path or refuses with `refusal`'s NotSupported (the one place that says
what the missing ability means). A backend implements an ability whole or not at all: no stubs."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..core.archive_scripts import DrillReport, DrillRequest
from ..core.archiving import ArchiveFacts, OffsiteCopy, Restored, RestoreRequest
from ..core.config import EnvConfig, ProjectSpec
from ..core.errors import NotSupported
from ..core.model import (
    ControlVerb,
    DataCopy,
    Destroyed,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Prepared,
    Target,
    Usage,
)
from ..core.planner import Plan
from ..core.render import RenderedStack
from ..core.secrets import Secret
from ..infra import hints
from ..infra.database import DbAccess
from ..infra.doctor import Check, DoctorProbe


@dataclass(frozen=True)
class Adopted:
    """What `adopt` did: `changed` when something was taken over, `messages` saying what."""

    changed: bool
    messages: tuple[str, ...] = ()


class Backend(Protocol):
    """The core: observe and prepare are reads (a local prepare leases ports); apply, control and destroy change
    things and say what they did."""

    name: str

    def describe(self) -> str:
        """e.g. 'Local Docker provider' or 'Coolify provider (https://coolify.example/api/v1)'."""
        ...

    def load_handle(self, data: Mapping[str, Any]) -> Handle | None:
        """The handle a record stored with `Handle.to_dict()`; None for an empty or foreign one."""
        ...

    def observe(self, target: Target, known: Handle | None) -> Observed:
        """What runs for the project; `known` is the handle recorded last (a hint: the backend stays the truth)."""
        ...

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> Mapping[str, Observed]:
        """Every project of this env with something deployed (containers, a service, or kept data), in as
        few queries as the backend allows; `known`: the recorded handles. With `full`, each observation is
        as complete as `observe`'s (what was applied, drift)."""
        ...

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        """The project's secrets (`stored`: the service's copy) and ports. With `create`, missing secrets are
        generated (`new_secrets`: the service saves them before applying) and ports leased; without,
        only what exists is returned and nothing is written."""
        ...

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> Handle:
        """Create, update or start the stack as `plan` says; returns the handle of what now runs."""
        ...

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        """Block until the stack is up (backend health and host-side probes) or raise HealthTimeout.
        `settled`: an observation made just now with nothing changed since (a no-op), which may spare polling."""
        ...

    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints: ...

    def control(self, target: Target, observed: Observed, verb: ControlVerb, *,
                prepared: Prepared | None = None) -> bool:
        """stop/start/restart; returns whether anything changed (stop of a stopped stack: False). `prepared`: the
        project's secrets, for a backend that hands them to what it runs (local: compose's env file)."""
        ...

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool,
                prepared: Prepared | None = None) -> Destroyed:
        """Remove the stack; keep its data unless `delete_data` (`prepared`: as for `control`). Removing nothing reports changed=False. Where
        volumes can be told apart (local), data an upgrade-db kept (a volume the stack no longer mounts) is not
        deleted: ProjectConflict naming it and what deletes it, before anything is removed (Coolify deletes a
        service's volumes only all together)."""
        ...

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        """The last `tail` lines per service (those written since `since`), secrets redacted; with `follow`,
        then new lines as they come, until the reader stops."""
        ...


@runtime_checkable
class Preflighting(Protocol):
    """Refuses beforehand what it could not run."""

    def preflight(self, target: Target, stack: RenderedStack) -> None:
        """Refuse, before anything is written or created, what the backend could not run (local: an image it
        neither has nor can pull, ImageUnavailable; a limit over the host, LimitsRefused); nothing where the
        backend cannot tell beforehand."""
        ...


@runtime_checkable
class ChecksTemplate(Protocol):
    """Checks a rendered stack beforehand as it would run it (local: `docker compose config`)."""

    def check_template(self, target: Target, stack: RenderedStack) -> None:
        """TemplateError naming the problem (and the template's line of a misspelt key) when `stack` is no file
        this backend could run; changes nothing. A backend without it reports a bad file when it is applied
        (Coolify parses the compose itself)."""
        ...


@runtime_checkable
class Diagnosing(Protocol):
    """Checks what it needs before a first run (`provision doctor`)."""

    def doctor(self, probe: DoctorProbe) -> list[Check]:
        """`provision doctor`: what this backend needs before a first run, checked as provision uses it (with
        `probe`'s throwaway project, stack and SQL). Writes no state; anything it creates on the server is a
        throwaway it removes again; a user's resources are never changed."""
        ...


@runtime_checkable
class Locking(Protocol):
    """Holds a project lock every runner sees (Coolify: on the server). Without it, the state directory's file
    lock serialises every runner that can reach the backend (local)."""

    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> AbstractContextManager[None]:
        """Hold the project's lock where every runner sees it (Coolify: on the server), waiting up to `timeout`
        seconds (LockTimeout naming the holder); a no-op where the state directory's lock already serialises
        every runner that can reach the backend (local). Held, it does not expire however long the block runs
        (Coolify renews it; a run that can no longer renew it gets LockLost at its next change), and taking it
        again in the thread that holds it is a no-op (a data verb's own converge). `known`: the handle observed
        last, which may spare a look-up."""
        ...

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        """The env's project locks held on the backend now."""
        ...

    def unlock(self, target: Target) -> bool:
        """Break the project's lock on the backend (a stale one: its holder died); True if there was one."""
        ...


@runtime_checkable
class Placing(Protocol):
    """Spreads new stacks over several servers."""

    def listed_servers(self, config: EnvConfig) -> tuple[str, ...]:
        """The servers new stacks of this env are spread over (Coolify: coolify.servers); empty when every
        stack has one place."""
        ...

    def place(self, config: EnvConfig, projects: Sequence[ProjectSpec]) -> Mapping[str, str]:
        """Where each of these new projects would go ({project: server}), without creating anything;
        ServersFull when one fits nowhere; empty when `servers` is."""
        ...


@runtime_checkable
class Moving(Protocol):
    """Moves a stack to another server: sets the old one aside, and puts it back or drops it."""

    def set_aside(self, target: Target, observed: Observed, label: str) -> tuple[str, dict[str, Secret]]:
        """Stop the project's stack and set it aside under a name made with `label`, its data kept, so that the
        project can be created again elsewhere; returns that name and the stack's secrets."""
        ...

    def put_back(self, target: Target, name: str) -> None:
        """Undo set_aside: the stack set aside as `name` is the project's again, and started."""
        ...

    def drop_set_aside(self, target: Target) -> list[str]:
        """Delete what moves set aside for the project, data included; the names deleted."""
        ...


@runtime_checkable
class DataVolumes(Protocol):
    """Tells the PostgreSQL majors of an image and of a project's data, and names its volumes (upgrade-db)."""

    def image_major(self, image: str) -> int:
        """The major version of the PostgreSQL server in `image`, from the image itself (`postgres --version`)."""
        ...

    def data_major(self, target: Target, image: str) -> int | None:
        """The major version that wrote the project's data directory (PG_VERSION of the volume its stack
        mounts), read with `image`; None when the project has no data yet."""
        ...

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        """The name of the project's volume of compose key `volume_key`, None when it has none. A major upgrade
        never writes the old data volume: the stack moves to a new key (the record's db_volume) and the old
        volume is kept, untouched, until --finalize or a --rollback back to it."""
        ...


@runtime_checkable
class DroppingVolumes(Protocol):
    """Deletes one volume of a project apart from its stack (Coolify deletes a service's volumes only with it)."""

    def drop_kept(self, target: Target, volume_key: str) -> str | None:
        """Delete the project's volume of compose key `volume_key`, one its stack no longer mounts (the old data
        after upgrade-db --finalize, the new volume after --rollback); its name, None when it was gone already."""
        ...


@runtime_checkable
class InContainer(Protocol):
    """Runs a command inside a project's running container, attached to this terminal (psql, pg_dump)."""

    def exec_argv(self, target: Target, service: str, command: list[str], *, env_names: tuple[str, ...] = (),
                  tty: bool = False) -> list[str]:
        """The argv that runs `command` inside the service's running container, passing the variables
        `env_names` from the caller's environment (so secrets stay out of argv); ProvisionError saying why
        where the backend cannot run a command in a container."""
        ...


@runtime_checkable
class RunsSql(Protocol):
    """Runs SQL in the project's db container as a superuser or a role (the roles, a rotation). Apart from
    InContainer: Coolify runs it as a one-off task, with no terminal for a client tool."""

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        """Run `sql` with psql inside the project's running db container, as `user` (default: the bootstrap
        superuser, POSTGRES_USER) over the local socket (no password, no published port); psql's unaligned
        output, ProvisionError quoting psql on failure. Callers put no plaintext secret in `sql` (Coolify shows a task's command to read tokens).
        `purpose`: a short name of what it is for (`roles`, `rotate-password`), where the backend shows one."""
        ...


@runtime_checkable
class StoresSecrets(Protocol):
    """Keeps its own copy of a project's secrets (Coolify's service variables): the service keeps a copy only
    while no stack holds them (after a destroy that kept the data)."""

    def store_secrets(self, target: Target, observed: Observed, secrets: Mapping[str, Secret]) -> None:
        """Make the backend's own copy of the project's secrets these values (rotation), (Coolify's service variables); the stack is re-applied afterwards."""
        ...


@runtime_checkable
class Metering(Protocol):
    """Tells what running containers cost."""

    def usage(self, config: EnvConfig, projects: Collection[str] | None) -> Mapping[str, Mapping[str, Usage]]:
        """What the containers of `projects` (None: every project of the env) cost now, per project and service (memory used and limit, CPU,
        uptime, OOM kills, restarts), in one sweep of the engine; empty where the backend cannot tell."""
        ...


@runtime_checkable
class Adopting(Protocol):
    """Takes over a project's resources made without this env's owner id."""

    def adopt(self, target: Target) -> Adopted:
        """Take over the project's same-named resources made without this env's owner id (a shared server);
        returns what was done (changed False when there was nothing to adopt)."""
        ...


@runtime_checkable
class Archives(Protocol):
    """Reads a project's continuous archive (the archiver in its stack writes it): `backups`, and the window every
    restore --to-time checks first. How a backend restores from it is one of the two abilities below."""

    def archive_facts(self, target: Target, observed: Observed, lineage: str) -> ArchiveFacts:
        """What the repository holds for `lineage` (a data volume's compose key): the archiver's status.json, each
        complete base backup's backup_info, and whether the archiver container runs now; changes nothing."""
        ...


@runtime_checkable
class RestoresArchive(Protocol):
    """Restores a point in time from the archive with a one-off container into a new data volume, of the project
    or of another (restore --to-time, clone --at, reset --at, verify): local."""

    def restore_archive(self, target: Target, volume_key: str, request: RestoreRequest, *,
                        into: Target | None = None) -> Restored:
        """Create the data volume of compose key `volume_key` of `into` (default: `target` itself; another project for
        a clone), refused when it exists, and restore `request` from `target`'s archive into it with a one-off
        container (nothing else is touched), PostgreSQL stopped cleanly at the end; CommandFailed with recovery's
        log when it fails (the new volume is left for the caller to drop)."""
        ...


@runtime_checkable
class RestoresInStack(Protocol):
    """Restores a point in time inside the project's own stack (Coolify, which runs no one-off container): the
    service renders the stack on a new data volume key with a one-shot `restore` service the db depends on
    (core/render.py restore_context) and applies it; the backend then reads what that service reported."""

    def restore_outcome(self, target: Target, observed: Observed, volume_key: str) -> Restored:
        """What the one-shot restore into the data volume of compose key `volume_key` reported (kept in the
        repository); CommandFailed with its output (recovery's log tail) when it failed, ProvisionError when it
        reported nothing (it did not run)."""
        ...


@runtime_checkable
class DrillsInStack(Protocol):
    """Runs a restore drill (verify) inside the project's own stack, beside the running db and never touching it
    (Coolify, which runs no one-off container and recreates every container when a changed compose is pushed): the
    archiver restores the archive into a scratch directory of the repository volume, checks the copy there and
    removes it (templates/drill.sh)."""

    def drill_archive(self, target: Target, observed: Observed, request: DrillRequest, *,
                      timeout: float) -> DrillReport:
        """Restore `request` in the stack, check the copy (the marker's rows, the sample read again, amcheck, every
        table's row count) and remove it, within `timeout` seconds; what it found. CommandFailed with its output
        when the restore or a check failed, ProvisionError when no report came."""
        ...


@runtime_checkable
class RestoresDumps(Protocol):
    """Starts a one-off PostgreSQL server of the project's db image on a NEW data volume (restore --from), so a dump
    is restored beside the running stack, which keeps serving its own data until the service switches it over."""

    def scratch_server(self, target: Target, volume_key: str, *, image: str, admin: str, dbname: str,
                       password: Secret, timeout: float) -> AbstractContextManager[DbAccess]:
        """Create the data volume of compose key `volume_key` (refused when it exists), initialise it as the stack's
        db would (the image's own entrypoint: `admin` the bootstrap superuser with `password`, database `dbname`),
        and serve it to the client tools on its socket only, no network, tuned for a bulk load that needs no crash
        safety of its own (wal_level=minimal: a table made in the restore's one transaction is written, not
        WAL-logged). On leaving, the server is stopped cleanly (a checkpoint) and its container removed; an error
        inside, or an unclean stop, removes the container and leaves the new volume for the caller to drop."""
        ...


@runtime_checkable
class OffsiteCopies(Protocol):
    """Reads the copies of a project's archive in its backup.offsite store (one per database cluster) and pulls
    one into the repository volume, where restore --to-time reads it (a lost host's data)."""

    def offsite_copies(self, target: Target, lineage: str) -> list[OffsiteCopy]:
        """The store's copies of `lineage` (a data volume's compose key); changes nothing."""
        ...

    def pull_offsite(self, target: Target, lineage: str, system_identifier: str) -> str:
        """Copy the store's copy of `lineage` made by cluster `system_identifier` into the repository volume; the
        lineage it is read as there (`offsite-<system identifier>`)."""
        ...


@runtime_checkable
class CopiesRunningData(Protocol):
    """Copies a running project's data by reflink for a new branch (local with local.data_root, issue 23)."""

    def reflink_refusal(self, source: Target, branch: Target) -> str | None:
        """None when `source`'s data can be copied by reflink for a new `branch`; else why not, in a phrase."""
        ...

    def copy_running(self, source: Target, branch: Target, *, sql: str | None = None,
                     replace: bool = False) -> DataCopy:
        """Copy the running `source`'s data into the data volume `branch` will be created on, by reflink inside
        PostgreSQL's backup mode: the source keeps serving. `sql` runs in the copy as its superuser before
        anything can connect to it (the masking script; the roles' new passwords). The branch's own secrets
        are the service's to set (its roles are made again when it is created). With `replace` (a reset of a
        stopped branch), its data is swapped for the new copy once that is whole."""
        ...

    def own_disk(self, target: Target) -> int | None:
        """Bytes of the project's data that no other project shares (a reflink copy's own blocks), None where
        it cannot tell (its data is not in a directory of this machine)."""
        ...


_REFUSALS: dict[type[Any], Callable[[EnvConfig, str], str]] = {
    OffsiteCopies: lambda config, project: (
        f"restoring from backup.offsite's store is built for the local backend only so far: the {config.backend} "
        f"backend of env {config.name!r} copies {project!r}'s archive there, but provision cannot pull it back yet"),
    InContainer: lambda config, project: (
        f"Coolify's API cannot run a command in {project!r}'s db container: publish the database "
        f"(variables.db_public_port in envs/{config.name}.yml, then {hints.command('provision', env=config.name)}) "
        f"and this machine's own psql connects to it"),
    DroppingVolumes: lambda config, project: (
        "Coolify's API deletes a service's volumes only with the service "
        "(DELETE /services/{uuid}?delete_volumes=true, i.e. destroy --delete-data)"),
    Archives: lambda config, project: (
        f"the {config.backend} backend of env {config.name!r} cannot read {project!r}'s continuous archive"),
    RestoresArchive: lambda config, project: (
        f"clone --at, reset --at and verify restore the archive with a one-off container, which the "
        f"{config.backend} backend of env {config.name!r} cannot run (Coolify's API has no such call): "
        f"restore --to-time restores {project!r} in its own stack there"),
    Placing: lambda config, project: (
        f"{config.relpath}: move needs coolify.servers (several servers to move between); this env has one "
        f"place for every stack"),
}


def refusal(backend: Backend, ability: type[Any], config: EnvConfig, project: str) -> NotSupported:
    """The one NotSupported for `backend` lacking `ability` (for `project` of `config`'s env): what it cannot do
    and what works instead."""
    said = _REFUSALS.get(ability)
    if said is not None:
        return NotSupported(said(config, project))
    return NotSupported(f"the {backend.name} backend cannot do this ({ability.__name__}) for {project!r}")
