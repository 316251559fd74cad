"""Branches of a big parent (issue 23), side by side in one run: a copy-on-write `clone` (local.data_root on a
loop-mounted XFS image with reflinks) against today's logical clone (pg_dump + pg_restore) of the same
parent, each until the branch's API serves; then N branches of the one parent by reflink (extra disk in all, the
Nth against the 1st). Needs root (mkfs.xfs, mount).

    python bench/bench_branch.py [--gib 1] [--branches 5] [--writer]

`--writer`: a client inserts into the parent throughout (the branches are of a source taking writes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, environ, invoke, make_root  # noqa: E402


def _run(argv: list[str], **kwargs: object) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout  # type: ignore[call-overload]


def _used(path: Path) -> int:
    return int(_run(["df", "-B1", "--output=used", str(path)]).split()[-1])


def _psql(container: str, statement: str, *, superuser: bool = False) -> str:
    """One statement as the owner role `app` (what the clone dumps), or as the bootstrap superuser."""
    user = '"$POSTGRES_USER"' if superuser else "app"
    return _run(["docker", "exec", container, "sh", "-c", f'psql -X -A -t -q -U {user} -d app -c "$0"', statement])


def _clone(root: Path, env: str, to: str, *, show: bool = False, ttl: str | None = None) -> tuple[float, dict[str, object]]:
    """Wall time of `clone --to=...` (it returns once the branch's API serves) and its JSON; with `show`, its
    progress lines (each step's time)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "invoke", "clone", f"--env={env}", "--project=shop", f"--to={to}",
                             "--json", *([f"--ttl={ttl}"] if ttl else [])], cwd=root, env=environ(root),
                            capture_output=True, text=True)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    if show:
        print("  " + result.stderr.strip().replace("\n", "\n  "))
    return took, dict(json.loads(result.stdout))


def _writer(container: str, stop: threading.Event, counter: list[int]) -> None:
    while not stop.is_set():
        _psql(container, "insert into items (pad) values ('written meanwhile')")
        counter[0] += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--branches", type=int, default=5)
    parser.add_argument("--writer", action="store_true")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="provision-bench-xfs-"))
    image, mount = work / "xfs.img", work / "mnt"
    size_gib = max(4, int(options.gib * (options.branches + 4)) + 2)
    _run(["truncate", "-s", f"{size_gib}G", str(image)])
    _run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)])
    mount.mkdir()
    _run(["mount", "-o", "loop", str(image), str(mount)])
    (mount / "data").mkdir()
    root, env = make_root(["shop"], network_pool="10.213.0.0/16")
    envfile = root / "envs" / f"{env}.yml"
    envfile.write_text(envfile.read_text() + f"  data_root: {mount / 'data'}\n")
    logical_root, logical_env = make_root(["shop"])
    container = f"shop_{env}-db-1"
    stop, counter = threading.Event(), [0]
    try:
        invoke(root, "provision", f"--env={env}", "--project=shop")
        _psql(container, "create table items (id bigserial primary key, pad text)")
        rows = int(options.gib * 2**30 / 1100)
        _psql(container, f"insert into items (pad) select repeat(md5(g::text), 32) from generate_series(1, {rows}) g")
        _psql(container, "checkpoint", superuser=True)
        size = int(_psql(container, "select pg_database_size('app')").strip())
        print(f"parent: {size / 2**30:.2f} GiB ({rows} rows)")
        if options.writer:
            threading.Thread(target=_writer, args=(container, stop, counter), daemon=True).start()
        before = _used(mount)
        took, made = _clone(root, env, "shop-b1", show=True, ttl="1s")
        first_extra = _used(mount) - before
        details = made["details"]
        assert isinstance(details, dict) and details.get("method") == "reflink", made
        print(f"reflink clone until the API serves: {took:.2f} s (backup mode {details['backup_mode_s']} s); "
              f"extra disk {first_extra / 2**20:.1f} MiB = {100 * first_extra / size:.2f} % of the parent")
        times = [took]
        for n in range(2, options.branches + 1):
            took_n, _ = _clone(root, env, f"shop-b{n}", ttl="1s")
            times.append(took_n)
        total_extra = _used(mount) - before
        print(f"{options.branches} branches by reflink: extra disk {total_extra / 2**20:.1f} MiB in all "
              f"({100 * total_extra / size:.2f} % of the parent); the 1st {times[0]:.2f} s, the last {times[-1]:.2f} s")
        gc_started = time.perf_counter()
        invoke(root, "gc", f"--env={env}")
        print(f"gc of the {options.branches} expired branches (with their data): "
              f"{time.perf_counter() - gc_started:.2f} s; disk back to +{(_used(mount) - before) / 2**20:.1f} MiB")
        # the baseline: the same parent copied logically (a plain data directory: no reflinks asked)
        stop.set()
        logical_container = f"shop_{logical_env}-db-1"
        invoke(logical_root, "provision", f"--env={logical_env}", "--project=shop")
        dump = subprocess.Popen(["docker", "exec", container, "pg_dump", "-U", "app", "-Fc", "app"],
                                stdout=subprocess.PIPE)
        subprocess.run(["docker", "exec", "-i", logical_container, "pg_restore", "-U", "app", "-d", "app",
                        "--no-owner"], stdin=dump.stdout, check=True, capture_output=True)
        dump.wait(timeout=3600)
        _psql(logical_container, "checkpoint", superuser=True)
        took_logical, _ = _clone(logical_root, logical_env, "shop-l1")
        print(f"logical clone (pg_dump + pg_restore) until the API serves: {took_logical:.2f} s "
              f"({took_logical / times[0]:.1f} x the reflink clone)")
        print(f"writer rows during the run: {counter[0]}")
    finally:
        stop.set()
        cleanup(env)
        cleanup(logical_env)
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(logical_root, ignore_errors=True)


if __name__ == "__main__":
    main()
