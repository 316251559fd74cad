"""What each container costs now: one container list and an inspect per container (concurrently, over the SDK's
socket), then memory, CPU and OOM kills read from each container's cgroup files when the engine runs on this
machine (two reads CPU_WINDOW apart: ~0.3 s for any number of containers). Elsewhere (a remote engine, or
another pid namespace) the Engine API's stats: its collector samples once a second, so each sample waits up to
1 s (`one-shot`), and CPU needs two: ~2 s, as `docker stats --no-stream` takes."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from ... import names
from ...model import Usage

COMPOSE_SERVICE = "com.docker.compose.service"
CPU_WINDOW = 0.25  # seconds between a container's two CPU samples, at least
WORKERS = 16


def collect(api: Any, env: str, projects: Collection[str], *, now: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, Usage]]:
    """{project: {service: Usage}} for the env's containers of `projects` (`api`: docker's low-level APIClient)."""
    wanted = set(projects)
    listed = api.containers(all=True, filters={"label": f"{names.LABEL_ENV}={env}"})
    chosen: dict[str, tuple[str, str]] = {}
    for row in listed:
        labels = row.get("Labels") or {}
        project = labels.get(names.LABEL_PROJECT)
        if project in wanted and labels.get("com.docker.compose.oneoff", "False") != "True":
            chosen[str(row["Id"])] = (str(project), str(labels.get(COMPOSE_SERVICE, "")))
    if not chosen:
        return {}
    ids = list(chosen)

    with ThreadPoolExecutor(max_workers=min(WORKERS, len(ids))) as pool:
        inspected = dict(zip(ids, pool.map(api.inspect_container, ids), strict=True))
        running = [cid for cid in ids if (inspected[cid].get("State") or {}).get("Running")]
        groups = {cid: Cgroup.of(cid, int((inspected[cid].get("State") or {}).get("Pid") or 0)) for cid in running}
        if all(group is not None for group in groups.values()):
            first = {cid: group.sample() for cid, group in groups.items() if group is not None}
            started = time.monotonic()
            sleep(max(0.0, CPU_WINDOW - (time.monotonic() - first_moment(first, started))))
            second = {cid: group.sample() for cid, group in groups.items() if group is not None}
        else:
            def stats(cid: str) -> dict[str, Any]:
                return dict(api.stats(cid, stream=False, one_shot=True))

            first = dict(zip(running, pool.map(stats, running), strict=True))
            second = dict(zip(running, pool.map(stats, running), strict=True))
    result: dict[str, dict[str, Usage]] = {}
    moment = now()
    for cid, (project, service) in chosen.items():
        result.setdefault(project, {})[service] = usage_of(inspected[cid], first.get(cid), second.get(cid), moment)
    return result


def first_moment(samples: Mapping[str, Mapping[str, Any]], default: float) -> float:
    return min((float(s["read_monotonic"]) for s in samples.values() if "read_monotonic" in s), default=default)


class Cgroup:
    """A running container's cgroup files on this machine (v1 or v2), found from its pid's /proc/<pid>/cgroup and
    trusted only when that path names the container (a pid from another namespace would not)."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, memory: Path, cpu: Path, unified: bool) -> None:
        self.memory, self.cpu, self.unified = memory, cpu, unified

    @classmethod
    def of(cls, container_id: str, pid: int, proc: Path = Path("/proc")) -> Cgroup | None:
        try:
            lines = (proc / str(pid) / "cgroup").read_text().splitlines() if pid > 0 else []
        except OSError:
            return None
        v1: dict[str, str] = {}
        unified = None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if not controllers:
                unified = path
            for controller in controllers.split(","):
                v1[controller] = path
        if "memory" in v1 and "cpuacct" in v1 and container_id in v1["memory"]:
            memory = cls.ROOT / "memory" / v1["memory"].lstrip("/")
            cpu = next((cls.ROOT / name / v1["cpuacct"].lstrip("/") for name in ("cpuacct", "cpu,cpuacct")
                        if (cls.ROOT / name / v1["cpuacct"].lstrip("/")).is_dir()), memory)
            group = cls(memory, cpu, unified=False)
        elif unified is not None and container_id in unified and "memory" not in v1:
            group = cls(cls.ROOT / unified.lstrip("/"), cls.ROOT / unified.lstrip("/"), unified=True)
        else:
            return None
        return group if group.memory.is_dir() and group.cpu.is_dir() else None

    def sample(self) -> dict[str, Any]:
        """The same shape as the Engine API's stats (the keys usage_of reads), plus the oom_kill count."""
        moment = time.monotonic()
        try:
            stat = _key_values(self.memory / "memory.stat")
            if self.unified:
                usage = int((self.memory / "memory.current").read_text())
                cpu_ns = _key_values(self.cpu / "cpu.stat").get("usage_usec", 0) * 1000
                events = _key_values(self.memory / "memory.events")
            else:
                usage = int((self.memory / "memory.usage_in_bytes").read_text())
                cpu_ns = int((self.cpu / "cpuacct.usage").read_text())
                events = _key_values(self.memory / "memory.oom_control")
        except (OSError, ValueError):
            return {}
        return {"memory_stats": {"usage": usage, "stats": stat}, "oom_kills": events.get("oom_kill", 0),
                "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}, "system_cpu_usage": int(moment * 1e9),
                              "online_cpus": 1},
                "read_monotonic": moment}


def _key_values(path: Path) -> dict[str, int]:
    found = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            found[key] = int(value)
    return found


def usage_of(inspected: Mapping[str, Any], first: Mapping[str, Any] | None, second: Mapping[str, Any] | None,
             now: float) -> Usage:
    """One container's Usage from its inspect and two stats samples (None for a container that does not run)."""
    state = inspected.get("State") or {}
    limit = int((inspected.get("HostConfig") or {}).get("Memory") or 0) or None
    oom, restarts = bool(state.get("OOMKilled")), int(inspected.get("RestartCount") or 0)
    if not state.get("Running") or second is None:
        return Usage(memory_limit_bytes=limit, oom_killed=oom, restarts=restarts)
    # a process inside the container killed for the limit (a PostgreSQL backend) leaves the container running:
    # only its cgroup's oom_kill count tells
    oom = oom or int(second.get("oom_kills") or 0) > 0
    return Usage(memory_used_bytes=memory_used(second), memory_limit_bytes=limit,
                 cpu_percent=cpu_percent(first, second), uptime_s=_uptime(state.get("StartedAt"), now),
                 oom_killed=oom, restarts=restarts)


def memory_used(stats: Mapping[str, Any]) -> int | None:
    """Usage less the inactive page cache, as `docker stats` computes it (cgroup v1: total_inactive_file,
    v2: inactive_file)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0, int(usage) - int(inactive or 0))


def cpu_percent(first: Mapping[str, Any] | None, second: Mapping[str, Any]) -> float | None:
    """CPU used between two samples, in percent of one core (100 = one full core), as `docker stats` does."""
    if first is None:
        return None
    a, b = first.get("cpu_stats") or {}, second.get("cpu_stats") or {}
    try:
        used = int(b["cpu_usage"]["total_usage"]) - int(a["cpu_usage"]["total_usage"])
        system = int(b["system_cpu_usage"]) - int(a["system_cpu_usage"])
    except (KeyError, TypeError, ValueError):
        return None
    cpus = int(b.get("online_cpus") or len(b["cpu_usage"].get("percpu_usage") or []) or 1)
    if system <= 0 or used < 0:
        return 0.0
    return round(used / system * cpus * 100.0, 2)


def _uptime(started_at: object, now: float) -> float | None:
    if not isinstance(started_at, str) or started_at.startswith("0001"):
        return None
    text = started_at.rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        moment = datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction[:6] or "0"))
    except ValueError:
        return None
    return round(max(0.0, now - moment), 1)
