"""`provision <task> ...` and `python -m provision <task> ...`: the tasks of provision/cli/ under their own
program name, with the product's options only (`--root`, `--version`, `--help`, `--list`, completion), whole task
summaries, did-you-mean for a mistyped task or flag, and exit code 2 for every usage error."""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import textwrap
from pathlib import Path

from invoke.collection import Collection
from invoke.completion.complete import print_completion_script
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.program import Program

from . import cli
from .infra import hints


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("provision")
    except PackageNotFoundError:
        return "unknown"


def summary(task: object) -> str:
    """A task's whole first paragraph, on one line (invoke's list shows only its first line)."""
    text = inspect.getdoc(task) or ""
    return " ".join(text.split("\n\n", 1)[0].split())


def close_to(word: str, candidates: list[str]) -> str:
    """`: did you mean X?` for the candidate nearest `word`, or nothing."""
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f": did you mean {found[0]!r}?" if found else ""


class ProvisionProgram(Program):
    """Invoke's Program over provision's collection, with none of Invoke's own options."""

    def core_args(self) -> list[Argument]:
        return [
            Argument(names=("help", "h"), optional=True, help="Show this help, or a task's: --help TASK"),
            Argument(names=("list", "l"), kind=bool, default=False, help="List the tasks"),
            Argument(names=("root",), kind=str,
                     help="The project directory (default: the nearest one from here upward that has envs/)"),
            Argument(names=("version", "V"), kind=bool, default=False, help="Show the version and exit"),
            Argument(names=("print-completion-script",), kind=str, default="",
                     help="Print the shell completion script (bash, zsh or fish)"),
            Argument(names=("complete",), kind=bool, default=False,
                     help="Print completion candidates for the words given (what the completion script calls)"),
        ]

    def parse_core(self, argv: list[str] | None) -> None:
        self.normalize_argv(argv)
        if argv is None:
            hints.use_program(hints.invoked_as())
        try:
            self.parse_core_args()
        except ParseError as exc:
            raise Exit(self.usage_error(exc), code=2) from None
        if self.args.version.value:
            self.print_version()
            raise Exit
        shell = self.args["print-completion-script"].value
        if shell:
            if shell not in ("bash", "zsh", "fish"):
                raise Exit(f"error: --print-completion-script {shell!r}: use bash, zsh or fish", code=2)
            print_completion_script(shell=shell, names=self.binary_names)
            raise Exit
        root = self.args["root"].value
        if root:
            if not Path(root).is_dir():
                raise Exit(f"error: --root {root!r}: no such directory", code=2)
            os.environ[cli.ROOT_VARIABLE] = str(Path(root).resolve())

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(self.usage_error(exc), code=2) from None

    def parse_cleanup(self) -> None:
        """--help [TASK], --list, and `--complete` (the shell's completion script), which also completes flag
        values: env and project names, services, formats."""
        wanted = self.args.help.value
        if wanted is True:
            self.print_help()
            raise Exit
        if wanted:
            if wanted not in self.parser.contexts:
                raise Exit(f"error: --help {wanted!r}: no such task{close_to(wanted, self.task_names())} "
                           f"(`{hints.program()} --list` lists them)", code=2)
            self.print_task_help(wanted)
            raise Exit
        if self.args.list.value:
            self.list_tasks()
            raise Exit
        if self.args.complete.value:
            from invoke.completion.complete import complete

            from .cli.completion import flag_values

            values = flag_values(self.core.remainder, cli.root)
            if values is not None:
                print("\n".join(values))
                raise Exit
            complete(names=self.binary_names, core=self.core, initial_context=self.initial_context,
                     collection=self.collection, parser=self._make_parser())
        if not self.tasks and not self.collection.default:
            self.no_tasks_given()

    def update_config(self, merge: bool = True) -> None:
        """No run()/sudo/config-file options to fold in: provision's tasks run no shell commands through Invoke."""
        if merge:
            self.config.merge()

    def usage_error(self, exc: ParseError) -> str:
        """invoke's parse error as provision's usage error: the flag or task named, a did-you-mean, where help is."""
        message = str(exc)
        context: ParserContext | None = getattr(exc, "context", None)
        task = context.name if context is not None and context.name else None
        where = f"`{hints.program()} --help {task}`" if task else f"`{hints.program()} --help`"
        if message.startswith("No idea what ") and message.endswith(" is!"):
            word = message[len("No idea what '"):-len("' is!")]
            if word.startswith("-"):
                flags = sorted(name for name in (context.flags if context is not None else {}) if name.startswith("--"))
                of = f" of {task}" if task else ""
                return f"error: unknown flag {word!r}{of}{close_to(word.split('=')[0], flags)} (see {where})"
            return f"error: no task {word!r}{close_to(word, self.task_names())} (`{hints.program()} --list` lists them)"
        if "needed value and was not given one" in message and context is not None:
            for argument in context.args.values():
                if repr(argument) in message:
                    flag = "--" + argument.name.replace("_", "-").rstrip("-")
                    return f"error: {flag} needs a value, e.g. {flag}=VALUE (see {where})"
        return f"error: {message} (see {where})"

    def task_names(self) -> list[str]:
        return sorted(self.collection.task_names) + [a for names in self.collection.task_names.values() for a in names]

    def print_help(self) -> None:
        print(f"Usage: {hints.program()} [--root=PATH] <task> [--options]\n")
        self.list_tasks()
        print("Options:\n")
        self.print_columns(self.initial_context.help_tuples())
        shorts = ", ".join(f"-{short} --{name}" for name, short in cli.SHORT_FLAGS.items())
        print(textwrap.fill(f"Short flags, the same in every task that has the flag: {shorts}. "
                            f"`{hints.program()} --help <task>` shows a task's options.", width=80))

    def list_tasks(self) -> None:
        collection: Collection = self.collection
        pairs = []
        for name in sorted(collection.tasks):
            aliases = sorted(collection.tasks[name].aliases)
            shown = f"{name} ({', '.join(aliases)})" if aliases else name
            pairs.append((shown, summary(collection.tasks[name])))
        print("Tasks:\n")
        self.print_columns(pairs)

    def print_task_help(self, name: str) -> None:
        context = self.parser.contexts[name]
        tuples = context.help_tuples()
        print(f"Usage: {hints.program()} {name} [--options]\n")
        for line in (inspect.getdoc(self.collection[name]) or "").splitlines():
            print(self.leading_indent + line if line.strip() else "")
        print("\nOptions:\n")
        if tuples:
            self.print_columns(tuples)
        else:
            print(self.leading_indent + "none\n")


program = ProvisionProgram(namespace=cli.namespace, name="provision", binary="provision", binary_names=["provision"],
                           version=_version())


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:  # e.g. `provision --help | head`: the reader left, nothing to report
        cli.silence_stdout()
        sys.exit(0)


if __name__ == "__main__":
    main()
