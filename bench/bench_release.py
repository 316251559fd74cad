"""Release-operation benchmarks on the local backend.

    python bench/bench_release.py [--runs 2] [--fleet 10] [--plan-projects 50]

1. provisioning `fleet` local projects with --parallel 4 / serial (runs interleaved)
2. `invoke plan` over `plan-projects` declared projects that are all provisioned (no-op)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, invoke, make_root, ports, ratio, summary  # noqa: E402


def destroy_all(root: Path, env: str, names: list[str]) -> None:
    for name in names:
        invoke(root, "destroy", f"--env={env}", f"--project={name}", "--delete-data", "--yes", "--no-backup")


def bench_fleet(runs: int, fleet: int) -> None:
    names = [f"f{i:02d}" for i in range(fleet)]
    root, env = make_root(names, port_range=ports(25000))
    samples: dict[str, list[float]] = {"serial": [], "parallel": []}
    try:
        for _ in range(runs):
            for label, workers in (("serial", 1), ("parallel", 4)):
                samples[label].append(invoke(root, "provision", f"--env={env}", f"--parallel={workers}"))
                destroy_all(root, env, names)
    finally:
        cleanup(env)
    print(f"{fleet} projects serial       {summary(samples['serial'])}")
    print(f"{fleet} projects --parallel 4 {summary(samples['parallel'])}")
    print(f"  ratio (target <= 0.5): {ratio(samples['parallel'], samples['serial']):.2f}")


def bench_plan(projects: int) -> None:
    names = [f"n{i:02d}" for i in range(projects)]
    # 50 networks: more than Docker's default address pools hold, so the env leases subnets
    root, env = make_root(names, port_range=ports(26000), network_pool="10.211.0.0/16")
    try:
        invoke(root, "provision", f"--env={env}", "--parallel=8")
        times = [invoke(root, "plan", f"--env={env}", "--detailed-exitcode") for _ in range(5)]
    finally:
        cleanup(env)
    print(f"plan over {projects} no-op projects: {summary(times)} (target <= 3 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--fleet", type=int, default=10)
    parser.add_argument("--plan-projects", type=int, default=50)
    parser.add_argument("--only", choices=("fleet", "plan"))
    args = parser.parse_args()
    if args.only != "plan":
        bench_fleet(args.runs, args.fleet)
    if args.only != "fleet":
        bench_plan(args.plan_projects)


if __name__ == "__main__":
    main()
