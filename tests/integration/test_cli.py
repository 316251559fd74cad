"""The command surface scripts depend on."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Sandbox


def test_invoke_list_shows_the_contract_tasks() -> None:
    out = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    for task in ("provision", "outputs", "status", "stop", "start", "restart", "logs", "render", "list", "destroy"):
        assert f"  {task} " in out or f"  {task}\n" in out


def test_tasks_py_imports_no_heavy_libraries() -> None:
    code = "import sys, tasks; print(sorted(m for m in ('httpx', 'docker', 'jinja2', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _on_a_terminal(argv: list[str], sandbox: Sandbox, *, stream: str = "stdout", **environ: str) -> str:
    """What a command prints on `stream` when that stream is a terminal (a pseudo-terminal here)."""
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        where = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, stream: follower}
        subprocess.run(argv, cwd=sandbox.root, env=sandbox.environ(**environ), stdout=where["stdout"],
                       stderr=where["stderr"], timeout=300, check=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)


def test_quiet_no_color_and_read_only_output(sandbox: Sandbox) -> None:
    quiet = sandbox.cli("provision", "--project=shop", "--quiet", "--json")
    assert quiet.stderr == "" and quiet.json()["projects"][0]["status"] == "running"  # data stays on stdout
    status = sandbox.cli("status", "--project=shop")
    assert "[Provisioning]" not in status.stderr  # a read-only command prints no banner
    live = _on_a_terminal(sandbox.argv("restart", "--project=shop"), sandbox, stream="stderr")
    assert "\x1b[" in live  # a terminal gets the live display...
    for plain in (_on_a_terminal(sandbox.argv("restart", "--project=shop"), sandbox, stream="stderr", NO_COLOR="1"),
                  _on_a_terminal(sandbox.argv("restart", "--project=shop", "--no-color"), sandbox, stream="stderr"),
                  _on_a_terminal(sandbox.argv("status", "--project=shop"), sandbox, stream="stderr")):
        assert "\x1b[" not in plain  # ...but not with NO_COLOR, --no-color, or for a read-only command


def test_outputs_env_format_and_logs_and_render(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    password = sandbox.secrets("shop")["DB_PASSWORD"]
    env_lines = sandbox.cli("outputs", "--project=shop").stdout.splitlines()  # stdout is a pipe: for machines
    assert env_lines[0].startswith('API_URL="http://127.0.0.1:') and env_lines[1].startswith(f'DB_URL="postgresql://app:{password}@')
    on_terminal = _on_a_terminal(sandbox.argv("outputs", "--project=shop"), sandbox)
    assert "DB_URL=\"postgresql://app:***@" in on_terminal and password not in on_terminal
    logs = sandbox.cli("logs", "--project=shop", "--service=db", "--tail=5").stdout
    assert "db-1" in logs and "api-1" not in logs
    assert sandbox.cli("logs", "--project=shop", "--since=2099-01-01T00:00:00Z").stdout.strip() == ""
    assert "db-1" in sandbox.cli("logs", "--project=shop", "--since=1h").stdout
    rendered = sandbox.cli("render", "--project=shop").stdout
    assert "${AUTHENTICATOR_PASSWORD:?" in rendered and 'name: "shop_' in rendered
    offline = sandbox.cli("plan", "--offline", "--json").json()["projects"]
    assert [(p["project"], p["outcome"]) for p in offline] == [("shop", "no-op")] and "offline" in offline[0]["reason"]
    changed = sandbox.cli("plan", "--offline", "--set=variables.db_name=other", "--detailed-exitcode", check=False)
    assert changed.returncode == 2 and "update" in changed.stdout


def _interrupt(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C, as a terminal sends it; its exit code (killed, and the test failed, if it does not stop in 20 s)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_logs_follow_prints_new_lines_until_interrupted(sandbox: Sandbox) -> None:
    import contextlib
    import queue
    import threading
    import time

    import httpx

    sandbox.cli("provision", "--project=shop")
    api_url = sandbox.cli("outputs", "--project=shop", "--format=json").json()["api_url"]
    with sandbox.popen("logs", "--project=shop", "--service=api", "--follow", "--tail=1") as follower:
        assert follower.stdout is not None and follower.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
        try:
            lines.get(timeout=30)  # the last line so far (a reader thread: a silent follower fails, never hangs)
            time.sleep(0.5)
            httpx.get(api_url + "/follow-marker", timeout=10)
            deadline = time.monotonic() + 20
            line = ""
            while "follow-marker" not in line and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert "follow-marker" in line
        finally:
            code = _interrupt(follower)
        errors = follower.stderr.read()
    assert code == 0 and "Traceback" not in errors, errors
    status = sandbox.cli("status", "--json").json()
    [shop] = status["projects"]
    assert shop["status"] == "running" and {s["service"] for s in shop["services"]} == {"db", "api"}


def test_missing_env_and_unknown_project_exit_non_zero_with_a_hint(sandbox: Sandbox) -> None:
    result = sandbox.cli("provision", env="nosuch", check=False)
    assert result.returncode != 0 and "envs/nosuch.yml not found" in result.stderr
    result = sandbox.cli("outputs", "--project=ghost", check=False)
    assert result.returncode != 0 and "'ghost' is not declared" in result.stderr
    result = sandbox.cli("stop", "--project=ghost", check=False)
    assert result.returncode != 0 and "ghost" in result.stderr


def test_render_changes_nothing(sandbox: Sandbox) -> None:
    sandbox.cli("render", "--project=fresh")
    assert not (sandbox.state_dir / sandbox.env / "fresh").exists()


def test_render_of_a_coolify_env_needs_no_credentials(sandbox: Sandbox) -> None:
    sandbox.write_env_text("owner: repo-0001\nbackend: coolify\nimages:\n  db: postgres:16-alpine\n"
                           "  api: postgrest/postgrest:v12.2.3\nprojects:\n  - name: shop\n", name="cloud")
    rendered = sandbox.cli("render", "--project=shop", env="cloud")
    assert "services:" in rendered.stdout and "pgdata: {}" in rendered.stdout  # Coolify's unlabelled volume
    planned = sandbox.cli("plan", env="cloud", check=False)  # plan reads Coolify: it needs them
    assert planned.returncode == 2 and "COOLIFY_API_TOKEN" in planned.stderr
    offline = sandbox.cli("plan", "--offline", "--detailed-exitcode", env="cloud", check=False)  # ...unless offline
    assert offline.returncode == 2 and "shop" in offline.stdout and "create" in offline.stdout, offline.output


def test_a_misspelt_compose_key_is_refused_before_anything_runs(sandbox: Sandbox) -> None:
    template = (REPO / "provision" / "templates" / "docker-compose.project.yml.j2").read_text()
    broken = template.replace("    restart: unless-stopped", "    restartt: unless-stopped", 1)
    line = broken.splitlines().index("    restartt: unless-stopped") + 1
    (sandbox.root / "templates" / "typo.yml.j2").write_text(broken)
    sandbox.write_env(["shop"], extra="template: templates/typo.yml.j2\n")
    result = sandbox.cli("provision", "--project=shop", check=False)
    assert result.returncode != 0 and f"typo.yml.j2:{line}" in result.stderr and "restartt" in result.stderr
    assert "Traceback" not in result.output
    label = f"label=io.provision.env={sandbox.env}"
    assert subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True,
                          timeout=60, check=True).stdout == ""  # nothing was started


@pytest.mark.subprocess_cli  # psql writes to the process's own stdout, which an in-process run does not capture
def test_psql_runs_sql_in_the_project_database(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    password = sandbox.secrets("shop")["DB_PASSWORD"]
    for via in ("container", "auto"):  # auto: this machine's psql when it has one, else the container's
        result = sandbox.cli("psql", "--project=shop", f"--via={via}", "--command=select 40 + 2 as answer")
        assert "42" in result.stdout and password not in result.output
    failed = sandbox.cli("psql", "--project=shop", "--via=container", "--command=select * from nope", check=False)
    assert failed.returncode == 1 and "nope" in failed.stderr and "psql exited" in failed.stderr
    wrong = sandbox.cli("psql", "--project=shop", "--via=ssh", check=False)
    assert wrong.returncode == 2 and "--via 'ssh'" in wrong.stderr


def test_status_watch_redraws_until_interrupted(sandbox: Sandbox) -> None:
    """status --watch: one JSON line per refresh with --json, until Ctrl-C, which exits 0."""
    import json

    sandbox.write_env(["shop", "blog"])
    with sandbox.popen("status", "--watch=0.5", "--json") as watcher:
        assert watcher.stdout is not None and watcher.stderr is not None
        try:
            first, second = watcher.stdout.readline(), watcher.stdout.readline()
        finally:
            code = _interrupt(watcher)
        errors = watcher.stderr.read()
    assert code == 0 and "Traceback" not in errors, errors
    for line in (first, second):
        data = json.loads(line)
        assert [p["project"] for p in data["projects"]] == ["shop", "blog"]
        assert data["projects"][0]["status"] == "not provisioned" and data["projects"][0]["memory_used_bytes"] is None
    table = sandbox.cli("status", "--watch=bad", check=False)
    assert table.returncode == 2 and "--watch" in table.stderr


def test_a_held_lock_exits_4_through_every_entry_point(sandbox: Sandbox) -> None:
    """--lock-timeout while another run holds the project's lock: 4 from `invoke` and from `python -m provision`."""
    from provision.state.records import hold_lock

    sandbox.write_env(["shop"])
    (sandbox.state_dir / sandbox.env / "shop").mkdir(parents=True)
    with hold_lock(sandbox.state_dir / sandbox.env / "shop" / "lock", 5, what="shop"):
        via_invoke = sandbox.cli("provision", "--project=shop", "--lock-timeout=0.5", check=False)
        via_program = subprocess.run([sys.executable, "-m", "provision", *sandbox.argv("provision")[3:],
                                      "--project=shop", "--lock-timeout=0.5"], cwd=sandbox.root,
                                     env=sandbox.environ(), capture_output=True, text=True, timeout=120, check=False)
    for result in (via_invoke, via_program):
        assert result.returncode == 4 and "another run is operating on project 'shop'" in result.stderr, result.stderr


def test_a_destroyed_project_has_no_outputs_and_hints_name_invoke_here(sandbox: Sandbox) -> None:
    """outputs of a destroyed project exits 1 without URLs; destroy --quiet prints nothing; every hint names
    the program that was run (`python -m invoke` here) and parses."""
    import re
    import shlex

    sandbox.write_env(["shop"])
    sandbox.cli("provision", "--project=shop", "--quiet")
    quiet = sandbox.cli("destroy", "--project=shop", "--quiet")
    assert quiet.stdout == "" and quiet.stderr == ""
    outputs = sandbox.cli("outputs", "--project=shop", check=False)
    assert outputs.returncode == 1 and "was destroyed" in outputs.stderr and "URL" not in outputs.stdout
    start = sandbox.cli("start", "--project=shop", check=False)
    assert start.returncode == 1 and "was destroyed" in start.stderr
    for result in (outputs, start):
        commands = re.findall(r"`([^`]+)`", result.stderr)
        python = {sys.executable, Path(sys.executable).name}  # its name when PATH finds the same file
        assert [c.partition(" -m ")[2] for c in commands] == [f"invoke provision --env={sandbox.env} --project=shop"]
        assert commands[0].partition(" -m ")[0] in python, commands
        pasted = subprocess.run([*shlex.split(commands[0]), "--quiet", "--json"], cwd=sandbox.root,
                                env=sandbox.environ(), capture_output=True, text=True, timeout=300, check=False)
        assert pasted.returncode == 0 and pasted.stderr == "", pasted.stderr  # it brings the project back
    sandbox.cli("destroy", "--project=shop")


def test_a_closed_pipe_ends_a_watch_quietly(sandbox: Sandbox) -> None:
    """`status --watch --json | head -1`: the reader leaves, the watch ends with 0 and says nothing."""
    import shlex

    sandbox.write_env(["shop"])
    argv = shlex.join(sandbox.argv("status", "--watch=0.5", "--json"))
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"{argv} | head -1"], cwd=sandbox.root,
                            env=sandbox.environ(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("{") and result.stdout.count("\n") == 1
