"""The PostgreSQL major of an image, asked of this machine's Docker Engine (`docker run … postgres --version`):
for a backend whose own engine cannot run an image (Coolify's API), and usable by any other."""

from __future__ import annotations

import shutil

from ..core.errors import CommandFailed, NotSupported, tail
from .commands import Runner, SubprocessRunner
from .database import major_of

TIMEOUT = 120  # seconds for `postgres --version`, a pull not included


def image_major(image: str, *, why: str, runner: Runner | None = None) -> int:
    """The major of `postgres --version` in `image`, run here; NotSupported (starting with `why`, what cannot
    run the image elsewhere) when this machine has no docker CLI, the image cannot run or does not answer."""
    docker = shutil.which("docker")
    if docker is None:
        raise NotSupported(f"{why} {image!r} to ask its PostgreSQL version, and this machine has no docker CLI to "
                           f"ask it here")
    argv = [docker, "run", "--rm", "--network", "none", "--entrypoint", "postgres", image, "--version"]
    try:
        result = (runner or SubprocessRunner()).run(argv, timeout=TIMEOUT)
    except CommandFailed as exc:  # the runner's timeout
        raise NotSupported(f"`postgres --version` in {image!r} did not answer here in {TIMEOUT} s") from exc
    if result.returncode != 0:
        raise NotSupported(f"cannot run {image!r} on this machine to ask its PostgreSQL version "
                           f"({tail(result.stderr, 2)}): pull it here first")
    return major_of(result.stdout)
