"""The commands that messages suggest, spelt as the user runs this program: every hint in provision is made by
`command`, so `provision ...`, `python -m provision ...` or (in a checkout) `invoke ...` is what gets pasted.

The entry point names the program once (`use_program`); a library caller gets `provision`, the console
script. The name is process-wide: one process runs one program."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence

DEFAULT_PROGRAM = "provision"
_program = DEFAULT_PROGRAM
_http = False
_CONTROL = ("start", "stop", "restart")


def use_program(name: str) -> None:
    """Every later `command` starts with `name` (a shell-quoted command prefix, e.g. `python3 -m provision`)."""
    global _program
    _program = name


def use_http(enabled: bool = True) -> None:
    """Hints in this process go to HTTP callers (`serve`): a task the API also does is named as its request
    (`POST /v1/projects {"name": "shop"}`); the others stay commands for the server's operator."""
    global _http
    _http = enabled


def program() -> str:
    """The command prefix hints start with."""
    return _program


def invoked_as(orig_argv: Sequence[str] | None = None, argv0: str | None = None) -> str:
    """How this process was started, as a prefix to paste: `python3 -m provision` after `-m`, else the
    program's path as given, shortened to its name when that name finds the same file on PATH. Defaults:
    `sys.orig_argv` (the interpreter's own argv) and `sys.argv[0]`."""
    words = list(sys.orig_argv if orig_argv is None else orig_argv)
    script = sys.argv[0] if argv0 is None else argv0
    for at, word in enumerate(words[1:], start=1):  # the interpreter's own options come before a script
        if word == "-m" and at + 1 < len(words):
            return f"{_short(words[0])} -m {shlex.quote(words[at + 1])}"
        if not word.startswith("-"):
            break
    return _short(script) if script else DEFAULT_PROGRAM


def _short(path: str) -> str:
    name = os.path.basename(path)
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(path):
        return shlex.quote(name)
    return shlex.quote(path)


def command(task: str, *flags: str, **options: str | int | bool) -> str:
    """`<program> <task> --option=value ... <flags>` in backquotes, every word shell-quoted: a command that works
    when pasted. Options: keyword names with underscores become dashed flags; True gives a bare flag. Under
    `use_http`, the API's request instead where the API does the same for one project."""
    request = _request(task, flags, options) if _http else None
    if request is not None:
        return f"`{request}`"
    words = [task]
    for name, value in options.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not False:
            words.append(f"{flag}={shlex.quote(str(value))}")
    words.extend(flags)
    return f"`{_program} {' '.join(words)}`"


def _request(task: str, flags: Sequence[str], options: dict[str, str | int | bool]) -> str | None:
    """The HTTP API's request doing `task` for one project (the server's env), or None when it has none."""
    project = options.get("project")
    if not isinstance(project, str) or set(options) - {"env", "project", "create"}:
        return None
    if task == "provision" and not flags:
        return f'POST /v1/projects {{"name": "{project}"}}'
    if task in _CONTROL and not flags:
        return f"POST /v1/projects/{project}/{task}"
    if task == "destroy" and set(flags) <= {"--delete-data", "--yes"}:
        return f"DELETE /v1/projects/{project}" + ("?delete_data=true" if "--delete-data" in flags else "")
    return None
