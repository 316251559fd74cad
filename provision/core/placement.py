"""Which Coolify server a new stack goes to: pure decisions over what each server holds now.

A server's fill is the larger of its stacks over max_stacks and, when it declares `memory`, its stacks' memory
limits over that memory. A new stack goes to the usable server whose fill after taking it is lowest (the first
listed on a tie), so stacks spread in proportion to capacity, and a fresh checkout reading the same servers
decides the same. Placement is never revisited: a project stays where it was created."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .errors import ServersFull
from .resources import show_size


@dataclass(frozen=True)
class ServerLoad:
    """One listed server as placement sees it."""

    name: str  # as the env file lists it
    max_stacks: int
    memory: int | None = None  # bytes it may hand out to stacks' memory limits; None: not counted
    stacks: int = 0  # stacks on it now
    memory_used: int = 0  # the memory limits of its provision stacks
    unusable: str | None = None  # why it takes nothing new (unreachable, not usable, unknown), or None
    uuid: str | None = None

    def fill(self, extra_stacks: int = 0, extra_memory: int = 0) -> float:
        stacks = (self.stacks + extra_stacks) / self.max_stacks
        if self.memory is None:
            return stacks
        return max(stacks, (self.memory_used + extra_memory) / self.memory)

    def refusal(self, memory: int) -> str | None:
        """Why this server cannot take a stack of `memory` bytes of limits, or None when it can."""
        if self.unusable:
            return self.unusable
        if self.stacks >= self.max_stacks:
            return f"full: {self.stacks} of {self.max_stacks} stacks"
        if self.memory is not None and self.memory_used + memory > self.memory:
            return (f"full: {show_size(self.memory_used)} of {show_size(self.memory)} memory handed out, "
                    f"a stack needs {show_size(memory)}")
        return None


def place(loads: Sequence[ServerLoad], demands: Sequence[tuple[str, int]]) -> dict[str, str]:
    """{project: server name} for each new project (`demands`: name and memory limits, in order), or
    ServersFull naming every server and why it took nothing, when any of them fits nowhere (then none is placed)."""
    current = list(loads)
    chosen: dict[str, str] = {}
    for project, memory in demands:
        fitting = [(load.fill(1, memory), i) for i, load in enumerate(current) if load.refusal(memory) is None]
        if not fitting:
            reasons = "; ".join(f"{load.name}: {load.refusal(memory)}" for load in current)
            placed = f" ({len(chosen)} other new project(s) would have fitted first)" if chosen else ""
            raise ServersFull(f"no server can take {project!r}{placed}: {reasons}. Nothing was created: raise "
                              f"max_stacks or memory in coolify.servers, or add a server")
        _, best = min(fitting)
        chosen[project] = current[best].name
        current[best] = replace(current[best], stacks=current[best].stacks + 1,
                                memory_used=current[best].memory_used + memory)
    return chosen
