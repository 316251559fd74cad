"""The command surface scripts depend on."""

from __future__ import annotations

import subprocess
import sys

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


def test_outputs_env_format_and_logs_and_render(sandbox: Sandbox) -> None:
    sandbox.cli("provision", "--project=shop")
    env_lines = sandbox.cli("outputs", "--project=shop").stdout.splitlines()
    assert env_lines[0].startswith('API_URL="http://127.0.0.1:') and env_lines[1].startswith('DB_URL="postgresql://app:***@')
    logs = sandbox.cli("logs", "--project=shop", "--service=db", "--tail=5").stdout
    assert "db-1" in logs and "api-1" not in logs
    rendered = sandbox.cli("render", "--project=shop").stdout
    assert "${DB_PASSWORD:?" in rendered and 'name: "shop_' in rendered
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
