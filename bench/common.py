"""Helpers shared by the benchmarks: a throwaway project root, timing, cleanup by label."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = {"db": "provision-test/postgres:15", "api": "provision-test/postgrest:12"}


def make_root(projects: Sequence[str] = (), *, port_range: str = "[33000, 34999]",
              network_pool: str | None = None, health_interval: float | None = None) -> tuple[Path, str]:
    """A project root with tasks.py, templates/ and envs/<env>.yml using the test images; the product's
    default healthcheck interval unless `health_interval` is given."""
    root = Path(tempfile.mkdtemp(prefix="provision-bench-"))
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    (root / "envs").mkdir()
    env = "bench-" + uuid.uuid4().hex[:6]
    listed = "".join(f"  - name: {p}\n" for p in projects)
    (root / "envs" / f"{env}.yml").write_text(
        f"allow_undeclared: true\nbackend: local\nimages:\n  db: {IMAGES['db']}\n  api: {IMAGES['api']}\n"
        + (f"projects:\n{listed}" if projects else "projects: []\n")
        + "health:\n  timeout: 120\n" + (f"  interval: {health_interval:g}\n" if health_interval else "")
        + f"local:\n  port_range: {port_range}\n"
        + (f"  network_pool: {network_pool}\n" if network_pool else "")
    )
    return root, env


def raw_baseline(compose_text: str) -> str:
    """The rendered stack as raw compose readies it fastest on its own, as the product shipped it before the
    idle-cost design (issue 12): a 1 s db healthcheck and the api held back until the db is healthy, so that
    `up --wait` returns when the stack serves. (With the product's 60 s interval `--wait` would wait a minute.)"""
    text = re.sub(r'interval: "\d+(\.\d+)?s"', 'interval: "1s"', compose_text)
    return text.replace("condition: service_started", "condition: service_healthy")


def environ(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COOLIFY_", "PROVISION_"))}
    env["PROVISION_STATE_DIR"] = str(root / ".provision")
    return env


def invoke(root: Path, *args: str) -> float:
    """Wall time of one `invoke` run in `root`; raises if it fails."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=environ(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"invoke {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def timed(argv: Sequence[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def cleanup(env: str) -> None:
    for kind, flag in (("ps", "-aq"),):
        ids = subprocess.run(["docker", kind, flag, "--filter", f"label=io.provision.env={env}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True)
    for kind in ("volume", "network"):
        names = subprocess.run(["docker", kind, "ls", "-q", "--filter", f"label=io.provision.env={env}"],
                               capture_output=True, text=True).stdout.split()
        if names:
            subprocess.run(["docker", kind, "rm", *names], capture_output=True)


def summary(samples: Sequence[float]) -> str:
    return f"median {statistics.median(samples):.3f} s (min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"


def ratio(a: Sequence[float], b: Sequence[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def repeat(n: int, fn: Callable[[int], float]) -> list[float]:
    return [fn(i) for i in range(n)]
