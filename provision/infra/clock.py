"""The one timestamp format of records, history, lock notes and file names: UTC, to the second."""

from __future__ import annotations

import time


def utc_now(epoch: float | None = None) -> str:
    """The one timestamp format of records, history and lock notes: UTC, ISO 8601, seconds (of `epoch`,
    default now)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def utc_stamp() -> str:
    """The same instant for file names (no ':'): 20261130T101500Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
