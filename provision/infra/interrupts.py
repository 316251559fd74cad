"""Interrupts: Ctrl-C or SIGTERM stop the work, kill child processes, release locks, exit 130.

The main thread gets KeyboardInterrupt (SIGTERM is turned into one); it sets CANCELLED so that
worker threads stop too: their subprocesses are terminated and their waits end with Interrupted.
Locks are OS file locks, released on exit; state files are written atomically; so the next run
finds either what was there before or what was finished, and converges from there.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from ..core.errors import Interrupted

__all__ = ["CANCELLED", "Interrupted", "check", "install_signal_handlers", "sleep"]

CANCELLED = threading.Event()


def check() -> None:
    """Raise Interrupted if the run is being interrupted."""
    if CANCELLED.is_set():
        raise Interrupted("interrupted")


def sleep(seconds: float) -> None:
    """time.sleep that ends early, with Interrupted, when the run is interrupted."""
    if CANCELLED.wait(seconds):
        raise Interrupted("interrupted")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt in the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
