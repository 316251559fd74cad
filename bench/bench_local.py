"""Local backend benchmarks, each measured side by side with its baseline (interleaved runs).

    python bench/bench_local.py [--runs N] [--noop-pairs N]

Every baseline runs the very file provision rendered, unmodified (the product's 60 s healthcheck,
`depends_on: service_started`), with its secrets file:
1. cold `invoke provision` / raw `docker compose up -d` of the same file, then the benchmark's own wait, polled
   every 50 ms, until the db accepts connections (`pg_isready`'s test) and the api answers HTTP. The raw stack has
   no roles (provision makes them), so its api answers 503: a lower bound of what compose alone needs to serve.
2. no-op `invoke provision` (one project, its stack running, nothing changed) / compose's own no-op, `docker
   compose up -d` on the same running stack with the same file: `--noop-pairs` pairs, alternating
3. `invoke --list` wall time
4. rendering 1,000 project x env combinations (in process)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    REPO,
    cleanup,
    compose_argv,
    invoke,
    make_root,
    published,
    ratio,
    summary,
    timed,
)
from provision.infra.probes import postgres_ping  # noqa: E402


def answers_http(port: int) -> bool:
    """The api on `port` answers HTTP, with any status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):  # noqa: S310 - a local http url
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def raw_cold(argv: list[str], db_port: int, api_port: int) -> float:
    """Wall time of compose's `up -d` plus a 50 ms poll until the db accepts connections and the api answers."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ping = postgres_ping("127.0.0.1", db_port)
    db_ready = api_ready = False
    while not (db_ready and api_ready):
        db_ready = db_ready or ping() is None
        api_ready = api_ready or answers_http(api_port)
        if time.perf_counter() - started > 300:
            raise RuntimeError("the raw stack did not come up in 300 s")
        if not (db_ready and api_ready):
            time.sleep(0.05)
    return time.perf_counter() - started


def bench_cold(runs: int) -> dict[str, list[float]]:
    root, env = make_root()
    samples: dict[str, list[float]] = {"cold": [], "raw_cold": []}
    try:
        for i in range(runs):
            project = f"c{i}"
            samples["cold"].append(invoke(root, "provision", f"--env={env}", f"--project={project}"))
            # the baseline: the very same rendered file and secrets, run by compose directly once ours is gone
            folder = root / ".provision" / env / project
            raw_dir = root / "raw" / project
            raw_dir.mkdir(parents=True)
            for name in ("docker-compose.yml", "secrets.env"):
                (raw_dir / name).write_text((folder / name).read_text())
            invoke(root, "destroy", f"--env={env}", f"--project={project}", "--delete-data", "--yes", "--no-backup")
            port = published((raw_dir / "docker-compose.yml").read_text())
            raw = f"raw{project}_{env}"
            samples["raw_cold"].append(raw_cold(compose_argv(raw_dir, raw, "up", "-d"), port["db"], port["api"]))
            timed(compose_argv(raw_dir, raw, "down", "-v"))
    finally:
        cleanup(env)
        shutil.rmtree(root, ignore_errors=True)
    return samples


def bench_noop(pairs: int) -> dict[str, list[float]]:
    root, env = make_root()
    samples: dict[str, list[float]] = {"noop": [], "compose_noop": []}
    try:
        invoke(root, "provision", f"--env={env}", "--project=n0")
        folder = root / ".provision" / env / "n0"
        up = compose_argv(folder, f"n0_{env}", "up", "-d")
        before = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=io.provision.env={env}"],
                                capture_output=True, text=True, check=True).stdout.split()
        for i in range(pairs):
            first, second = (("noop", "compose_noop") if i % 2 == 0 else ("compose_noop", "noop"))
            for side in (first, second):
                samples[side].append(invoke(root, "provision", f"--env={env}", "--project=n0") if side == "noop"
                                     else timed(up))
        after = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=io.provision.env={env}"],
                               capture_output=True, text=True, check=True).stdout.split()
        if sorted(before) != sorted(after):
            raise RuntimeError("a no-op recreated containers: the comparison is void")
    finally:
        cleanup(env)
        shutil.rmtree(root, ignore_errors=True)
    return samples


def bench_list(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - started)
    return out


def bench_render(total: int = 1000) -> float:
    from provision.core.config import load_env
    from provision.core.model import Ports
    from provision.core.render import build_context, render_stack
    from provision.core.secrets import generate_missing

    envs = ["dev", "staging", "demo"]
    configs = [load_env(e, REPO, environ={"COOLIFY_API_URL": "", "COOLIFY_API_TOKEN": ""}) for e in envs]
    secrets = generate_missing({})
    started = time.perf_counter()
    for i in range(total):
        config = configs[i % len(configs)]
        spec = config.project(f"project-{i}")
        render_stack(config.template_path, build_context(config, spec, backend="local", ports=Ports(20000 + i, 30000 + i)), secrets)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="cold provisions, each beside a raw one")
    parser.add_argument("--noop-pairs", type=int, default=15, help="no-op pairs (ours, compose's), alternating")
    parser.add_argument("--only", choices=("cold", "noop", "list", "render"))
    args = parser.parse_args()
    if args.only in (None, "cold"):
        s = bench_cold(args.runs)
        print(f"cold provision                {summary(s['cold'])}")
        print(f"raw up -d + wait (same file)  {summary(s['raw_cold'])}")
        print(f"  ratio (target <= 1.15): {ratio(s['cold'], s['raw_cold']):.2f}")
    if args.only in (None, "noop"):
        n = bench_noop(args.noop_pairs)
        pairs = [a / b for a, b in zip(n["noop"], n["compose_noop"], strict=True)]
        print(f"no-op provision               {summary(n['noop'])}")
        print(f"compose up -d, running stack  {summary(n['compose_noop'])}")
        print(f"  ratio of medians (target <= 1): {ratio(n['noop'], n['compose_noop']):.2f}; median of the "
              f"{len(pairs)} pairs' ratios {statistics.median(pairs):.2f}")
    if args.only in (None, "list"):
        print(f"invoke --list                 {summary(bench_list(10))} (target <= 0.3 s)")
    if args.only in (None, "render"):
        render = [bench_render() for _ in range(5)]
        print(f"render 1000 stacks            median {statistics.median(render):.3f} s (target <= 1 s)")


if __name__ == "__main__":
    main()
