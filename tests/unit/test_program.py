"""The `provision` program's own surface: every hint a command that parses, short flags chosen once, help with
the product's options only, usage errors that exit 2 with a did-you-mean."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from invoke.exceptions import ParseError
from invoke.parser import Parser

import provision
from provision import cli
from provision.__main__ import ProvisionProgram, summary
from provision.infra import hints

PACKAGE = Path(provision.__file__).parent
REPO = PACKAGE.parent


def _parse(command: str) -> None:
    """Parse a hint's command (backquotes and program prefix stripped) as `provision` would: ParseError if not."""
    words = shlex.split(command.strip("`"))
    prefix = shlex.split(hints.program())
    assert words[:len(prefix)] == prefix, (command, prefix)
    program = ProvisionProgram(namespace=cli.namespace)
    parser = Parser(initial=program.initial_context, contexts=cli.namespace.to_contexts())
    result = parser.parse_argv(words[len(prefix):])
    assert [context.name for context in result[1:]][:1] == [words[len(prefix)]], command  # a task, not a core flag


def _hint_calls() -> Iterator[tuple[str, ast.Call]]:
    """Every `hints.command(...)` and upgrade_state's `command(...)` (the upgrade-db hint) call in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
                upgrade_hint = name == "command" and ((owner == "" and path.name == "upgrade_state.py")
                                                      or (owner == "states" and path.name == "upgrade.py"))
                if (name == "command" and owner == "hints") or upgrade_hint:
                    yield f"{path.relative_to(REPO)}:{node.lineno}", node


def _value(node: ast.expr) -> str | bool:
    """A literal as written, anything computed (an env, a project name, an image) as a sample value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bool)):
        return node.value
    if isinstance(node, (ast.UnaryOp, ast.Compare, ast.BoolOp)) and not isinstance(node, ast.UnaryOp) or \
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return True  # a condition: the flag given
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "x-1" for v in node.values)
    return "sample-value"


def _rebuild(call: ast.Call) -> str:
    """The hint a call makes, with sample values for what it computes."""
    literal = [_value(a) for a in call.args if not isinstance(a, ast.Starred)]  # *flags: none here
    options = {k.arg: _value(k.value) for k in call.keywords if k.arg is not None}
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "hints"):
        # upgrade_state.command(target, *flags): upgrade-db of the target
        return hints.command("upgrade-db", *(str(f) for f in literal[1:]), env="dev", project="shop")
    task, *flags = literal
    return hints.command(str(task), *(str(f) for f in flags), **options)


HINTS = list(_hint_calls())


def test_the_package_makes_hints_in_many_places() -> None:
    assert len(HINTS) >= 25
    assert {where.split(":")[0] for where, _ in HINTS} >= {
        "provision/service/lifecycle.py", "provision/service/upgrade.py", "provision/backends/local/backend.py",
        "provision/backends/coolify/backend.py", "provision/cli/session.py", "provision/core/config.py"}


@pytest.mark.parametrize("program", ["provision", "/usr/bin/python3 -m provision", "python3 -m invoke"])
@pytest.mark.parametrize(("where", "call"), HINTS, ids=[where for where, _ in HINTS])
def test_every_hint_parses_with_the_real_parser(where: str, call: ast.Call, program: str) -> None:
    hints.use_program(program)
    try:
        command = _rebuild(call)
        assert command.startswith(f"`{program} "), command
        _parse(command)
    finally:
        hints.use_program(hints.DEFAULT_PROGRAM)


def test_a_hint_that_does_not_parse_is_caught() -> None:
    with pytest.raises(ParseError):
        _parse(hints.command("provision", env="dev", projcet="shop"))
    with pytest.raises(ParseError):
        _parse(hints.command("provison", env="dev"))


def test_no_command_is_spelt_out_beside_the_hint_producer() -> None:
    """String literals (docstrings aside) never spell `provision <task>` or `invoke <task>` themselves."""
    spelt = re.compile(r"`(?:provision|invoke|inv)(?: [a-z-]+|$)")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if spelt.search(node.value):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_command_quotes_what_the_shell_would_split() -> None:
    assert hints.command("destroy", "--delete-data", "--yes", env="dev", project="a b") == \
        "`provision destroy --env=dev --project='a b' --delete-data --yes`"
    assert hints.command("clone", to_env="prod", set_="images.db=postgres:17", json=True, yes=False) == \
        "`provision clone --to-env=prod --set=images.db=postgres:17 --json`"


def test_invoked_as_names_the_program_as_typed() -> None:
    assert hints.invoked_as(["/opt/venv/bin/python3", "-m", "provision", "plan"], "/x/__main__.py") == \
        "/opt/venv/bin/python3 -m provision"
    assert hints.invoked_as(["python3", "-u", "-m", "invoke", "--list"], "x") == "python3 -m invoke"
    assert hints.invoked_as(["/opt/no/python", "/opt/no/provision", "plan"], "/opt/no/provision") == "/opt/no/provision"
    ls = subprocess.run(["sh", "-c", "command -v ls"], capture_output=True, text=True, check=True).stdout.strip()
    assert hints.invoked_as(["/usr/bin/python3", ls], ls) == "ls"  # found on PATH as itself: its name
    assert hints.invoked_as(["python3", "--", "plan -m x"], "my tool") == "'my tool'"


def test_a_short_flag_means_one_flag_in_every_task() -> None:
    meanings: dict[str, set[str]] = defaultdict(set)
    for name, task in cli.namespace.tasks.items():
        for argument in task.get_arguments():
            longs = [n for n in argument.names if len(n) > 1]
            for short in (n for n in argument.names if len(n) == 1):
                meanings[short].add(longs[0])
                assert short not in cli.RESERVED_SHORT_FLAGS, (name, short)
                assert cli.SHORT_FLAGS.get(longs[0].replace("-", "_")) == short, (name, argument.names)
    assert {short: sorted(longs) for short, longs in meanings.items() if len(longs) > 1} == {}
    assert set(meanings) == set(cli.SHORT_FLAGS.values())
    core = {n for a in ProvisionProgram(namespace=cli.namespace).core_args() for n in a.names if len(n) == 1}
    assert core == set(cli.RESERVED_SHORT_FLAGS)


def test_two_meanings_of_one_letter_would_be_caught() -> None:
    taken = dict(cli.SHORT_FLAGS)
    cli.SHORT_FLAGS["show_secrets"] = "j"  # -j already means --json
    try:
        meanings: dict[str, set[str]] = defaultdict(set)
        for task in cli.namespace.tasks.values():
            for argument in task.get_arguments():
                for short in (n for n in argument.names if len(n) == 1):
                    meanings[short].add(argument.names[0])
        assert meanings["j"] == {"json", "show-secrets"}
    finally:
        cli.SHORT_FLAGS.clear()
        cli.SHORT_FLAGS.update(taken)


def test_task_summaries_are_whole_sentences() -> None:
    for name, task in cli.namespace.tasks.items():
        text = summary(task)
        assert text.endswith((".", ")")) and "\n" not in text, (name, text)


def _program(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "provision", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "dev.yml").write_text("images: {db: postgres:16-alpine, api: postgrest/postgrest:v12.2.3}\n"
                                               "projects:\n  - name: shop\n")
    return tmp_path


def test_help_shows_the_products_options_only(project: Path) -> None:
    result = _program("--help", cwd=project)
    assert result.returncode == 0, result.stderr
    for invoke_option in ("--hide", "--pty", "--write-pyc", "--prompt-for-sudo-password", "--dry", "--warn-only",
                          "--echo", "--command-timeout", "--list-format", "--config"):
        assert invoke_option not in result.stdout
    assert "--root" in result.stdout and "--version" in result.stdout
    assert summary(cli.namespace.tasks["doctor"]) in " ".join(result.stdout.split())  # whole, not cut
    task_help = _program("backup", "-h", cwd=project)
    assert task_help.returncode == 0 and "Usage: " in task_help.stdout and " backup [--options]" in task_help.stdout
    assert "--, " not in task_help.stdout and "-a, --all" in task_help.stdout
    clone = _program("clone", "-h", cwd=project)  # -h is help in every task
    assert clone.returncode == 0 and " clone [--options]" in clone.stdout


@pytest.mark.parametrize(("args", "says"), [
    (("--help", "nosuch"), "--help 'nosuch': no such task"),
    (("--help", "destory"), "did you mean 'destroy'?"),
    (("provison", "--env=dev"), "no task 'provison': did you mean 'provision'?"),
    (("plan", "--evn=dev"), "unknown flag '--evn' of plan: did you mean '--env'?"),
    (("plan", "--env=dev", "--set"), "--set needs a value"),
    (("plan", "--env=dev", "--set", "--json"), "--set needs a value"),
    (("plan", "--env"), "--env needs a value"),
    (("--hide=both", "plan", "--env=dev"), "unknown flag '--hide'"),
    (("--pty", "plan", "--env=dev"), "unknown flag '--pty'"),
    (("status", "--env=dev", "-s"), "unknown flag '-s'"),
    (("verify", "--env=dev", "--project=shop", "--all"), "pass --project=NAME or --all, not both"),
])
def test_usage_errors_exit_2_naming_the_fix(project: Path, args: tuple[str, ...], says: str) -> None:
    result = _program(*args, cwd=project)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert says in result.stderr and "Traceback" not in result.stderr
    assert "[Provisioning]" not in result.stderr


def test_a_hint_names_the_program_as_typed_and_works_when_pasted(project: Path) -> None:
    result = _program("outputs", "--env=dev", "--project=ghost", cwd=project)
    assert result.returncode == 2
    found = re.search(r"`([^`]+)`", result.stderr)
    assert found is not None, result.stderr
    program = hints.invoked_as([sys.executable, "-m", "provision"], "")
    assert found.group(1) == f"{program} provision --env=dev --project=ghost --create"  # what makes it
    hints.use_program(program)
    try:
        _parse(found.group(0))
    finally:
        hints.use_program(hints.DEFAULT_PROGRAM)
    typo = _program("outputs", "--env=dev", "--project=shpo", cwd=project)
    assert typo.returncode == 2 and "did you mean 'shop'" in typo.stderr


def test_http_callers_are_named_the_request_the_api_does_it_with() -> None:
    hints.use_http()
    try:
        assert hints.command("provision", env="dev", project="ghost", create=True) == \
            '`POST /v1/projects {"name": "ghost"}`'
        assert hints.command("start", env="dev", project="shop") == "`POST /v1/projects/shop/start`"
        assert hints.command("destroy", "--delete-data", "--yes", env="dev", project="shop") == \
            "`DELETE /v1/projects/shop?delete_data=true`"
        assert hints.command("lock", env="dev") == "`provision lock --env=dev`"  # the operator's, on the server
    finally:
        hints.use_http(False)
