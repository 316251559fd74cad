"""A move to another server: the old service set aside (stopped, renamed, marked `aside-of=`) until --finalize drops
it, or put back when the move is undone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ...core.errors import ProvisionError
from ...core.model import ControlVerb, Observed, Target
from ...core.secrets import Secret
from . import marks
from .context import Context
from .finder import Finder
from .models import Refs, Service
from .variables import read_secrets
from .waits import Waits


class Mover:
    """Setting aside and putting back one env's services. `control` is the backend's control verb (a stop that
    waits until Coolify shows it stopped)."""

    def __init__(self, ctx: Context, finder: Finder, waits: Waits,
                 control: Callable[[Target, Observed, ControlVerb], bool]) -> None:
        self.ctx, self.finder, self.waits, self.control = ctx, finder, waits, control
        self.client = ctx.client

    def set_aside(self, target: Target, observed: Observed, label: str) -> tuple[str, dict[str, Secret]]:
        """Stop the project's service and rename it `<project>-moved-<label>` (marked `aside-of=<project>`), so
        that a new service of the project's name can be made elsewhere while this one keeps its volume; returns
        the new name and the service's secrets (the new stack reuses them). Coolify's own
        POST /services/{uuid}/migrate answers 404 outside its dev mode (API-NOTES §4), hence this."""
        refs = observed.handle if isinstance(observed.handle, Refs) else Refs()
        if not observed.exists or refs.service_uuid is None:
            raise ProvisionError(f"{target.project!r} has no Coolify service in env {target.env!r} to move")
        secrets_ = read_secrets(self.client, refs.service_uuid)
        service = self.finder.get_service(refs.service_uuid)
        name = f"{self.finder.service_name(target)}-moved-{label}"
        # written before the stop: a description that cannot be written stops nothing
        description = replace(marks.parse(service.description if service else ""), aside_of=target.project).render()
        self.control(target, observed, "stop")
        self.client.request("PATCH", f"/services/{refs.service_uuid}", body={"name": name, "description": description})
        return name, secrets_

    def set_aside_services(self, target: Target) -> list[Service]:
        """The project's services set aside by a move (in its Coolify project's env), oldest first."""
        project = self.finder.find_project(target)
        environment = self.finder.find_environment(project.uuid, target.env) if project else None
        return [s for s in (environment.services if environment else ())
                if s.marks.aside_of == target.project and self.finder.ours(s)]

    def put_back(self, target: Target, name: str) -> None:
        """Undo set_aside: the service set aside as `name` gets the project's name back and is started."""
        found = [s for s in self.set_aside_services(target) if s.name == name]
        if not found:
            raise ProvisionError(f"no service {name!r} set aside for {target.project!r} in env {target.env!r}")
        uuid = found[0].uuid
        description = replace(found[0].marks, aside_of=None).render()
        self.client.request("PATCH", f"/services/{uuid}", body={"name": self.finder.service_name(target),
                                                               "description": description})
        # a refresh may store it running before the start (then Coolify refuses it): restarted then
        self.waits.action(Refs(service_uuid=uuid), "start", restart_if_running=True)

    def drop_set_aside(self, target: Target) -> list[str]:
        """Delete every service a move set aside for the project, with its volumes; their names."""
        dropped = []
        for service in self.set_aside_services(target):
            self.client.request("DELETE", f"/services/{service.uuid}", params={"delete_volumes": "true"})
            self.waits.await_gone(service.uuid)
            dropped.append(str(service.name))
        return dropped
