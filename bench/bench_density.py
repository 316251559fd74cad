"""Density and fleet benchmarks: many projects on one machine with the product's default settings, and
placement over several (emulated) Coolify servers.

    python bench/bench_density.py [--projects 100] [--parallel 4] [--idle 60] [--only local|placement]

Local (a real Docker Engine, the test images, default limits and healthcheck interval):
1. provision N projects in one env (`provision --parallel P`): the time, and that all are running
2. idle cost after a settle period: memory per stack (status --json and `docker stats`), and the CPU used over
   `--idle` seconds by this env's containers only (their cgroups: the healthchecks' execs run there), by the
   engine processes that serve only them (their shims, with the `runc` each healthcheck exec runs, and their
   docker-proxies), and by dockerd and containerd (shared with anything else on the engine, reported apart)
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

from bench.common import REPO, cleanup, environ, invoke, make_root, ports, published, summary  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cli_json(root: Path, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=environ(root), capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"invoke {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def own_containers(env: str) -> list[str]:
    """Full ids of the env's running containers: this benchmark's, not whatever else shares the engine."""
    return subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=io.provision.env={env}"],
                          capture_output=True, text=True, check=True).stdout.split()


def engine_processes(ids: list[str], host_ports: set[str]) -> tuple[list[int], list[int]]:
    """(the pids that serve only the given containers: their shims and the docker-proxy of each of their published
    ports; the engine's daemons dockerd and containerd, which serve every container on the engine)."""
    own, daemons = [], []
    wanted = set(ids)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv]
        if name in ("dockerd", "containerd"):
            daemons.append(int(entry.name))
        elif name.startswith("containerd-shim") and "-id" in words and words[words.index("-id") + 1] in wanted:
            own.append(int(entry.name))
        elif name == "docker-proxy" and "-host-port" in words and words[words.index("-host-port") + 1] in host_ports:
            own.append(int(entry.name))
    return own, daemons


def process_seconds(pids: list[int]) -> float:
    """CPU seconds of `pids` so far, with their waited-for children's: a shim runs `runc` for every healthcheck
    exec and waits for it, so the checks' runc processes count with the shims."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        except (OSError, IndexError):
            continue
    return total / HZ


def container_seconds(container: str) -> float:
    """CPU seconds of one container's cgroup so far (its processes and every exec in it: the healthchecks)."""
    v1 = [Path(f"/sys/fs/cgroup/{c}/docker/{container}/cpuacct.usage") for c in ("cpuacct", "cpu,cpuacct")]
    for path in v1:
        if path.exists():
            return int(path.read_text()) / 1e9
    for scope in (Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope"), Path(f"/sys/fs/cgroup/docker/{container}")):
        stat = scope / "cpu.stat"
        if stat.exists():
            for line in stat.read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
    raise RuntimeError(f"no cgroup CPU accounting found for container {container[:12]}")


def idle_cpu(env: str, host_ports: set[str], seconds: float) -> tuple[float, float, float]:
    """Percent of one core used over `seconds` by the env's containers (their cgroups), by the engine's processes
    that serve only them (shims with their healthchecks' runc, docker-proxies), and by dockerd and containerd
    (shared: whatever else runs on the engine meanwhile counts there too)."""
    ids = own_containers(env)
    own, daemons = engine_processes(ids, host_ports)

    def sample() -> tuple[float, float, float, float]:
        return (sum(container_seconds(c) for c in ids), process_seconds(own), process_seconds(daemons),
                time.monotonic())

    c0, o0, d0, t0 = sample()
    time.sleep(seconds)
    c1, o1, d1, t1 = sample()
    return tuple((b - a) / (t1 - t0) * 100 for a, b in ((c0, c1), (o0, o1), (d0, d1)))  # type: ignore[return-value]


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
    root, env = make_root(names, port_range=ports(21000, 2000), network_pool="10.212.0.0/16")
    try:
        took = invoke(root, "provision", f"--env={env}", f"--parallel={parallel}")
        status = cli_json(root, "status", f"--env={env}", "--json")["projects"]
        running = sum(1 for p in status if p["status"] == "running")
        print(f"provision {projects} projects (--parallel {parallel}): {took:.1f} s; running: {running}/{projects}")
        print(f"settling {idle:.0f} s, then measuring idle CPU over {idle:.0f} s ...", flush=True)
        time.sleep(idle)
        host_ports = {str(port) for name in names
                      for port in published((root / ".provision" / env / name / "docker-compose.yml").read_text()).values()}
        containers, shims, daemons = idle_cpu(env, host_ports, idle)
        status = cli_json(root, "status", f"--env={env}", "--json")["projects"]
        per_stack = [p["memory_used_bytes"] for p in status if p["memory_used_bytes"] is not None]
        stats = docker_stats_memory(env)
        mib = 1024**2
        print(f"idle memory per stack (status): median {statistics.median(per_stack) / mib:.1f} MiB, "
              f"max {max(per_stack) / mib:.1f} MiB, total {sum(per_stack) / mib:.0f} MiB")
        print(f"idle memory (docker stats, {len(stats)} containers): total {sum(stats) / mib:.0f} MiB, "
              f"{sum(stats) / mib / max(1, projects):.1f} MiB per stack")
        print(f"idle CPU of the {projects} stacks: containers {containers:.1f} % of one core, their shims (with "
              f"the healthchecks' runc) and docker-proxies {shims:.1f} %, together {containers + shims:.1f} %; "
              f"dockerd and containerd {daemons:.1f} % (shared with anything else on the engine); all "
              f"{containers + shims + daemons:.1f} % (target <= 25 %)")
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
