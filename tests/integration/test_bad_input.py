"""Bad input of every kind: a precise message naming the input, the documented exit code, no traceback, and
nothing created (no state directory, port lease, history line, container, volume or network)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import Sandbox, leftovers

BAD_ENV = "badenv"
GOOD_ENV_LINES = "images:\n  db: postgres:16-alpine\n  api: postgrest/postgrest:v12.2.3\nprojects:\n  - name: shop\n"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # after `python -m invoke`; {env} is the sandbox's env
    code: int
    says: str  # a fragment of stderr that names the input
    env_file: str | None = None  # envs/badenv.yml, for cases about the env file
    template: str | None = None  # templates/bad.yml.j2
    secrets: str | None = None  # envs/badenv.env


CASES = [
    # flags and arguments
    Case("missing --env", ("provision",), 2, "--env is required"),
    Case("unknown env", ("provision", "--env=nosuch"), 2, "envs/nosuch.yml"),
    Case("a typo of a declared project", ("provision", "--env={env}", "--project=shpo"), 2, "did you mean 'shop'"),
    Case("an undeclared project", ("provision", "--env={env}", "--project=other"), 2, "--create"),
    Case("uppercase project name", ("provision", "--env={env}", "--project=Shop", "--create"), 2, "'Shop'"),
    Case("path in a project name", ("provision", "--env={env}", "--project=../x", "--create"), 2, "'../x'"),
    Case("trailing newline in a name", ("provision", "--env={env}", "--project=shop\n", "--create"), 2, "shop"),
    Case("empty project name", ("provision", "--env={env}", "--project=", "--create"), 2, "project"),
    Case("non-numeric --lock-timeout", ("provision", "--env={env}", "--lock-timeout=abc"), 2, "--lock-timeout 'abc'"),
    Case("negative --lock-timeout", ("provision", "--env={env}", "--lock-timeout=-1"), 2, "--lock-timeout '-1'"),
    Case("non-numeric --parallel", ("provision", "--env={env}", "--parallel=abc"), 2, "--parallel 'abc'"),
    Case("zero --parallel", ("provision", "--env={env}", "--parallel=0"), 2, "--parallel '0'"),
    Case("non-numeric --tail", ("logs", "--env={env}", "--project=shop", "--tail=abc"), 2, "--tail 'abc'"),
    Case("negative --limit", ("history", "--env={env}", "--limit=-3"), 2, "--limit '-3'"),
    Case("non-numeric --port", ("serve", "--env={env}", "--port=abc"), 2, "--port 'abc'"),
    Case("out-of-range --port", ("serve", "--env={env}", "--port=70000"), 2, "--port '70000'"),
    Case("unknown --format", ("outputs", "--env={env}", "--project=shop", "--format=yaml"), 2, "--format"),
    Case("--set without a value", ("provision", "--env={env}", "--set=images.api"), 2, "--set 'images.api'"),
    Case("--set without a key", ("provision", "--env={env}", "--set==x"), 2, "--set '=x'"),
    Case("--set of an unknown key", ("plan", "--env={env}", "--set=imagez.api=x"), 2, "imagez"),
    Case("--delete-data without --yes", ("destroy", "--env={env}", "--project=shop", "--delete-data"), 2, "--yes"),
    Case("outputs without --project", ("outputs", "--env={env}"), 2, "--project is required"),
    Case("destroy without --project", ("destroy", "--env={env}"), 2, "--project is required"),
    Case("outputs of a project never made", ("outputs", "--env={env}", "--project=ghost"), 2, "'ghost'"),
    Case("init with an unknown backend", ("init", "--backend=nomad"), 2, "--backend 'nomad'"),
    Case("history of an env that does not exist", ("history", "--env=DEV"), 2, "envs/DEV.yml not found"),

    # env files
    Case("unknown top-level key", ("provision", f"--env={BAD_ENV}"), 2, "imagez",
         env_file="imagez:\n  db: x\n  api: y\n"),
    Case("missing image", ("provision", f"--env={BAD_ENV}"), 2, "images.api",
         env_file="images:\n  db: postgres:16-alpine\nprojects: []\n"),
    Case("invalid declared name", ("provision", f"--env={BAD_ENV}"), 2, "projects[0].name",
         env_file="images: {db: a, api: b}\nprojects:\n  - name: Shop!\n"),
    Case("colliding declared names", ("provision", f"--env={BAD_ENV}"), 2, "collides",
         env_file="images: {db: a, api: b}\nprojects:\n  - name: shop\n  - name: shop\n"),
    Case("negative health timeout", ("provision", f"--env={BAD_ENV}"), 2, "health.timeout",
         env_file=GOOD_ENV_LINES + "health:\n  timeout: -5\n"),
    Case("reversed port range", ("provision", f"--env={BAD_ENV}"), 2, "port_range",
         env_file=GOOD_ENV_LINES + "local:\n  port_range: [30010, 30000]\n"),
    Case("unknown backend", ("provision", f"--env={BAD_ENV}"), 2, "backend",
         env_file=GOOD_ENV_LINES + "backend: nomad\n"),
    Case("YAML syntax error", ("provision", f"--env={BAD_ENV}"), 2, f"envs/{BAD_ENV}.yml",
         env_file="images: [db: a\n"),
    Case("not a mapping", ("provision", f"--env={BAD_ENV}"), 2, f"envs/{BAD_ENV}.yml",
         env_file="- just\n- a list\n"),
    Case("missing template", ("provision", f"--env={BAD_ENV}"), 2, "templates/nope.j2",
         env_file=GOOD_ENV_LINES + "template: templates/nope.j2\n"),
    Case("a Coolify env without an owner", ("plan", f"--env={BAD_ENV}"), 2, "owner: missing",
         env_file=GOOD_ENV_LINES + "backend: coolify\n",
         secrets="COOLIFY_API_URL=http://127.0.0.1:9/api/v1\nCOOLIFY_API_TOKEN=1|x\n"),
    Case("a Coolify env without credentials", ("plan", f"--env={BAD_ENV}"), 2, "COOLIFY_API_TOKEN",
         env_file="owner: repo-0001\n" + GOOD_ENV_LINES + "backend: coolify\n"),
    Case("bad owner id", ("provision", f"--env={BAD_ENV}"), 2, "owner",
         env_file="owner: A B\n" + GOOD_ENV_LINES),
    Case("non-scalar variable", ("provision", f"--env={BAD_ENV}"), 2, "variable 'x'",
         env_file=GOOD_ENV_LINES + "variables:\n  x: [1, 2]\n"),
    Case("db_user not an identifier", ("provision", f"--env={BAD_ENV}"), 2, "db_user",
         env_file=GOOD_ENV_LINES + "variables:\n  db_user: Robert'); DROP\n"),
    Case("db_public_port out of range", ("provision", f"--env={BAD_ENV}"), 2, "db_public_port",
         env_file=GOOD_ENV_LINES + "variables:\n  db_public_port: 80\n"),
    Case("a network pool too small", ("provision", f"--env={BAD_ENV}"), 2, "network_pool",
         env_file=GOOD_ENV_LINES + "local:\n  network_pool: 10.0.0.0/30\n"),
    Case("a network pool that is no network", ("provision", f"--env={BAD_ENV}"), 2, "network_pool",
         env_file=GOOD_ENV_LINES + "local:\n  network_pool: not-a-network\n"),
    Case("a variable the template does not use", ("provision", f"--env={BAD_ENV}"), 2, "did you mean 'db_user'",
         env_file=GOOD_ENV_LINES + "variables:\n  db_usr: bob\n"),
    Case("--set of a variable the template does not use", ("plan", "--env={env}", "--set=variables.db_nmae=x"), 2,
         "variables.db_nmae"),
    # templates
    Case("template syntax error", ("provision", f"--env={BAD_ENV}"), 2, "bad.yml.j2",
         env_file=GOOD_ENV_LINES + "template: templates/bad.yml.j2\n", template="services: {{ nope\n"),
    Case("template using an undefined variable", ("provision", f"--env={BAD_ENV}"), 2, "no_such_variable",
         env_file=GOOD_ENV_LINES + "template: templates/bad.yml.j2\n",
         template="services:\n  db:\n    image: {{ no_such_variable }}\n"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_precisely_and_creates_nothing(sandbox: Sandbox, case: Case) -> None:
    if case.env_file is not None:
        (sandbox.root / "envs" / f"{BAD_ENV}.yml").write_text(case.env_file)
    if case.secrets is not None:
        (sandbox.root / "envs" / f"{BAD_ENV}.env").write_text(case.secrets)
    if case.template is not None:
        (sandbox.root / "templates" / "bad.yml.j2").write_text(case.template)
    before = sorted(p.relative_to(sandbox.root) for p in sandbox.root.rglob("*"))
    argv = [sys.executable, "-m", "invoke", *(a.replace("{env}", sandbox.env) for a in case.args)]
    result = subprocess.run(argv, cwd=sandbox.root, env=sandbox.environ(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == case.code, (result.returncode, result.stderr)
    assert case.says in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not sandbox.state_dir.exists()  # no record, lease, lock or history line
    assert sorted(p.relative_to(sandbox.root) for p in sandbox.root.rglob("*")) == before
    assert leftovers(sandbox.env) == [] and leftovers(BAD_ENV) == []


def test_list_fails_when_every_env_was_skipped(sandbox: Sandbox) -> None:
    (sandbox.root / "envs" / f"{sandbox.env}.yml").write_text(
        "owner: repo-0001\nbackend: coolify\nimages: {db: a, api: b}\n")  # no Coolify credentials
    result = subprocess.run([sys.executable, "-m", "invoke", "list"], cwd=sandbox.root, env=sandbox.environ(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "every env was skipped" in result.stderr and "COOLIFY_API_TOKEN" in result.stderr


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
