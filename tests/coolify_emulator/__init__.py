"""A stateful emulator of Coolify's HTTP API v1 (4.3.11) for tests.

Usage::

    from tests.coolify_emulator import CoolifyEmulator

    with CoolifyEmulator(token="secret") as emu:
        client = httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer secret"})

See :class:`CoolifyEmulator` for the test helpers and ``README.md`` for the behaviour.
"""

from .api import ApiRequest, ApiResponse
from .core import aggregate_status
from .emulator import REALISTIC, CoolifyEmulator
from .faults import Fault, RequestLog, RequestRecord, max_in_window
from .proxy import ProxyContext

__all__ = [
    "REALISTIC",
    "ApiRequest",
    "ApiResponse",
    "CoolifyEmulator",
    "Fault",
    "ProxyContext",
    "RequestLog",
    "RequestRecord",
    "aggregate_status",
    "max_in_window",
]
