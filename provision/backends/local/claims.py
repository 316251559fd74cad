"""Which stacks on the engine this checkout may act on: `ownership`'s rules applied to what the state directory
says of a project (whether the service records it, and the owners `adopt` took over, in the working folder's
adopted.json)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from ...core import names
from ...core.config import EnvConfig
from ...core.errors import ProjectConflict, ProvisionError
from ...core.model import Observed, Target
from ...infra import hints
from ...infra.fsutil import read_json, write_json
from ...state.layout import BackendFiles
from ..base import Adopted
from . import ownership
from .compose import ComposeCLI, service_containers

ADOPTED_FILE = "adopted.json"  # in the working folder: the owners `adopt` took the project's resources over from


@dataclass(frozen=True)
class Claims:
    files: BackendFiles

    def accepted(self, config: EnvConfig, project: str) -> frozenset[str]:
        """The owners whose resources of `project` are this checkout's (`ownership.accepted_owners`)."""
        path = self.files.work(config.name, project) / ADOPTED_FILE
        adopted = read_json(path).get("owners") if path.is_file() else None
        return ownership.accepted_owners(config.owner, recorded=self.files.recorded(config.name, project),
                                         adopted=[str(o) for o in adopted] if isinstance(adopted, list) else ())

    def owned(self, config: EnvConfig, project: str, observed: Observed, owners: frozenset[str]) -> Observed:
        """`observed` when the resources carrying `owners` are this checkout's (a stack an earlier version made
        here noted as taken over at its next apply); ProjectConflict naming the other owner when not."""
        if not owners:
            return observed
        foreign = ownership.foreign_owner(owners, self.accepted(config, project))
        if foreign is not None:
            what = f"compose project {names.compose_project_name(config.name, project)}"
            raise ProjectConflict(ownership.refusal(config.name, project, what, foreign, config.owner))
        if ownership.legacy(owners, config.owner):
            return replace(observed, adopting=(
                f"made by an earlier version without an owner label, and recorded here: taken over as owner "
                f"{config.owner}'s (its containers are recreated with the label; its data volume keeps its labels)"))
        return observed

    def mine(self, config: EnvConfig, project: str, owners: frozenset[str]) -> bool:
        """Whether resources of `project` carrying `owners` are this checkout's."""
        return ownership.foreign_owner(owners, self.accepted(config, project)) is None

    def taken(self, config: EnvConfig, project: str, owners: frozenset[str], what: str) -> Observed | None:
        """Another owner's stack is no project of this env: listed (as taken, nothing observed) only under a name
        this checkout declares or records, so that plan and status say why it cannot be provisioned here."""
        if not any(p.name == project for p in config.projects) and not self.files.recorded(config.name, project):
            return None
        foreign = ownership.foreign_owner(owners, self.accepted(config, project)) or ""
        return Observed(exists=False, foreign=ownership.refusal(config.name, project, what, foreign, config.owner))

    def adopt(self, env: str, project: str, owners: Collection[str]) -> None:
        """Record `owners` as taken over, beside those adopted before."""
        adopted = self.files.ensure_work(env, project) / ADOPTED_FILE
        previous = read_json(adopted).get("owners") if adopted.is_file() else []
        kept = [str(o) for o in previous] if isinstance(previous, list) else []
        write_json(adopted, {"owners": sorted({*kept, *owners})})

    def adopt_project(self, target: Target, compose: ComposeCLI, label: str, project_name: str) -> Adopted:
        """`LocalBackend.adopt`: the owners the compose project's containers and volumes (`label`) carry are
        recorded as this checkout's in its adopted.json; what was done, nothing when it is this checkout's."""
        containers = service_containers(compose.containers(label))
        volumes = compose.labelled_volumes(label)
        if not containers and not volumes:
            raise ProvisionError(f"no compose project {project_name} (containers or volumes) on this "
                                 f"Docker Engine to adopt for {target.project!r} in env {target.env!r}")
        owners = ownership.owners_of([*(c.labels for c in containers), *volumes.values()])
        accepted = self.accepted(target.config, target.project)
        taken = sorted(owners - accepted)
        if not taken:
            return Adopted(changed=False)
        self.adopt(target.env, target.project, taken)
        whose = ", ".join(f"owner {o}" if o else "no owner id" for o in taken)
        done = [f"adopted compose project {project_name} ({len(containers)} container(s), "
                f"{len(volumes)} volume(s); {whose}): it is this checkout's now"]
        if containers:
            done.append(f"{hints.command('provision', env=target.env, project=target.project)} recreates its containers with "
                        f"owner {target.config.owner or '(none)'}'s label; its volumes keep their labels")
        secrets = self.files.secrets_path(target.env, target.project)
        if not secrets.is_file():
            done.append(f"it needs the secrets of the checkout that made it: copy that checkout's "
                        f"<state>/{target.env}/{target.project}/secrets.env to {secrets} before provision")
        return Adopted(changed=True, messages=tuple(done))
