"""Branches (issue 23), the pure parts: lifetimes, the mark a record and the labels carry, which masking
script a branch gets, and that a branch is no pending change for plan --detailed-exitcode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from provision.core.branches import NEVER, BranchMark, epoch_of, parse_ttl
from provision.core.config import load_env
from provision.core.errors import ConfigError
from provision.core.results import PlanItem
from provision.service.branching import mask_script


def test_a_lifetime_is_days_hours_minutes_or_seconds() -> None:
    assert parse_ttl("3d") == 3 * 86400 and parse_ttl("1d12h") == 36 * 3600 and parse_ttl("90m") == 5400
    assert parse_ttl("30s") == 30
    for bad in ("", "3", "3w", "0m", "-1d"):
        with pytest.raises(ConfigError, match="lifetime"):
            parse_ttl(bad)


def test_the_mark_round_trips_through_the_record_and_the_labels() -> None:
    mark = BranchMark(parent="shop", parent_env="dev", taken_at="2026-12-08T00:00:00Z",
                      expires_at="2026-12-11T00:00:00Z", masked_with="/x/mask.sql")
    assert BranchMark.from_dict(mark.to_dict()) == mark
    seen = BranchMark.from_labels(mark.labels())
    assert seen == replace(mark, masked_with=None)  # the labels carry no path of this machine
    assert BranchMark.from_labels(mark.volume_labels()) == BranchMark("shop", "dev", "")  # a volume: the parent only
    forever = replace(mark, expires_at=None)
    assert forever.labels()["io.provision.expires"] == NEVER and BranchMark.from_labels(forever.labels()) == \
        replace(forever, masked_with=None)
    assert BranchMark.from_dict({}) is None and BranchMark.from_labels({"io.provision.project": "x"}) is None


def test_a_branch_expires_at_its_time() -> None:
    mark = BranchMark("shop", "dev", "2026-12-08T00:00:00Z", expires_at="2026-12-08T01:00:00Z")
    at = epoch_of("2026-12-08T01:00:00Z")
    assert not mark.expired(at - 1) and mark.expired(at) and not replace(mark, expires_at=None).expired(at * 2)


def test_a_branch_is_no_pending_change() -> None:
    assert not PlanItem("shop-pr-1", "dev", "local", "branch", "a branch of 'shop'").changes
    assert PlanItem("old", "dev", "local", "orphan", "no longer declared").changes


def _env(root: Path, extra: str) -> None:
    (root / "envs").mkdir(exist_ok=True)
    (root / "envs" / "dev.yml").write_text("backend: local\nimages:\n  db: postgres:15\n  api: postgrest/postgrest:v12\n"
                                           + extra)


def test_the_masking_script_a_branch_gets(tmp_path: Path) -> None:
    (tmp_path / "mask.sql").write_text("update users set email = null;\n")
    _env(tmp_path, "branches:\n  prod_like: true\n  ttl: 3d\n")
    prod = load_env("dev", tmp_path, environ={})
    assert prod.branches.ttl == "3d"
    with pytest.raises(ConfigError, match="prod-like"):
        mask_script(prod, prod, None, no_mask=False)
    assert mask_script(prod, prod, None, no_mask=True) is None
    assert mask_script(prod, prod, "mask.sql", no_mask=False) == (tmp_path / "mask.sql").resolve()
    with pytest.raises(ConfigError, match="exclude"):
        mask_script(prod, prod, "mask.sql", no_mask=True)
    with pytest.raises(ConfigError, match="no such file"):
        mask_script(prod, prod, "missing.sql", no_mask=False)
    _env(tmp_path, "branches:\n  mask: mask.sql\n")
    default = load_env("dev", tmp_path, environ={})
    assert mask_script(default, default, None, no_mask=False) == (tmp_path / "mask.sql").resolve()


def test_coolify_marks_carry_a_branch() -> None:
    from provision.backends.coolify import marks

    mark = BranchMark("shop", "dev", "2026-12-08T00:00:00Z", expires_at="2026-12-11T06:30:00Z")
    text = marks.service_description("0123456789abcdef", "fedcba9876543210", "o1", branch=mark)
    assert "branch-of=shop expires=20261211T063000Z" in text and marks.acceptable(text)
    seen = marks.branch_mark(marks.parse(text))
    assert seen == BranchMark("shop", "", "", expires_at="2026-12-11T06:30:00Z")
    forever = marks.parse(marks.service_description("0123456789abcdef", "fedcba9876543210", "o1",
                                                    branch=replace(mark, expires_at=None)))
    assert marks.branch_mark(forever) == BranchMark("shop", "", "") and marks.branch_mark(marks.parse("x")) is None
