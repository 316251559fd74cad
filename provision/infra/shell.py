"""Commands handed to the user's terminal (`provision psql`): an argv list and the secrets it needs,
which travel in the child's environment only (never in argv, where `ps` shows them)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core.errors import BackendUnavailable
from ..core.secrets import Secret


@dataclass(frozen=True)
class ShellCommand:
    argv: tuple[str, ...]
    environment: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    via: str = ""  # how it reaches the database, for the banner: "this machine's psql" or "the db container"


def run(command: ShellCommand) -> int:
    """Run `command` attached to this terminal (stdin, stdout, stderr) and return its exit code. Ctrl-C
    goes to the child (psql cancels its query) rather than ending this process."""
    environ = {**os.environ, **{key: secret.reveal() for key, secret in command.environment.items()}}
    try:
        child = subprocess.Popen(list(command.argv), env=environ)  # noqa: S603 - argv list, no shell
    except FileNotFoundError as exc:
        raise BackendUnavailable(f"{command.argv[0]!r} was not found on PATH") from exc
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue  # the child got the same SIGINT from the terminal; it decides
