"""Placement over Coolify servers: pure decisions, as a table of cases (each expected server worked out from
the rule in placement.py's docstring) and a few longer runs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from provision.core.errors import ServersFull
from provision.core.placement import ServerLoad, place

MIB = 2**20
GIB = 2**30


def test_stacks_spread_in_proportion_to_capacity_and_ties_go_to_the_first_listed() -> None:
    loads = [ServerLoad("a", 10), ServerLoad("b", 20), ServerLoad("c", 30)]
    where = place(loads, [(f"p{i}", 320 * MIB) for i in range(30)])
    counts = {name: list(where.values()).count(name) for name in "abc"}
    assert counts == {"a": 5, "b": 10, "c": 15}
    assert place([ServerLoad("a", 2), ServerLoad("b", 2)], [("p", 0)]) == {"p": "a"}


def test_existing_stacks_and_memory_count() -> None:
    # b holds fewer stacks, but its memory is nearly handed out: a is emptier by the larger of the two fills
    loads = [ServerLoad("a", 10, stacks=5), ServerLoad("b", 10, memory=1024 * MIB, stacks=1, memory_used=900 * MIB)]
    assert place(loads, [("p", 64 * MIB)]) == {"p": "a"}
    with pytest.raises(ServersFull, match=r"b: full: 900M of 1G memory handed out, a stack needs 320M"):
        place([loads[1]], [("p", 320 * MIB)])


def test_when_one_project_fits_nowhere_none_is_placed_and_every_server_says_why() -> None:
    loads = [ServerLoad("a", 1), ServerLoad("down", 5, unusable="unreachable (Coolify's last check)"),
             ServerLoad("b", 2, stacks=1)]
    with pytest.raises(ServersFull) as caught:
        place(loads, [("p1", 0), ("p2", 0), ("p3", 0)])
    message = str(caught.value)
    assert "no server can take 'p3' (2 other new project(s) would have fitted first)" in message
    assert "a: full: 1 of 1 stacks" in message and "b: full: 2 of 2 stacks" in message
    assert "down: unreachable" in message and "Nothing was created" in message


@dataclass(frozen=True)
class PlaceCase:
    id: str
    loads: tuple[ServerLoad, ...]
    demands: tuple[tuple[str, int], ...]
    placed: dict[str, str] | None = None  # expected; None: ServersFull saying each of `says`
    says: tuple[str, ...] = ()


# a server's fill after taking a stack: the larger of (stacks + 1) / max_stacks and, when it declares memory,
# (memory_used + the stack's memory) / memory; the lowest wins, the first listed on a tie
PLACE_CASES = [
    PlaceCase("nothing-to-place", (ServerLoad("a", 1, stacks=1),), (), {}),
    PlaceCase("one-server", (ServerLoad("a", 1),), (("p", 64 * MIB),), {"p": "a"}),
    PlaceCase("tie-goes-to-first-listed", (ServerLoad("b", 4), ServerLoad("a", 4)), (("p", 0),), {"p": "b"}),
    PlaceCase("emptier-by-stacks", (ServerLoad("a", 10, stacks=3), ServerLoad("b", 4, stacks=1)), (("p", 0),),
              {"p": "a"}),  # a: 4/10, b: 2/4
    PlaceCase("larger-wins-when-equally-held", (ServerLoad("a", 2), ServerLoad("b", 3)), (("p", 0),), {"p": "b"}),
    PlaceCase("memory-fill-counts", (ServerLoad("a", 10, memory=GIB, memory_used=512 * MIB),
                                     ServerLoad("b", 10, stacks=3)),
              (("p", 256 * MIB),), {"p": "b"}),  # a: max(1/10, 768M/1G) = 0.75, b: 4/10
    PlaceCase("stack-fill-counts-over-memory", (ServerLoad("a", 2, memory=16 * GIB, stacks=1),
                                                ServerLoad("b", 10, memory=GIB, memory_used=256 * MIB)),
              (("p", 256 * MIB),), {"p": "b"}),  # a: max(2/2, ...) = 1, b: max(1/10, 512M/1G) = 0.5
    PlaceCase("undeclared-memory-is-not-counted", (ServerLoad("a", 10, stacks=5),
                                                   ServerLoad("b", 10, memory_used=64 * GIB)),
              (("p", 8 * GIB),), {"p": "b"}),
    PlaceCase("memory-exactly-fits", (ServerLoad("a", 10, memory=GIB, memory_used=768 * MIB),),
              (("p", 256 * MIB),), {"p": "a"}),
    PlaceCase("last-stack-slot", (ServerLoad("a", 3, stacks=2),), (("p", 0),), {"p": "a"}),
    PlaceCase("unusable-is-skipped-though-emptiest", (ServerLoad("down", 100, unusable="unreachable"),
                                                      ServerLoad("a", 2, stacks=1)),
              (("p", 0),), {"p": "a"}),
    # each placement counts for the next one of the same run
    PlaceCase("several-alternate", (ServerLoad("a", 4), ServerLoad("b", 4)),
              (("p1", 0), ("p2", 0), ("p3", 0)), {"p1": "a", "p2": "b", "p3": "a"}),
    PlaceCase("several-memory-runs-out", (ServerLoad("a", 10, memory=GIB), ServerLoad("b", 10, memory=512 * MIB)),
              (("p1", 512 * MIB), ("p2", 512 * MIB)), {"p1": "a", "p2": "a"}),  # p1: a 0.5, b 1.0; p2: a 1.0, b 1.0 (a tie)
    PlaceCase("several-fill-the-last-slot", (ServerLoad("a", 1), ServerLoad("b", 2, stacks=1)),
              (("p1", 0), ("p2", 0)), {"p1": "a", "p2": "b"}),
    # nothing fits: every server and why, and nothing placed
    PlaceCase("full-by-stacks", (ServerLoad("a", 2, stacks=2),), (("p", 0),),
              says=("no server can take 'p': a: full: 2 of 2 stacks. Nothing was created: raise max_stacks or memory",)),
    PlaceCase("over-full-by-stacks", (ServerLoad("a", 3, stacks=5),), (("p", 0),), says=("a: full: 5 of 3 stacks",)),
    PlaceCase("full-by-memory", (ServerLoad("a", 10, memory=GIB, memory_used=900 * MIB),), (("p", 320 * MIB),),
              says=("a: full: 900M of 1G memory handed out, a stack needs 320M",)),
    PlaceCase("memory-one-byte-over", (ServerLoad("a", 10, memory=GIB, memory_used=768 * MIB),),
              (("p", 256 * MIB + 1),), says=("a: full: 768M of 1G memory handed out",)),
    PlaceCase("unusable-says-why", (ServerLoad("a", 5, unusable="a build server (it cannot run stacks)"),),
              (("p", 0),), says=("a: a build server (it cannot run stacks)",)),
    PlaceCase("unusable-before-full", (ServerLoad("a", 1, stacks=1, unusable="unreachable"),), (("p", 0),),
              says=("a: unreachable",)),
    PlaceCase("every-server-named", (ServerLoad("a", 1, stacks=1), ServerLoad("b", 5, unusable="unreachable")),
              (("p", 0),), says=("a: full: 1 of 1 stacks; b: unreachable",)),
    PlaceCase("later-project-fits-nowhere", (ServerLoad("a", 1), ServerLoad("b", 1)),
              (("p1", 0), ("p2", 0), ("p3", 0)),
              says=("no server can take 'p3' (2 other new project(s) would have fitted first)",)),
    PlaceCase("first-project-fits-nowhere", (ServerLoad("a", 1, stacks=1),), (("p1", 0), ("p2", 0)),
              says=("no server can take 'p1': ",)),
]


@pytest.mark.parametrize("case", PLACE_CASES, ids=lambda c: c.id)
def test_place(case: PlaceCase) -> None:
    if case.placed is not None:
        assert place(case.loads, case.demands) == case.placed
        return
    with pytest.raises(ServersFull) as caught:
        place(case.loads, case.demands)
    for text in case.says:
        assert text in str(caught.value)
