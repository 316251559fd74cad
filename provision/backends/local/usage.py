"""What each container costs now: one engine query for the whole env (the container list, `docker ps`), then,
for the running containers, their cgroup files on this machine read twice CPU_WINDOW apart (memory used and limit, CPU,
OOM kills, and the uptime of their oldest process): ~0.3 s for any number of containers, no further engine
request. Only a container that does not run is inspected (did an OOM kill end it). Where the cgroup files are
not on this machine (a remote engine, a custom cgroup parent) the Engine API's inspect and stats are used: its
collector samples once a second, so a stats call waits up to 1 s and CPU needs two (~2 s, as
`docker stats --no-stream` takes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from ...core import names
from ...core.model import Usage
from .compose import ContainerState, service_containers

CPU_WINDOW = 0.25  # seconds between a container's two CPU samples, at least
WORKERS = 16
UNLIMITED = 2**62  # cgroup v1 writes "no limit" as a number near 2**63


def collect(listed: Sequence[ContainerState], api: Callable[[], Any], projects: Collection[str] | None, *,
            now: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, Usage]]:
    """{project: {service: Usage}} for the containers of `projects` (None: all) among the env's `listed` ones.
    `api` gives docker's low-level APIClient, asked for only where the cgroup files do not tell (the SDK is not
    even imported when they all do)."""
    wanted = None if projects is None else set(projects)
    chosen: dict[str, tuple[str, str, bool]] = {}
    for container in service_containers(listed):
        project = container.labels.get(names.LABEL_PROJECT)
        if project and (wanted is None or project in wanted) and container.id:
            chosen[container.id] = (project, container.service, container.running)
    groups = {cid: Cgroup.find(cid) for cid, (_, _, running) in chosen.items() if running}
    local = {cid: group for cid, group in groups.items() if group is not None}
    first = {cid: group.sample() for cid, group in local.items()}
    sleep(max(0.0, CPU_WINDOW - (time.monotonic() - first_moment(first, time.monotonic()))))
    second = {cid: group.sample() for cid, group in local.items()}
    result: dict[str, dict[str, Usage]] = {}
    for cid in local:
        project, service, _ = chosen[cid]
        result.setdefault(project, {})[service] = cgroup_usage(first[cid], second[cid])
    remote = [cid for cid in chosen if cid not in local]  # not running, or its cgroup is not on this machine
    if remote:
        client = api()
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(remote))) as pool:
            inspected = dict(zip(remote, pool.map(client.inspect_container, remote), strict=True))
            running = [cid for cid in remote if (inspected[cid].get("State") or {}).get("Running")]

            def stats(cid: str) -> dict[str, Any]:
                return dict(client.stats(cid, stream=False, one_shot=True))

            before = dict(zip(running, pool.map(stats, running), strict=True))
            after = dict(zip(running, pool.map(stats, running), strict=True))
        moment = now()
        for cid in remote:
            project, service, _ = chosen[cid]
            result.setdefault(project, {})[service] = usage_of(inspected[cid], before.get(cid), after.get(cid), moment)
    return result


def first_moment(samples: Mapping[str, Mapping[str, Any]], default: float) -> float:
    return min((float(s["read_monotonic"]) for s in samples.values() if "read_monotonic" in s), default=default)


class Cgroup:
    """A running container's cgroup files on this machine (v1 or v2, cgroupfs or systemd driver), found by the
    paths Docker gives them, which carry the full container id."""

    ROOT = Path("/sys/fs/cgroup")
    PROC = Path("/proc")

    def __init__(self, memory: Path, cpu: Path, unified: bool) -> None:
        self.memory, self.cpu, self.unified = memory, cpu, unified

    @classmethod
    def find(cls, container_id: str) -> Cgroup | None:
        for parent in ("docker", "system.slice"):
            leaf = container_id if parent == "docker" else f"docker-{container_id}.scope"
            memory = cls.ROOT / "memory" / parent / leaf
            if (memory / "memory.usage_in_bytes").is_file():
                cpu = next((cls.ROOT / name / parent / leaf for name in ("cpuacct", "cpu,cpuacct")
                            if (cls.ROOT / name / parent / leaf / "cpuacct.usage").is_file()), None)
                if cpu is not None:
                    return cls(memory, cpu, unified=False)
            unified = cls.ROOT / parent / leaf
            if (unified / "memory.current").is_file():
                return cls(unified, unified, unified=True)
        return None

    def sample(self) -> dict[str, Any]:
        """The Engine API's stats shape (the keys usage_of reads) plus the limit, the oom_kill count and the
        start of the oldest process (seconds since boot)."""
        moment = time.monotonic()
        try:
            stat = _key_values(self.memory / "memory.stat")
            if self.unified:
                usage = int((self.memory / "memory.current").read_text())
                raw_limit = (self.memory / "memory.max").read_text().strip()
                limit = None if raw_limit == "max" else int(raw_limit)
                cpu_ns = _key_values(self.cpu / "cpu.stat").get("usage_usec", 0) * 1000
                events = _key_values(self.memory / "memory.events")
            else:
                usage = int((self.memory / "memory.usage_in_bytes").read_text())
                number = int((self.memory / "memory.limit_in_bytes").read_text())
                limit = None if number >= UNLIMITED else number
                cpu_ns = int((self.cpu / "cpuacct.usage").read_text())
                events = _key_values(self.memory / "memory.oom_control")
            started = self._started()
        except (OSError, ValueError):
            return {}
        return {"memory_stats": {"usage": usage, "stats": stat, "limit": limit}, "oom_kills": events.get("oom_kill", 0),
                "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}, "system_cpu_usage": int(moment * 1e9),
                              "online_cpus": 1},
                "read_monotonic": moment, "started_since_boot": started}

    def _started(self) -> float | None:
        """When the cgroup's oldest process started, in seconds since boot (its PID 1: the container's start)."""
        starts = []
        for pid in (self.memory / "cgroup.procs").read_text().split():
            try:
                fields = (self.PROC / pid / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            starts.append(int(fields[19]) / TICKS)  # starttime: the 22nd field, in clock ticks since boot
        return min(starts) if starts else None


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _uptime_since_boot(proc: Path) -> float:
    return float((proc / "uptime").read_text().split()[0])


def cgroup_usage(first: Mapping[str, Any], second: Mapping[str, Any]) -> Usage:
    """One running container's Usage from two cgroup samples."""
    if not second:
        return Usage()
    started = second.get("started_since_boot")
    try:
        uptime = None if started is None else round(max(0.0, _uptime_since_boot(Cgroup.PROC) - started), 1)
    except (OSError, ValueError):
        uptime = None
    return Usage(memory_used_bytes=memory_used(second), memory_limit_bytes=second["memory_stats"].get("limit"),
                 cpu_percent=cpu_percent(first or None, second), uptime_s=uptime,
                 oom_killed=int(second.get("oom_kills") or 0) > 0, restarts=None)


def _key_values(path: Path) -> dict[str, int]:
    found = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            found[key] = int(value)
    return found


def usage_of(inspected: Mapping[str, Any], first: Mapping[str, Any] | None, second: Mapping[str, Any] | None,
             now: float) -> Usage:
    """One container's Usage from its inspect and two Engine API stats samples (None: it does not run)."""
    state = inspected.get("State") or {}
    limit = int((inspected.get("HostConfig") or {}).get("Memory") or 0) or None
    oom, restarts = bool(state.get("OOMKilled")), int(inspected.get("RestartCount") or 0)
    if not state.get("Running") or second is None:
        return Usage(memory_limit_bytes=limit, oom_killed=oom, restarts=restarts)
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
