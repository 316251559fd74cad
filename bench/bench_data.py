"""Data lifecycle benchmarks on the local engine, each beside its baseline (interleaved runs).

    python bench/bench_data.py [--rows N] [--runs N]

1. `provision backup` / the bare `docker exec <db> pg_dump -Fc > file` it wraps (row counts, manifest, sha256
   are its extra work)
2. `provision restore --yes` / the bare `docker exec -i <db> pg_restore --clean --if-exists --single-transaction`
   (a safety backup, the schema reload, the health wait and the row-count check are its extra work)
3. `provision upgrade-db` 15 -> 17: total time and the API's downtime it reports
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, environ, invoke, make_root, ratio, summary  # noqa: E402

PG17 = "provision-test/postgres:17"


def _cli_json(root: Path, *args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-m", "invoke", *args, "--json"], cwd=root, env=environ(root),
                            capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def _timed_io(argv: list[str], **streams: object) -> float:
    """Wall time of `argv` with its stdin or stdout redirected to a file."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stderr=subprocess.DEVNULL, **streams)  # type: ignore[call-overload]
    return time.perf_counter() - started


def _psql(container: str, statement: str) -> None:
    subprocess.run(["docker", "exec", container, "psql", "-q", "-U", "app", "-d", "app", "-c", statement],
                   check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    root, env = make_root(["shop"])
    container = f"shop_{env}-db-1"
    samples: dict[str, list[float]] = {"backup": [], "raw_dump": [], "restore": [], "raw_restore": []}
    try:
        invoke(root, "provision", f"--env={env}", "--project=shop")
        _psql(container, "create table items (id int primary key, name text, at timestamptz default now())")
        _psql(container, f"insert into items select g, md5(g::text) from generate_series(1, {options.rows}) g")
        raw = Path(tempfile.mkdtemp(prefix="provision-bench-raw-"))
        size = 0
        for i in range(options.runs):
            samples["backup"].append(invoke(root, "backup", f"--env={env}", "--project=shop"))
            with (raw / f"{i}.dump").open("wb") as out:
                samples["raw_dump"].append(_timed_io(["docker", "exec", container, "pg_dump", "-Fc", "-U", "app",
                                                      "-d", "app"], stdout=out))
            size = (raw / f"{i}.dump").stat().st_size
            samples["restore"].append(invoke(root, "restore", f"--env={env}", "--project=shop", "--from=latest",
                                             "--yes"))
            with (raw / f"{i}.dump").open("rb") as dump:
                samples["raw_restore"].append(_timed_io(["docker", "exec", "-i", container, "pg_restore", "--clean",
                                                         "--if-exists", "--single-transaction", "-U", "app", "-d",
                                                         "app"], stdin=dump, stdout=subprocess.DEVNULL))
        env_file = root / "envs" / f"{env}.yml"
        env_file.write_text(env_file.read_text().replace("provision-test/postgres:15", PG17))
        started = time.perf_counter()
        upgraded = _cli_json(root, "upgrade-db", f"--env={env}", "--project=shop", "--yes")
        total = time.perf_counter() - started
        details = dict(upgraded["details"])  # type: ignore[call-overload]
    finally:
        cleanup(env)
    print(f"rows: {options.rows}, dump size {size / 1e6:.1f} MB, runs: {options.runs}")
    print(f"backup      {summary(samples['backup'])}")
    print(f"raw pg_dump {summary(samples['raw_dump'])}   ratio {ratio(samples['backup'], samples['raw_dump']):.2f}")
    print(f"restore     {summary(samples['restore'])}")
    print(f"raw restore {summary(samples['raw_restore'])}   ratio {ratio(samples['restore'], samples['raw_restore']):.2f}")
    print(f"upgrade-db 15 -> 17: {total:.1f} s in all, API down {details['downtime_s']} s, "
          f"row counts {details['row_counts']}")


if __name__ == "__main__":
    main()
