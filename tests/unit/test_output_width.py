"""Tables for people fit 80 columns by default; `wide` prints every column uncut; JSON is untouched."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

from provision.cli import output
from provision.core.model import Usage
from provision.core.results import PlanItem, ProjectResult, RunSummary, ServiceStatus
from provision.core.secrets import SecretURL
from provision.infra.report import LiveReporter
from provision.state.backups import Backup

LONG = "inventory-service-staging-eu-west"  # 33 of the 40 characters a name may have


def _result(name: str, *, server: str | None = None) -> ProjectResult:
    usage = Usage(memory_used_bytes=45_000_000, memory_limit_bytes=1 << 30, cpu_percent=12.34, uptime_s=3725)
    return ProjectResult(
        project=name, env="staging", backend="local", status="running", changed=False, action="status",
        api_url="http://127.0.0.1:35123", db_url=SecretURL("postgresql://app:hunter2hunter2@127.0.0.1:35124/app"),
        declared=True, server=server,
        services=(ServiceStatus("db", "running", "healthy", usage), ServiceStatus("api", "running", "", usage)))


def test_a_status_is_never_cut_other_columns_give_way() -> None:
    oom = ProjectResult(**{**_result("shop").__dict__, "services": (
        ServiceStatus("db", "running", "healthy", Usage(memory_used_bytes=1, memory_limit_bytes=2, oom_killed=True)),
        ServiceStatus("api", "running", "", None))})
    text = output.status_table([oom], width=80)
    assert "running (OOM-killed: db)" in text and _widest(text) <= 80, text


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_status_and_list_fit_80_columns_and_wide_keeps_everything() -> None:
    results = [_result("shop"), _result(LONG, server="hetzner-falkenstein-01")]
    for text in (output.status_table(results, width=80), output.list_table(results, width=80)):
        assert _widest(text) <= 80, text
        assert text.splitlines()[0].split()[:2] in (["PROJECT", "STATUS"], ["ENV", "PROJECT"])
        assert "hunter2" not in text and "DB_URL" not in text
        assert "http://127.0.0.1:35123" in text  # short values are never cut
    status = output.status_table(results, width=80)
    assert "inventory-se" in status and "…" in status  # the long name is cut, not wrapped
    wide = output.status_table(results, wide=True, width=80)
    assert LONG in wide and "postgresql://app:***@127.0.0.1:35124/app" in wide and _widest(wide) > 80
    assert "hunter2" not in wide
    asked = output.status_table(results, show_secrets=True, width=80)  # --show-secrets: the db_url, whole
    assert "postgresql://app:hunter2hunter2@127.0.0.1:35124/app" in asked
    assert LONG in output.list_table(results, wide=True, width=80)
    # scripts read JSON: the whole of every value, as before
    data = json.loads(output.summary_json(RunSummary("staging", "local", tuple(results))))
    assert data["projects"][1]["project"] == LONG and data["projects"][1]["db_url"].startswith("postgresql://app:***@")


def test_history_fits_and_wide_has_every_field() -> None:
    records = [{"time": "2026-12-07T18:20:05Z", "user": "a-rather-long-user-name", "host": "build-runner-0042.example",
                "env": "staging", "project": LONG, "action": "upgrade-db", "config_hash": "ab" * 32,
                "result": "rolled back", "duration_s": 3725.5, "backend": "local", "detail": "health timeout"}]
    text = output.history_table(records, width=80)
    assert _widest(text) <= 80, text
    assert text.splitlines()[0].split() == ["TIME", "USER", "PROJECT", "ACTION", "RESULT", "DURATION"]
    assert "2026-12-07 18:20" in text and "rolled back" in text and "1h02m" in text
    wide = output.history_table(records, wide=True)
    assert all(v in wide for v in ("build-runner-0042.example", "ab" * 32, "health timeout", LONG, "3725.5"))
    assert output.history_table([], width=80) == "no history yet"


def test_backups_have_a_header_and_keep_the_file_name_when_cut(tmp_path: Path) -> None:
    folder = tmp_path / "a-long-state-directory" / "backups" / "staging" / LONG
    folder.mkdir(parents=True)
    dump = folder / "20261207T182005.123456Z-pre-restore.dump"
    dump.write_bytes(b"x" * 1536)
    found = [Backup(dump, {"created_at": "2026-12-07T18:20:05Z", "server_major": 17, "size": 123_456_789,
                           "row_counts": {"public.a": 1, "public.b": 2}})]
    text = output.backups_table(found, width=80)
    assert _widest(text) <= 80, text
    assert text.splitlines()[0].split() == ["CREATED", "PG", "SIZE", "TABLES", "PATH"]
    row = text.splitlines()[1]
    assert row.startswith("2026-12-07 18:20  17") and "118M" in row
    assert row.endswith("/" + dump.name) and "…" in row  # cut from the left: the file name stays
    wide = output.backups_table(found, wide=True)
    assert str(dump) in wide and "123456789" in wide


def test_plan_reasons_are_cut_but_diffs_stay_whole() -> None:
    reason = "the compose file differs from what runs: images.api changed and the db limits grew " * 2
    items = [PlanItem(LONG, "staging", "local", "update", reason, diff="-image: a\n+image: b\n")]
    text = output.plan_text(items, width=80)
    assert _widest(text) <= 80, text
    assert text.splitlines()[0].split() == ["PROJECT", "OUTCOME", "REASON"] and "+image: b" in text
    assert reason.strip() in output.plan_text(items, wide=True)


def test_a_cut_never_goes_below_what_can_be_read() -> None:
    """When even cut columns cannot fit, the line is longer: a value is never cut to nothing."""
    rows = [{"a": "x" * 50, "b": "y" * 50, "c": "z"}]
    assert output._grid(rows, ("a", "b"), width=30, shrink=("a", "b")).splitlines()[1] == "x" * 13 + "…  " + "y" * 13 + "…"
    assert output._grid(rows, ("a", "b", "c"), width=20, shrink=("a", "b"), optional=("c",)).splitlines() == \
        ["A          B", "xxxxxxxx…  yyyyyyyy…"]
    assert output._grid(rows, ("a", "b"), width=10, shrink=("a", "b")).splitlines()[1] == "xxxxx…  yyyyy…"


def _last_frame(text: str) -> str:
    """What a terminal shows after the live display's last redraw, without colours."""
    frame = text.rsplit("\r\x1b[2K", 1)[-1]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame)


def test_no_spinner_frame_stays_on_screen() -> None:
    spinner = re.compile("[\u2800-\u28ff]")  # the dots spinner's frames
    for failing in (False, True):
        stream = io.StringIO()
        try:
            with LiveReporter(stream, force_terminal=True) as reporter:
                reporter.step("shop", "waiting until it is healthy and answers")
                reporter.step("blog", "waiting until it is healthy and answers")
                time.sleep(0.25)  # a few frames
                reporter.step("shop", "created, running (3.1 s)")
                if failing:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        assert spinner.search(stream.getvalue())  # it did spin
        last = _last_frame(stream.getvalue())
        assert not spinner.search(last), repr(last)
        assert "✓ shop created, running" in last
        assert ("✗ blog" if failing else "✓ blog") in last, repr(last)



def test_the_lines_data_tasks_print_for_people() -> None:
    copy = _result("shop-pr-42")
    assert output.clone_env(copy) == "API_URL=http://127.0.0.1:35123\nDB_URL=postgresql://app:***@127.0.0.1:35124/app"
    assert output.clone_env(copy, show_secrets=True).endswith("DB_URL=postgresql://app:hunter2hunter2@127.0.0.1:35124/app")
    assert output.clone_env(ProjectResult(**{**copy.__dict__, "db_url": None})).endswith("DB_URL=")
    done = ProjectResult(**{**copy.__dict__, "details": {"path": "/b/shop/1.dump"}})
    failed = ProjectResult(**{**copy.__dict__, "error": "refused"})
    assert output.backup_paths(RunSummary("staging", "local", (done, failed, done))) == "/b/shop/1.dump\n/b/shop/1.dump"
    assert output.history_lines([{"b": 1, "a": 2}, {}]) == '{"a": 2, "b": 1}\n{}'


def test_a_watched_status_has_a_time_line_and_clears_only_a_terminal() -> None:
    summary = RunSummary("staging", "local", (_result("shop"),))
    assert output.status_view(summary, json=False, show_secrets=False, every=None) == output.status_table(summary.results)
    watched = output.status_view(summary, json=False, show_secrets=False, every=2.0, clear=True)
    assert watched.startswith("\x1b[H\x1b[2J") and "env staging  (every 2 s, Ctrl-C to stop)" in watched
    assert not output.status_view(summary, json=False, show_secrets=False, every=2.0).startswith("\x1b")
    assert json.loads(output.status_view(summary, json=True, show_secrets=False, every=2.0))["env"] == "staging"
