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


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (32768-60999 by default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def ports(first: int, count: int = 1000) -> str:
    """`local.port_range` for a benchmark env: `count` ports from `first`, refused when they reach into the kernel's
    ephemeral range, where another process's outgoing connection can take a stopped stack's leased port."""
    low, high = ephemeral_ports()
    last = first + count - 1
    if last >= low and first <= high:
        raise SystemExit(f"bench port range {first}-{last} overlaps the ephemeral range {low}-{high} "
                         "(/proc/sys/net/ipv4/ip_local_port_range): pick one below it")
    return f"[{first}, {last}]"


def make_root(projects: Sequence[str] = (), *, port_range: str | None = None,
              network_pool: str | None = None, health_interval: float | None = None) -> tuple[Path, str]:
    """A project root with tasks.py, templates/ and envs/<env>.yml using the test images; the product's
    default healthcheck interval unless `health_interval` is given."""
    port_range = port_range or ports(24000)
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


def compose_argv(folder: Path, project_name: str, *args: str) -> list[str]:
    """`docker compose` on a rendered stack's own file and secrets, unmodified, as provision runs it."""
    return ["docker", "compose", "--project-name", project_name, "--file", str(folder / "docker-compose.yml"),
            "--env-file", str(folder / "secrets.env"), *args]


def published(compose_text: str) -> dict[str, int]:
    """{service: host port} of a rendered local stack (`"127.0.0.1:<host>:<container>"` entries)."""
    found = {}
    for service, host in re.findall(r'^  (\w+):\n(?:(?!^  \w).*\n)*?    ports:\n      - "[^"]*?:(\d+):\d+"',
                                    compose_text, re.M):
        found[service] = int(host)
    return found


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
