"""A stack is running only when every service it was applied with runs."""

from __future__ import annotations

from provision.core.model import Observed, ServiceState


def test_a_stack_with_a_service_missing_is_partial_not_running() -> None:
    """An apply interrupted after the db came up leaves the db alone: that stack is partial."""
    up = ServiceState("running", "healthy")
    only_db = Observed(exists=True, services={"db": up})
    assert only_db.summary() == "running"  # nothing says what it should have
    assert only_db.summary(expected=("db", "api")) == "partial"
    assert Observed(exists=True, services={"db": ServiceState("exited")}).summary(expected=("db", "api")) == "stopped"
    assert Observed(exists=True, services={"db": up, "api": up}).summary(expected=("db", "api")) == "running"
    # a backend that reports only the stack as a whole (Coolify's summary views) is not judged by names
    assert Observed(exists=True, services={"stack": up}).summary(expected=("db", "api")) == "running"
