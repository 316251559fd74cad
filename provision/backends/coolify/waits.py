"""Start, stop and restart (POST .../start|stop|restart, never sent twice blindly) and the waits on Coolify's
stored statuses that tell when they began and ended: polls paced by what moves the status (API-NOTES §17-18)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace

from ...core.errors import AmbiguousResult, BackendUnavailable, CoolifyAPIError, HealthTimeout, ProvisionError
from ...core.model import Endpoints, Handle, Observed, Prepared, Target
from ...infra.probes import http_probe, postgres_probe
from .context import Context
from .finder import Finder
from .logs import LOG_LINES, Logs
from .models import Refs, Service, describe_status, is_up, refresh_marks

START_GRACE = 0.5  # seconds between POST start and the first status poll
# Polling (API-NOTES §17-18): a status Coolify stores moves when a queued job runs (a restart's stop, the start
# activity: seconds after the POST) or when Coolify refreshes the containers' states (Sentinel's push or the
# server check, about once a minute: app/Console/Kernel.php). A poll faster than that learns nothing new and
# spends the run's request budget (client.RequestBudget), so polls back off to a few seconds:
JOB_POLL = (0.5, 2.0)  # what a job moves: the first pause, the longest (x1.5 each poll)
REFRESH_POLL = (0.25, 5.0, 0.15)  # what only a refresh moves: the first pause, the longest, the share of the time
# waited so far (a return comes at most ~15% after the refresh; a minute's wait is 35 requests, not 53)



class Waits:
    """Actions on one env's services and the waits for what they do."""

    def __init__(self, ctx: Context, finder: Finder, logs: Logs) -> None:
        self.ctx, self.finder, self.logs = ctx, finder, logs
        self.client, self.config = ctx.client, ctx.config

    def action(self, refs: Refs, verb: str, *, was_up: bool = False, running: Collection[str] | None = None,
                restart_if_running: bool = False) -> bool:
        """POST start/stop/restart; Coolify's 'already running/stopped' counts as done (returns False).
        `was_up`: the service read up before the POST; `running`: its containers that read running then.

        A restart returns only once Coolify shows it under way: it only queues a job, and until the job
        runs (and while it stops the old containers first) the service keeps reading running:healthy,
        with the old containers still answering (app/Actions/Service/StartService.php, API-NOTES §17).

        A start or restart whose answer is lost (a timeout, a 5xx) is not sent again blindly: its job may be
        queued, and a second one would restart the stack after its success was reported. Coolify is watched for
        the job for a grace period, and the POST is sent again only when nothing shows. With `restart_if_running`,
        a start refused because the service reads running (`POST start` answers 400 when the status contains
        `running`, ServicesController.php:2092-2093; a refresh may have stored it so since the caller looked)
        becomes a restart: what was just PATCHed (a rollback, a put-back) must be what runs afterwards.
        """
        uuid = str(refs.service_uuid)
        path = f"/services/{uuid}/{verb}"
        if verb == "stop":  # a second stop job is harmless: retried like any idempotent call
            try:
                self.client.request("POST", path, idempotent=True)
            except CoolifyAPIError as exc:
                if exc.status == 400 and ("already running" in exc.message or "already stopped" in exc.message):
                    return False
                raise
            return True
        begun = False
        for attempt in range(3):
            try:
                self.client.request("POST", path, idempotent=False)
                break
            except AmbiguousResult:
                if verb == "restart" and (was_up or running is None or running):
                    begun = self.await_begun(uuid, was_up=was_up, running=running, timeout=self.finder.create_grace,
                                              quiet=True)
                    if begun:
                        break
                elif self.started(uuid, timeout=self.finder.create_grace):
                    begun = True  # nothing ran before: what runs from now on is the job's
                    break
            except CoolifyAPIError as exc:
                if exc.status == 400 and "already running" in exc.message:
                    if attempt:
                        break  # an earlier POST whose answer was lost started it after all
                    return self.restart_running(refs) if restart_if_running else False
                raise
        else:
            raise BackendUnavailable(f"Coolify did not take the {verb} of service {uuid}: three answers were lost "
                                     f"and the service never showed the job; retry later")
        if verb == "restart" and not begun:
            self.await_begun(uuid, was_up=was_up, running=running, timeout=self.config.health.timeout)
        elif verb == "start":
            self.ctx.sleep(START_GRACE)  # a queued job: nothing can have moved yet, so the wait's polls start later
        return True

    def restart_running(self, refs: Refs) -> bool:
        """A start Coolify refused as 'already running': restart what runs (restart has no such check,
        ServicesController.php:2286-2287), with what reads running now as the evidence to watch."""
        service = self.finder.get_service(str(refs.service_uuid))
        running = [app.name for app in service.apps if app.state.running] if service else []
        return self.action(refs, "restart", was_up=service is not None and is_up(service), running=running)

    def started(self, uuid: str, *, timeout: float) -> bool:
        """Whether Coolify shows, within `timeout`, a start under way or done: its activity (starting:…) or a
        running container. A start is sent only to a service that reads not running, and a queued job keeps the
        old status (API-NOTES §17), so either is the job's."""
        def moved() -> str | None:
            service = self.finder.get_service(uuid)
            if service is None:
                return None  # deleted meanwhile: the wait that follows says so
            status = service.status or ""
            if status.startswith("starting") or "running" in status or any(app.state.running for app in service.apps):
                return None
            return f"status still {describe_status(service)}"

        return self.ctx.wait_for({"start": moved}, timeout=timeout, interval=JOB_POLL[0], max_interval=JOB_POLL[1]).ok

    def await_begun(self, uuid: str, *, was_up: bool, running: Collection[str] | None = None, timeout: float,
                     quiet: bool = False) -> bool:
        """Poll until Coolify shows the restart under way: evidence that the old containers are gone, so what
        answers afterwards is the new deployment. Evidence is the start activity (the aggregate reads starting:…,
        which only a running start job produces); a container that read running before the POST (`running`) now
        reading not running (StopService stores every container `exited` right after removing them, and that
        stays until the next refresh: app/Actions/Service/StopService.php:49-53, API-NOTES §18); or, for a service
        that read up before the POST, any status that no longer does. A stale not-up status read before the POST
        proves nothing. With nothing running before (`running` empty), nothing old can answer afterwards: no
        evidence is needed, as after a start. Raises HealthTimeout naming the statuses seen, or with `quiet`
        returns False when the restart never showed (True once it did).

        Seen by its activity alone, the containers' stored states may still be the old containers' (no refresh
        ran since they stopped), and would read running:healthy once the activity ends: so it then also waits
        for the next refresh, which moves a container's status or its last_online_at (GetContainersStatus
        stamps every container it finds; app/Actions/Docker/GetContainersStatus.php)."""
        if running is not None and not running and not was_up:
            self.ctx.sleep(START_GRACE)
            return True
        before = set(running or ())
        seen: list[str] = []
        baseline: list[tuple[tuple[str, str, str], ...]] = []

        def begun() -> str | None:
            service = self.finder.get_service(uuid)
            if service is None:
                return None  # deleted meanwhile: the wait that follows says so
            status = describe_status(service)
            if not seen or seen[-1] != status:
                seen.append(status)
            if (service.status or "").startswith("starting"):
                if all(app.state.ready for app in service.apps):
                    baseline.append(refresh_marks(service))  # the old containers' states, maybe: wait for a refresh
                return None
            if any(not app.state.running for app in service.apps if app.name in before):
                return None  # StopService stored the old containers exited
            if was_up and not is_up(service):
                return None  # a refresh stored the old containers stopped
            return f"status still {status}"

        def refreshed() -> str | None:
            service = self.finder.get_service(uuid)
            if service is None or refresh_marks(service) != baseline[0]:
                return None
            return "Coolify has not refreshed the containers' states since the old ones stopped"

        started = self.ctx.clock()
        outcome = self.ctx.wait_for({"restart": begun}, timeout=timeout, interval=JOB_POLL[0], max_interval=JOB_POLL[1])
        if not outcome.ok and quiet:
            return False
        limit = max(timeout, self.config.health.timeout)
        if outcome.ok and baseline:
            outcome = self.ctx.wait_for({"refresh": refreshed}, timeout=max(1.0, limit - (self.ctx.clock() - started)),
                               interval=REFRESH_POLL[0], max_interval=REFRESH_POLL[1], pace=REFRESH_POLL[2])
        if not outcome.ok and baseline:
            raise HealthTimeout(f"Coolify restarted service {uuid} but has not refreshed its containers' states "
                                f"within {limit:.0f} s (statuses seen: {' -> '.join(seen)}); is its server check "
                                f"or Sentinel running?")
        if not outcome.ok:
            raise HealthTimeout(f"Coolify did not begin restarting service {uuid} within {timeout:.0f} s: its status "
                                f"stayed {' -> '.join(seen) or 'unknown'} (is its queue stuck? see the deployment "
                                f"logs in Coolify)")
        return True

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None, answers: Callable[[Target, Refs, Prepared], Endpoints]) -> Endpoints:
        """Until Coolify reports the stack running and it answers. After an action the old containers are gone
        (a restart was seen under way before this; a start or create had none running), so a running status
        from now on is the new deployment's, once Coolify's periodic refresh reports it; it is awaited, so that
        the next run's observation (and `status`) agrees. Without an action, a stack observed up (`settled`)
        needs only its probes. `answers`: the endpoints of the refs found (the backend's `endpoints`)."""
        started = self.ctx.clock()
        refs = handle if isinstance(handle, Refs) else Refs()
        if refs.service_uuid is None:
            refs, _ = self.finder.locate(target, refs)
        uuid = refs.service_uuid
        if uuid is None:
            raise ProvisionError(f"{target.project!r} has no Coolify service to wait for")
        last: list[Service | None] = [None]

        def running() -> str | None:
            service = self.finder.get_service(str(uuid))
            last[0] = service
            if service is None:
                return "the service does not exist (any more)"
            return None if is_up(service) else f"status {describe_status(service)}"

        if settled is None or not settled.ready:
            # only the refresh that reports the new containers moves this (about once a minute): REFRESH_POLL
            outcome = self.ctx.wait_for({"coolify": running}, timeout=timeout, interval=REFRESH_POLL[0],
                               max_interval=REFRESH_POLL[1], pace=REFRESH_POLL[2])
            if not outcome.ok:
                raise self.health_timeout(uuid, last[0], f"{target.project} ({target.env}) is not running on Coolify "
                                                       f"after {outcome.elapsed:.0f} s: {outcome.failures['coolify']}")
            refs = replace(refs, api_fqdn=(last[0].fqdn("api") if last[0] else None) or refs.api_fqdn)
        endpoints = answers(target, refs, prepared)
        probes = {}
        if endpoints.api_url:
            probes["api"] = http_probe(endpoints.api_url, timeout=5)
        if endpoints.db_url and endpoints.db_url_scope == "public":
            probes["db"] = postgres_probe(endpoints.db_url.reveal())
        remaining = max(1.0, timeout - (self.ctx.clock() - started))
        outcome = self.ctx.wait_for(probes, timeout=remaining, interval=0.25, max_interval=1.0)
        if not outcome.ok:
            reasons = "; ".join(f"{k}: {v}" for k, v in sorted(outcome.failures.items()))
            raise self.health_timeout(uuid, last[0], f"{target.project} ({target.env}) runs on Coolify but is "
                                                   f"not answering: {reasons}")
        return endpoints

    def health_timeout(self, uuid: str, service: Service | None, message: str) -> HealthTimeout:
        """A HealthTimeout with the log tail of the failing containers, or Coolify's reason for refusing it."""
        apps = service.apps if service else ()
        failing = [a.name for a in apps if not a.state.ready] or [a.name for a in apps]
        try:
            logs = self.logs.tail(uuid, failing, LOG_LINES, refusals=True)
        except ProvisionError as exc:
            logs = f"(could not read logs: {exc})"
        return HealthTimeout(message, logs=logs)

    def await_status(self, refs: Refs, predicate: Callable[[str], bool], wanted: str, *, timeout: float) -> None:
        def check() -> str | None:
            service = self.finder.get_service(str(refs.service_uuid))
            status = str(service.status) if service else "deleted"
            return None if predicate(status) else f"status {status}"

        outcome = self.ctx.wait_for({"status": check}, timeout=timeout, interval=1.0, max_interval=5.0)
        if not outcome.ok:
            raise HealthTimeout(f"the Coolify service did not become {wanted} in {timeout:.0f} s "
                                f"({outcome.failures['status']})")

    def await_gone(self, uuid: str) -> None:
        """Until the service is deleted (HealthTimeout after health.timeout)."""
        def gone() -> str | None:
            return None if self.finder.get_service(uuid) is None else "still present"

        outcome = self.ctx.wait_for({"gone": gone}, timeout=self.config.health.timeout, interval=0.5, max_interval=5.0)
        if not outcome.ok:
            raise HealthTimeout(f"Coolify did not finish deleting service {uuid} in {self.config.health.timeout:.0f} s")
