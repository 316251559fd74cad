"""User hooks: executables in `hooks/` run around provision and destroy.

`pre-provision`, `post-provision`, `pre-destroy` and `post-destroy` get the env, project, backend,
action, api_url and db_url in PROVISION_* variables (the real db_url: a post-provision hook is where
migrations run), and of the caller's environment only PATH, HOME, LANG, LC_*, TZ and TMPDIR (HOOK_PASSED):
never a token or credential the process holds (PROVISION_API_TOKEN, COOLIFY_API_TOKEN, ...). Their output
goes to stderr, so stdout keeps carrying only data, with the db_url's password and every secret passed to
them shown as `***`. A pre-hook that fails aborts that project; a post-hook that fails marks it failed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..core.errors import HookFailed, redact
from .report import Reporter

HOOK_NAMES = ("pre-provision", "post-provision", "pre-destroy", "post-destroy")
DEFAULT_TIMEOUT = 900.0
# what a hook gets of the caller's environment (besides the PROVISION_* variables of hook_variables)
HOOK_PASSED = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")
HOOK_PASSED_PREFIXES = ("LC_",)


@dataclass(frozen=True)
class Hooks:
    """The hooks directory of a project root; `enabled=False` is --skip-hooks."""

    directory: Path
    enabled: bool = True
    timeout: float = DEFAULT_TIMEOUT

    def path(self, name: str) -> Path | None:
        path = self.directory / name
        return path if self.enabled and path.is_file() and os.access(path, os.X_OK) else None

    def run(self, name: str, variables: Mapping[str, str], *, reporter: Reporter, project: str,
            secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> bool:
        """Run hook `name` if it exists; True if it ran. Raises HookFailed on failure. The hook's environment
        is `hook_environment(variables, environ)`; in what it prints, the password of PROVISION_DB_URL and
        every value of `secrets` (what the caller passes to hooks of the project's secrets) show as `***`."""
        path = self.path(name)
        if path is None:
            return False
        reporter.step(project, f"running hook {name}")
        environ = hook_environment(variables, os.environ if environ is None else environ)
        hidden = hook_secrets(variables, secrets)
        try:
            proc = subprocess.Popen(  # noqa: S603 - a user-provided executable, argv only
                [str(path)], cwd=self.directory.parent, env=environ, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        except OSError as exc:
            raise HookFailed(f"hook {path} could not start: {exc.strerror}") from exc
        with proc:  # closes the pipe and reaps the child on every path
            pump = threading.Thread(target=_pump, args=(proc.stdout, reporter, project, name, hidden), daemon=True)
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


def _pump(stream: object, reporter: Reporter, project: str, name: str, secrets: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        reporter.step(project, f"{name}: {redact(line.rstrip(), secrets)}")


def hook_environment(variables: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """A hook's whole environment: PATH, HOME, LANG, LC_*, TZ and TMPDIR of `environ` (nothing else of it:
    not the API token a `serve` process holds, nor Coolify's), then `variables` (the PROVISION_* ones)."""
    passed = {key: value for key, value in environ.items()
              if key in HOOK_PASSED or key.startswith(HOOK_PASSED_PREFIXES)}
    passed.setdefault("PATH", os.defpath)
    return {**passed, **variables}


def hook_secrets(variables: Mapping[str, str], secrets: Iterable[str] = ()) -> list[str]:
    """The values to mask in a hook's output: each of `secrets` and the password of PROVISION_DB_URL, each as
    written and percent-encoded (as it appears in a URL) and decoded."""
    values = [s for s in secrets if s]
    try:
        password = urlsplit(variables.get("PROVISION_DB_URL", "")).password
    except ValueError:
        password = None
    if password:
        values.append(password)
    found = set()
    for value in values:
        found.update({value, unquote(value), quote(value, safe="")})
    return sorted((v for v in found if v), key=len, reverse=True)


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
