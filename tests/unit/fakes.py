"""Fakes injected in unit tests: a compose runner that answers from a table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from provision.commands import Completed


@dataclass
class FakeRunner:
    """Answers commands by the first matching argv fragment; records every call; unknown argv raises."""

    answers: list[tuple[tuple[str, ...], Completed]] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    envs: list[Mapping[str, str] | None] = field(default_factory=list)

    writes: dict[tuple[str, ...], bytes] = field(default_factory=dict)  # bytes written to a `stdout` file
    inputs: list[bytes] = field(default_factory=list)  # what each call read from its `stdin` file

    def on(self, *fragment: str, returncode: int = 0, stdout: str = "", stderr: str = "",
           writes: bytes | None = None) -> FakeRunner:
        self.answers.append((fragment, Completed(fragment, returncode, stdout, stderr)))
        if writes is not None:
            self.writes[fragment] = writes
        return self

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
            stdout: IO[bytes] | None = None, stdin: IO[bytes] | None = None) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        self.envs.append(env)
        if stdin is not None:
            self.inputs.append(stdin.read())
        for fragment, answer in self.answers:
            if _contains(argv, fragment):
                if stdout is not None and fragment in self.writes:
                    stdout.write(self.writes[fragment])
                return Completed(argv, answer.returncode, answer.stdout, answer.stderr)
        raise AssertionError(f"unexpected command: {argv}")

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
        """The matching answer's stdout, line by line."""
        yield from self.run(argv, timeout=0, env=env).stdout.splitlines(keepends=True)


def _contains(argv: tuple[str, ...], fragment: tuple[str, ...]) -> bool:
    n = len(fragment)
    return any(argv[i:i + n] == fragment for i in range(len(argv) - n + 1))
