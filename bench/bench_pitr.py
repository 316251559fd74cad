"""Continuous archiving on the local engine (issue 22), each part beside its baseline in the same run.

    python bench/bench_pitr.py --only big [--size-mb 1024] [--wal-mb 1024] [--base-runs 2] [--restore-runs 2]
    python bench/bench_pitr.py --only density [--stacks 100] [--parallel 4] [--idle 180]
    python bench/bench_pitr.py --only rpo [--scale 15] [--load-seconds 40]

big (one project on PostgreSQL 17, a pgbench database of --size-mb):
1. base backup: the archiver's own (its bases deleted and the archiver restarted: from its `tmp-` directory
   appearing to the finished base, which includes the archiver's wait for the base's end in the archive and its
   backup_info) against `pg_basebackup -Ft -z -X none -c fast` run by hand in the same container into the same
   volume, alternating, --base-runs each; and once the same by hand uncompressed (-Ft, no -z).
2. --wal-mb of WAL after that base (pgbench -c 4 in the db container), the target a second when that much was
   written, a few seconds more load after it.
3. `provision restore --to-time` of that target until it returns (the api serving on the restored data), beside
   the bare restore: the same base untarred into a fresh volume and the same WAL replayed to the same target by
   `postgres` in a plain container of the same image (no network, restore_command `cp` from the repository
   mounted read-only, recovery_target_action=promote) until a query answers that it is out of recovery. Order
   ours, bare, bare, ours...; between two of ours a `--rollback` (not timed) returns to the archived lineage, and
   each timed run starts only after the archiver of the lineage in use has finished its base backup, so that no
   base backup's gzip runs under a timed restore.
4. `provision verify` of the project: its duration and its restore's share.

density: --stacks projects with continuous archiving and --stacks without, side by side in one engine (two envs,
provisioned in turn with --parallel), then after a settle period the CPU of each env's containers (their cgroups)
and shims over --idle seconds in the same window, and memory from each container's cgroup (usage minus the
inactive file cache, as `docker stats` shows it, and the anonymous memory alone).

rpo: commit-to-repository lag, idle and under `pgbench -c 4` (see _lags).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_density import container_seconds, engine_processes, process_seconds  # noqa: E402
from bench.common import cleanup, environ, make_root, ports, published  # noqa: E402

PG17 = "provision-test/postgres:17"
MIB = 2**20


def _cli(root: Path, *args: str, json_out: bool = False) -> str:
    result = subprocess.run([sys.executable, "-m", "invoke", *args, *(["--json"] if json_out else [])], cwd=root,
                            env=environ(root), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def _cli_timed(root: Path, *args: str) -> tuple[float, dict[str, object], list[tuple[float, str]]]:
    """Wall time of one `invoke ... --json`, its JSON, and each stderr line with the second it arrived at."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "invoke", *args, "--json"], cwd=root, env=environ(root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.perf_counter() - started, line.rstrip()))
    proc.wait()
    reader.join()
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)} exited {proc.returncode}:\n" + "\n".join(text for _, text in lines[-30:]))
    return took, json.loads(out[0]), lines


def _details(done: dict[str, object]) -> dict[str, object]:
    """The details of the one project in a `--json` answer (a result, or `verify`'s list of drills)."""
    if "details" in done:
        return dict(done["details"])  # type: ignore[call-overload]
    return dict(done["drills"][0]["details"])  # type: ignore[index]


def _psql(container: str, sql: str, user: str = "provision_admin") -> str:
    return subprocess.run(["docker", "exec", container, "psql", "-X", "-A", "-t", "-U", user, "-d", "app", "-c", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


def _sh(container: str, script: str, check: bool = True) -> str:
    return subprocess.run(["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                          check=check).stdout.strip()


def _archive(root: Path, env: str, project: str = "shop") -> dict[str, object]:
    return dict(json.loads(_cli(root, "backups", f"--env={env}", f"--project={project}", json_out=True))["archives"][0])


def _wait_ok(root: Path, env: str, timeout: float = 600, latest_after: datetime | None = None) -> dict[str, object]:
    """Until the archive's health is ok (and its latest recoverable moment is past `latest_after`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _archive(root, env)
        latest = str(found.get("latest") or found.get("latest_recoverable") or "")
        if found["health"] == "ok" and (latest_after is None or (latest and datetime.fromisoformat(
                latest.replace("Z", "+00:00")) > latest_after)):
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"the archive never became ok: {found}")
        time.sleep(2)


def _wait_base_done(archiver: str, lineage: str, timeout: float = 900) -> None:
    """Until the archiver of `lineage` has a finished base and none in progress."""
    deadline = time.monotonic() + timeout
    while True:
        listing = _sh(archiver, f"ls /repo/{lineage}/base 2>/dev/null", check=False).split()
        if listing and not any(n.startswith("tmp-") for n in listing):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"no base backup finished in {archiver}: {listing}")
        time.sleep(1)


def _wait_quiet(archiver: str, timeout: float = 600) -> None:
    """Until the archiver has used under 2 % of a core over 35 s: its read-through of new WAL segments
    (pg_waldump, 64 a round every 30 s, from the oldest base again after each restart) and its base backups are
    then done, and run under neither side of a timed pair."""
    ident = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", archiver], capture_output=True, text=True,
                           check=True).stdout.strip()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = container_seconds(ident)
        time.sleep(35)
        if (container_seconds(ident) - before) / 35 < 0.02:
            return
    raise SystemExit(f"{archiver} never went quiet")


# --- big: base backup, restore --to-time, verify ----------------------------------------------------------------
def _archiver_base(archiver: str, lineage: str) -> tuple[float, float]:
    """The archiver's own base backup: its bases deleted, the archiver restarted; (seconds from its tmp- directory
    appearing to the finished base, seconds from the restart)."""
    _sh(archiver, f"rm -rf /repo/{lineage}/base/*")
    restarted = time.perf_counter()
    subprocess.run(["docker", "restart", "-t", "10", archiver], capture_output=True, check=True)
    began = None
    while True:
        names = _sh(archiver, f"ls /repo/{lineage}/base 2>/dev/null", check=False).split()
        now = time.perf_counter()
        if began is None and any(n.startswith("tmp-") for n in names):
            began = now
        if any(not n.startswith("tmp-") for n in names):
            return now - (began if began is not None else restarted), now - restarted
        if now - restarted > 1800:
            raise SystemExit(f"the archiver took no base backup: {names}")
        time.sleep(0.2)


def _plain_base(archiver: str, lineage: str, compress: bool) -> tuple[float, int]:
    """`pg_basebackup` by hand in the archiver's container, the same flags, into the same volume; (seconds, bytes)."""
    where = f"/repo/{lineage}/.bench-plain"
    started = time.perf_counter()
    subprocess.run(["docker", "exec", archiver, "pg_basebackup", "-D", where, "-Ft", *(["-z"] if compress else []),
                    "-X", "none", "-c", "fast"], capture_output=True, check=True)
    took = time.perf_counter() - started
    size = int(_sh(archiver, f"du -sk {where} | cut -f1")) * 1024
    _sh(archiver, f"rm -rf {where}")
    return took, size


def _bare_restore(env: str, lineage: str, base: str, target: datetime) -> tuple[float, str]:
    """The same base untarred into a fresh volume and the WAL replayed to `target` by postgres until promoted, in a
    plain container of the same image: what restore --to-time wraps. (seconds, its phases)."""
    volume = f"bench-bare-{env}-{int(time.time())}"
    subprocess.run(["docker", "volume", "create", "--label", f"io.provision.env={env}", volume], capture_output=True,
                   check=True)
    script = ("set -e; t0=$(date +%s.%N); AS='setpriv --reuid=postgres --regid=postgres --init-groups'; "
              f"P=/var/lib/postgresql/data; W=/repo/{lineage}/wal; "
              f"tar -xzf /repo/{lineage}/base/{base}/base.tar.gz -C $P; t1=$(date +%s.%N); "
              "touch $P/recovery.signal; mkdir -p /var/run/postgresql; "
              "chown -R postgres:postgres $P /var/run/postgresql; chmod 700 $P; "
              "$AS postgres -D $P -c listen_addresses= -c hot_standby=off "
              "-c \"restore_command=cp $W/%f %p || cp $W/%f.partial %p\" "
              f"-c \"recovery_target_time={target.strftime('%Y-%m-%d %H:%M:%S.%f+00')}\" "
              "-c recovery_target_action=promote >/tmp/log 2>&1 & "
              "until [ \"$($AS psql -h /var/run/postgresql -U provision_admin -d app -Atc "
              "'select pg_is_in_recovery()' 2>/dev/null)\" = f ]; do sleep 0.25; done; t2=$(date +%s.%N); "
              "echo PHASES $(echo $t0 $t1 $t2 | awk '{printf \"untar %.1f s, start+replay+promote %.1f s\", $2 - $1, $3 - $2}'); "
              "grep -E 'redo starts|redo done' /tmp/log | tail -n 2")
    started = time.perf_counter()
    ran = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", "--label",
                          f"io.provision.env={env}", "-v", f"{volume}:/var/lib/postgresql/data", "-v",
                          f"shop_{env}_pgarchive:/repo:ro", PG17, "-c", script], capture_output=True, text=True)
    took = time.perf_counter() - started
    subprocess.run(["docker", "volume", "rm", volume], capture_output=True)
    if ran.returncode != 0:
        raise SystemExit(f"the bare restore failed: {ran.stdout}{ran.stderr}")
    return took, " | ".join(ran.stdout.strip().splitlines())


def _wal_since(db: str, lsn: str) -> int:
    return int(_psql(db, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')::bigint"))


def bench_big(args: argparse.Namespace) -> None:
    root, env = make_root(["shop"], port_range=ports(29000, 100))
    path = root / "envs" / f"{env}.yml"
    path.write_text(path.read_text().replace("provision-test/postgres:15", PG17)
                    + "backup:\n  continuous: true\n  base_every: 24h\n")
    db, archiver = f"shop_{env}-db-1", f"shop_{env}-archiver-1"
    print(f"uptime at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    try:
        _cli(root, "provision", f"--env={env}", "--project=shop")
        _wait_ok(root, env)
        scale = max(1, round(args.size_mb / 15.6))
        started = time.perf_counter()
        subprocess.run(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-i", "-q", "-s", str(scale), "app"],
                       capture_output=True, check=True)
        size = int(_psql(db, "SELECT pg_database_size('app')"))
        print(f"pgbench -i -s {scale}: {size / MIB:.0f} MiB in {time.perf_counter() - started:.0f} s", flush=True)
        _psql(db, "CHECKPOINT")
        # 1. base backups, alternating: plain -z, the archiver's; the archiver's last is the one restored
        ours, plain, sizes = [], [], []
        for _ in range(args.base_runs):
            _wait_quiet(archiver)
            took, nbytes = _plain_base(archiver, "pgdata", compress=True)
            plain.append(took)
            sizes.append(nbytes)
            _wait_quiet(archiver)
            inner, outer = _archiver_base(archiver, "pgdata")
            ours.append(inner)
            print(f"  base: plain -Ft -z {took:.1f} s ({nbytes / MIB:.0f} MiB); the archiver's {inner:.1f} s "
                  f"({outer:.1f} s from its restart)", flush=True)
        raw, raw_bytes = _plain_base(archiver, "pgdata", compress=False)
        print(f"base backup of {size / MIB:.0f} MiB: the archiver's median {statistics.median(ours):.1f} s, plain "
              f"pg_basebackup -Ft -z -X none median {statistics.median(plain):.1f} s (ratio "
              f"{statistics.median(ours) / statistics.median(plain):.2f}, target <= 1.2); uncompressed -Ft "
              f"{raw:.1f} s ({raw_bytes / MIB:.0f} MiB against {statistics.median(sizes) / MIB:.0f} MiB)", flush=True)
        _wait_ok(root, env)
        base = _sh(archiver, "ls /repo/pgdata/base")
        base_end = _sh(archiver, f"sed -n 's/^end_lsn=//p' /repo/pgdata/base/{base}/backup_info")
        # 2. WAL after the base
        started = time.perf_counter()
        while _wal_since(db, base_end) < args.wal_mb * MIB:
            subprocess.run(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-c", "4", "-j", "2", "-T",
                            "10", "app"], capture_output=True, check=True)
        target = datetime.now(UTC)
        wal = _wal_since(db, base_end)
        subprocess.run(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-c", "4", "-j", "2", "-T", "5",
                        "app"], capture_output=True, check=True)
        print(f"WAL after the base up to the target: {wal / MIB:.0f} MiB (pgbench -c 4, "
              f"{time.perf_counter() - started:.0f} s)", flush=True)
        _wait_ok(root, env, latest_after=target + timedelta(seconds=1))
        # 3. restore --to-time beside the bare restore
        mine: list[float] = []
        bare: list[float] = []
        lineage = "pgdata"
        for run in range(args.restore_runs):
            if run > 0:
                _cli(root, "restore", f"--env={env}", "--project=shop", "--rollback", "--yes")
                _wait_base_done(archiver, "pgdata")
                _wait_ok(root, env)
                _wait_quiet(archiver)
                took, phases = _bare_restore(env, lineage, base, target)
                bare.append(took)
                print(f"  bare: {took:.1f} s ({phases})", flush=True)
            _wait_quiet(archiver)
            uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            took, done, lines = _cli_timed(root, "restore", f"--env={env}", "--project=shop",
                                           f"--to-time={target.isoformat()}", "--yes")
            details = _details(done)
            base = str(details["base"])
            mine.append(took)
            print(f"  restore --to-time: {took:.1f} s, the one-off restore {details['restore_s']:.1f} s ({uptime})",
                  flush=True)
            for at, line in lines:
                print(f"    +{at:6.2f} s  {line[:150]}", flush=True)
            for line in details.get("recovery_log") or []:  # type: ignore[union-attr]
                print(f"    pg: {str(line)[:160]}", flush=True)
            new_lineage = str(details["volume"]).removeprefix(f"shop_{env}_")
            _wait_base_done(archiver, new_lineage)  # its new lineage's base: not under a timed run
            if run == 0:
                _wait_quiet(archiver)
                took, phases = _bare_restore(env, lineage, base, target)
                bare.append(took)
                print(f"  bare: {took:.1f} s ({phases})", flush=True)
        ratio = statistics.median(mine) / statistics.median(bare)
        print(f"restore to a second of {size / MIB:.0f} MiB + {wal / MIB:.0f} MiB of WAL: restore --to-time median "
              f"{statistics.median(mine):.1f} s (target <= 90 s), bare median {statistics.median(bare):.1f} s, "
              f"ratio {ratio:.2f} (target <= 1.3); runs {[round(t, 1) for t in mine]} / "
              f"{[round(t, 1) for t in bare]}", flush=True)
        # 4. verify
        _wait_ok(root, env)
        _wait_quiet(archiver)
        took, done, lines = _cli_timed(root, "verify", f"--env={env}", "--project=shop")
        details = _details(done)
        print(f"verify of the {size / MIB:.0f} MiB project: {took:.1f} s, of which the restore "
              f"{details.get('restore_s')} s; {details.get('detail')}", flush=True)
        for at, line in lines:
            print(f"    +{at:6.2f} s  {line[:150]}", flush=True)
    finally:
        cleanup(env)
        print(f"uptime at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


# --- density: N stacks with continuous archiving beside N without ----------------------------------------------
def _memory(container: str) -> tuple[int, int]:
    """(usage minus inactive file cache, as docker stats shows it; anonymous memory) of a container's cgroup."""
    folder = Path(f"/sys/fs/cgroup/memory/docker/{container}")
    if folder.exists():  # cgroup v1
        usage = int((folder / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("total_inactive_file", 0)), int(stat.get("total_rss", 0))
    folder = Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope")
    usage = int((folder / "memory.current").read_text())
    stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
    return usage - int(stat.get("inactive_file", 0)), int(stat.get("anon", 0))


def _services(env: str) -> dict[str, str]:
    """{full container id: compose service} of the env's running containers."""
    out = subprocess.run(["docker", "ps", "--no-trunc", "--filter", f"label=io.provision.env={env}", "--format",
                          '{{.ID}} {{.Label "com.docker.compose.service"}}'], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _host_ports(root: Path, env: str, names: list[str]) -> set[str]:
    return {str(port) for name in names
            for port in published((root / ".provision" / env / name / "docker-compose.yml").read_text()).values()}


def bench_density(args: argparse.Namespace) -> None:
    names = [f"a{i:03d}" for i in range(args.stacks)]
    envs = {}
    for label, first, pool, on in (("archiving", 29100, "10.213.0.0/16", True),
                                   ("plain", 29500, "10.214.0.0/16", False)):
        root, env = make_root(names, port_range=ports(first, 400), network_pool=pool)
        path = root / "envs" / f"{env}.yml"
        path.write_text(path.read_text().replace("provision-test/postgres:15", PG17)
                        + f"backup:\n  continuous: {'true' if on else 'false'}\n")
        envs[label] = (root, env)
    print(f"uptime at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    try:
        for label, (root, env) in envs.items():
            started = time.perf_counter()
            _cli(root, "provision", f"--env={env}", f"--parallel={args.parallel}")
            print(f"provisioned {args.stacks} stacks ({label}) in {time.perf_counter() - started:.0f} s", flush=True)
        root, env = envs["archiving"]
        deadline = time.monotonic() + 900
        while True:  # every archiver past its first base backup
            bad = [a for a in json.loads(_cli(root, "backups", f"--env={env}", json_out=True))["archives"]
                   if a["health"] != "ok"]
            if not bad or time.monotonic() > deadline:
                break
            time.sleep(5)
        print(f"archives not ok: {len(bad)}; settling {args.settle:.0f} s", flush=True)
        time.sleep(args.settle)
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        ids = {label: _services(env) for label, (root, env) in envs.items()}
        shims = {label: engine_processes(list(ids[label]), _host_ports(root, env, names))[0]
                 for label, (root, env) in envs.items()}

        def sample() -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
            cpu = {label: {c: container_seconds(c) for c in found} for label, found in ids.items()}
            return cpu, {label: process_seconds(pids) for label, pids in shims.items()}, time.monotonic()

        c0, s0, t0 = sample()
        time.sleep(args.idle)
        c1, s1, t1 = sample()
        span = t1 - t0
        print(f"idle over {span:.0f} s ({load}):", flush=True)
        totals = {}
        for label in envs:
            by_service: dict[str, list[float]] = {}
            memory: dict[str, list[tuple[int, int]]] = {}
            for container, service in ids[label].items():
                by_service.setdefault(service, []).append((c1[label][container] - c0[label][container]) / span * 100)
                memory.setdefault(service, []).append(_memory(container))
            shim = (s1[label] - s0[label]) / span * 100
            cpu = sum(sum(v) for v in by_service.values()) + shim
            mem = sum(m[0] for v in memory.values() for m in v)
            anon = sum(m[1] for v in memory.values() for m in v)
            totals[label] = (cpu, mem, anon)
            parts = "; ".join(f"{service} {sum(v):.2f} % cpu, {sum(m[0] for m in memory[service]) / MIB / len(v):.1f} "
                              f"MiB each ({sum(m[1] for m in memory[service]) / MIB / len(v):.1f} anon)"
                              for service, v in sorted(by_service.items()))
            print(f"  {label}: {len(ids[label])} containers: {parts}; shims {shim:.2f} %; all {cpu:.2f} % of a core, "
                  f"{mem / MIB:.0f} MiB ({anon / MIB:.0f} MiB anon)", flush=True)
        cpu = totals["archiving"][0] - totals["plain"][0]
        mem = (totals["archiving"][1] - totals["plain"][1]) / args.stacks / MIB
        anon = (totals["archiving"][2] - totals["plain"][2]) / args.stacks / MIB
        print(f"continuous archiving over {args.stacks} stacks: {cpu:+.2f} % of a core in all "
              f"({cpu / args.stacks:+.3f} % a stack; target <= +2 % over 100), {mem:+.1f} MiB a stack "
              f"({anon:+.1f} MiB anon; target <= +8 MiB)", flush=True)
    finally:
        for _root, env in envs.values():
            cleanup(env)
        print(f"uptime at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


# --- rpo ----------------------------------------------------------------------------------------------------------
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


def bench_rpo(args: argparse.Namespace) -> None:
    root, env = make_root(["shop"], port_range=ports(29000, 100))
    path = root / "envs" / f"{env}.yml"
    path.write_text(path.read_text().replace("provision-test/postgres:15", PG17)
                    + "backup:\n  continuous: true\n  base_every: 24h\n")
    db = f"shop_{env}-db-1"
    try:
        _cli(root, "provision", f"--env={env}", "--project=shop")
        _wait_ok(root, env)
        _psql(db, "CREATE TABLE probe (at timestamptz)")
        print(f"RPO idle: {_quantiles(_lags(db, 15))}", flush=True)
        subprocess.run(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-i", "-q", "-s", str(args.scale),
                        "app"], capture_output=True, check=True)
        load = subprocess.Popen(["docker", "exec", db, "pgbench", "-U", "provision_admin", "-c", "4", "-j", "2",
                                 "-T", str(int(args.load_seconds)), "app"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        lags = _lags(db, args.load_seconds - 5)
        load.wait()
        print(f"RPO under pgbench -c 4 (scale {args.scale}): {_quantiles(lags)}", flush=True)
    finally:
        cleanup(env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("big", "density", "rpo"), required=True)
    parser.add_argument("--size-mb", type=int, default=1024, help="big: the database's size")
    parser.add_argument("--wal-mb", type=int, default=1024, help="big: WAL written after the base, up to the target")
    parser.add_argument("--base-runs", type=int, default=2)
    parser.add_argument("--restore-runs", type=int, default=2)
    parser.add_argument("--stacks", type=int, default=100, help="density: stacks with archiving, and as many without")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--settle", type=float, default=60)
    parser.add_argument("--idle", type=float, default=180)
    parser.add_argument("--scale", type=int, default=15, help="rpo: pgbench scale")
    parser.add_argument("--load-seconds", type=float, default=40)
    args = parser.parse_args()
    {"big": bench_big, "density": bench_density, "rpo": bench_rpo}[args.only](args)


if __name__ == "__main__":
    main()
