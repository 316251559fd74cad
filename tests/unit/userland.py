"""The userlands the stack's shell scripts run in (the archiver on the db image, the offsite service on the rclone
image): Debian's (dash, mawk, GNU coreutils: the postgres:NN and the test images) and BusyBox's (ash and its
applets: postgres:NN-alpine and the official rclone/rclone image). A script function's unit test runs in both, so a
GNU-only flag or a dash-only construct fails here rather than in an Alpine container.

BusyBox must be installed (scripts/bootstrap.sh installs it): a missing one fails the tests, never skips them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

USERLANDS = ("debian", "busybox")


class Userland:
    """Runs `sh -c SCRIPT` with only this userland's tools on PATH (after the test's own stub directory)."""

    def __init__(self, name: str, tools: str) -> None:
        self.name = name
        self.tools = tools

    @property
    def sh(self) -> str:
        """This userland's sh."""
        found = shutil.which("sh", path=self.tools)
        assert found is not None, f"no sh in {self.tools}"
        return found

    def run(self, script: str, *, stub: Path | None = None, env: Mapping[str, str] | None = None,
            check: bool = True, path: str | None = None) -> subprocess.CompletedProcess[str]:
        """`sh -c script`; PATH: `stub` then the userland's tools, or exactly `path` when given."""
        if path is None:
            path = f"{stub}:{self.tools}" if stub is not None else self.tools
        return subprocess.run([self.sh, "-c", script], capture_output=True, text=True, check=check, timeout=30,
                              env={**(env or {}), "PATH": path})

    def __repr__(self) -> str:
        return self.name


def busybox_tools(root: Path) -> str:
    """A directory of BusyBox's applets, each a link to the busybox binary."""
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox is not installed: scripts/bootstrap.sh installs it (apt-get install busybox)"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True, timeout=30).stdout.split()
    root.mkdir(parents=True, exist_ok=True)
    for applet in applets:
        link = root / applet
        if not link.exists():
            link.symlink_to(busybox)
    return str(root)


@pytest.fixture(scope="session", params=USERLANDS)
def userland(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Userland:
    if request.param == "busybox":
        return Userland("busybox", busybox_tools(tmp_path_factory.mktemp("busybox")))
    return Userland("debian", "/usr/bin:/bin")
