"""Local backend benchmarks, each measured side by side with its baseline (interleaved runs).

    python bench/bench_local.py [--runs N]

1. cold `invoke provision` / raw `docker compose up -d --wait` on the same rendered file and images (with
   the pre-issue-12 1 s healthcheck the raw side needs: common.raw_baseline)
2. no-op re-provision / raw `docker compose up -d --wait` on the already running stack
3. `invoke --list` wall time
4. rendering 1,000 project x env combinations (in process)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, cleanup, invoke, make_root, ratio, raw_baseline, summary, timed  # noqa: E402


def bench_cold_and_noop(runs: int) -> dict[str, list[float]]:
    root, env = make_root()
    samples: dict[str, list[float]] = {"cold": [], "raw_cold": [], "noop": [], "raw_noop": []}
    try:
        for i in range(runs):
            project = f"p{i}"
            samples["cold"].append(invoke(root, "provision", f"--env={env}", f"--project={project}"))
            samples["noop"].append(invoke(root, "provision", f"--env={env}", f"--project={project}"))
            # the baseline: the very same rendered file and secrets, run by compose directly once ours is gone
            compose = root / ".provision" / env / project / "docker-compose.yml"
            saved = compose.read_text(), compose.with_name("secrets.env").read_text()
            invoke(root, "destroy", f"--env={env}", f"--project={project}", "--delete-data", "--yes", "--no-backup")
            raw_dir = root / "raw" / project
            raw_dir.mkdir(parents=True)
            (raw_dir / "docker-compose.yml").write_text(raw_baseline(saved[0]))
            (raw_dir / "secrets.env").write_text(saved[1])
            argv = ["docker", "compose", "--project-name", f"raw{project}_{env}", "--file", str(raw_dir / "docker-compose.yml"),
                    "--env-file", str(raw_dir / "secrets.env"), "up", "-d", "--wait"]
            samples["raw_cold"].append(timed(argv))
            samples["raw_noop"].append(timed(argv))
            timed(argv[:-3] + ["down", "-v"])
    finally:
        cleanup(env)
    return samples


def bench_list(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - started)
    return out


def bench_render(total: int = 1000) -> float:
    from provision.config import load_env
    from provision.model import Ports
    from provision.render import build_context, render_stack
    from provision.secrets import generate_missing

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
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    s = bench_cold_and_noop(args.runs)
    listing = bench_list(10)
    render = [bench_render() for _ in range(5)]
    print(f"cold provision      {summary(s['cold'])}")
    print(f"raw up --wait cold  {summary(s['raw_cold'])}")
    print(f"  ratio (target <= 1.15): {ratio(s['cold'], s['raw_cold']):.2f}")
    print(f"no-op provision     {summary(s['noop'])}")
    print(f"raw up --wait warm  {summary(s['raw_noop'])}")
    print(f"  ratio (target <= 0.7): {ratio(s['noop'], s['raw_noop']):.2f}")
    print(f"invoke --list       {summary(listing)} (target <= 0.3 s)")
    print(f"render 1000 stacks  median {statistics.median(render):.3f} s (target <= 1 s)")


if __name__ == "__main__":
    main()
