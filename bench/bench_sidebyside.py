"""Side by side: a no-op `provision` of one running project, one tree against another, alternating.

usage: .venv/bin/python bench/bench_sidebyside.py OLD_TREE NEW_TREE [PAIRS]   (e.g. a `git worktree` of main)"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PY = sys.executable
TREES = {"old": sys.argv[1], "new": sys.argv[2]}
IMAGES = ("provision-test/postgres:15", "provision-test/postgrest:12")


def root_for(tree: str, ports: str) -> tuple[Path, str]:
    root = Path(tempfile.mkdtemp(prefix="sbs-"))
    (root / "envs").mkdir()
    shutil.copytree(Path(tree) / "templates", root / "templates")
    shutil.copy(Path(tree) / "tasks.py", root / "tasks.py")
    env = "sbs" + uuid.uuid4().hex[:6]
    (root / "envs" / f"{env}.yml").write_text(
        f"backend: local\nimages:\n  db: {IMAGES[0]}\n  api: {IMAGES[1]}\nprojects:\n  - name: shop\n"
        f"health:\n  timeout: 120\nlocal:\n  port_range: [{ports}]\n")
    return root, env


def run(tree: str, root: Path, env: str, *args: str) -> float:
    environ = {**os.environ, "PYTHONPATH": tree, "PROVISION_STATE_DIR": str(root / ".provision")}
    start = time.perf_counter()
    subprocess.run([PY, "-m", "invoke", *args, f"--env={env}"], cwd=root, env=environ, check=True,
                   capture_output=True)
    return time.perf_counter() - start


setups = {"old": root_for(TREES["old"], "24100, 24199"), "new": root_for(TREES["new"], "24200, 24299")}
try:
    for name, (root, env) in setups.items():
        run(TREES[name], root, env, "provision")
    times = {"old": [], "new": []}
    for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 15):
        for name in ("old", "new"):
            root, env = setups[name]
            times[name].append(run(TREES[name], root, env, "provision"))
    ratios = [n / o for n, o in zip(times["new"], times["old"], strict=True)]
    for name in times:
        print(f"{name}: median {statistics.median(times[name]):.3f} s, min {min(times[name]):.3f} s")
    print(f"new / old: median of paired ratios {statistics.median(ratios):.3f}")
finally:
    for name, (root, env) in setups.items():
        subprocess.run([PY, "-m", "invoke", "destroy", "--delete-data", "--yes", "--no-backup", "--project=shop",
                        f"--env={env}"], cwd=root, env={**os.environ, "PYTHONPATH": TREES[name],
                        "PROVISION_STATE_DIR": str(root / ".provision")}, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
