"""Continuous archiving on the local engine (issue 22): RPO lag under load, the archiver's idle cost, and a restore
to a second beside a bare restore of the same base backup and WAL.

    python bench/bench_pitr.py [--scale N] [--load-seconds S] [--idle-seconds S]

1. RPO: under `pgbench -c 4` in the db container, a probe commits a row every 0.2 s and waits until the archiver's
   slot has flushed past that commit's LSN (`pg_receivewal --synchronous`: what is flushed is in the repository);
   commit-to-repository lag, p50/p95/max. Also with the database idle.
2. Idle cost: CPU (cgroup usage over `--idle-seconds`) and memory (docker stats) of the archiver, of its project's
   db, and of a db without archiving beside it.
3. `provision restore --to-time` of a pgbench database (`--scale`: 15 is about 230 MB) after `--load-seconds` of
   pgbench load (its WAL), beside the bare restore it wraps: the same base untarred and the same WAL replayed to the
   same target (a second in the middle of the load) by `postgres` in a throwaway container, until promoted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cleanup, environ, make_root, ports  # noqa: E402

PG17 = "provision-test/postgres:17"


def _cli(root: Path, *args: str, json_out: bool = False) -> str:
    result = subprocess.run([sys.executable, "-m", "invoke", *args, *(["--json"] if json_out else [])], cwd=root,
                            env=environ(root), capture_output=True, text=True, check=True)
    return result.stdout


def _psql(container: str, sql: str, user: str = "provision_admin") -> str:
    return subprocess.run(["docker", "exec", container, "psql", "-X", "-A", "-t", "-U", user, "-d", "app", "-c", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


def _archive(root: Path, env: str) -> dict[str, object]:
    return dict(json.loads(_cli(root, "backups", f"--env={env}", "--project=shop", json_out=True))["archives"][0])


def _wait_ok(root: Path, env: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _archive(root, env)["health"] != "ok":
        if time.monotonic() > deadline:
            raise SystemExit(f"the archive never became ok: {_archive(root, env)}")
        time.sleep(2)


def _lags(db: str, seconds: float) -> list[float]:
    """Commit-to-repository lag of a probe row every 0.2 s for `seconds`."""
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lsn = _psql(db, "INSERT INTO probe VALUES (now()) RETURNING pg_current_wal_insert_lsn()").splitlines()[0]
        committed = time.perf_counter()
        while _psql(db, f"SELECT restart_lsn >= '{lsn}' FROM pg_replication_slots WHERE slot_name = "
                        f"'provision_archiver'") != "t":
            time.sleep(0.01)
        found.append(time.perf_counter() - committed)
        time.sleep(0.2)
    return found


def _quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (f"n={len(ordered)} p50={statistics.median(ordered) * 1000:.0f} ms p95={p95 * 1000:.0f} ms "
            f"max={ordered[-1] * 1000:.0f} ms")


def _cpu_stat(container: str) -> Path:
    found = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True,
                           check=True).stdout.strip()
    return next(Path("/sys/fs/cgroup").rglob(f"*{found}*/cpu.stat"))


def _usage(stat: Path) -> int:
    return int(next(line.split()[1] for line in stat.read_text().splitlines() if line.startswith("usage_usec")))


def _memory(container: str) -> str:
    return subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container],
                          capture_output=True, text=True, check=True).stdout.strip().split(" / ")[0]


def _idle_cost(env: str, seconds: float) -> str:
    """CPU over `seconds` of the archiver, of the archived project's db, and of a db without archiving beside it."""
    names = {"archiver": f"shop_{env}-archiver-1", "db (archived)": f"shop_{env}-db-1",
             "db (plain)": f"plain_{env}-db-1"}
    stats = {name: _cpu_stat(container) for name, container in names.items()}
    before = {name: _usage(stat) for name, stat in stats.items()}
    time.sleep(seconds)
    used = {name: (_usage(stat) - before[name]) / 1e6 / seconds * 100 for name, stat in stats.items()}
    return "; ".join(f"{name} {used[name]:.3f} % of a core, {_memory(names[name])}" for name in names) + \
        f" (over {seconds:.0f} s idle)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=15)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    root, env = make_root(["shop", "plain"], port_range=ports(25500, 100))
    path = root / "envs" / f"{env}.yml"
    path.write_text(path.read_text().replace("provision-test/postgres:15", PG17).replace(
        "  - name: plain\n", "  - name: plain\n    backup: {continuous: false}\n")
                    + "backup:\n  continuous: true\n  base_every: 24h\n")
    db, archiver = f"shop_{env}-db-1", f"shop_{env}-archiver-1"
    try:
        _cli(root, "provision", f"--env={env}", "--project=shop")
        _cli(root, "provision", f"--env={env}", "--project=plain")
        _wait_ok(root, env)
        time.sleep(10)
        print(f"idle: {_idle_cost(env, args.idle_seconds)}", flush=True)
        _cli(root, "destroy", f"--env={env}", "--project=plain", "--yes")
        _psql(db, "CREATE TABLE probe (at timestamptz)")
        print(f"RPO idle: {_quantiles(_lags(db, 15))}", flush=True)
        subprocess.run(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-i", "-q", "-s", str(args.scale),
                        "app"], capture_output=True, check=True)
        size = _psql(db, "SELECT pg_size_pretty(pg_database_size('app'))")
        # a fresh base of the loaded database, so the restore replays the load's WAL only
        subprocess.run(["docker", "exec", archiver, "sh", "-c", "rm -rf /repo/pgdata/base/*"], check=True)
        subprocess.run(["docker", "restart", "-t", "10", archiver], capture_output=True, check=True)
        _wait_ok(root, env)
        load = subprocess.Popen(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-c", "4", "-j", "2",
                                 "-T", str(int(args.load_seconds)), "app"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        lags: list[float] = []
        probe = threading.Thread(target=lambda: lags.extend(_lags(db, args.load_seconds - 5)))
        probe.start()
        time.sleep(args.load_seconds / 2)
        target = datetime.now(UTC)  # a second in the middle of the load: recovery stops there
        probe.join()
        load.wait()
        print(f"RPO under pgbench -c 4 ({size}): {_quantiles(lags)}", flush=True)
        time.sleep(6)
        wal = _archive(root, env)["size_bytes"]
        started = time.perf_counter()
        done = json.loads(_cli(root, "restore", f"--env={env}", "--project=shop",
                               f"--to-time={target.isoformat()}", "--yes", json_out=True))
        total = time.perf_counter() - started
        print(f"restore --to-time of {size} (+ archive {int(str(wal)) // 2**20} MiB): {total:.1f} s total, "
              f"{done['details']['restore_s']:.1f} s the one-off restore, the rest verifying and switching",
              flush=True)
        base = str(done["details"]["base"])
        bare = _bare_restore(env, base, target)
        print(f"bare restore of the same base and WAL to the same target: {bare:.1f} s "
              f"(restore --to-time / bare: {total / bare:.2f})", flush=True)
    finally:
        cleanup(env)


def _bare_restore(env: str, base: str, target: datetime) -> float:
    """The same base untarred into a fresh volume and the WAL replayed to `target` by postgres until promoted, in a
    throwaway container: what restore --to-time wraps."""
    volume = f"bench-bare-{env}"
    subprocess.run(["docker", "volume", "create", "--label", f"io.provision.env={env}", volume], capture_output=True,
                   check=True)
    script = (f"set -e; AS='setpriv --reuid=postgres --regid=postgres --init-groups'; P=/var/lib/postgresql/data; W=/repo/pgdata/wal; tar -xzf /repo/pgdata/base/{base}/base.tar.gz "
              f"-C $P; touch $P/recovery.signal; mkdir -p /var/run/postgresql; "
              f"chown -R postgres:postgres $P /var/run/postgresql; chmod 700 $P; "
              f"$AS postgres -D $P -c listen_addresses= -c hot_standby=off "
              f"-c \"restore_command=cp $W/%f %p || cp $W/%f.partial %p\" "
              f"-c \"recovery_target_time={target.strftime('%Y-%m-%d %H:%M:%S.%f+00')}\" "
              f"-c recovery_target_action=promote >/tmp/log 2>&1 & "
              f"until [ \"$($AS psql -h /var/run/postgresql -U provision_admin -d app -Atc "
              f"'select pg_is_in_recovery()' 2>/dev/null)\" = f ]; do sleep 0.25; done")
    started = time.perf_counter()
    ran = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", "--label",
                          f"io.provision.env={env}", "-v", f"{volume}:/var/lib/postgresql/data", "-v",
                          f"shop_{env}_pgarchive:/repo:ro", PG17, "-c", script + "; tail -n 3 /tmp/log"],
                         capture_output=True, text=True, check=False)
    if ran.returncode != 0:
        raise SystemExit(f"the bare restore failed: {ran.stdout}{ran.stderr}")
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
