"""templates/drill.sh (Coolify's verify, in the archiver) in Debian's userland and in BusyBox's: whatever the restore
does, the scratch directory is removed and a report with an exit code is left; a server a failure left running is
stopped first; scratch directories of drills whose process is gone are removed, a running drill's are not. The
restore script is a stand-in here (the real one runs in tests/coolify/test_coolify_pitr.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from provision.core import archive_scripts
from tests.unit.userland import Userland

# the stand-in for restore.sh: what it was given, some output, and (FAIL) a "server" left running with exit 4
_RESTORE = ('echo "ARGS $LINEAGE $BASE $XID [$TARGET] $WAIT $TOKEN $CHECKS_FILE"; test -d "$DATA_DIR" || exit 9\n'
            'head -c 3 "$CHECKS_FILE"; echo; echo "REACHED target"; echo "FOUND 1"\n'
            'if [ -n "${FAIL:-}" ]; then sleep 300 & echo $! >"$DATA_DIR/postmaster.pid"; echo $! >"$SIDE"; '
            'echo "FATAL:  boom" >&2; '
            'exit 4; fi\n')


def _drill(userland: Userland, repo: Path, token: str, **env: str) -> tuple[str, str]:
    script = archive_scripts.DRILL_SCRIPT.read_text(encoding="utf-8").replace("/repo", str(repo))
    userland.run(f"T={token} L=pgdata B=20260101T000000Z X=812 W=600 sh -c \"$DRILL_SCRIPT\"",
                 env={"DRILL_SCRIPT": script, "RESTORE_SCRIPT": _RESTORE, "DRILL_CHECKS": "SELECT 1;", **env})
    out = repo / ".provision" / f"drill-{token}"
    return out.with_suffix(".rc").read_text().strip(), out.with_suffix(".log").read_text()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_drill_leaves_its_report_and_never_its_scratch_directory(tmp_path: Path, userland: Userland) -> None:
    repo = tmp_path / "repo"
    (repo / ".provision" / "drill-dead" / "data").mkdir(parents=True)
    (repo / ".provision" / "drill-dead" / "pid").write_text("999999\n")  # a drill whose archiver was restarted
    (repo / ".provision" / "drill-live").mkdir()
    (repo / ".provision" / "drill-live" / "pid").write_text(f"{os.getpid()}\n")  # one still running
    rc, log = _drill(userland, repo, "a1")
    assert rc == "0" and "ARGS pgdata 20260101T000000Z 812 [] 600 a1 " in log and "SEL" in log, log
    assert "REACHED target" in log and "FOUND 1" in log
    left = sorted(p.name for p in (repo / ".provision").iterdir())
    assert left == ["drill-a1.log", "drill-a1.rc", "drill-live"], left

    side = tmp_path / "server.pid"
    rc, log = _drill(userland, repo, "b2", FAIL="1", SIDE=str(side))
    assert rc == "4" and "FATAL:  boom" in log, log
    assert not (repo / ".provision" / "drill-b2").exists()
    server = int(side.read_text())
    deadline = time.monotonic() + 10
    while not _gone(server):
        assert time.monotonic() < deadline, "the server a failed drill left running was not stopped"
        time.sleep(0.2)
