"""User hooks: executables in `hooks/` run around provision and destroy.

`pre-provision`, `post-provision`, `pre-destroy` and `post-destroy` get the env, project, backend,
api_url and db_url in PROVISION_* variables (the real db_url: a post-provision hook is where
migrations run). Their output goes to stderr, so stdout keeps carrying only data. A pre-hook that
fails aborts that project; a post-hook that fails marks it failed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import HookFailed
from .report import Reporter

HOOK_NAMES = ("pre-provision", "post-provision", "pre-destroy", "post-destroy")
DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Hooks:
    """The hooks directory of a project root; `enabled=False` is --skip-hooks."""

    directory: Path
    enabled: bool = True
    timeout: float = DEFAULT_TIMEOUT

    def path(self, name: str) -> Path | None:
        path = self.directory / name
        return path if self.enabled and path.is_file() and os.access(path, os.X_OK) else None

    def run(self, name: str, variables: Mapping[str, str], *, reporter: Reporter, project: str) -> bool:
        """Run hook `name` if it exists; True if it ran. Raises HookFailed on failure."""
        path = self.path(name)
        if path is None:
            return False
        reporter.step(project, f"running hook {name}")
        environ = {**os.environ, **variables}
        try:
            proc = subprocess.Popen(  # noqa: S603 - a user-provided executable, argv only
                [str(path)], cwd=self.directory.parent, env=environ, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        except OSError as exc:
            raise HookFailed(f"hook {path} could not start: {exc.strerror}") from exc
        with proc:  # closes the pipe and reaps the child on every path
            pump = threading.Thread(target=_pump, args=(proc.stdout, reporter, project, name), daemon=True)
            pump.start()
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                raise HookFailed(f"hook {path} did not finish within {self.timeout:g} s and was killed") from exc
            except BaseException:
                proc.terminate()
                proc.wait(timeout=10)
                raise
            finally:
                pump.join(timeout=5)
        if code != 0:
            raise HookFailed(f"hook {path} exited with status {code}")
        return True


def _pump(stream: object, reporter: Reporter, project: str, name: str) -> None:
    for line in stream:  # type: ignore[attr-defined]
        reporter.step(project, f"{name}: {line.rstrip()}")


def hook_variables(*, env: str, project: str, backend: str, action: str, api_url: str | None,
                   db_url: str | None) -> dict[str, str]:
    return {
        "PROVISION_ENV": env,
        "PROVISION_PROJECT": project,
        "PROVISION_BACKEND": backend,
        "PROVISION_ACTION": action,
        "PROVISION_API_URL": api_url or "",
        "PROVISION_DB_URL": db_url or "",
    }
