"""Branches (issue 23), the pure parts: lifetimes, the mark a record and the labels carry, which masking
script a branch gets, and that a branch is no pending change for plan --detailed-exitcode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from provision.core.branches import NEVER, BranchMark, epoch_of, parse_ttl
from provision.core.config import EnvConfig, load_env
from provision.core.errors import ConfigError, ConfirmationRequired
from provision.core.model import Handle, Observed, Target
from provision.core.results import PlanItem
from provision.service import Provisioner
from provision.service.branching import mask_script
from provision.state.records import StateStore
from tests.conftest import write_env
from tests.unit.fakes import MemoryBackend


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


ENV = """
images: {db: "postgres:16-alpine", api: "postgrest/postgrest:v12.2.3"}
projects: [{name: shop}]
health: {timeout: 5}
"""


def _branching(project_root: Path, tmp_path: Path) -> tuple[Provisioner, BranchingBackend, StateStore]:
    write_env(project_root, "dev", ENV)
    backend = BranchingBackend()
    store = StateStore(tmp_path / "state")
    return Provisioner(load_env("dev", project_root, environ={}), backend, store, wall=lambda: NOW), backend, store


NOW = epoch_of("2026-12-08T12:00:00Z")


@dataclass
class BranchingBackend(MemoryBackend):
    """Labels some projects as branches, as the local backend reads them from another checkout's containers."""

    marks: dict[str, BranchMark] = field(default_factory=dict)

    def observe(self, target: Target, known: Handle | None) -> Observed:
        return replace(super().observe(target, known), branch=self.marks.get(target.project))

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> dict[str, Observed]:
        return {p: replace(o, branch=self.marks.get(p)) for p, o in super().observe_env(config, known).items()}


def test_a_branch_is_neither_drift_nor_an_orphan_and_guards_its_parent(project_root: Path, tmp_path: Path) -> None:
    provisioner, backend, store = _branching(project_root, tmp_path)
    provisioner.provision("shop")
    provisioner.provision("shop-pr-1", create=True)  # labelled a branch by another checkout: no record says so
    provisioner.provision("shop-pr-2", create=True)  # recorded a branch here
    provisioner.provision("old-one", create=True)  # a real orphan
    backend.marks["shop-pr-1"] = BranchMark("shop", "dev", "2026-12-08T00:00:00Z", expires_at="2026-12-08T06:00:00Z")
    record = store.read_record("dev", "shop-pr-2")
    assert record is not None
    store.write_record(record.evolve(branch=BranchMark("shop", "dev", "2026-12-08T10:00:00Z",
                                                       expires_at="2026-12-09T00:00:00Z").to_dict()))
    outcomes = sorted((i.project, i.outcome) for i in provisioner.plan())
    assert outcomes == [("old-one", "orphan"), ("shop", "no-op"), ("shop-pr-1", "branch"), ("shop-pr-2", "branch")]
    assert [r.project for r in provisioner.prune(yes=True)] == ["old-one"]  # never a branch
    status = provisioner.status("shop-pr-1").results[0]
    assert status.details["branch"]["parent"] == "shop" and "expires 2026-12-08T06:00:00Z" in status.messages[0]
    with pytest.raises(ConfirmationRequired, match="shop-pr-1, shop-pr-2.*--leave-branches"):
        provisioner.destroy("shop")
    listed = {b.project: b for b in provisioner.branches.listing()}
    assert listed["shop-pr-1"].expired and not listed["shop-pr-2"].expired and listed["shop-pr-2"].age_s == 7200
    assert [r.project for r in provisioner.branches.gc(dry_run=True)] == ["shop-pr-1"]
    assert "destroy:True" not in backend.calls
    [collected] = provisioner.branches.gc()
    assert collected.project == "shop-pr-1" and backend.calls[-1] == "destroy:True"  # with its data
    assert [b.project for b in provisioner.branches.listing()] == ["shop-pr-2"]
    assert provisioner.destroy("shop", leave_branches=True).changed


def test_list_and_status_tables_show_a_branchs_parent_and_expiry() -> None:
    from provision.cli import output
    from provision.core.results import ProjectResult

    mark = BranchMark("shop", "dev", "2026-12-08T00:00:00Z", expires_at="2026-12-11T00:00:00Z")
    results = [ProjectResult("shop", "dev", "local", "running", False, "status"),
               ProjectResult("shop-pr-1", "dev", "local", "running", False, "status",
                             details={"branch": mark.to_dict()})]
    for text in (output.list_table(results, width=200), output.status_table(results, width=200)):
        assert "BRANCH_OF" in text and "shop until 2026-12-11T00:00" in text
    assert "BRANCH_OF" not in output.list_table(results[:1], width=200)


FAKE_PSQL = """
import sys
for line in sys.stdin:
    line = line.rstrip("\\n")
    if line.startswith("\\\\echo "):
        print(line[6:], flush=True)
    elif line == "\\\\q":
        break
    elif line.startswith("fail"):
        print("ERROR:  it failed", flush=True)
        sys.exit(3)
    elif line:
        print("ran " + line, flush=True)
"""


def test_a_held_psql_session_answers_each_step_and_says_when_it_ended() -> None:
    import sys

    from provision.core.errors import CommandFailed
    from provision.infra.pgsession import PsqlSession

    with PsqlSession([sys.executable, "-c", FAKE_PSQL]) as held:
        assert held.step("select 1;", timeout=10) == "ran select 1;"
        assert held.step("a;\nb;", timeout=10) == "ran a;\nran b;"
        with pytest.raises(CommandFailed, match="it failed"):
            held.step("fail now", timeout=10)


def test_own_bytes_counts_the_extents_filefrag_does_not_call_shared() -> None:
    from provision.backends.local.reflink import _EXTENT

    sample = """File size of /x/b is 5242880 (1280 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..       4:         24..        28:      5:             shared
   1:        5..      14:       1309..      1318:     10:         29:
   2:       15..    1279:         39..      1303:   1265:       1319: last,shared,eof
/x/b: 3 extents found
"""
    found = [(int(m.group(1)), "shared" in m.group(2)) for m in _EXTENT.finditer(sample)]
    assert found == [(5, True), (10, False), (1265, True)]
