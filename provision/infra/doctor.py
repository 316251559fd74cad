"""`provision doctor`: checks of an env's backend before a first run, as facts the backend reports.

Each check is one line, `ok|failed|skipped  <check>  <detail>` (a failed one with its fix below it), and in
JSON one object {name, ok, status, detail, fix}. A skipped check counts as passed only when it does not apply;
one that could not run because an earlier check failed is not ok. The report is ok (exit 0) only when every
check is. Nothing here writes state: a backend's checks may create throwaway resources on the server, and
remove them again, but never touch a user's. The Coolify checks are in backends/coolify/doctor.py, the local
ones in backends/local/backend.py (`LocalBackend.doctor`).
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..core.errors import CoolifyAPIError, ProvisionError

if TYPE_CHECKING:
    from ..core.model import Target
    from ..core.render import RenderedStack

Status = Literal["ok", "failed", "skipped"]
WIDTH = 80  # the text report fits a terminal of this many columns
THROWAWAY_PREFIX = "provision-doctor-"  # the throwaway project's name: this and 6 hex digits


@dataclass(frozen=True)
class Check:
    """One check's outcome. `ok` is false for a failure, and for a skip whose check applied but could not run."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    applies: bool = True

    @property
    def ok(self) -> bool:
        return self.status == "ok" or (self.status == "skipped" and not self.applies)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.status, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def failed(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, "failed", detail, fix)


def skipped(name: str, why: str, *, applies: bool, fix: str = "") -> Check:
    """A check not run: `applies=False` when it has nothing to check here (counts as passed), True when it
    could not run (an earlier check failed: counts as failed)."""
    return Check(name, "skipped", why, fix, applies=applies)


def from_error(name: str, exc: ProvisionError, what: str = "") -> Check:
    """A failed check from an error: Coolify's answer as the detail, its hint as the fix."""
    if isinstance(exc, CoolifyAPIError):
        status = f" -> {exc.status}" if exc.status is not None else ""
        path = exc.url.split("/api/v1", 1)[-1] or exc.url
        detail = f"{exc.method} {path}{status}: {exc.message}"
        if exc.errors:
            detail += " (" + _field_errors(exc.errors) + ")"
        return failed(name, f"{what}: {detail}" if what else detail, exc.hint)
    text = str(exc)
    first, _, rest = text.partition("\n")
    return failed(name, f"{what}: {first}" if what else first, rest.strip())


def _field_errors(errors: object) -> str:
    if isinstance(errors, dict):
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in errors.items())
    if isinstance(errors, list):
        return "; ".join(map(str, errors))
    return str(errors)


@dataclass(frozen=True)
class DoctorProbe:
    """What a backend's checks may send, made by the service layer as for a real project, so that the checks
    send what provision sends: the throwaway project's target, its rendered stack, and the SQL (with the user
    it runs as) that every change of a stack runs through the backend (the roles, service.py `_make_roles`)."""

    target: Target
    stack: Callable[[], RenderedStack]  # rendered only when a check needs it
    task_sql: Callable[[], tuple[str, str | None]]

    @property
    def project(self) -> str:
        return self.target.project


@dataclass(frozen=True)
class Report:
    """Every check of one env, in the order they ran."""

    env: str
    backend: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "backend": self.backend, "ok": self.ok,
                "checks": [check.to_dict() for check in self.checks]}

    def text(self) -> str:
        """The checks as aligned lines, wrapped to WIDTH columns; a failure's fix follows it as `fix: ...`."""
        width = min(max((len(c.name) for c in self.checks), default=0), 24)
        indent = " " * (9 + width + 2)
        lines: list[str] = []
        for check in self.checks:
            head = f"{check.status:<8} {check.name:<{width}}  "
            lines += _wrap(check.detail, head, indent)
            if check.fix and not check.ok:
                lines += _wrap(check.fix, indent + "fix: ", indent + "     ")
        verdict = "all checks passed" if self.ok else \
            f"{sum(not c.ok for c in self.checks)} of {len(self.checks)} checks did not pass"
        lines.append(f"{verdict} (env {self.env}, {self.backend} backend)")
        return "\n".join(lines)


def _wrap(text: str, first: str, rest: str) -> list[str]:
    out: list[str] = []
    for i, paragraph in enumerate(text.splitlines() or [""]):
        out += textwrap.wrap(paragraph, WIDTH, initial_indent=first if i == 0 else rest, subsequent_indent=rest,
                             break_on_hyphens=False, break_long_words=True) or [first.rstrip()]
    return out


def throwaway_name() -> str:
    """A fresh throwaway project name: `provision-doctor-` and 6 random hex digits (a valid project name)."""
    return f"{THROWAWAY_PREFIX}{secrets.token_hex(3)}"


def first_failure(checks: Iterable[Check]) -> Check | None:
    return next((c for c in checks if not c.ok), None)
