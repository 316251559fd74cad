"""The local backend: one compose project per env+project on a Docker Engine.

It owns what only it uses: the `docker compose` v2 CLI (`compose`), and the host port and subnet
leases (`ports`)."""

from __future__ import annotations

from ...core.config import EnvConfig
from ...infra.clock import SYSTEM, Clock
from ...state.layout import BackendFiles
from .backend import LocalBackend
from .facts import LocalHandle

__all__ = ["LocalBackend", "LocalHandle", "create"]


def create(config: EnvConfig, files: BackendFiles, *, clock: Clock = SYSTEM) -> LocalBackend:
    """The registry factory: a LocalBackend on the default Docker Engine, waiting on `clock`."""
    return LocalBackend(files, clock=clock.monotonic, sleep=clock.sleep)
