"""A throwaway project root driven through the real CLI: `python -m invoke ...` in a subprocess, or the same
program run inside the test process (`Sandbox(in_process=True)`, tests/inprocess.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests import inprocess
from tests.timing import Clock


@dataclass
class CLIResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stdout)


# below the kernel's ephemeral ports (32768 on, ip_local_port_range): an outgoing connection can hold one of those
# for a moment, and a project publishing it then fails with "address already in use"
DEFAULT_PORTS = "30000-32699"


def worker_ports(environ: Mapping[str, str]) -> tuple[int, int]:
    """The host ports this test process's sandboxes lease: PROVISION_TEST_PORTS=lo-hi (default DEFAULT_PORTS; a
    second run on the same engine gives its own), and under pytest-xdist the worker's equal share of it."""
    low, high = (int(p) for p in environ.get("PROVISION_TEST_PORTS", DEFAULT_PORTS).split("-", 1))
    worker, count = environ.get("PYTEST_XDIST_WORKER", ""), int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index, size = int(worker[2:]), (high - low + 1) // count
    return low + index * size, low + (index + 1) * size - 1


PORTS = worker_ports(os.environ)


@dataclass
class Sandbox:
    """A project root (tasks.py, templates/, envs/<env>.yml) with its own state dir and a unique env name.
    `in_process`: `cli` runs the program in this process (on `clock`, when given) instead of a subprocess;
    `popen` always starts a subprocess."""

    root: Path
    env: str
    images: Mapping[str, str]
    outputs: list[str] = field(default_factory=list)
    extra_environ: dict[str, str] = field(default_factory=dict)
    in_process: bool = False
    clock: Clock | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / ".provision"

    def write_env(self, projects: list[str] | None = None, *, timeout: float = 60, extra: str = "",
                  images: Mapping[str, str] | None = None, name: str | None = None) -> None:
        images = images or self.images
        lines = ["backend: local", "images:", f"  db: {images['db']}", f"  api: {images['api']}"]
        lines += ["projects:", *(f"  - name: {p}" for p in projects)] if projects else ["projects: []"]
        lines += ["health:", f"  timeout: {timeout}", "local:", f"  port_range: [{PORTS[0]}, {PORTS[1]}]"]
        self.write_env_text("\n".join(lines) + "\n" + extra, name=name)

    def write_env_text(self, text: str, *, name: str | None = None) -> None:
        (self.root / "envs" / f"{name or self.env}.yml").write_text(text)

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COOLIFY_", "PROVISION_"))}
        env.update({"PROVISION_STATE_DIR": str(self.state_dir)}, **self.extra_environ, **extra)
        return env

    def argv(self, task: str, *args: str, env: str | None = None) -> list[str]:
        return [sys.executable, "-m", "invoke", task, f"--env={env or self.env}", *args]

    def cli(self, task: str, *args: str, check: bool = True, timeout: float = 300, env: str | None = None,
            extra_env: Mapping[str, str] | None = None) -> CLIResult:
        argv = self.argv(task, *args, env=env) if task != "list" else [sys.executable, "-m", "invoke", task, *args]
        environ = self.environ(**(extra_env or {}))
        if self.in_process:  # no timeout here: pytest-timeout ends a run that hangs
            ran = inprocess.run(argv[3:], cwd=self.root, environ=environ, clock=self.clock)
            result = CLIResult(tuple(argv[3:]), ran.returncode, ran.stdout, ran.stderr)
        else:
            proc = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=timeout, env=environ,
                                  check=False)
            result = CLIResult(tuple(argv[3:]), proc.returncode, proc.stdout, proc.stderr)
        self.outputs.append(result.output)
        if check and result.returncode != 0:
            raise AssertionError(f"`invoke {' '.join(argv[3:])}` exited {result.returncode}:\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def popen(self, task: str, *args: str) -> subprocess.Popen[str]:
        # SIGINT as a terminal's Ctrl-C delivers it: a suite started in the background (nohup ... &) has it
        # ignored, and an ignored signal stays ignored in every child
        return subprocess.Popen(self.argv(task, *args), cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.environ(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def secrets(self, project: str) -> dict[str, str]:
        from dotenv import dotenv_values

        path = self.state_dir / self.env / project / "secrets.env"
        return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}

    def compose_name(self, project: str) -> str:
        return f"{project}_{self.env}"
