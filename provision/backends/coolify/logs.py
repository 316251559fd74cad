"""Containers' logs through Coolify's `GET /services/{uuid}/logs`: a tail, or followed by asking again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from ...core.errors import CoolifyAPIError, ProvisionError
from ...core.model import Observed, Target
from .context import Context
from .models import Refs

LOG_LINES = 40
FOLLOW_INTERVAL = 2.0  # seconds between two asks for new log lines (`logs --follow`)
FOLLOW_LINES = 500  # lines asked for each time while following


class Logs:
    """The logs of one env's services."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.client = ctx, ctx.client

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: datetime | None = None, follow: bool = False) -> Iterator[str]:
        """Coolify's `GET /services/{uuid}/logs` returns a container's last N lines and nothing newer on its own:
        `since` filters them by their Docker timestamps (`show_timestamps`), and `follow` asks again every
        FOLLOW_INTERVAL seconds, printing only lines newer than the last one printed (a container that writes
        more than FOLLOW_LINES lines between two asks loses the excess)."""
        refs = observed.handle if isinstance(observed.handle, Refs) else None
        if refs is None or refs.service_uuid is None or not observed.exists:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r}")
        names = [service] if service else sorted(observed.services)
        if not follow and since is None:
            yield self.tail(refs.service_uuid, names, tail)
            return
        newest = {name: docker_stamp(since) if since is not None else "" for name in names}
        lines = tail
        while True:
            for name in names:
                data = self.client.request_object("GET", f"/services/{refs.service_uuid}/logs", params={
                    "sub_service_name": name, "lines": lines, "show_timestamps": "true"})
                for line in str(data.get("logs") or "").splitlines():
                    stamp, _, text = line.partition(" ")
                    if stamp and stamp <= newest[name]:
                        continue
                    newest[name] = stamp
                    yield f"{name} | {text}\n"
            if not follow:
                return
            lines = FOLLOW_LINES
            self.ctx.sleep(FOLLOW_INTERVAL)

    def tail(self, uuid: str, names: list[str], tail: int, *, refusals: bool = False) -> str:
        """Each container's last `tail` lines. With `refusals`, a container whose logs Coolify refuses (400
        "Container is not running.", 404 "Container not found.") gets Coolify's message quoted instead."""
        chunks = []
        for name in names:
            try:
                data = self.client.request_object("GET", f"/services/{uuid}/logs",
                                                  params={"sub_service_name": name, "lines": tail})
            except CoolifyAPIError as exc:
                if not refusals or exc.status not in (400, 404):
                    raise
                chunks.append(f"({name}: no logs, Coolify answered {exc.status} {exc.message!r})")
                continue
            text = str(data.get("logs") or "").rstrip()
            chunks.append("\n".join(f"{name} | {line}" for line in text.splitlines()) or f"({name} printed no logs)")
        return "\n".join(chunks)


def docker_stamp(moment: datetime) -> str:
    """`moment` written as Docker writes log timestamps (RFC 3339, nanoseconds, UTC), so the two compare as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")

