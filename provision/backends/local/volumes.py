"""One project's volumes on the engine, told apart by what its rendered compose file (in the working folder)
declares: the data volume its db mounts, and data an upgrade-db kept (a volume the stack no longer declares)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .engine import Engine, compose_key, sdk_errors


@dataclass(frozen=True)
class DataVolumes:
    engine: Engine
    project_name: str  # the compose project's name: its volumes are `<project_name>_<key>`
    label: str  # the label filter that selects them
    compose_file: Path

    def all(self) -> list[Any]:
        """The SDK's volumes of the project."""
        return self.engine.volumes(self.label)

    def declared(self) -> list[str]:
        """The volume keys of the project's rendered compose file, the db's mounts first; empty without one."""
        try:
            loaded = yaml.safe_load(self.compose_file.read_text())
        except (OSError, yaml.YAMLError):
            return []
        if not isinstance(loaded, dict) or not isinstance(loaded.get("volumes"), dict):
            return []
        services = loaded.get("services")
        db = services.get("db") if isinstance(services, dict) else None
        mounts = db.get("volumes") if isinstance(db, dict) else None
        sources = {str(m.get("source") if isinstance(m, dict) else str(m).split(":")[0])
                   for m in (mounts if isinstance(mounts, list) else [])}
        return sorted((str(key) for key in loaded["volumes"]), key=lambda key: key not in sources)

    def data_volume(self) -> str | None:
        """The project's data volume: the one its rendered stack declares (that its db mounts, if several), else,
        without a compose file, its labelled volume (`<project>_pgdata` first)."""
        declared = self.declared()
        keys = {compose_key(v, self.project_name): str(v.name) for v in self.all()}
        if declared:
            return next((keys[key] for key in declared if key in keys), None)
        found = sorted(keys.values())
        preferred = [name for name in found if name.endswith("_pgdata")]
        return (preferred or found)[0] if found else None

    def kept(self, volumes: Sequence[Any]) -> list[str]:
        """The names of `volumes` that the rendered stack does not declare: data an upgrade-db kept (or the other
        volume of an upgrade a run left half done); none without a compose file that declares one."""
        declared = self.declared()
        return sorted(str(v.name) for v in volumes if declared and compose_key(v, self.project_name) not in declared)

    def find(self, volume_key: str) -> str | None:
        """The name of the volume of compose key `volume_key`, None when there is none."""
        return next((str(v.name) for v in self.all() if compose_key(v, self.project_name) == volume_key), None)

    def remove(self, volume_key: str) -> str | None:
        """Remove the volume of compose key `volume_key`, after any helper container left on it; its name, None
        when there is none."""
        for volume in self.all():
            if compose_key(volume, self.project_name) == volume_key:
                self.engine.remove_helpers([str(volume.name)])
                with sdk_errors(f"remove volume {volume.name}"):
                    volume.remove(force=True)
                return str(volume.name)
        return None
