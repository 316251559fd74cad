"""Turn results into what commands print: JSON, dotenv lines, or a plain table."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .results import ProjectResult, RunSummary


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
    rows = [[_cell(r.to_dict(show_secrets=show_secrets)[c]) for c in columns] for r in results]
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
