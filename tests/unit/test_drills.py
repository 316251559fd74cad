"""Restore drills without Docker: the sample a drill reads at its marker is compared with the restored copy's,
and any difference in a row count or a page checksum fails the drill, naming the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provision.core.model import ABSENT, Target
from provision.service.drills import _MARK, _RESAMPLE, Drills

SAMPLED = {"items": {"rows": 600, "pct": 100.0, "md5": "aa"}, "orders": {"rows": 12, "pct": 48.5, "md5": "bb"}}


@dataclass
class _Sql:
    answer: str
    asked: list[str] = field(default_factory=list)

    def run_sql(self, target: Any, observed: Any, sql: str, **kwargs: Any) -> str:
        self.asked.append(sql)
        return self.answer


@dataclass
class _Engine:
    runs: _Sql

    def sql(self, target: Any) -> _Sql:
        return self.runs


@dataclass
class _Provisioner:
    engine: _Engine


def _drills(answer: str) -> tuple[Drills, _Sql]:
    runs = _Sql(answer)
    fake: Any = _Provisioner(_Engine(runs))
    return Drills(fake, fake), runs


def _resample(answer: str) -> tuple[str | None, _Sql]:
    drills, runs = _drills(answer)
    copy: Any = Target.__new__(Target)
    return drills._resample(copy, ABSENT, SAMPLED, "shop_owner"), runs


def test_a_matching_copy_passes_and_each_table_is_read_again_with_its_own_sample_size() -> None:
    found, runs = _resample('{"rows": 600, "pct": 100, "md5": "aa"}\n{"rows": 12, "pct": 48.5, "md5": "bb"}\n')
    assert found is None
    assert runs.asked == [_RESAMPLE.format(table="'items'", pct=100.0) + _RESAMPLE.format(table="'orders'", pct=48.5)]


def test_a_row_count_or_a_checksum_that_differs_fails_naming_the_table() -> None:
    rows, _ = _resample('{"rows": 601, "pct": 100, "md5": "aa"}\n{"rows": 12, "pct": 48.5, "md5": "bb"}\n')
    assert rows == "items has 601 rows, 600 were sampled"
    pages, _ = _resample('{"rows": 600, "pct": 100, "md5": "aa"}\n{"rows": 12, "pct": 48.5, "md5": "cc"}\n')
    assert pages == "orders's page sample has checksum cc, bb was sampled"
    short, _ = _resample('{"rows": 600, "pct": 100, "md5": "aa"}\n')
    assert short == "1 of 2 sampled tables could be read"


def test_nothing_sampled_reads_nothing() -> None:
    drills, runs = _drills("")
    copy: Any = Target.__new__(Target)
    assert drills._resample(copy, ABSENT, {}, "shop_owner") is None and runs.asked == []


def test_the_marker_locks_what_it_samples_and_records_the_transaction_a_restore_stops_at() -> None:
    assert "LOCK TABLE %s IN SHARE MODE" in _MARK and "lock_not_available THEN CONTINUE" in _MARK
    assert "txid_current() % 4294967296" in _MARK and "LIMIT 3" in _MARK and "relpages > 8192" in _MARK
    assert "'''')) '" in _MARK  # an empty string literal inside format()'s quoted text
