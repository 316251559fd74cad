"""The PostgreSQL major of an image, asked of this machine's Docker (pgimage.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import IO

import pytest

from provision.core.errors import CommandFailed, NotSupported
from provision.infra import pgimage
from provision.infra.commands import Completed


class Docker:
    """A runner answering `docker run … postgres --version` with `answer` (or raising it)."""

    def __init__(self, answer: Completed | CommandFailed) -> None:
        self.answer = answer
        self.argv: list[str] = []

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
            stdout: IO[bytes] | None = None, stdin: IO[bytes] | None = None) -> Completed:
        self.argv = list(argv)
        if isinstance(self.answer, CommandFailed):
            raise self.answer
        return self.answer

    def stream(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
        raise AssertionError("not streamed")


@pytest.fixture(autouse=True)
def docker_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgimage.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_the_major_of_an_image() -> None:
    docker = Docker(Completed((), 0, "postgres (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)\n", ""))
    assert pgimage.image_major("postgres:17", why="x cannot run", runner=docker) == 17
    assert docker.argv == ["/usr/bin/docker", "run", "--rm", "--network", "none", "--entrypoint", "postgres",
                           "postgres:17", "--version"]


@pytest.mark.parametrize(("answer", "message"), [
    (Completed((), 125, "", "Unable to find image\npull access denied"),
     r"cannot run 'pg:x' on this machine to ask its PostgreSQL version \(Unable to find image\npull access "
     r"denied\): pull it here first"),
    (CommandFailed(["docker"], -9, "timed out"), r"`postgres --version` in 'pg:x' did not answer here in 120 s"),
])
def test_an_image_that_does_not_answer(answer: Completed | CommandFailed, message: str) -> None:
    with pytest.raises(NotSupported, match=message):
        pgimage.image_major("pg:x", why="x cannot run", runner=Docker(answer))


def test_no_docker_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgimage.shutil, "which", lambda name: None)
    with pytest.raises(NotSupported, match=r"^Coolify's API cannot run 'pg:x' to ask its PostgreSQL version, and "
                                           r"this machine has no docker CLI to ask it here$"):
        pgimage.image_major("pg:x", why="Coolify's API cannot run")
