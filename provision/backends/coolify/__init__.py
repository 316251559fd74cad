"""The Coolify backend: a project becomes a Coolify project, an env one of its environments, and the
stack one compose Service in it. It owns what only it uses: the HTTP API client (`client`)."""

from __future__ import annotations

import httpx

from ...core.config import EnvConfig
from ...core.errors import ConfigError
from ...infra.clock import SYSTEM, Clock
from ...state.layout import BackendFiles
from .backend import CoolifyBackend, Refs
from .client import DEFAULT_MAX_WAIT, CoolifyClient, shared_budget

__all__ = ["CoolifyBackend", "CoolifyClient", "Refs", "create"]


def create(config: EnvConfig, files: BackendFiles, *, clock: Clock = SYSTEM) -> CoolifyBackend:
    """The registry factory: one API client for this run, from the env's credentials; every wait on `clock`."""
    credentials = config.coolify_credentials
    if credentials is None:  # loaded offline (render): any request says what is missing, none is sent
        return CoolifyBackend(CoolifyClient.offline(ConfigError(
            f"{config.relpath}: this command contacts Coolify, which needs COOLIFY_API_URL and COOLIFY_API_TOKEN "
            f"in the environment or in envs/{config.name}.env")), config, clock=clock.monotonic, sleep=clock.sleep,
            wall=clock.time)
    timeout = config.coolify.request_timeout
    # one request budget per process and Coolify address, shared by every env and worker of this run
    budget = shared_budget(credentials.api_url, config.coolify.requests_per_minute)
    client = CoolifyClient.connect(credentials.api_url, credentials.token,
                                   timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)), budget=budget,
                                   max_wait=max(DEFAULT_MAX_WAIT, 4 * timeout), sleep=clock.sleep)
    return CoolifyBackend(client, config, clock=clock.monotonic, sleep=clock.sleep, wall=clock.time)
