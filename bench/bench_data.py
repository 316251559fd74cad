"""Data lifecycle benchmarks on the local engine, each beside its baseline (interleaved runs).

    python bench/bench_data.py [--rows N] [--runs N]
    python bench/bench_data.py --only restore-from [--mb 243] [--runs 5]

1. `provision backup` / the bare `docker exec <db> pg_dump -Fc > file` it wraps (row counts, manifest, sha256
   are its extra work)
2. `provision restore --yes` / the bare `docker exec -i <db> pg_restore --clean --if-exists --single-transaction`
   (the restore into a new volume, the roles, the switch, the schema reload, the health wait and the row-count
   check are its extra work)
3. `provision upgrade-db` 15 -> 17: total time and the API's downtime it reports

`--only restore-from` (issue 22): a database of about `--mb` MB (pg_database_size), one `provision backup` of it,
then per round, in alternating order: `provision restore --from=<that dump> --yes` (a whole CLI run: the one-off
server on a new volume, roles, pg_restore, row counts, the switch, the API answering; then an untimed
`restore --finalize`) and a plain `pg_restore --no-owner` of the same dump into a fresh database of the running
server (`createdb` untimed, the database dropped after). Medians, min and max; target: ratio <= 1.2.
Host ports: PROVISION_TEST_PORTS=lo-hi when set (a shared machine), else 24000-24999.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _port_range() -> str | None:
    given = os.environ.get("PROVISION_TEST_PORTS")
    return "[{}, {}]".format(*given.split("-", 1)) if given else None


def _admin(container: str, statement: str) -> str:
    """One statement as the bootstrap superuser (POSTGRES_USER) in the db container; its output."""
    return subprocess.run(["docker", "exec", container, "sh", "-c", 'psql -X -A -t -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
                           '-c "$1"', "psql", statement], check=True, capture_output=True, text=True).stdout.strip()


def restore_from(options: argparse.Namespace) -> None:
    """`restore --from` (a new volume, the old kept) beside a plain pg_restore into a fresh database."""
    root, env = make_root(["shop"], port_range=_port_range())
    container = f"shop_{env}-db-1"
    samples: dict[str, list[float]] = {"restore_from": [], "plain": [], "restore_s": [], "switch_s": []}
    try:
        invoke(root, "provision", f"--env={env}", "--project=shop")
        _psql(container, "create table items (id int primary key, name text, at timestamptz default now())")
        rows = options.mb * 10_300  # about 97 bytes a row with its index: ~243 MB at 2.5 million rows
        for first in range(0, rows, 500_000):
            _psql(container, f"insert into items select g, md5(g::text) from generate_series({first + 1}, "
                             f"{min(rows, first + 500_000)}) g")
        _psql(container, "vacuum analyze items")
        size = int(_admin(container, "select pg_database_size(current_database())"))
        made = _cli_json(root, "backup", f"--env={env}", "--project=shop")
        dump = str(dict(made["details"])["path"])  # type: ignore[call-overload]
        for i in range(options.runs):
            order = ("ours", "plain") if i % 2 == 0 else ("plain", "ours")
            for which in order:
                if which == "ours":
                    started = time.perf_counter()
                    done = _cli_json(root, "restore", f"--env={env}", "--project=shop", f"--from={dump}", "--yes")
                    samples["restore_from"].append(time.perf_counter() - started)
                    details = dict(done["details"])  # type: ignore[call-overload]
                    samples["restore_s"].append(float(details["restore_s"]))
                    samples["switch_s"].append(float(details["switch_s"]))
                    invoke(root, "restore", f"--env={env}", "--project=shop", "--finalize", "--yes")
                else:
                    _admin(container, f"create database fresh_{i}")
                    with open(dump, "rb") as source:
                        samples["plain"].append(_timed_io(
                            ["docker", "exec", "-i", container, "sh", "-c",
                             f'pg_restore --no-owner -U "$POSTGRES_USER" -d fresh_{i}'], stdin=source,
                            stdout=subprocess.DEVNULL))
                    _admin(container, f"drop database fresh_{i}")
            print(f"round {i + 1}: restore --from {samples['restore_from'][-1]:.2f} s, plain pg_restore "
                  f"{samples['plain'][-1]:.2f} s", flush=True)
    finally:
        cleanup(env)
    print(f"database {size / 1e6:.0f} MB ({rows} rows), dump {Path(dump).stat().st_size / 1e6:.0f} MB, "
          f"rounds: {options.runs}")
    print(f"restore --from     {summary(samples['restore_from'])}")
    print(f"  of it: restore   {summary(samples['restore_s'])}")
    print(f"  of it: switch    {summary(samples['switch_s'])}")
    print(f"plain pg_restore   {summary(samples['plain'])}   ratio {ratio(samples['restore_from'], samples['plain']):.2f}")
    per_round = [a / b for a, b in zip(samples["restore_from"], samples["plain"], strict=True)]
    print("per-round ratios   " + ", ".join(f"{r:.2f}" for r in per_round))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=["restore-from"], default=None)
    parser.add_argument("--mb", type=int, default=243, help="with --only restore-from: the database's size")
    options = parser.parse_args()
    if options.only == "restore-from":
        restore_from(options)
        return
    root, env = make_root(["shop"], port_range=_port_range())
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
            invoke(root, "restore", f"--env={env}", "--project=shop", "--finalize", "--yes")  # untimed
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
