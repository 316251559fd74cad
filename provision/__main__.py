"""`provision <task> ...` and `python -m provision <task> ...`: the tasks of provision/cli.py under their own
program name, with `--root`, `--version`, and exit code 2 for flags that do not parse."""

from __future__ import annotations

import os
from pathlib import Path

from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.program import Program

from . import cli


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("provision")
    except PackageNotFoundError:
        return "unknown"


class ProvisionProgram(Program):
    """Invoke's Program over provision's collection."""

    def core_args(self) -> list[Argument]:
        root = Argument(names=("root",), kind=str,
                        help="The project directory (default: the nearest one from here upward that has envs/)")
        return [*super().core_args(), root]

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        root = self.args["root"].value
        if root:
            if not Path(root).is_dir():
                raise Exit(f"error: --root {root!r}: no such directory", code=2)
            os.environ[cli.ROOT_VARIABLE] = str(Path(root).resolve())

    def parse_cleanup(self) -> None:
        """`--complete` (the shell's completion script) also completes flag values: env and project
        names, services, formats."""
        if self.args.complete.value:
            from .completion import flag_values

            values = flag_values(self.core.remainder, lambda: cli._root())
            if values is not None:
                print("\n".join(values))
                raise Exit
        super().parse_cleanup()

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"error: {exc} (see `provision --help <task>`)", code=2) from None


program = ProvisionProgram(namespace=cli.namespace, name="provision", binary="provision", binary_names=["provision"],
                           version=_version())


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:  # e.g. `provision --help | head`: the reader left, nothing to report
        os._exit(0)


if __name__ == "__main__":
    main()
