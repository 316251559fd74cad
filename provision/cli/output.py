"""Turn results into what commands print: JSON, dotenv lines, or a plain table.

Tables for people fit `width` cells (the terminal's, else 80): a default set of columns, and when those are
still too wide the cells of the columns named `shrink` are cut with `…`. `wide=True` prints every column
uncut. Scripts read `--json`, which none of this touches.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.model import LockInfo
from ..core.results import PlanItem, ProjectResult, RunSummary
from ..state.backups import Backup

if TYPE_CHECKING:
    from ..service.branching import BranchInfo


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


ELLIPSIS = "…"
SOFT_CUT = 12  # cells a cut column keeps before optional columns are left out
MIN_CUT = 6  # cells a cut column keeps at the least (or its header's width)


def terminal_width() -> int:
    """The width tables fit: COLUMNS, else the terminal's (stdout), else 80."""
    return shutil.get_terminal_size((80, 24)).columns


def table(results: Sequence[ProjectResult], columns: Sequence[str], *, show_secrets: bool = False,
          width: int | None = None, shrink: Sequence[str] = (), optional: Sequence[str] = ()) -> str:
    """A plain left-aligned table of the given result keys; `-` for null; fit to `width` as _grid does."""
    return _grid([r.to_dict(show_secrets=show_secrets) for r in results], columns, width=width, shrink=shrink,
                 optional=optional)


def list_table(results: Sequence[ProjectResult], *, show_secrets: bool = False, wide: bool = False,
               width: int | None = None) -> str:
    """`list` for people: env, project, backend, status, declared, the server when any, the API URL
    (and the db_url with `wide`, nothing cut, or when its password is asked for)."""
    columns = ["env", "project", "backend", "status", "declared"] + (["server"] if any(r.server for r in results)
                                                                      else [])
    columns += ["api_url", "db_url"] if wide or show_secrets else ["api_url"]
    rows = [{**r.to_dict(show_secrets=show_secrets), "branch_of": branch_cell(r)} for r in results]
    if any(row["branch_of"] for row in rows):
        columns.insert(columns.index("status") + 1, "branch_of")
    return _grid(rows, columns, width=None if wide else _fit(width), shrink=("project", "env", "server", "status"),
                 optional=("declared", "backend", "server", "branch_of"))


def branch_cell(result: ProjectResult) -> str | None:
    """`shop until 2026-12-11T00:00` for a branch (its parent and expiry), None for any other project."""
    mark = result.details.get("branch") if isinstance(result.details, dict) else None
    if not isinstance(mark, dict) or not mark.get("parent"):
        return None
    expires = mark.get("expires_at")
    return f"{mark['parent']} until {str(expires)[:16]}" if expires else f"{mark['parent']} (no expiry)"


def status_table(results: Sequence[ProjectResult], *, show_secrets: bool = False, wide: bool = False,
                 width: int | None = None) -> str:
    """`status` for people: each project's state, services, what it costs (memory used/limit, CPU, uptime),
    its server when the env has several, and its API URL; within `width` (the db_url, which `outputs` prints,
    only with `wide` or when its password is asked for)."""
    rows = []
    for result in results:
        data = result.to_dict(show_secrets=show_secrets)
        used, limit = data["memory_used_bytes"], data["memory_limit_bytes"]
        status = data["status"] + (f" (OOM-killed: {','.join(data['oom_killed'])})" if data["oom_killed"] else "")
        rows.append({**data, "status": status,
                     "memory": None if used is None else f"{human_bytes(used)}/{human_bytes(limit) if limit else '-'}",
                     "cpu": None if data["cpu_percent"] is None else f"{data['cpu_percent']:.1f}%",
                     "uptime": None if data["uptime_s"] is None else human_duration(data["uptime_s"]),
                     "branch_of": branch_cell(result),
                     "backup": (result.details.get("backup") or {}).get("health")})
    columns = ["project", "status", "services", "memory", "cpu", "uptime", "api_url"]
    if any(row["backup"] for row in rows):
        columns.insert(2, "backup")
    columns += ["db_url"] if wide or show_secrets else []
    if any(row["branch_of"] for row in rows):
        columns.insert(2, "branch_of")
    if any(r.server for r in results):
        columns.insert(2, "server")
    if wide:
        return _grid(rows, columns)
    return _grid(rows, columns, width=_fit(width), shrink=("project", "server"),  # a status is never cut
                 optional=("services", "cpu", "uptime", "server", "memory", "branch_of", "backup"))


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


def plan_text(items: Sequence[PlanItem], *, wide: bool = False, width: int | None = None) -> str:
    """One line per project (outcome and why, the reason cut to `width` unless `wide`), then each update's
    diff as it is."""
    lines = [_grid([i.to_dict() for i in items], ("project", "outcome", "reason"),
                   width=None if wide else _fit(width), shrink=("reason", "project"))]
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


def history_table(records: Sequence[dict[str, Any]], *, wide: bool = False, width: int | None = None) -> str:
    """`history` for people: time (UTC, to the minute), user, project, action, result, duration within
    `width`; with `wide` every field as recorded (host, config hash, detail)."""
    if not records:
        return "no history yet"
    if wide:
        return _grid(records, ("time", "user", "host", "project", "action", "result", "duration_s", "config_hash",
                               "detail"))
    rows = [{**r, "time": _minute(r.get("time")),
             "duration": None if r.get("duration_s") is None else human_duration(float(r["duration_s"]))}
            for r in records]
    return _grid(rows, ("time", "user", "project", "action", "result", "duration"), width=_fit(width),
                 shrink=("user", "project", "action", "result"), optional=("user", "duration"))


def backups_table(found: Sequence[Backup], *, wide: bool = False, width: int | None = None) -> str:
    """`backups` for people, newest first: when, PostgreSQL major, size, tables, path (cut from the left to
    fit `width`, so the file name stays; whole with `wide`)."""
    rows = []
    for backup in found:
        manifest = backup.manifest
        size = manifest.get("size", backup.path.stat().st_size if backup.path.exists() else None)
        rows.append({"created": _minute(manifest.get("created_at")) if not wide else manifest.get("created_at"),
                     "pg": manifest.get("server_major"),
                     "size": size if wide or not isinstance(size, int) else human_bytes(size),
                     "tables": None if backup.row_counts is None else len(backup.row_counts),
                     "path": str(backup.path)})
    columns = ("created", "pg", "size", "tables", "path")
    return _grid(rows, columns) if wide else _grid(rows, columns, width=_fit(width), shrink=("path",),
                                                   optional=("tables", "pg"), keep_tail=("path",))


def archives_table(found: Sequence[Any], *, wide: bool = False, width: int | None = None) -> str:
    """`backups` of the continuous archives (service/archive.py ProjectArchive): per project its health and why,
    the recoverable window (earliest .. latest second), the last base backup, lag and repository size."""
    rows = []
    for item in found:
        status = item.status
        if status is None:
            rows.append({"project": item.project, "health": "off", "reason": "backup.continuous is off"})
            continue
        window = status.window
        base = status.last_base
        rows.append({"project": item.project, "health": status.health, "reason": status.reason,
                     "earliest": _second(window.earliest) if window else None,
                     "latest": _second(window.latest) if window else None,
                     "last_base": _second(base.end) if base else None,
                     "lag": None if status.lag_seconds is None else f"{status.lag_seconds:g}s",
                     "size": None if status.size_bytes is None else human_bytes(status.size_bytes),
                     "error": status.error,
                     "offsite": status.offsite.health if status.offsite else None,
                     "drill": _drill(item.last_drill)})
    columns = ("project", "health", "earliest", "latest", "last_base", "lag", "size",
               *(("offsite",) if any(row.get("offsite") for row in rows) else ()), "drill", "reason", "error")
    return _grid(rows, columns) if wide else _grid(rows, columns, width=_fit(width), shrink=("reason", "error"),
                                                   optional=("error", "size", "last_base", "offsite", "lag", "drill"))


def _drill(line: Mapping[str, Any] | None) -> str:
    """The last restore drill in a few characters: `ok 2026-12-08T14:03Z`, `failed …`, or `never`."""
    if line is None:
        return "never"
    return f"{line.get('result')} {str(line.get('time') or '')[:16]}Z"


def _second(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fit(width: int | None) -> int:
    return terminal_width() if width is None else width


def _minute(value: object) -> str | None:
    """An ISO 8601 time as `YYYY-MM-DD HH:MM` (UTC as recorded); anything else as it is."""
    if not isinstance(value, str):
        return None if value is None else str(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def _grid(rows_data: Sequence[dict[str, Any]], columns: Sequence[str], *, width: int | None = None,
          shrink: Sequence[str] = (), optional: Sequence[str] = (), keep_tail: Sequence[str] = ()) -> str:
    """Left-aligned columns two spaces apart under upper-case headers. With `width`, lines wider than it are
    narrowed in steps until they fit: the widest of the `shrink` columns is cut, down to SOFT_CUT cells; then
    the `optional` columns are left out, in that order; then the `shrink` columns are cut down to MIN_CUT.
    A cut cell ends in `…` (starts with it for `keep_tail`). A header is never cut, so a line can stay wider
    than `width` when nothing more can give."""
    columns = list(columns)
    cells = {c: [_cell(data.get(c)) for data in rows_data] for c in columns}
    widths = {c: max(len(c), *(len(v) for v in cells[c])) for c in columns}

    def excess() -> int:
        return sum(widths[c] for c in columns) + 2 * (len(columns) - 1) - (width or 0)

    natural = dict(widths)

    def cut_to(floor: int) -> int:
        """Cut the widest `shrink` column by a cell at a time (from the natural widths) until the line fits
        or none is above `floor`; the excess left."""
        widths.update(natural)
        while excess() > 0:
            candidates = [c for c in shrink if c in columns and widths[c] > max(floor, len(c))]
            if not candidates:
                break
            widths[max(candidates, key=lambda c: widths[c])] -= 1
        return excess()

    if width is not None and cut_to(SOFT_CUT) > 0:
        for name in optional:
            if name in columns and len(columns) > 1:
                columns.remove(name)
                if cut_to(SOFT_CUT) <= 0:
                    break
        if excess() > 0:
            cut_to(MIN_CUT)
    header = [c.upper() for c in columns]
    rows = [[_cut(cells[c][i], widths[c], tail=c in keep_tail) for c in columns] for i in range(len(rows_data))]
    lines = ["  ".join(h.ljust(widths[c]) for h, c in zip(header, columns, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(widths[c]) for v, c in zip(row, columns, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _cut(value: str, width: int, *, tail: bool = False) -> str:
    """`value` in at most `width` cells: cut with `…` (keeping its end when `tail`)."""
    if len(value) <= width:
        return value
    return ELLIPSIS + value[len(value) - width + 1:] if tail else value[:width - 1] + ELLIPSIS


def status_view(summary: RunSummary, *, json: bool, show_secrets: bool, every: float | None, wide: bool = False,
                clear: bool = False) -> str:
    """`status`'s output: the table, or its JSON; with a watch (`every` seconds) one JSON line per refresh, or
    the table under a time line, the screen cleared first on a terminal (`clear`), like top."""
    if json:
        if every is None:
            return summary_json(summary, show_secrets=show_secrets)
        return to_json_line(summary.to_dict(show_secrets=show_secrets))
    shown = status_table(summary.results, show_secrets=show_secrets, wide=wide)
    if every is None:
        return shown
    home = "\x1b[H\x1b[2J" if clear else ""
    return f"{home}{datetime.now().strftime('%H:%M:%S')}  env {summary.env}  (every {every:g} s, Ctrl-C to stop)\n{shown}\n"


def history_lines(records: Sequence[dict[str, Any]]) -> str:
    """History records as JSON lines, keys sorted."""
    return "\n".join(json.dumps(r, sort_keys=True) for r in records)


def backup_paths(summary: RunSummary) -> str:
    """The dump of each project `backup --all` backed up, one path a line."""
    return "\n".join(str(r.details.get("path", "")) for r in summary.results if r.error is None)


def clone_env(result: ProjectResult, *, show_secrets: bool = False) -> str:
    """The copy's `API_URL=` and `DB_URL=` lines, unquoted; the password masked unless asked."""
    db_url = result.db_url.reveal() if result.db_url and show_secrets else (result.db_url.masked if result.db_url else "")
    return f"API_URL={result.api_url}\nDB_URL={db_url}"


def branches_table(found: Sequence[BranchInfo]) -> str:
    """One line a branch: name, parent, taken at, age, expiry, status, its own disk (where known), API URL."""
    header = ("branch", "parent", "taken", "age", "expires", "status", "own disk", "api_url")
    rows = [header] + [(b.project, b.mark.parent, b.mark.taken_at, human_duration(b.age_s) if b.age_s is not None
                        else "-", (b.mark.expires_at or "never") + (" (expired)" if b.expired else ""), b.status,
                        f"{b.disk_bytes / 2**20:.1f} MiB" if b.disk_bytes is not None else "-",
                        b.api_url or "-") for b in found]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


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
