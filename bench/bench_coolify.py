"""Coolify backend benchmarks against the emulator (tests/coolify_emulator).

    python bench/bench_coolify.py [--projects 50] [--latency 0.05] [--parallel 16]
    python bench/bench_coolify.py --only budget [--budget-projects 20] [--budget-parallel 8]
    python bench/bench_coolify.py --only restart [--restarts 16] [--verbose]   (--verbose: each restart's times)

1. HTTP requests per fresh provision and per no-op re-provision (with and without local state)
2. provisioning N projects with `latency` seconds added to every API request: --parallel P / serial
3. the request budget: `--parallel 8` over 20 fresh projects against Coolify's own limit (200 requests a
   minute): the most requests in any 60 s window, and how many Coolify refused (429)
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, environ  # noqa: E402
from tests.coolify_emulator import REALISTIC, CoolifyEmulator, max_in_window  # noqa: E402

TOKEN = "1|bench-token"


def make_root(emu: CoolifyEmulator, env: str, projects: list[str], extra: str = "") -> Path:
    root = Path(tempfile.mkdtemp(prefix="provision-bench-coolify-"))
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    (root / "envs").mkdir()
    listed = "".join(f"  - name: {p}\n" for p in projects)
    (root / "envs" / f"{env}.yml").write_text(
        "owner: bench-0001\nbackend: coolify\nimages:\n  db: postgres:16-alpine\n  api: postgrest/postgrest:v12.2.3\n"
        f"projects:\n{listed}health:\n  timeout: 120\n" + extra
    )
    (root / "envs" / f"{env}.env").write_text(f"COOLIFY_API_URL={emu.base_url}\nCOOLIFY_API_TOKEN={TOKEN}\n")
    return root


def run(root: Path, emu: CoolifyEmulator, *args: str, task: str = "provision") -> float:
    env = environ(root)
    env.update({"HTTP_PROXY": emu.proxy_url, "http_proxy": emu.proxy_url,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "invoke", task, *args], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def count(emu: CoolifyEmulator) -> str:
    by_method = Counter(r.method for r in emu.requests)
    return f"{len(emu.requests)} ({', '.join(f'{n} {m}' for m, n in sorted(by_method.items()))})"


def bench_budget(projects: int, parallel: int, limit: int | None = None) -> None:
    """A fleet run against Coolify's default limit (200 a minute, per user: the emulator's), with Coolify-like
    timings: the run's budget (coolify.requests_per_minute, 150, or `limit`) must keep every 60 s window under
    200 and no request may be refused."""
    names = [f"b{i:02d}" for i in range(projects)]
    with CoolifyEmulator(token=TOKEN, **REALISTIC) as emu:
        extra = f"coolify:\n  requests_per_minute: {limit}\n" if limit else ""
        root = make_root(emu, "budget", names, extra)
        seconds = run(root, emu, "--env=budget", f"--parallel={parallel}")
        assert len(emu.find_services()) == projects
        times = [r.at for r in emu.requests if r.path.startswith("/")]
        refused = sum(1 for r in emu.requests if r.status == 429)
        polls = sum(1 for r in emu.requests if r.method == "GET" and re.fullmatch(r"/services/[^/]+", r.path))
        budget = f"requests_per_minute {limit}" if limit else "the default budget (150)"
        print(f"{projects} fresh projects, --parallel {parallel}, {budget}, Coolify limit {emu.rate_limit}/min: "
              f"{len(times)} requests in {seconds:.1f} s ({polls} status polls), at most "
              f"{max_in_window(times, 60.0)} in any 60 s window, {refused} refused (429)")


def bench_requests() -> None:
    with CoolifyEmulator(token=TOKEN, action_delay=0.3) as emu:
        root = make_root(emu, "reqs", ["shop"])
        run(root, emu, "--env=reqs")
        print(f"first provision on this server (makes the lock project): {count(emu)} requests")
        emu.requests.clear()
        run(root, emu, "--env=reqs", "--project=other", "--create")
        print(f"fresh provision: {count(emu)} requests; each: {[f'{r.method} {r.path}' for r in emu.requests]}")
        polls = [r for r in emu.requests if r.method == "GET" and r.path.startswith("/services/")]
        tasks = [r for r in emu.requests if "/scheduled-tasks" in r.path and r not in polls]
        print(f"  of which {len(polls)} status and task polls (GET /services/...), {len(tasks)} for the database "
              f"roles' one-off task, {len(emu.requests) - len(polls) - len(tasks)} others (the lock included)")
        emu.requests.clear()
        run(root, emu, "--env=reqs")
        print(f"no-op re-provision (state dir present): {count(emu)} requests")
        shutil.rmtree(root / ".provision")
        emu.requests.clear()
        run(root, emu, "--env=reqs")
        print(f"no-op re-provision (fresh machine, no state dir): {count(emu)} requests: "
              f"{[f'{r.method} {r.path}' for r in emu.requests]}")


def bench_parallel(projects: int, latency: float, parallel: int) -> None:
    names = [f"p{i:02d}" for i in range(projects)]
    results = {}
    for label, workers in (("serial", 1), (f"parallel {parallel}", parallel)):
        # the default API_RATE_LIMIT (200/min) alone would bound 50 fresh projects (~400 requests) to 2 minutes
        with CoolifyEmulator(token=TOKEN, action_delay=0.3, rate_limit=100_000) as emu:
            emu.inject("latency", seconds=latency)
            # ...and so would the run's own request budget (150/min): lifted too, this measures parallelism
            root = make_root(emu, "fleet", names, "coolify:\n  requests_per_minute: 100000\n")
            results[label] = run(root, emu, "--env=fleet", f"--parallel={workers}")
            assert len(emu.find_services()) == projects
        print(f"{projects} projects, {latency * 1000:.0f} ms per request, {label}: {results[label]:.2f} s")
    ratio = results[f"parallel {parallel}"] / results["serial"]
    print(f"  ratio parallel/serial (target <= 0.2): {ratio:.3f}")


def bench_restart(runs: int, *, verbose: bool = False) -> None:
    """`restart` against Coolify-like timings: from its POST to its return, beside the emulator's own completion:
    the moment its job has finished and the status refresh has reported every new container running and past
    its healthcheck. `restart` must never return before it."""
    with CoolifyEmulator(token=TOKEN, **REALISTIC) as emu:
        root = make_root(emu, "restart", ["shop"])
        run(root, emu, "--env=restart")
        [service] = emu.find_services("shop")
        ratios, returns, completions = [], [], []
        phases = random.Random(7)
        for _ in range(runs):
            # a random phase against the emulator's refresh ticks: back to back, each run would start at the
            # same offset from a tick as the one before (its length mod the period), and measure one case only
            time.sleep(phases.uniform(0, emu.refresh_interval))
            emu.requests.clear()
            emu.reset_rate_limit()  # back-to-back runs would meet the 200/min limit: this measures the wait
            completed: list[float] = []
            done = threading.Event()

            def watch(uuid: str = service["uuid"], done: threading.Event = done,
                      completed: list[float] = completed) -> None:
                # the emulator's own view: job finished (nothing pending) and the stored status running again
                while not done.is_set():
                    posted = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/restart")]
                    snapshot = emu.service(uuid) or {}
                    apps = snapshot.get("applications") or []
                    # done: the job finished, and a refresh after it reported every new container running and
                    # past its healthcheck (until that refresh, the old containers' running:healthy may remain)
                    if posted and not snapshot.get("pending") and apps and all(
                            a["fresh"] and str(a["status"]).startswith("running") and ":starting" not in a["status"]
                            for a in apps):
                        completed.append(time.time())
                        return
                    time.sleep(0.005)

            watcher = threading.Thread(target=watch)
            watcher.start()
            run(root, emu, "--env=restart", "--project=shop", task="restart")
            returned = time.time()
            watcher.join(timeout=30)  # a return before completion shows as a ratio below 1
            done.set()
            watcher.join()
            [posted] = [r.at for r in emu.requests if r.method == "POST" and r.path.endswith("/restart")]
            completion = (completed[0] if completed else returned) - posted
            returns.append(returned - posted)
            completions.append(completion)
            ratios.append((returned - posted) / completion)
            if verbose:
                print(f"  run: return {returned - posted:.2f} s, completion {completion:.2f} s")
        print(f"restart: POST to return median {statistics.median(returns):.2f} s; the emulator's own completion "
              f"(job {emu.action_delay + emu.stop_seconds + emu.start_seconds:.1f} s, then the status refresh "
              f"every {emu.refresh_interval:g} s) median {statistics.median(completions):.2f} s")
        print(f"  ratio return/completion (target: >= 1, <= 1.2): median {statistics.median(ratios):.2f}, "
              f"min {min(ratios):.3f}, max {max(ratios):.2f}; returned before completion: "
              f"{sum(r < 1 for r in ratios)} of {len(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--budget-projects", type=int, default=20)
    parser.add_argument("--budget-parallel", type=int, default=8)
    parser.add_argument("--budget-limit", type=int, help="coolify.requests_per_minute for the budget run")
    parser.add_argument("--only", choices=("requests", "restart", "parallel", "budget"))
    parser.add_argument("--verbose", action="store_true", help="print each restart")
    args = parser.parse_args()
    if args.only in (None, "requests"):
        bench_requests()
    if args.only in (None, "restart"):
        bench_restart(args.restarts, verbose=args.verbose)
    if args.only in (None, "parallel"):
        bench_parallel(args.projects, args.latency, args.parallel)
    if args.only in (None, "budget"):
        bench_budget(args.budget_projects, args.budget_parallel, args.budget_limit)


if __name__ == "__main__":
    main()
