"""The rendered stack checked against the Compose specification before it is applied or pushed.

`docker compose config --quiet` validates a file with the Compose specification's schema (compose-go):
an unknown or misspelt key (`restartt: always`) is refused there, before any container changes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..core.errors import BackendUnavailable, CommandFailed, TemplateError, tail
from .commands import Runner, SubprocessRunner

_PROPERTY = re.compile(r"[Aa]dditional property (\S+) is not allowed")


def check(text: str, *, template: Path, timeout: float = 30.0, runner: Runner | None = None) -> None:
    """Raise TemplateError naming the problem (and the template line of a misspelt key) when `text` is not
    a valid Compose file. Needs the docker CLI with the Compose plugin; without it nothing is checked here
    (the local backend has it; a Coolify runner may not, and Coolify parses the compose itself). Run through
    `runner` (default: a SubprocessRunner), so an interrupt stops it as it stops every other command."""
    docker = shutil.which("docker")
    if docker is None:
        return
    with tempfile.TemporaryDirectory(prefix="provision-check-") as directory:
        path = Path(directory) / "docker-compose.yml"
        path.write_text(text, encoding="utf-8")
        argv = [docker, "compose", "--project-name", "provision-check", "--file", str(path), "config", "--quiet",
                "--no-interpolate"]
        environ = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}
        try:
            result = (runner or SubprocessRunner()).run(argv, timeout=timeout, env=environ)
        except CommandFailed as exc:  # the runner's timeout
            raise BackendUnavailable(f"`docker compose config` did not answer in {timeout:g} s") from exc
    if result.returncode == 0:
        return
    message = tail(result.stderr, 5).replace(str(path), "the rendered compose file")
    where = ""
    found = _PROPERTY.search(message)
    if found:
        key = found.group(1).strip("'\"")
        lines = template.read_text(encoding="utf-8").splitlines()
        line = next((n for n, text_line in enumerate(lines, 1) if re.search(rf"(^|\s){re.escape(key)}\s*:", text_line)),
                    None)
        if line is not None:
            where = f":{line}"
    raise TemplateError(f"{template}{where}: the rendered stack is not valid Compose: {message}")
