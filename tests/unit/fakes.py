"""Fakes injected in unit tests: a compose runner that answers from a table, and a backend that keeps its
stacks in memory."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import IO

from provision.backends.base import Adopted
from provision.commands import Completed
from provision.config import EnvConfig
from provision.errors import HealthTimeout, ProvisionError
from provision.model import (
    Destroyed,
    Endpoints,
    Handle,
    LockInfo,
    Observed,
    Ports,
    Prepared,
    ServiceState,
    Target,
    Usage,
)
from provision.planner import Plan
from provision.render import RenderedStack, stack_hash
from provision.secrets import Secret, SecretURL, generate_missing


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


@dataclass(frozen=True)
class MemoryHandle:
    project: str

    def to_dict(self) -> dict[str, str]:
        return {"project": self.project}


@dataclass
class MemoryBackend:
    """Keeps 'deployed' stacks in a dict and records every changing call."""

    name: str = "memory"
    dumps_before_delete: bool = True
    deployed: dict[str, dict[str, str]] = field(default_factory=dict)  # project -> service hashes
    running: dict[str, bool] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    statements: list[tuple[str | None, str]] = field(default_factory=list)  # (user, sql) run in the db
    healthy: bool = True
    broken_marker: str | None = None  # wait() fails while the applied text contains this
    secrets: dict[str, Mapping[str, object]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    drift: str | None = None
    extra_deployed: tuple[str, ...] = ()
    locked: list[str] = field(default_factory=list)  # projects a lock was taken for, in order
    data_majors: dict[str, int] = field(default_factory=dict)  # project -> the major of its data directory
    refuse: ProvisionError | None = None  # what preflight raises

    def usage(self, config: EnvConfig, projects: Collection[str] | None) -> dict[str, dict[str, Usage]]:
        return {p: {"db": Usage(memory_used_bytes=1)} for p in (self.deployed if projects is None else projects)
                if p in self.deployed}

    def describe(self) -> str:
        return "Memory provider"

    def load_handle(self, data: Mapping[str, object]) -> MemoryHandle | None:
        return MemoryHandle(str(data["project"])) if data.get("project") else None

    def observe(self, target: Target, known: Handle | None) -> Observed:
        hashes = self.deployed.get(target.project)
        if hashes is None:
            return Observed(exists=False)
        state = "running" if self.running[target.project] else "exited"
        return Observed(exists=True, config_hash=stack_hash(hashes), applied_text=self.texts.get(target.project),
                        services={s: ServiceState(state) for s in hashes}, drift=self.drift,
                        handle=MemoryHandle(target.project))

    def prepare(self, target: Target, observed: Observed, stored: Mapping[str, Secret], *,
                create: bool = True) -> Prepared:
        if not create:
            return Prepared(secrets=stored, ports=Ports(1, 2))
        secrets = generate_missing(stored)
        return Prepared(secrets=secrets, ports=Ports(1, 2), new_secrets=secrets != dict(stored))

    def preflight(self, target: Target, stack: RenderedStack) -> None:
        if self.refuse is not None:
            raise self.refuse

    def apply(self, target: Target, observed: Observed, stack: RenderedStack, prepared: Prepared,
              plan: Plan) -> MemoryHandle:
        self.calls.append(f"apply:{plan.action.value}")
        self.texts[target.project] = stack.text
        self.deployed[target.project] = dict(stack.service_hashes) or {"from-text": stack.config_hash}
        self.running[target.project] = True
        return MemoryHandle(target.project)

    def wait(self, target: Target, handle: Handle | None, prepared: Prepared, *, timeout: float,
             settled: Observed | None = None) -> Endpoints:
        broken = self.broken_marker and self.broken_marker in self.texts.get(target.project, "")
        if not self.healthy or broken:
            raise HealthTimeout("not healthy", logs="db-1 | boom")
        return self.endpoints(target, handle, prepared)

    def endpoints(self, target: Target, handle: Handle | None, prepared: Prepared) -> Endpoints:
        password = prepared.secrets["DB_PASSWORD"].reveal() if prepared.secrets else ""
        return Endpoints("http://127.0.0.1:1", SecretURL(f"postgresql://app:{password}@127.0.0.1:2/app"))

    def control(self, target: Target, observed: Observed, verb: str) -> bool:
        was = observed.running
        if (verb == "stop" and not was) or (verb == "start" and was):
            return False
        self.calls.append(verb)
        self.running[target.project] = verb != "stop"
        return True

    def destroy(self, target: Target, observed: Observed, *, delete_data: bool) -> Destroyed:
        if not observed.exists and not delete_data:
            return Destroyed(changed=False, messages=("kept data",))
        self.calls.append(f"destroy:{delete_data}")
        self.deployed.pop(target.project, None)
        return Destroyed(changed=True, messages=("removed",))

    def adopt(self, target: Target) -> Adopted:
        return Adopted(changed=False)

    def lock(self, target: Target, known: Handle | None, *, timeout: float) -> AbstractContextManager[None]:
        self.locked.append(target.project)
        return nullcontext()

    def locks(self, config: EnvConfig) -> list[LockInfo]:
        return []

    def unlock(self, target: Target) -> bool:
        return False

    def logs(self, target: Target, observed: Observed, *, service: str | None, tail: int,
             since: object = None, follow: bool = False) -> Iterator[str]:
        yield ""

    def run_sql(self, target: Target, observed: Observed, sql: str, *, timeout: float = 120,
                user: str | None = None, purpose: str = "sql") -> str:
        self.statements.append((user, sql))
        return ""

    def image_major(self, image: str) -> int:
        return 17 if image.endswith(":17") else 15

    def data_major(self, target: Target, image: str) -> int | None:
        return self.data_majors.get(target.project)

    def find_volume(self, target: Target, volume_key: str) -> str | None:
        return None

    def observe_env(self, config: EnvConfig, known: Mapping[str, Handle], *,
                    full: bool = False) -> dict[str, Observed]:
        found = {p: self.observe(Target(config, config.project(p)), known.get(p)) for p in self.deployed}
        return {**found, **{p: Observed(exists=True) for p in self.extra_deployed}}
