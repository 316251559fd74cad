"""The tables people read fit a standard terminal: every command run on a pseudo-terminal of 80x24 (the size
set on it, COLUMNS unset) prints no line wider than 80 cells, with a header; --wide and --json keep all."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import time

from rich.cells import cell_len

from tests.conftest import Sandbox

LONG = "inventory-service-eu-west-2"  # a long name, as real ones are
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal(argv: list[str], sandbox: Sandbox, *, until: str | None = None, rows: int = 24,
              columns: int = 80) -> str:
    """What `argv` prints (stdout and stderr) on a pseudo-terminal of `columns` x `rows`; with `until`, the
    command is interrupted (Ctrl-C) once that text has appeared."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environ = {k: v for k, v in sandbox.environ().items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(argv, cwd=sandbox.root, env=environ, stdin=follower, stdout=follower, stderr=follower,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    interrupted = False
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
            if until is not None and not interrupted and until in b"".join(chunks).decode(errors="replace"):
                proc.send_signal(signal.SIGINT)
                interrupted = True
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    assert code == 0, (argv, code, b"".join(chunks).decode(errors="replace"))
    return b"".join(chunks).decode(errors="replace")


def _lines(text: str) -> list[str]:
    """The lines a terminal shows, without colours and screen controls."""
    return [ANSI.sub("", line).rstrip("\r") for line in text.replace("\r\n", "\n").split("\n")]


def _assert_fits(text: str, header: str, width: int = 80) -> None:
    lines = _lines(text)
    widest = max(lines, key=cell_len)
    assert cell_len(widest) <= width, f"{cell_len(widest)} cells: {widest!r}\n{text}"
    assert any(line.startswith(header) for line in lines), text


def test_every_table_fits_80_columns_on_a_terminal(sandbox: Sandbox) -> None:
    sandbox.write_env(["shop", LONG])
    sandbox.cli("provision", f"--project={LONG}")
    sandbox.cli("backup", f"--project={LONG}")
    tables = {("status",): "PROJECT  ", ("status", f"--project={LONG}"): "PROJECT  ", ("history",): "TIME  ",
              ("backups", f"--project={LONG}"): "CREATED  ", ("list",): "ENV  ", ("plan",): "PROJECT  "}
    for args, header in tables.items():
        shown = _terminal(sandbox.argv(*args), sandbox)
        _assert_fits(shown, header)
        assert "-…" not in shown or LONG[:8] in shown  # a cut name still says what it is
    status = _terminal(sandbox.argv("status"), sandbox)
    assert "running" in status and "http://127.0.0.1:" in status and "not provisioned" in status

    watched = _terminal(sandbox.argv("status", "--watch=0.5"), sandbox, until="API_URL")
    _assert_fits(watched, "PROJECT  ")
    assert "Ctrl-C to stop" in watched

    # the same terminal, wider: the width is the terminal's
    roomy = _terminal(sandbox.argv("status", f"--project={LONG}"), sandbox, columns=200)
    assert LONG in roomy and max(map(cell_len, _lines(roomy))) <= 200

    # --wide: every column, whole (lines wider than the terminal, as asked); the password still masked
    wide = _terminal(sandbox.argv("status", "--wide"), sandbox)
    assert "DB_URL" in wide and LONG in wide and ":***@" in wide
    assert max(map(cell_len, _lines(wide))) > 80
    backups_wide = _terminal(sandbox.argv("backups", f"--project={LONG}", "--wide"), sandbox)
    assert str(sandbox.state_dir / "backups" / sandbox.env / LONG) in backups_wide.replace("\r\n", "")

    # scripts: JSON on stdout is whole whatever the terminal
    data = sandbox.cli("status", "--json", extra_env={"COLUMNS": "80"}).json()
    project = next(p for p in data["projects"] if p["project"] == LONG)
    assert project["db_url"].startswith("postgresql://") and project["api_url"].startswith("http://")
    history = [json.loads(line) for line in sandbox.cli("history", "--json").stdout.splitlines()]
    assert {"time", "user", "host", "project", "action", "result", "duration_s", "config_hash"} <= set(history[0])
    sandbox.cli("destroy", f"--project={LONG}")
