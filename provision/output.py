"""Turn results into what commands print: JSON, dotenv lines, or a plain table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .model import LockInfo
from .results import PlanItem, ProjectResult, RunSummary


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def to_json_line(data: object) -> str:
    """One compact JSON document on one line (a stream of them: JSON lines)."""
    return json.dumps(data, separators=(",", ":"))


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


def status_table(results: Sequence[ProjectResult], *, show_secrets: bool = False) -> str:
    """`status` for people: each project's state, services, what it costs (memory used/limit, CPU, uptime),
    its server when the env has several, and its URLs."""
    rows = []
    for result in results:
        data = result.to_dict(show_secrets=show_secrets)
        used, limit = data["memory_used_bytes"], data["memory_limit_bytes"]
        status = data["status"] + (f" (OOM-killed: {','.join(data['oom_killed'])})" if data["oom_killed"] else "")
        rows.append({**data, "status": status,
                     "memory": None if used is None else f"{human_bytes(used)}/{human_bytes(limit) if limit else '-'}",
                     "cpu": None if data["cpu_percent"] is None else f"{data['cpu_percent']:.1f}%",
                     "uptime": None if data["uptime_s"] is None else human_duration(data["uptime_s"])})
    columns = ["project", "status", "services", "memory", "cpu", "uptime", "api_url", "db_url"]
    if any(r.server for r in results):
        columns.insert(2, "server")
    return _grid(rows, columns)


def human_bytes(size: int) -> str:
    """1536 -> '1.5K', 45_000_000 -> '43M' (binary units, as compose writes sizes)."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if value >= 10 or unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.0f}G"


def human_duration(seconds: float) -> str:
    """42 -> '42s', 3725 -> '1h02m', 180000 -> '2d02h'."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


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
