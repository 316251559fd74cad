"""Turn results into what commands print: JSON, dotenv lines, or a plain table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .model import LockInfo
from .results import PlanItem, ProjectResult, RunSummary


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def outputs_env(result: ProjectResult, *, show_secrets: bool = False) -> str:
    """`API_URL="..."` and `DB_URL="..."` lines (values JSON-quoted); the password masked unless asked."""
    data = result.to_dict(show_secrets=show_secrets)
    return f"API_URL={json.dumps(data['api_url'] or '')}\nDB_URL={json.dumps(data['db_url'] or '')}"


def outputs_json(result: ProjectResult, *, show_secrets: bool = False) -> str:
    data = result.to_dict(show_secrets=show_secrets)
    keys = ("project", "env", "backend", "status", "api_url", "db_url", "db_url_scope")
    return to_json({k: data[k] for k in keys})


def table(results: Sequence[ProjectResult], columns: Sequence[str], *, show_secrets: bool = False) -> str:
    """A plain left-aligned table of the given result keys; `-` for null."""
    return _grid([r.to_dict(show_secrets=show_secrets) for r in results], columns)


def plan_text(items: Sequence[PlanItem]) -> str:
    """One line per project (outcome and why), then each update's diff."""
    lines = [_grid([i.to_dict() for i in items], ("project", "outcome", "reason"))]
    for item in items:
        if item.diff:
            lines.append(f"\n--- {item.project}: {item.outcome} ---\n{item.diff.rstrip()}")
    changes = sum(1 for i in items if i.changes)
    lines.append(f"\n{changes} of {len(items)} project(s) with changes pending" if changes else "\nno changes")
    return "\n".join(lines)


def locks_table(locks: Sequence[LockInfo]) -> str:
    """One row per held lock; a line saying so when there is none."""
    if not locks:
        return "no locks held"
    return _grid([{**info.to_dict(), "stale": "stale" if info.stale else ""} for info in locks],
                 ("project", "holder", "since", "expires", "stale"))


def history_table(records: Sequence[dict[str, Any]]) -> str:
    columns = ("time", "user", "host", "project", "action", "result", "duration_s", "config_hash")
    return _grid(records, columns) if records else "no history yet"


def _grid(rows_data: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    rows = [[_cell(data.get(c)) for c in columns] for data in rows_data]
    header = [c.upper() for c in columns]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def summary_json(summary: RunSummary, *, show_secrets: bool = False) -> str:
    return to_json(summary.to_dict(show_secrets=show_secrets))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v.get("service", v)) if isinstance(v, dict) else str(v) for v in value) or "-"
    return str(value)
