"""The pure planning step: from what is rendered and what is observed, what provision must do."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum

from .errors import ProvisionError
from .model import Observed
from .render import RenderedStack, normalized


class Action(StrEnum):
    CREATE = "create"
    DRIFT = "drift"  # applied like an update
    UPDATE = "update"
    START = "start"
    NOOP = "no-op"


@dataclass(frozen=True)
class Plan:
    action: Action
    reason: str

    @property
    def changes(self) -> bool:
        return self.action is not Action.NOOP

    @property
    def outcome(self) -> str:
        """The word `plan` shows: a start is an update of what runs."""
        return "update" if self.action is Action.START else self.action.value


def plan(desired: RenderedStack, observed: Observed) -> Plan:
    """Decide what provision must do to make `observed` match `desired`. Pure.

    create: nothing deployed; drift: what runs was changed outside provision (applying fixes
    it); update: deployed config differs; start: same config, something not running;
    no-op: same config and every service running.
    """
    if not observed.exists:
        return Plan(Action.CREATE, "nothing is deployed")
    if observed.drift:
        return Plan(Action.DRIFT, observed.drift)
    if observed.config_hash != desired.config_hash:
        return Plan(Action.UPDATE, "the deployed configuration differs from the rendered one")
    missing = [s for s in desired.services if s not in observed.services]
    if missing:
        return Plan(Action.UPDATE, f"service(s) {', '.join(missing)} are not deployed")
    stopped = [name for name, s in observed.services.items() if not s.running]
    if stopped:
        return Plan(Action.START, f"service(s) {', '.join(sorted(stopped))} are not running")
    return Plan(Action.NOOP, "deployed configuration matches and every service is running")


def unified_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    """A unified diff of two compose texts, normalised (sorted keys, no hash labels) so that only
    real differences show; secrets are never in either text (only ${VAR} references)."""
    try:
        a, b = normalized(before), normalized(after)
    except ProvisionError:
        a, b = before, after
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), before_name, after_name))
