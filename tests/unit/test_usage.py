"""What status reports a container costs: the Engine API's stats (recorded), cgroup files (v1 and v2, faked on
disk) and the columns people read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.backends.local import usage as usage_module
from provision.backends.local.compose import ContainerState
from provision.backends.local.usage import Cgroup, cgroup_usage, collect, cpu_percent, memory_used, usage_of
from provision.cli.output import human_bytes, human_duration, status_table
from provision.core.model import Usage
from provision.core.results import ProjectResult, ServiceStatus

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "docker_usage_v1.json").read_text())


def test_engine_stats_give_memory_less_inactive_cache_and_cpu_of_one_core() -> None:
    first, second = FIXTURE["stats"]
    detail = second["memory_stats"]["stats"]
    assert memory_used(second) == second["memory_stats"]["usage"] - detail["total_inactive_file"]
    used = second["cpu_stats"]["cpu_usage"]["total_usage"] - first["cpu_stats"]["cpu_usage"]["total_usage"]
    system = second["cpu_stats"]["system_cpu_usage"] - first["cpu_stats"]["system_cpu_usage"]
    assert cpu_percent(first, second) == round(used / system * second["cpu_stats"]["online_cpus"] * 100, 2)
    assert cpu_percent(None, second) is None


def test_usage_of_a_running_and_a_stopped_container() -> None:
    inspect = FIXTURE["inspect"]
    started = inspect["State"]["StartedAt"]
    from datetime import datetime
    moment = datetime.fromisoformat(started[:19] + "+00:00").timestamp() + 90.5
    usage = usage_of(inspect, *FIXTURE["stats"], moment)
    assert usage.memory_limit_bytes == 64 * 2**20
    assert usage.memory_used_bytes is not None and 1_000_000 < usage.memory_used_bytes < 64 * 2**20
    assert usage.uptime_s is not None and 89 < usage.uptime_s <= 90.5
    assert usage.oom_killed is False and usage.restarts == 0
    stopped = {**inspect, "State": {**inspect["State"], "Running": False, "OOMKilled": True}, "RestartCount": 3}
    assert usage_of(stopped, None, None, moment) == Usage(memory_limit_bytes=64 * 2**20, oom_killed=True, restarts=3)


def _cgroup_v1(root: Path, cid: str, *, oom_kills: int = 0, pids: str = "") -> tuple[Path, Path]:
    memory, cpu = root / "memory" / "docker" / cid, root / "cpuacct" / "docker" / cid
    memory.mkdir(parents=True)
    cpu.mkdir(parents=True)
    (memory / "memory.usage_in_bytes").write_text("50000000\n")
    (memory / "memory.limit_in_bytes").write_text("67108864\n")
    (memory / "memory.stat").write_text("cache 100\ntotal_inactive_file 8000000\n")
    (memory / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kills}\n")
    (memory / "cgroup.procs").write_text(pids)
    (cpu / "cpuacct.usage").write_text("1000000000\n")
    return memory, cpu


def _proc(proc: Path, pid: int, start_ticks: int) -> None:
    (proc / str(pid)).mkdir(parents=True)
    # starttime is the 22nd field; the name may hold spaces and parentheses
    (proc / str(pid) / "stat").write_text(f"{pid} (post gres) S " + " ".join(["0"] * 18) + f" {start_ticks} 0 0\n")


@pytest.fixture
def fake_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setattr(Cgroup, "ROOT", tmp_path / "sys")
    monkeypatch.setattr(Cgroup, "PROC", tmp_path / "proc")
    monkeypatch.setattr(usage_module, "TICKS", 100)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "uptime").write_text("1000.00 1900.00\n")
    return tmp_path / "sys", tmp_path / "proc"


def test_cgroup_v1_files_are_read_like_the_engine_reports_them(fake_machine: tuple[Path, Path]) -> None:
    root, proc = fake_machine
    cid = "ab" * 32
    _proc(proc, 41, 40000)  # started 400 s after boot
    _proc(proc, 77, 90000)
    _cgroup_v1(root, cid, oom_kills=2, pids="77\n41\n")
    group = Cgroup.find(cid)
    assert group is not None and not group.unified
    first = group.sample()
    (group.cpu / "cpuacct.usage").write_text("1250000000\n")  # a quarter of a core-second later
    second = group.sample()
    second["cpu_stats"]["system_cpu_usage"] = first["cpu_stats"]["system_cpu_usage"] + 1_000_000_000  # 1 s apart
    usage = cgroup_usage(first, second)
    assert usage.memory_used_bytes == 42_000_000 and usage.memory_limit_bytes == 64 * 2**20
    assert usage.cpu_percent == 25.0
    assert usage.uptime_s == 600.0  # the oldest process: up 1000 s, started at 400 s
    assert usage.oom_killed is True  # a process inside was killed though the container runs on
    assert Cgroup.find("ef" * 32) is None  # another container, or one whose cgroup is not on this machine


def test_cgroup_v2_systemd_scope(fake_machine: tuple[Path, Path]) -> None:
    root, _ = fake_machine
    cid = "cd" * 32
    scope = root / "system.slice" / f"docker-{cid}.scope"
    scope.mkdir(parents=True)
    (scope / "memory.current").write_text("30000000\n")
    (scope / "memory.max").write_text("max\n")
    (scope / "memory.stat").write_text("anon 1\ninactive_file 1000000\n")
    (scope / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n")
    (scope / "cpu.stat").write_text("usage_usec 500\nuser_usec 400\n")
    (scope / "cgroup.procs").write_text("")
    group = Cgroup.find(cid)
    assert group is not None and group.unified
    sample = group.sample()
    assert memory_used(sample) == 29_000_000 and sample["oom_kills"] == 0
    assert sample["memory_stats"]["limit"] is None and sample["cpu_stats"]["cpu_usage"]["total_usage"] == 500_000
    assert cgroup_usage(sample, sample).uptime_s is None  # no process listed: unknown, not zero


class FakeApi:
    """docker.APIClient's inspect and stats, answering from the recorded fixture."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self.calls.append(f"inspect {cid}")
        return {**FIXTURE["inspect"], "State": {**FIXTURE["inspect"]["State"], "Pid": 0}}

    def stats(self, cid: str, stream: bool, one_shot: bool) -> dict[str, Any]:
        self.calls.append(f"stats {cid}")
        assert stream is False and one_shot is True
        return dict(FIXTURE["stats"][sum(c.startswith("stats") for c in self.calls) - 1])


def _container(cid: str, project: str, service: str, **labels: str) -> ContainerState:
    return ContainerState(name=f"{project}-{service}-1", service=service, state="running", health="", exit_code=0,
                          labels={"io.provision.project": project, **labels}, id=cid)


def test_collect_reads_cgroups_and_asks_the_engine_only_where_they_do_not_tell(
        fake_machine: tuple[Path, Path]) -> None:
    _cgroup_v1(fake_machine[0], "ab" * 32)  # the db's cgroup is on this machine; the api's (c1) is not
    listed = [_container("c1", "shop", "api"), _container("c2", "shop", "api", **{"com.docker.compose.oneoff": "True"}),
              _container("c3", "blog", "api"), _container("ab" * 32, "shop", "db")]
    api = FakeApi()
    found = collect(listed, lambda: api, ["shop"], sleep=lambda _s: None)
    assert set(found) == {"shop"} and set(found["shop"]) == {"api", "db"}
    assert api.calls == ["inspect c1", "stats c1", "stats c1"]  # not the one-off, not the other project
    assert found["shop"]["api"].cpu_percent == cpu_percent(*FIXTURE["stats"])
    assert found["shop"]["db"].memory_used_bytes == 42_000_000

    def no_engine() -> Any:
        raise AssertionError("every container's cgroup is here: the engine is not asked")

    only_local = collect([listed[3]], no_engine, None, sleep=lambda _s: None)
    assert set(only_local) == {"shop"} and only_local["shop"]["db"].memory_limit_bytes == 64 * 2**20


def test_status_table_shows_cost_and_oom() -> None:
    oom = Usage(memory_used_bytes=60 * 2**20, memory_limit_bytes=64 * 2**20, cpu_percent=1.25, uptime_s=3725,
                oom_killed=True)
    db = Usage(memory_used_bytes=30 * 2**20, memory_limit_bytes=256 * 2**20, cpu_percent=0.5, uptime_s=4000)
    result = ProjectResult("shop", "staging", "local", "running", False, "status",
                           services=(ServiceStatus("api", "running", "", oom), ServiceStatus("db", "running", "healthy", db)))
    data = result.to_dict()
    assert data["memory_used_bytes"] == 90 * 2**20 and data["memory_limit_bytes"] == 320 * 2**20
    assert data["cpu_percent"] == 1.75 and data["uptime_s"] == 3725 and data["oom_killed"] == ["api"]
    text = status_table([result])
    assert "running (OOM-killed: api)" in text and "90M/320M" in text and "1.8%" in text and "1h02m" in text
    assert "SERVER" not in text


@pytest.mark.parametrize(("size", "text"), [(512, "512B"), (1536, "1.5K"), (45_000_000, "43M"), (3 * 2**30, "3.0G")])
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(("seconds", "text"), [(42, "42s"), (125, "2m05s"), (3725, "1h02m"), (180000, "2d02h")])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
