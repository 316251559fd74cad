"""Backends by name. A backend is one module with a `create(config, files, *, clock)` factory, registered here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from ..infra.clock import SYSTEM, Clock

if TYPE_CHECKING:
    from ..core.config import EnvConfig
    from ..state.layout import BackendFiles
    from .base import Backend

# name -> module; modules are imported only when their backend is used
BACKENDS: dict[str, str] = {
    "local": "provision.backends.local",
    "coolify": "provision.backends.coolify",
}


def create_backend(config: EnvConfig, files: BackendFiles, *, clock: Clock = SYSTEM) -> Backend:
    """The backend `config.backend` names, built from the env's settings, handed its part of the state directory
    and the clock it reads and waits time through."""
    module_name = BACKENDS.get(config.backend)
    if module_name is None:
        raise ConfigError(f"{config.relpath}: backend: unknown backend {config.backend!r} (known: {', '.join(BACKENDS)})")
    module = importlib.import_module(module_name)
    backend: Backend = module.create(config, files, clock=clock)
    return backend
