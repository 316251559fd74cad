"""The lock every runner sees: a shared variable of this owner's lock project per project (`lock.<env>.<project>`)
and per server being placed on (`place.<server uuid>`), its holder in its comment, renewed by a heartbeat while
held, broken when stale."""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ...core.config import EnvConfig
from ...core.errors import (
    AmbiguousResult,
    BackendUnavailable,
    CoolifyNotFound,
    LockLost,
    LockTimeout,
    ProvisionError,
)
from ...core.model import Handle, LockInfo, Target
from ...infra import hints, interrupts
from ...infra.clock import utc_now
from ...state.records import holder_record
from . import marks
from .context import Context
from .finder import Finder
from .models import LockVariable, Refs

MIN_LOCK_TTL = 600.0  # seconds a lock whose comment names no expiry (edited by hand) lives from its creation
LOCK_POLL = (1.0, 5.0)  # seconds between two looks at a lock another run holds: the first, the longest


@dataclass(frozen=True)
class LockTiming:
    """A held lock is renewed by a heartbeat (its comment gets a new expiry), so it never expires under a live run
    however long a data verb takes, and a run that died stops blocking the others `ttl` after its last renewal.
    `ttl`: seconds from a renewal to the expiry it records; `renew`: seconds between two renewals; `retry`: between
    two tries of a failed one; `margin`: a holder changes nothing within this many seconds of its recorded expiry
    (clock skew between runners, a renewal that came too late): past it the lock counts as lost for good."""

    ttl: float = 300.0
    renew: float = 60.0
    retry: float = 10.0
    margin: float = 60.0


DEFAULT_TIMING = LockTiming()


class Locks:
    """This owner's shared locks, held per thread (re-entrant within one run's thread)."""

    def __init__(self, ctx: Context, finder: Finder, timing: LockTiming = DEFAULT_TIMING) -> None:
        self.ctx, self.finder, self.timing = ctx, finder, timing
        self.client, self.config, self.owner = ctx.client, ctx.config, ctx.owner
        self._held = threading.local()  # this thread's shared locks

    # Coolify answers 409 to a second project variable of one key, and the table's unique (key, project_id,
    # team_id) index holds even for two racing creates (the loser gets a 500)
    # (app/Http/Controllers/Api/SharedEnvironmentVariablesController.php, createEnv;
    # database/migrations/2024_01_23_113129_create_shared_environment_variables_table.php). So creating it is an
    # atomic "take the lock if free", and its comment records the holder in that same request.
    def lock_project(self, *, create: bool) -> str | None:
        """The uuid of this owner's lock project; created when `create`. Two runners may create it at the same
        time (project names are not unique): every runner then uses the oldest."""
        name = self.ctx.lock_project_name

        def oldest() -> str | None:
            found = self.finder.lock_project_in(self.finder.projects())
            return found.uuid if found is not None else None

        found = oldest()
        if found is not None or not create:
            return found
        for _ in range(3):
            try:
                self.client.request_object("POST", "/projects",
                                           body={"name": name, "description": self.lock_project_description()},
                                           keys=("uuid",))
            except AmbiguousResult as exc:
                # looked for (by name and this owner's mark) like any create, never sent twice while it may land
                if self.finder.made_anyway(exc, oldest, f"project {name!r}") is None:
                    continue  # Coolify answered and made nothing: a second create is safe
            found = oldest()  # another runner's may be older: every runner uses the oldest
            if found is not None:
                return found
            break
        raise BackendUnavailable(f"could not create the Coolify project {name!r} that holds provision's locks")

    def lock_project_description(self, server_uuid: str | None = None) -> str:
        """The lock project's description: this owner's marker and, once chosen, the server for new services."""
        return marks.lock_project_description(self.owner, server_uuid)

    def remember_server(self, lock_project: str | None, server_uuid: str) -> None:
        """Record on the lock project the server chosen for new services (when coolify.server is unset), so
        that later creates skip GET /servers; a failure to record costs only that request next time."""
        if lock_project is None:
            return
        with contextlib.suppress(ProvisionError):
            self.client.request("PATCH", f"/projects/{lock_project}",
                                body={"description": self.lock_project_description(server_uuid)})

    @staticmethod
    def lock_key(target: Target) -> str:
        # Coolify keys allow letters, digits, '_' and '.'; names are [a-z0-9-]: '-' -> '_' stays unambiguous
        return f"lock.{target.env}.{target.project}".replace("-", "_")

    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> contextlib.AbstractContextManager[None]:
        """The project's lock every runner sees, held until the block ends (renewed meanwhile: `_hold`);
        re-entrant within one thread, so a data verb's own converge does not wait for its own lock."""
        where = f"project {target.project!r} in env {target.env!r}"
        hint = (f"{hints.command('lock', env=target.env)} shows holders, "
                f"{hints.command('unlock', '--yes', env=target.env, project=target.project)} breaks a stale one")
        return self.hold(self.lock_key(target), known, timeout=timeout, where=where, hint=hint,
                          shown=(target.env, target.project))

    def holds_lock(self, target: Target) -> bool:
        """True while this thread holds the project's lock (and has not lost it)."""
        entry = self.held().get(self.lock_key(target))
        return entry is not None and self.problem(entry) is None

    def held(self) -> dict[str, HeldLock]:
        """This thread's held locks by key."""
        held: dict[str, HeldLock] | None = getattr(self._held, "locks", None)
        if held is None:
            held = self._held.locks = {}
        return held

    @contextlib.contextmanager
    def hold(self, key: str, known: Handle | None, *, timeout: float, where: str, hint: str,
              shown: tuple[str, str]) -> Iterator[None]:
        """Hold the shared variable `key` of this owner's lock project for the block: taken (waiting up to
        `timeout` s), renewed every `lock_renew` s by a heartbeat thread, released at the end. Already held by
        this thread: nothing more (the outer block releases it). While held, `_check_locks` stops every change
        once a renewal failed for too long (LockLost); the heartbeat stops before the release."""
        held = self.held()
        if key in held:
            yield
            return
        self.ctx.check_version()  # every change takes a lock first: the one place a change asks GET /version
        recorded = known.lock_project if isinstance(known, Refs) and known.lock_project else None
        project_uuid = recorded or str(self.lock_project(create=True))
        try:
            variable, since, expires, take = self.acquire_key(project_uuid, key, timeout, where=where, hint=hint,
                                                               shown=shown)
        except CoolifyNotFound:
            if recorded is None:
                raise
            project_uuid = str(self.lock_project(create=True))  # the recorded one was deleted: find or make it
            variable, since, expires, take = self.acquire_key(project_uuid, key, timeout, where=where, hint=hint,
                                                               shown=shown)
        entry = HeldLock(key, where, project_uuid, variable, since, expires, timeout, take)
        heartbeat = threading.Thread(target=self.heartbeat, args=(entry,), name=f"lock-heartbeat-{key}", daemon=True)
        held[key] = entry
        heartbeat.start()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            held.pop(key, None)
            entry.stop.set()
            heartbeat.join(timeout=self.config.coolify.request_timeout + 5)  # no renewal after the release
            try:
                self.client.request("DELETE", f"/projects/{project_uuid}/envs/{variable}", ok=(200, 404),
                                    guarded=False)
            except ProvisionError:
                if not failed:
                    raise  # else the run's own error is the one to show; the lock expires by itself

    def acquire(self, project_uuid: str, target: Target, timeout: float) -> int:
        """Take the project's lock variable once (no heartbeat: `lock` renews what it holds); its id."""
        where = f"project {target.project!r} in env {target.env!r}"
        return self.acquire_key(project_uuid, self.lock_key(target), timeout, where=where, hint="",
                                 shown=(target.env, target.project))[0]

    def acquire_key(self, project_uuid: str, key: str, timeout: float, *, where: str, hint: str,
                     shown: tuple[str, str]) -> tuple[int, float, float, str]:
        """Create the lock variable with the holder in its comment (201: ours; 409: held); (its id, since,
        expiry, the acquisition's nonce). While another run holds it, only look (one GET each time, backing off
        to LOCK_POLL[1] s: the request budget is the run's); a stale one (past its recorded expiry) is broken.
        After a lost answer, a variable whose comment is exactly ours (the nonce included) is ours."""
        deadline = self.ctx.clock() + timeout
        pause = LOCK_POLL[0]
        while True:
            interrupts.check()
            since = self.ctx.wall()
            expires = since + self.timing.ttl
            take = secrets.token_hex(4)
            holder = holder_description(since, expires, take)
            try:
                created = self.client.request("POST", f"/projects/{project_uuid}/envs",
                                              body={"key": key, "value": "held", "comment": holder}, ok=(201, 409))
            except AmbiguousResult:
                created = None
            made = LockVariable.parse(created) if isinstance(created, dict) else None
            if made is not None:
                return made.id, since, expires, take
            while True:
                held = self.variable(project_uuid, key)
                if held is None:
                    break  # released: take it
                if held.comment == holder:
                    return held.id, since, expires, take  # our create went through; its answer was lost
                info = lock_info(held, *shown, now=self.ctx.wall())
                if info.stale:
                    self.client.request("DELETE", f"/projects/{project_uuid}/envs/{held.id}", ok=(200, 404))
                    break
                remaining = deadline - self.ctx.clock()
                if remaining <= 0:
                    raise LockTimeout(
                        f"another run holds the Coolify lock of {where} ({info.holder} since {info.since}; it "
                        f"renews it while it runs, now until {info.expires}); waited {timeout:g} s. Wait for it to "
                        f"finish or raise --lock-timeout" + (f"; {hint}" if hint else "")
                    )
                self.ctx.sleep(min(pause, remaining))
                pause = min(pause * 2, LOCK_POLL[1])

    def heartbeat(self, entry: HeldLock) -> None:
        """Renew `entry` every `lock_renew` s (PATCH its comment with a new expiry:
        app/Http/Controllers/Api/SharedEnvironmentVariablesController.php:208-256, `comment` alone may change)
        until its holder releases it. A renewal that fails is tried again every `lock_retry` s; once the
        lock is within `lock_margin` s of its recorded expiry, or its variable is gone (broken), it is lost for
        good: `_check_locks` then stops the run's changes."""
        due = self.ctx.clock() + self.timing.renew
        # woken at least every second to read the backend's clock (a test's runs faster than real time); a release
        # wakes it at once
        while not entry.stop.wait(min(1.0, max(0.0, due - self.ctx.clock()))):
            if self.ctx.clock() < due:
                continue
            now = self.ctx.wall()
            if now >= entry.expires - self.timing.margin:
                entry.lost = (f"it was not renewed in time (the last renewal recorded {utc_now(entry.expires)}): "
                              f"another run may have broken it as stale")
                return
            expires = now + self.timing.ttl
            try:
                self.client.request("PATCH", f"/projects/{entry.project_uuid}/envs/{entry.variable}",
                                    body={"comment": holder_description(entry.since, expires, entry.take)},
                                    guarded=False,
                                    wait=max(1.0, entry.expires - self.timing.margin - now))
            except CoolifyNotFound:
                entry.lost = (f"its variable is gone: it was broken ({hints.command('unlock')}, or as stale by another "
                              f"run)")
                return
            except ProvisionError as exc:
                entry.failures.append(str(exc))
                due = self.ctx.clock() + self.timing.retry
                continue
            entry.expires, due = expires, self.ctx.clock() + self.timing.renew
            entry.failures.clear()

    def check(self) -> None:
        """LockLost when a lock this thread holds may have expired (a renewal failed for too long, or it was
        broken): nothing more is sent that changes anything, since another run may hold it now."""
        for entry in self.held().values():
            reason = self.problem(entry)
            if reason is not None:
                last = f"; the last renewal failed: {entry.failures[-1]}" if entry.failures else ""
                raise LockLost(f"the Coolify lock of {entry.where} is lost: {reason}{last}. This run sent nothing "
                               f"more that changes anything; the next run converges from what is there")

    def problem(self, entry: HeldLock) -> str | None:
        """Why `entry` may be held by another run now (its heartbeat's finding, or its recorded expiry close by
        this machine's clock: a heartbeat late for any reason), or None while it is surely this run's."""
        if entry.lost is not None:
            return entry.lost
        if self.ctx.wall() >= entry.expires - self.timing.margin:
            return f"it was not renewed in time (it expires at {utc_now(entry.expires)})"
        return None

    def variables(self, project_uuid: str) -> list[LockVariable]:
        """The lock project's lock variables (`lock.…`, `place.…`)."""
        found = self.client.request_list("GET", f"/projects/{project_uuid}/envs", keys=())
        variables = [LockVariable.parse(v) for v in found]
        return [v for v in variables if v is not None and v.key.startswith(("lock.", "place."))]

    def variable(self, project_uuid: str, key: str) -> LockVariable | None:
        """The lock variable `key`, or None while nobody holds it."""
        return next((v for v in self.variables(project_uuid) if v.key == key), None)

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        self.ctx.check_version()  # project shared variables: 4.3.0
        project_uuid = self.lock_project(create=False)
        if project_uuid is None:
            return []
        prefix = f"lock.{config.name}.".replace("-", "_")
        found = []
        for variable in self.variables(project_uuid):
            key = variable.key
            if key.startswith(prefix):
                name = key.removeprefix(prefix).replace("_", "-")
                found.append(lock_info(variable, config.name, name, now=self.ctx.wall()))
        return sorted(found, key=lambda info: info.project)

    def unlock(self, target: Target) -> bool:
        self.ctx.check_version()
        project_uuid = self.lock_project(create=False)
        held = self.variable(project_uuid, self.lock_key(target)) if project_uuid else None
        if held is None:
            return False
        self.client.request("DELETE", f"/projects/{project_uuid}/envs/{held.id}", ok=(200, 404))
        return True


_HOLDER = re.compile(r"holder=(\S+) pid=(\d+) since=(\S+) expires=(\S+)")


@dataclass
class HeldLock:
    """A shared lock this process holds: where its variable is, and the expiry last recorded in Coolify (wall
    clock: what every runner compares). `lost` says why it may be held by another run now (the heartbeat's)."""

    key: str
    where: str
    project_uuid: str
    variable: int
    since: float
    expires: float
    timeout: float
    take: str = ""
    lost: str | None = None
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def holder_description(since: float, expires: float, take: str = "") -> str:
    """A lock variable's comment: who holds it, since when, until when (renewals move `expires`), and `take`: a
    nonce of this acquisition, so that no other taker (another thread of this process in the same second)
    mistakes the comment for its own after a lost answer."""
    who = holder_record()
    return (f"provision lock holder={who['user']}@{who['host']} pid={who['pid']} since={utc_now(since)} "
            f"expires={utc_now(expires)}" + (f" take={take}" if take else ""))


def lock_info(variable: LockVariable, env: str, project: str, *, now: float) -> LockInfo:
    """What a lock variable's comment says of its holder; stale past its expiry (`now`: epoch seconds). A comment
    in no form provision writes (edited by hand) counts from the variable's creation, with the shortest ttl."""
    found = _HOLDER.search(variable.comment)
    if found is None:
        created = epoch(variable.created_at) or now
        return LockInfo(env, project, "unknown (no holder recorded)", utc_now(created),
                        utc_now(created + MIN_LOCK_TTL), now > created + MIN_LOCK_TTL)
    holder, pid, since, expires = found.groups()
    return LockInfo(env, project, f"{holder} pid {pid}", since, expires, (epoch(expires) or 0.0) < now)

