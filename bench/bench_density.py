"""Density and fleet benchmarks: many projects on one machine with the product's default settings, and
placement over several (emulated) Coolify servers.

    python bench/bench_density.py [--projects 100] [--parallel 4] [--idle 60] [--only local|placement]

Local (a real Docker Engine, the test images, default limits and healthcheck interval):
1. provision N projects in one env (`provision --parallel P`): the time, and that all are running
2. idle cost after a settle period: memory per stack (status --json and `docker stats`), and the CPU that the
   stacks (their cgroups) and the engine (dockerd, containerd and the shims) use over `--idle` seconds
3. with N running: `status`, `list`, `plan`, a no-op `provision` of all N (medians of 3)
4. `stop --all` then `start --all` (--parallel P) against `docker compose stop`/`start` of the same N projects in
   a shell loop with the same parallelism (xargs -P), interleaved

Placement (the Coolify emulator, no containers): 60 projects over 3 servers of max_stacks 20, 40 and 60; the
spread against capacity, then a fresh state directory plans no change and sees the same servers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, cleanup, environ, invoke, make_root, summary  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cli_json(root: Path, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=environ(root), capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"invoke {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def engine_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("dockerd", "containerd") or name.startswith("containerd-shim"):
                pids.append(int(entry.name))
    return pids


def process_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            continue
    return total / HZ


def containers_seconds() -> float:
    """CPU seconds of every container so far (cgroup v1 cpuacct of docker's parent, or v2 docker.slice/system.slice)."""
    for path in (Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"), Path("/sys/fs/cgroup/cpu,cpuacct/docker/cpuacct.usage")):
        if path.exists():
            return int(path.read_text()) / 1e9
    total = 0.0
    for scope in Path("/sys/fs/cgroup/system.slice").glob("docker-*.scope"):
        for line in (scope / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec"):
                total += int(line.split()[1]) / 1e6
    return total


def idle_cpu(seconds: float) -> tuple[float, float]:
    """Percent of one core used by the containers and by the engine over `seconds`."""
    pids = engine_pids()
    c0, e0, t0 = containers_seconds(), process_seconds(pids), time.monotonic()
    time.sleep(seconds)
    c1, e1, t1 = containers_seconds(), process_seconds(pids), time.monotonic()
    return (c1 - c0) / (t1 - t0) * 100, (e1 - e0) / (t1 - t0) * 100


def docker_stats_memory(env: str) -> list[int]:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.provision.env={env}"], capture_output=True,
                         text=True).stdout.split()
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.Container}} {{.MemUsage}}", *ids],
                         capture_output=True, text=True).stdout
    units = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2, "GB": 1000**3}
    used = []
    for line in out.splitlines():
        amount = line.split()[1]
        number = amount.rstrip("BKMGiak")
        unit = amount[len(number):]
        used.append(int(float(number) * units.get(unit, 1)))
    return used


def compose_loop(root: Path, env: str, names: list[str], verb: str, parallel: int) -> float:
    """`docker compose <verb>` of every project's rendered file, `parallel` at a time (what `xargs -P` does)."""
    def run(name: str) -> None:
        folder = root / ".provision" / env / name
        subprocess.run(["docker", "compose", "--project-name", f"{name}_{env}", "--file", str(folder / "docker-compose.yml"),
                        "--env-file", str(folder / "secrets.env"), verb], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(run, names))
    return time.perf_counter() - started


def bench_local(projects: int, parallel: int, idle: float) -> None:
    names = [f"d{i:03d}" for i in range(projects)]
    root, env = make_root(names, port_range="[21000, 22999]", network_pool="10.212.0.0/16")
    try:
        took = invoke(root, "provision", f"--env={env}", f"--parallel={parallel}")
        status = cli_json(root, "status", f"--env={env}", "--json")["projects"]
        running = sum(1 for p in status if p["status"] == "running")
        print(f"provision {projects} projects (--parallel {parallel}): {took:.1f} s; running: {running}/{projects}")
        print(f"settling {idle:.0f} s, then measuring idle CPU over {idle:.0f} s ...", flush=True)
        time.sleep(idle)
        containers, engine = idle_cpu(idle)
        status = cli_json(root, "status", f"--env={env}", "--json")["projects"]
        per_stack = [p["memory_used_bytes"] for p in status if p["memory_used_bytes"] is not None]
        stats = docker_stats_memory(env)
        mib = 1024**2
        print(f"idle memory per stack (status): median {statistics.median(per_stack) / mib:.1f} MiB, "
              f"max {max(per_stack) / mib:.1f} MiB, total {sum(per_stack) / mib:.0f} MiB")
        print(f"idle memory (docker stats, {len(stats)} containers): total {sum(stats) / mib:.0f} MiB, "
              f"{sum(stats) / mib / max(1, projects):.1f} MiB per stack")
        print(f"idle CPU: containers {containers:.1f} % of one core, engine {engine:.1f} %, "
              f"together {containers + engine:.1f} % (target <= 25 %)")
        for label, args, target in (("status", ("status", f"--env={env}"), 1.0),
                                    ("list", ("list", f"--env={env}"), 1.0),
                                    ("plan", ("plan", f"--env={env}"), 2.0),
                                    ("no-op provision", ("provision", f"--env={env}", f"--parallel={parallel}"), 10.0)):
            times = [invoke(root, *args) for _ in range(3)]
            print(f"{label} with {projects} running: {summary(times)} (target <= {target:g} s)")
        ours: dict[str, list[float]] = {"stop": [], "start": []}
        raw: dict[str, list[float]] = {"stop": [], "start": []}
        for _ in range(2):
            for verb in ("stop", "start"):
                ours[verb].append(invoke(root, verb, f"--env={env}", "--all", f"--parallel={parallel}"))
            for verb in ("stop", "start"):
                raw[verb].append(compose_loop(root, env, names, verb, parallel))
        for verb in ("stop", "start"):
            r = statistics.median(ours[verb]) / statistics.median(raw[verb])
            print(f"{verb} --all: {summary(ours[verb])}; raw compose loop (xargs -P {parallel}): "
                  f"{summary(raw[verb])}; ratio {r:.2f} (target <= 2)")
    finally:
        cleanup(env)
        shutil.rmtree(root, ignore_errors=True)


def bench_placement() -> None:
    from tests.coolify.conftest import TOKEN, coolify_env
    from tests.coolify_emulator import CoolifyEmulator

    names = [f"app{i:02d}" for i in range(60)]
    capacities = {"s20": 20, "s40": 40, "s60": 60}  # room for 120: the spread, not the room, decides
    # Coolify's API allows 200 requests a minute by default (the emulator too): 60 creates would wait on it
    with CoolifyEmulator(token=TOKEN, rate_limit=100000) as emu:
        uuids = {name: emu.add_server(name, "127.0.0.1")["uuid"] for name in capacities}
        root = Path(tempfile.mkdtemp(prefix="provision-bench-placement-"))
        try:
            (root / "envs").mkdir()
            shutil.copytree(REPO / "templates", root / "templates")
            shutil.copy(REPO / "tasks.py", root / "tasks.py")
            servers = "  servers:\n" + "".join(f"    - {{name: {n}, max_stacks: {c}}}\n" for n, c in capacities.items())
            # the run's own request budget (150/min) is lifted with the emulator's limit
            (root / "envs" / "placed.yml").write_text(coolify_env(projects=tuple(names), timeout=60,
                                                                  extra=servers + "  requests_per_minute: 100000\n"))
            (root / "envs" / "placed.env").write_text(f"COOLIFY_API_URL={emu.base_url}\nCOOLIFY_API_TOKEN={TOKEN}\n")
            os.environ.update({"HTTP_PROXY": emu.proxy_url, "NO_PROXY": "127.0.0.1,localhost"})
            took = invoke(root, "provision", "--env=placed", "--parallel=8")
            by_uuid = {u: n for n, u in uuids.items()}
            spread = {n: 0 for n in capacities}
            for service in emu.find_services():
                spread[by_uuid[service["server_uuid"]]] += 1
            print(f"placement: 60 projects over servers of max_stacks {capacities} in {took:.1f} s: {spread}")
            off = max(abs(spread[n] - c * 60 / sum(capacities.values())) for n, c in capacities.items())
            print(f"  largest distance from the capacity share: {off:.1f} stack(s) (target <= 1)")
            fresh = root / "fresh-state"
            plan = subprocess.run([sys.executable, "-m", "invoke", "plan", "--env=placed", "--json"], cwd=root,
                                  env={**environ(root), "PROVISION_STATE_DIR": str(fresh)}, capture_output=True, text=True)
            outcomes = {p["outcome"] for p in json.loads(plan.stdout)["projects"]}
            status = subprocess.run([sys.executable, "-m", "invoke", "status", "--env=placed", "--json"], cwd=root,
                                    env={**environ(root), "PROVISION_STATE_DIR": str(fresh)}, capture_output=True, text=True)
            seen = {p["project"]: p["server"] for p in json.loads(status.stdout)["projects"]}
            placed = {s["name"]: by_uuid[s["server_uuid"]] for s in emu.find_services()}
            print(f"  a fresh state directory: plan outcomes {sorted(outcomes)}; same servers in status: {seen == placed}")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--only", choices=("local", "placement"))
    args = parser.parse_args()
    if args.only != "placement":
        bench_local(args.projects, args.parallel, args.idle)
    if args.only != "local":
        bench_placement()


if __name__ == "__main__":
    main()
