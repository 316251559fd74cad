"""``python -m tests.coolify_emulator`` runs standalone and never prints the token."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_standalone_server() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.coolify_emulator", "--port", "0", "--token", "cli-secret-token",
         "--abilities", "read"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/api/v1)", line)
        assert match, line
        base = match.group(1)
        assert httpx.get(base + "/health", timeout=5).text == "OK"
        resp = httpx.get(base + "/servers", headers={"Authorization": "Bearer cli-secret-token"}, timeout=5)
        assert resp.status_code == 200 and resp.json()[0]["name"] == "localhost"
        resp = httpx.post(base + "/projects", json={"name": "x1x"},
                          headers={"Authorization": "Bearer cli-secret-token"}, timeout=5)
        assert resp.status_code == 403  # --abilities read
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "cli-secret-token" not in line + out + err
