"""provision: every project its own PostgreSQL + API stack, per environment, on Docker or Coolify.

The public API::

    from provision import Workspace
    provisioner = Workspace(Path(".")).provisioner("staging")   # the service layer for one env
    result = provisioner.provision("shop")                      # ProjectResult: api_url, db_url, changed

Everything raised derives from `ProvisionError` (see `provision.core.errors`). `docs/architecture.md` maps
the modules. Names are imported lazily, so `import provision` stays cheap for `invoke --list`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.errors import ProvisionError
    from .core.results import PlanItem, ProjectResult, RunSummary
    from .service import Provisioner
    from .service.requests import ProjectRequests
    from .service.workspace import Workspace

__all__ = ["PlanItem", "ProjectRequests", "ProjectResult", "Provisioner", "ProvisionError", "RunSummary", "Workspace"]

_WHERE = {"ProvisionError": "core.errors", "ProjectRequests": "service.requests", "PlanItem": "core.results",
          "ProjectResult": "core.results", "RunSummary": "core.results", "Provisioner": "service",
          "Workspace": "service.workspace"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'provision' has no attribute {name!r}")
